//! `loramux eval`: every routing strategy on the task suite, with a report and plots.

use super::generate::{resolve_model, DtypeArg};
use anyhow::{bail, Context};
use clap::Args;
use loramux_eval::harness::items::Kind;
use loramux_eval::harness::model::ZooModel;
use loramux_eval::harness::results::EvalResults;
use loramux_eval::harness::{evaluate_retrieval, plots, report, run, EvalConfig};
use loramux_eval::route_calibration::zoo_router_config;
use loramux_eval::tasks::Suite;
use loramux_eval::zoo::default_zoo_dir;
use loramux_router::gate::GateConfig;
use loramux_runtime::fetch::DEFAULT_EMBEDDER;
use loramux_runtime::BaseModel;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Task suite (only `default` exists).
    #[arg(long, default_value = "default")]
    suite: String,
    /// Fewer prompts per task: finishes in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Folder for results.json, report.md and the plots.
    #[arg(long)]
    report: PathBuf,
    /// Print results.json to stdout.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "default")]
    model: String,
    #[arg(long, value_enum, default_value = "native")]
    dtype: DtypeArg,
    /// The zoo to evaluate (default: the project's evaluation/zoo).
    #[arg(long)]
    zoo: Option<PathBuf>,
    /// Skip running every single adapter on out-of-domain and composite prompts.
    #[arg(long)]
    no_singles: bool,
    /// Measure retrieval only (no generation): in-domain top-1/top-3 per task, in seconds.
    #[arg(long)]
    retrieval_only: bool,
    /// Test prompts per in-domain task (overrides the --quick/full count).
    #[arg(long)]
    per_task: Option<usize>,
    /// Test prompts per out-of-domain task (overrides the --quick/full count).
    #[arg(long)]
    per_ood_task: Option<usize>,
    /// Composite prompts (overrides the --quick/full count).
    #[arg(long)]
    composite: Option<usize>,
    /// Candidates the router retrieves per prompt (the mixtures and the gate choose among
    /// them). 4, not the server's 3: a composite prompt then has both of its tasks'
    /// adapters among the candidates 95% of the time instead of 82%.
    #[arg(long, default_value_t = 4)]
    candidates: usize,
    /// Only prompts of these tasks, comma-separated (a composite counts when either of its
    /// parts is listed): for quick looks at a few tasks.
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Only these strategies, comma-separated: base, oracle, retrieval_top1,
    /// retrieval_mixture, uniform, gate_top1, gate_top2, single:ID.
    #[arg(long, value_delimiter = ',')]
    strategies: Option<Vec<String>>,
    /// Weight of the retrieval prior's log in the learned gate's logits (0: the gate alone
    /// decides among the candidates).
    #[arg(long, default_value_t = GateConfig::default().prior_weight)]
    gate_prior_weight: f32,
    /// Run nothing: render report.md and the plots in --report again from this
    /// results.json (after a change to the report's layout).
    #[arg(long)]
    from_results: Option<PathBuf>,
}

pub fn run_cli(args: EvalArgs) -> anyhow::Result<()> {
    if args.suite != "default" {
        bail!(
            "unknown suite {:?}; the only suite is `default`",
            args.suite
        );
    }
    if let Some(path) = &args.from_results {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an evaluation results file", path.display()))?;
        return write_report(&results, &args.report);
    }
    let suite = Suite::default_suite();
    let mut config = if args.quick {
        EvalConfig::quick()
    } else {
        EvalConfig::full()
    };
    config.singles = !args.no_singles;
    if let Some(tasks) = &args.tasks {
        for t in tasks {
            if suite.task(t).is_none() {
                bail!("--tasks: no task {t:?} in the suite");
            }
        }
    }
    config.tasks = args.tasks.clone();
    config.strategies = args.strategies.clone();
    let counts = &mut config.counts;
    counts.per_in_domain_task = args.per_task.unwrap_or(counts.per_in_domain_task);
    counts.per_ood_task = args.per_ood_task.unwrap_or(counts.per_ood_task);
    counts.composite = args.composite.unwrap_or(counts.composite);
    let path = resolve_model(&args.model)?;
    let base = BaseModel::load(&path, args.dtype.into())
        .with_context(|| format!("loading {}", path.display()))?;
    let zoo = args.zoo.unwrap_or_else(default_zoo_dir);
    let scratch = tempfile::tempdir()?;
    // The settings `serve` routes the zoo with (its calibrated threshold included).
    let mut router = zoo_router_config(&zoo)?;
    router.retrieval.top_n = args.candidates;
    router.retrieval.search_k = router.retrieval.search_k.max(args.candidates);
    router.retrieval.top_k = router.retrieval.top_k.min(args.candidates);
    let mut model = ZooModel::load(
        base,
        &zoo,
        &DEFAULT_EMBEDDER.path()?,
        scratch.path(),
        router,
        args.gate_prior_weight,
    )?;
    if args.retrieval_only {
        let summary = evaluate_retrieval(&suite, &config.counts, &model.retriever)?;
        println!("task                 prompts  top-1  top-3");
        for row in &summary.rows {
            println!(
                "{:<20} {:>7} {:>6.1} {:>6.1}",
                row.task,
                row.prompts,
                row.top1 * 100.0,
                row.top3 * 100.0
            );
        }
        println!(
            "retrieval top-1 {:.1}% top-3 {:.1}%; composites with both parts' adapters among the candidates {:.1}%",
            summary.top1 * 100.0,
            summary.top3 * 100.0,
            summary.composite_both * 100.0
        );
        return Ok(());
    }
    config.gates = model.gate_top_ks.clone();
    let results = run(
        &suite,
        &model.ids,
        &config,
        &model.retriever,
        &mut model.generator,
    )?;
    write_report(&results, &args.report)?;
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    println!("strategy            in-domain  out-of-domain  composite");
    for s in &results.strategies {
        let cell = |k| {
            results
                .average(s, k)
                .map(|v| format!("{:.1}", v * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{s:<19} {:>9}  {:>13}  {:>9}",
            cell(Kind::InDomain),
            cell(Kind::OutOfDomain),
            cell(Kind::Composite)
        );
    }
    println!(
        "retrieval top-1 {:.1}% top-3 {:.1}%; {:.0} s; report in {}",
        results.retrieval_top1 * 100.0,
        results.retrieval_top3 * 100.0,
        results.seconds,
        args.report.display()
    );
    for t in &results.targets {
        println!(
            "target {}: {:.3} ({}) {}",
            t.name,
            t.value,
            t.target,
            if t.met { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// `results.json`, `report.md` and the plots of `results` in `dir`.
fn write_report(results: &EvalResults, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let plots = match plots::write_all(results, dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: plots skipped: {e:#}");
            Vec::new()
        }
    };
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(dir.join("report.md"), report::markdown(results, &plots))?;
    Ok(())
}
