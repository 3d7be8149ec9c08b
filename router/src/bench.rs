//! The routing benchmark: embedding throughput, index build / save / load times, search
//! and route latency at registry scale.
//!
//! The index holds synthetic vectors (random unit "topic" centers, each adapter's examples
//! perturbed around its center), which is what search timing needs; the route latency
//! embeds a real ~100-token prompt with the real embedder, then searches and aggregates.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use loramux_index::{
    AdapterId, AdapterVectors, BertEmbedder, Embedder, GraphParams, TextKind, VectorIndex,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cache::RouteCache;
use crate::retrieve::{retrieve, RetrievalConfig};
use crate::{Result, RouterError};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub adapters: usize,
    pub examples_per_adapter: usize,
    pub search_queries: usize,
    /// Searches (the first of `search_queries`) also answered by an exact scan, for recall.
    pub exact_queries: usize,
    pub route_queries: usize,
    /// Prompts embedded one by one, and in batches of 32, for throughput.
    pub throughput_prompts: usize,
    /// Tokens in the routed prompt.
    pub prompt_tokens: usize,
    pub graph: GraphParams,
    pub retrieval: RetrievalConfig,
    /// Where the index is saved and reloaded.
    pub workdir: PathBuf,
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            adapters: 10_000,
            examples_per_adapter: 20,
            search_queries: 2000,
            exact_queries: 200,
            route_queries: 200,
            throughput_prompts: 128,
            prompt_tokens: 100,
            graph: GraphParams::default(),
            retrieval: RetrievalConfig::default(),
            workdir: std::env::temp_dir().join("loramux-bench-route"),
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples
                .get(i)
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(f64::NAN)
        };
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3
            / samples.len().max(1) as f64;
        Self {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            mean_ms: mean,
        }
    }
}

/// One embedder's speed: short prompts one by one and in batches of 32, and the routed
/// ~100-token prompt alone.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    pub backend: &'static str,
    pub batch1_per_s: f64,
    pub batch32_per_s: f64,
    pub prompt: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapters: usize,
    pub vectors: usize,
    pub dim: usize,
    /// The embedder under test.
    pub embedding: EmbedReport,
    /// The same measurements on the baseline embedder (candle's BERT), when one was given.
    pub baseline: Option<EmbedReport>,
    pub throughput_prompt_tokens: f64,
    pub build_s: f64,
    pub save_s: f64,
    /// First load after the save (what a restart pays).
    pub load_s: f64,
    /// A second load, with the allocator and page cache warm.
    pub reload_warm_s: f64,
    /// Fraction of searches whose nearest text belongs to the adapter the query was drawn around.
    pub search_recall_at_1: f64,
    /// Fraction of the exact top 10 (an exhaustive scan) among the search's first 10,
    /// over the first `exact_queries` searches.
    pub search_recall_at_10_vs_exact: f64,
    /// The same for the whole top `search_k`. On the synthetic data the ranks past an
    /// adapter's own 20 examples are near-ties among unrelated points (similarity ~0.2),
    /// so this one is low for any approximate search and says little about routing.
    pub search_recall_vs_exact: f64,
    pub search: Percentiles,
    pub route_prompt_tokens: usize,
    pub route: Percentiles,
    /// A repeated prompt answered from the route cache.
    pub route_cached: Percentiles,
    /// Registering one more adapter into the reloaded index: the first insert after a load
    /// reads hnsw_rs's graph (searches do not need it).
    pub first_insert_after_load_s: f64,
}

/// Benchmark stages, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Throughput,
    Build,
    SaveLoad,
    Search,
    Route,
}

/// Short prompts for throughput, varied so batches are not identical.
fn short_prompt(i: usize) -> String {
    const SUBJECTS: [&str; 8] = [
        "a SQL query",
        "a haiku",
        "a unit test",
        "a cover letter",
        "a proof",
        "a recipe",
        "a poem",
        "a summary",
    ];
    const TOPICS: [&str; 8] = [
        "sales by region",
        "autumn rain",
        "a parser",
        "a data job",
        "prime numbers",
        "lentil soup",
        "the sea",
        "this report",
    ];
    format!(
        "Please write {} about {} (request {i}).",
        SUBJECTS[i % 8],
        TOPICS[(i / 8) % 8]
    )
}

