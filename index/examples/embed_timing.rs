//! Times the default embedder on a ~100-token prompt (for profiling: `perf record`).
//! Usage: `cargo run -p loramux-index --example embed_timing -- [ITERATIONS]`.

use std::time::Instant;

use loramux_index::{BertEmbedder, BertEmbedderConfig, Embedder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let home = std::env::var_os("LORAMUX_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/loramux")
        });
    let embedder = BertEmbedder::load(
        &home.join("models/all-minilm-l6-v2"),
        BertEmbedderConfig::default(),
    )?;
    let prompt = "Please read the following customer message and decide which team should handle it. \
        The customer says that their invoice from last month lists a charge for a premium plan they never \
        ordered, that they already wrote twice without an answer, and that they want a refund to the original \
        card and a written confirmation that the plan is cancelled before the end of the week.";
    println!(
        "backend {}, {} tokens",
        embedder.backend_name(),
        embedder.count_tokens(prompt)?
    );
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let v = embedder.embed_one(prompt)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v.len(), embedder.dim());
    }
    times.sort_by(f64::total_cmp);
    let start = Instant::now();
    for _ in 0..iterations {
        embedder.count_tokens(prompt)?;
    }
    println!(
        "tokenize alone: {:.3} ms",
        start.elapsed().as_secs_f64() * 1e3 / iterations as f64
    );
    println!(
        "p50 {:.3} ms, p10 {:.3} ms, p90 {:.3} ms",
        times[times.len() / 2],
        times[times.len() / 10],
        times[times.len() * 9 / 10]
    );
    Ok(())
}
