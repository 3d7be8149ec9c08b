//! `loramux bench-route`: embedding throughput, index build/load, search and route latency.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use loramux_index::{BertEmbedder, BertEmbedderConfig, EmbedderBackend};
use loramux_router::bench::{self, BenchConfig, Stage};
use loramux_runtime::fetch::DEFAULT_EMBEDDER;

#[derive(Debug, Args)]
pub struct BenchRouteArgs {
    #[arg(long, default_value_t = 10_000)]
    pub adapters: usize,
    #[arg(long, default_value_t = 20)]
    pub examples: usize,
    #[arg(long, default_value_t = 2000)]
    pub search_queries: usize,
    #[arg(long, default_value_t = 200)]
    pub route_queries: usize,
    /// Skip the baseline embedder (candle's BERT on the CPU), measured by default for
    /// the speed ratios.
    #[arg(long)]
    pub no_baseline: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The targets at 10,000 adapters of 20 examples each.
const ROUTE_P50_TARGET_MS: f64 = 5.0;
const SEARCH_P99_TARGET_MS: f64 = 1.0;
const RELOAD_TARGET_S: f64 = 2.0;

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

pub fn run(args: BenchRouteArgs) -> anyhow::Result<()> {
    let model = DEFAULT_EMBEDDER.path()?;
    let embedder = BertEmbedder::load(&model, BertEmbedderConfig::default())?;
    let baseline = if args.no_baseline {
        None
    } else {
        let candle = BertEmbedderConfig {
            backend: EmbedderBackend::Candle,
            ..Default::default()
        };
        Some(BertEmbedder::load(&model, candle)?)
    };
    let cfg = BenchConfig {
        adapters: args.adapters,
        examples_per_adapter: args.examples,
        search_queries: args.search_queries,
        route_queries: args.route_queries,
        ..Default::default()
    };
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")?
            .progress_chars("=> "),
    );
    let mut last = None;
    let report = bench::run(
        &embedder,
        baseline.as_ref(),
        &cfg,
        &mut |stage: Stage, done, total| {
            if last != Some(stage) {
                last = Some(stage);
                bar.reset();
                bar.set_message(format!("{stage:?}").to_lowercase());
            }
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&cfg.workdir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let r = &report;
    println!(
        "embedder: {} threads",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let e = &r.embedding;
    println!(
        "embedding ({}), {:.0}-token prompts: batch 1 {:.1} prompts/s, batch 32 {:.1} prompts/s; {}-token prompt p50 {:.2} ms, p99 {:.2} ms",
        e.backend,
        r.throughput_prompt_tokens,
        e.batch1_per_s,
        e.batch32_per_s,
        r.route_prompt_tokens,
        e.prompt.p50_ms,
        e.prompt.p99_ms
    );
    if let Some(b) = &r.baseline {
        println!(
            "baseline ({}): batch 1 {:.1} prompts/s, batch 32 {:.1} prompts/s; {}-token prompt p50 {:.2} ms, p99 {:.2} ms",
            b.backend, b.batch1_per_s, b.batch32_per_s, r.route_prompt_tokens, b.prompt.p50_ms, b.prompt.p99_ms
        );
        println!(
            "  ours / baseline: batch 1 {:.2}x, batch 32 {:.2}x, {}-token prompt {:.2}x faster (p50)",
            e.batch1_per_s / b.batch1_per_s,
            e.batch32_per_s / b.batch32_per_s,
            r.route_prompt_tokens,
            b.prompt.p50_ms / e.prompt.p50_ms
        );
    }
    println!(
        "index: {} adapters x {} = {} vectors of {} dims",
        r.adapters, args.examples, r.vectors, r.dim
    );
    println!(
        "  build {:.1} s, save {:.2} s, load {:.2} s (again, warm: {:.2} s)",
        r.build_s, r.save_s, r.load_s, r.reload_warm_s
    );
    println!(
        "  first insert after the load (reads hnsw_rs's graph): {:.2} s",
        r.first_insert_after_load_s
    );
    println!(
        "search alone (k = {}): p50 {:.3} ms, p99 {:.3} ms, recall@1 {:.3}; vs an exact scan: top-10 {:.3}, top-{} {:.3}",
        cfg.retrieval.search_k,
        r.search.p50_ms,
        r.search.p99_ms,
        r.search_recall_at_1,
        r.search_recall_at_10_vs_exact,
        cfg.retrieval.search_k,
        r.search_recall_vs_exact
    );
    println!(
        "route (embed + search + aggregate): p50 {:.2} ms, p99 {:.2} ms",
        r.route.p50_ms, r.route.p99_ms
    );
    println!(
        "route, repeated prompt from the cache: p50 {:.4} ms, p99 {:.4} ms",
        r.route_cached.p50_ms, r.route_cached.p99_ms
    );
    println!(
        "targets: route p50 <= {ROUTE_P50_TARGET_MS} ms {}; search p99 <= {SEARCH_P99_TARGET_MS} ms {}; reload <= {RELOAD_TARGET_S} s {}{}",
        verdict(r.route.p50_ms <= ROUTE_P50_TARGET_MS),
        verdict(r.search.p99_ms <= SEARCH_P99_TARGET_MS),
        verdict(r.load_s <= RELOAD_TARGET_S),
        if r.adapters == 10_000 && args.examples == 20 {
            ""
        } else {
            " (the targets are for 10,000 adapters x 20 examples)"
        }
    );
    Ok(())
}