/// A prompt of exactly `tokens` tokens (special tokens included), cut from a long text.
fn long_prompt(embedder: &BertEmbedder, tokens: usize) -> Result<(String, usize)> {
    let base = "I am preparing the quarterly report for our regional sales team and need help \
        writing a SQL query that joins the orders table with the customers table, groups the \
        results by region and month, computes the total revenue and the average order value, \
        and filters out cancelled orders and test accounts. The database is PostgreSQL 15, \
        the orders table has about forty million rows, and the query must finish in under \
        ten seconds, so please also suggest indexes and explain the execution plan briefly.";
    let words: Vec<&str> = base.split_whitespace().cycle().take(400).collect();
    let (mut lo, mut hi) = (1, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if embedder.count_tokens(&words[..mid].join(" "))? <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let text = words[..lo].join(" ");
    let n = embedder.count_tokens(&text)?;
    Ok((text, n))
}

fn random_unit(rng: &mut StdRng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    loramux_index::embed::l2_normalize(&mut v);
    v
}

fn perturbed(rng: &mut StdRng, center: &[f32], noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = center
        .iter()
        .map(|c| c + noise * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    loramux_index::embed::l2_normalize(&mut v);
    v
}

/// Runs the benchmark with `embedder`; `baseline`, when given, gets the same embedding
/// measurements (not the index ones) so the report can print ratios from one run.
pub fn run(
    embedder: &BertEmbedder,
    baseline: Option<&BertEmbedder>,
    cfg: &BenchConfig,
    progress: &mut dyn FnMut(Stage, usize, usize),
) -> Result<BenchReport> {
    cfg.retrieval.validate()?;
    let dim = embedder.dim();
    let mut rng = StdRng::seed_from_u64(cfg.seed);

    let prompts: Vec<String> = (0..cfg.throughput_prompts).map(short_prompt).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let throughput_prompt_tokens = refs
        .iter()
        .map(|p| embedder.count_tokens(p))
        .sum::<loramux_index::Result<usize>>()? as f64
        / refs.len().max(1) as f64;
    let (prompt, route_prompt_tokens) = long_prompt(embedder, cfg.prompt_tokens)?;
    let embedding = measure_embedder(embedder, &refs, &prompt, cfg.route_queries, progress)?;
    let baseline = match baseline {
        Some(b) => Some(measure_embedder(
            b,
            &refs,
            &prompt,
            cfg.route_queries,
            progress,
        )?),
        None => None,
    };

    // Build.
    let centers: Vec<Vec<f32>> = (0..cfg.adapters)
        .map(|_| random_unit(&mut rng, dim))
        .collect();
    let keys: Vec<AdapterId> = (0..cfg.adapters)
        .map(|i| AdapterId::new(&format!("synthetic-{i:05}")))
        .collect::<std::result::Result<_, _>>()?;
    let vectors: Vec<Vec<(TextKind, Vec<f32>)>> = centers
        .iter()
        .map(|c| {
            (0..cfg.examples_per_adapter)
                .map(|_| (TextKind::Example, perturbed(&mut rng, c, 0.08)))
                .collect()
        })
        .collect();
    let total = cfg.adapters * cfg.examples_per_adapter;
    let mut index = VectorIndex::new(dim, embedder.id(), cfg.graph, total);
    let t = Instant::now();
    let step = (cfg.adapters / 50).max(1);
    for start in (0..cfg.adapters).step_by(step) {
        let end = (start + step).min(cfg.adapters);
        let batch: Vec<AdapterVectors> = (start..end)
            .map(|i| (&keys[i], 1, vectors[i].as_slice()))
            .collect();
        index.insert_many(&batch)?;
        progress(Stage::Build, end, cfg.adapters);
    }
    let build_s = t.elapsed().as_secs_f64();

    // Save and reload.
    let _ = std::fs::remove_dir_all(&cfg.workdir);
    let t = Instant::now();
    index.save(&cfg.workdir)?;
    let load_saved = || -> Result<VectorIndex> {
        VectorIndex::load(&cfg.workdir, embedder.id(), dim)?.ok_or_else(|| RouterError::Config {
            field: "workdir",
            reason: "the saved index vanished".into(),
        })
    };
    let save_s = t.elapsed().as_secs_f64();
    progress(Stage::SaveLoad, 1, 2);
    drop(index);
    let t = Instant::now();
    let index = load_saved()?;
    let load_s = t.elapsed().as_secs_f64();
    drop(index);
    let t = Instant::now();
    let mut index = load_saved()?;
    let reload_warm_s = t.elapsed().as_secs_f64();
    progress(Stage::SaveLoad, 2, 2);

    // Search alone.
    let mut samples = Vec::with_capacity(cfg.search_queries);
    let mut correct = 0usize;
    let mut checked = Vec::with_capacity(cfg.exact_queries);
    for q in 0..cfg.search_queries {
        let a = rng.random_range(0..cfg.adapters);
        let query = perturbed(&mut rng, &centers[a], 0.08);
        let t = Instant::now();
        let hits = index.search(&query, cfg.retrieval.search_k)?;
        samples.push(t.elapsed());
        correct += usize::from(hits.first().is_some_and(|h| h.key == keys[a]));
        if q < cfg.exact_queries {
            checked.push((query, hits));
        }
        if q % 100 == 99 {
            progress(Stage::Search, q + 1, cfg.search_queries);
        }
    }
    // The exact scans run after the timed loop: each streams every vector through the
    // caches, which would slow the next timed search.
    let mut found = [0usize; 2];
    let mut asked = [0usize; 2];
    for (query, hits) in &checked {
        let exact = exact_top(&vectors, query, cfg.retrieval.search_k);
        for (i, k) in [10.min(exact.len()), exact.len()].into_iter().enumerate() {
            // Compared by similarity: a hit is one of the exact top-k when it is at least
            // as similar as the k-th (ties count either way).
            let kth = k.checked_sub(1).and_then(|i| exact.get(i)).copied();
            let kth = kth.unwrap_or(f32::MIN);
            found[i] += hits
                .iter()
                .take(k)
                .filter(|h| h.similarity >= kth - 1e-6)
                .count();
            asked[i] += k;
        }
    }
    let search = Percentiles::of(samples);
    let search_recall_at_1 = correct as f64 / cfg.search_queries.max(1) as f64;
    let search_recall_at_10_vs_exact = found[0] as f64 / asked[0].max(1) as f64;
    let search_recall_vs_exact = found[1] as f64 / asked[1].max(1) as f64;

    // Route: real embedding of a real prompt, then search and aggregation.
    retrieve(embedder, &index, &prompt, &cfg.retrieval)?; // warm-up
    let mut route_samples = Vec::with_capacity(cfg.route_queries);
    for q in 0..cfg.route_queries {
        let t = Instant::now();
        retrieve(embedder, &index, &prompt, &cfg.retrieval)?;
        route_samples.push(t.elapsed());
        progress(Stage::Route, q + 1, cfg.route_queries);
    }
    let cache = RouteCache::new(1024);
    cache.put(
        &prompt,
        1,
        &retrieve(embedder, &index, &prompt, &cfg.retrieval)?,
    );
    let cached: Vec<Duration> = (0..cfg.route_queries.max(100))
        .map(|_| {
            let t = Instant::now();
            let plan = cache.get(&prompt, 1);
            let took = t.elapsed();
            std::hint::black_box(plan);
            took
        })
        .collect();
    // One more adapter into the reloaded index.
    let extra_key = AdapterId::new("synthetic-extra")?;
    let center = random_unit(&mut rng, dim);
    let extra: Vec<(TextKind, Vec<f32>)> = (0..cfg.examples_per_adapter)
        .map(|_| (TextKind::Example, perturbed(&mut rng, &center, 0.08)))
        .collect();
    let t = Instant::now();
    index.insert(&extra_key, 1, &extra)?;
    let first_insert_after_load_s = t.elapsed().as_secs_f64();

    Ok(BenchReport {
        adapters: cfg.adapters,
        vectors: total,
        dim,
        embedding,
        baseline,
        throughput_prompt_tokens,
        build_s,
        save_s,
        load_s,
        reload_warm_s,
        search_recall_at_1,
        search_recall_at_10_vs_exact,
        search_recall_vs_exact,
        search,
        route_prompt_tokens,
        route: Percentiles::of(route_samples),
        route_cached: Percentiles::of(cached),
        first_insert_after_load_s,
    })
}

fn measure_embedder(
    embedder: &BertEmbedder,
    short: &[&str],
    long: &str,
    long_repeats: usize,
    progress: &mut dyn FnMut(Stage, usize, usize),
) -> Result<EmbedReport> {
    let steps = 2 * short.len() + long_repeats;
    embedder.embed(&short[..short.len().min(4)])?; // warm-up
    let t = Instant::now();
    for (i, p) in short.iter().enumerate() {
        embedder.embed(&[p])?;
        progress(Stage::Throughput, i + 1, steps);
    }
    let batch1_per_s = short.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (i, chunk) in short.chunks(32).enumerate() {
        embedder.embed(chunk)?;
        progress(Stage::Throughput, short.len() + (i + 1) * 32, steps);
    }
    let batch32_per_s = short.len() as f64 / t.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(long_repeats);
    for i in 0..long_repeats {
        let t = Instant::now();
        embedder.embed_one(long)?;
        samples.push(t.elapsed());
        progress(Stage::Throughput, 2 * short.len() + i + 1, steps);
    }
    Ok(EmbedReport {
        backend: embedder.backend_name(),
        batch1_per_s,
        batch32_per_s,
        prompt: Percentiles::of(samples),
    })
}

/// The `k` best similarities to `query` over every vector, best first (an exhaustive scan).
fn exact_top(vectors: &[Vec<(TextKind, Vec<f32>)>], query: &[f32], k: usize) -> Vec<f32> {
    let mut sims: Vec<f32> = vectors
        .iter()
        .flatten()
        .map(|(_, v)| loramux_index::embed::dot(query, v))
        .collect();
    let k = k.min(sims.len());
    if k == 0 {
        return Vec::new();
    }
    sims.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    sims.truncate(k);
    sims.sort_unstable_by(|a, b| b.total_cmp(a));
    sims
}
