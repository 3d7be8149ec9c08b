//! `loramux calibrate-route`: fits the similarity under which `auto` serves the base model
//! (held-out in-domain prompts against the committed general prompts) and writes the zoo's
//! `routing.json`, which `serve`, `route` and `eval` then use.

use super::generate::resolve_model;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use loramux_eval::harness::model::ZooRetriever;
use loramux_eval::route_calibration::{
    fit_threshold, general_prompts, score_half, zoo_router_config, Half, RoutingCalibration,
};
use loramux_eval::tasks::Suite;
use loramux_eval::zoo::default_zoo_dir;
use loramux_runtime::fetch::DEFAULT_EMBEDDER;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CalibrateRouteArgs {
    /// The zoo whose routing.json is written [default: the committed zoo].
    #[arg(long)]
    zoo: Option<PathBuf>,
    #[arg(long, default_value = "default")]
    model: String,
    /// In-domain prompts per task in each half.
    #[arg(long, default_value_t = 40)]
    per_task: usize,
    /// Share of the general calibration prompts the threshold must keep on the base model.
    #[arg(long, default_value_t = 0.95)]
    min_general_base_rate: f64,
    /// Print the figures without writing routing.json.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: CalibrateRouteArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.min_general_base_rate) {
        anyhow::bail!(
            "--min-general-base-rate {} is not a share in [0, 1]",
            args.min_general_base_rate
        );
    }
    let zoo = args.zoo.unwrap_or_else(default_zoo_dir);
    let model = loramux_runtime::weights::open(&resolve_model(&args.model)?)?;
    let scratch = tempfile::tempdir()?;
    // Scores are measured with the zoo's search depth and no fallback at all.
    let mut router = zoo_router_config(&zoo)?;
    router.retrieval.threshold = -1.0;
    router.cache_size = 0;
    let search_k = router.retrieval.search_k;
    let retriever = ZooRetriever::load(
        &zoo,
        &DEFAULT_EMBEDDER.path()?,
        scratch.path(),
        model.config(),
        router,
    )?;
    let suite = Suite::default_suite();
    let total = 2 * args.per_task * suite.in_domain.len()
        + general_prompts(Half::Calibration)?.len()
        + general_prompts(Half::Test)?.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "calibrate-route [{bar:30}] {pos}/{len} prompts {elapsed}",
    )?);
    let mut tick = || bar.inc(1);
    let calibration = score_half(
        retriever.router(),
        &suite,
        args.per_task,
        Half::Calibration,
        &mut tick,
    )?;
    let test = score_half(
        retriever.router(),
        &suite,
        args.per_task,
        Half::Test,
        &mut tick,
    )?;
    bar.finish_and_clear();
    let threshold = fit_threshold(
        &calibration.in_domain_scores(),
        &calibration.general,
        args.min_general_base_rate,
    );
    let result = RoutingCalibration {
        embedder: format!("{}=={}", DEFAULT_EMBEDDER.package, DEFAULT_EMBEDDER.version),
        search_k,
        threshold,
        min_general_base_rate: args.min_general_base_rate,
        calibration: calibration.figures(threshold),
        test: test.figures(threshold),
        rebuild: "loramux calibrate-route".into(),
    };
    println!("threshold {threshold:.4} (embedder {})", result.embedder);
    for (name, f) in [("calibration", &result.calibration), ("test", &result.test)] {
        println!(
            "{name:<12} general -> base {:>5.1}% of {:>3}   in-domain routed {:>5.1}%, top-1 right {:>5.1}% of {}",
            f.general_to_base * 100.0,
            f.general_prompts,
            f.in_domain_routed * 100.0,
            f.in_domain_top1 * 100.0,
            f.in_domain_prompts
        );
    }
    if !args.dry_run {
        result.save(&zoo)?;
        println!(
            "wrote {}",
            zoo.join(loramux_eval::route_calibration::ROUTING_FILE)
                .display()
        );
    }
    Ok(())
}
