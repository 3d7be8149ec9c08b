//! `report.md`: the tables of an evaluation run, headline first.

use super::items::Kind;
use super::results::EvalResults;
use std::fmt::Write;

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

pub fn markdown(r: &EvalResults, plots: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# loramux evaluation ({} run)\n\nSuite `{}`, {} zoo adapters, {:.0} s. Exact match in %, \
         averaged over tasks (composite prompts: per part). Wild: the in-domain tasks asked in \
         hand-written wording no template produces. Regenerate with \
         `loramux eval{} --report DIR`.\n",
        if r.quick { "quick" } else { "full" },
        r.suite,
        r.zoo.len(),
        r.seconds,
        if r.quick { " --quick" } else { "" }
    );

    md.push_str("## Targets\n\n| target | value | goal | met |\n|---|---:|---|---|\n");
    for t in &r.targets {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} | {} |",
            t.name,
            t.value,
            t.target,
            if t.met { "yes" } else { "**no**" }
        );
    }

    md.push_str("\n## Exact match by strategy\n\n| strategy | in-domain | wild | out-of-domain | composite |\n|---|---:|---:|---:|---:|\n");
    let mut strategies: Vec<String> = r.strategies.clone();
    for kind in [Kind::OutOfDomain, Kind::Composite] {
        if let Some((id, _)) = r.best_single(kind) {
            let s = format!("single:{id}");
            if !strategies.contains(&s) {
                strategies.push(s);
            }
        }
    }
    for s in &strategies {
        let cell = |k| r.average(s, k).map(pct).unwrap_or_else(|| "–".into());
        let label = if s.starts_with("single:") {
            format!("{s} (best single)")
        } else {
            s.clone()
        };
        let cells: Vec<String> = Kind::ALL.into_iter().map(cell).collect();
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }

    for (kind, title) in [
        (Kind::InDomain, "In-domain exact match per task"),
        (
            Kind::Wild,
            "Wild exact match per task (hand-written prompts)",
        ),
        (Kind::OutOfDomain, "Out-of-domain exact match per task"),
    ] {
        // Results from before the wild split have no wild rows: no empty section for them.
        if kind == Kind::Wild && !r.scores.iter().any(|s| s.kind == kind) {
            continue;
        }
        let cols: Vec<String> = if kind.has_own_adapter() {
            r.strategies.clone()
        } else {
            let mut c: Vec<String> = r
                .strategies
                .iter()
                .filter(|s| *s != "oracle")
                .cloned()
                .collect();
            c.push("best single".into());
            c
        };
        let _ = writeln!(md, "\n## {title}\n\n| task | {} |", cols.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(cols.len()));
        let mut tasks: Vec<&str> = r
            .scores
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.task.as_str())
            .collect();
        tasks.dedup();
        tasks.sort();
        tasks.dedup();
        for task in tasks {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let rows = r.scores.iter().filter(|s| s.kind == kind && s.task == task);
                    let found = if c == "best single" {
                        rows.filter(|s| s.strategy.starts_with("single:"))
                            .max_by(|a, b| a.exact_match.total_cmp(&b.exact_match))
                            .map(|s| {
                                format!(
                                    "{} ({})",
                                    pct(s.exact_match),
                                    s.strategy.trim_start_matches("single:")
                                )
                            })
                    } else {
                        rows.into_iter()
                            .find(|s| &s.strategy == c)
                            .map(|s| pct(s.exact_match))
                    };
                    found.unwrap_or_else(|| "–".into())
                })
                .collect();
            let _ = writeln!(md, "| {task} | {} |", cells.join(" | "));
        }
    }

    let _ = write!(
        md,
        "\n## Retrieval accuracy (in-domain test prompts, held-out instruction templates)\n\n\
         Overall: top-1 {} %, top-3 {} %. Composite prompts with both parts' adapters among \
         the candidates: {} %.",
        pct(r.retrieval_top1),
        pct(r.retrieval_top3),
        pct(r.composite_candidates_both)
    );
    if r.scores.iter().any(|s| s.kind == Kind::Wild) {
        let _ = write!(
            md,
            " Wild prompts (same tasks, hand-written wording): top-1 {} %, top-3 {} %.",
            pct(r.retrieval_wild_top1),
            pct(r.retrieval_wild_top3)
        );
    }
    md.push_str("\n\n| task | prompts | top-1 | top-3 |\n|---|---:|---:|---:|\n");
    for row in &r.retrieval {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row.task,
            row.prompts,
            pct(row.top1),
            pct(row.top3)
        );
    }

    md.push_str("\n## Throughput per strategy\n\nGenerated tokens per second of wall time, prefill included, batches of up to 48 prompts.\n\n| strategy | requests | tokens | seconds | tokens/s |\n|---|---:|---:|---:|---:|\n");
    for t in r
        .throughput
        .iter()
        .filter(|t| !t.strategy.starts_with("single:"))
    {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} |",
            t.strategy, t.requests, t.generated_tokens, t.seconds, t.tokens_per_s
        );
    }

    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for p in plots {
            let _ = writeln!(md, "![{p}]({p})\n");
        }
    }

    md.push_str(
        "\n## Sample outputs\n\n| strategy | task | output | expected |\n|---|---|---|---|\n",
    );
    for s in r
        .samples
        .iter()
        .filter(|s| s.strategy == "retrieval_top1" || s.strategy == "base")
        .take(40)
    {
        let clean = |t: &str| t.replace('|', "\\|").replace('\n', " ⏎ ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.strategy,
            s.task,
            clean(&s.output),
            clean(&s.expected)
        );
    }
    md
}
