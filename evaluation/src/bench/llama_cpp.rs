//! llama.cpp as the side-by-side baseline: runs a build's `llama-bench` (prefill of 512 and
//! 2,048 tokens, decode of 128 at batch 1) and `llama-batched-bench` (aggregate decode of
//! 8/16/32 sequences after a 128-token prompt each) on the same GGUF and thread count, and
//! reads their JSON lines.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Prompt tokens of each sequence in the batched decode (llama.cpp's `-npp`, and loramux's
/// prompt length in the same comparison).
pub const BATCHED_PROMPT: usize = 128;
/// Tokens generated per sequence in the batched decode (`-ntg`).
pub const BATCHED_GENERATE: usize = 64;
/// Tokens generated at batch 1 (`llama-bench -n`).
pub const DECODE_TOKENS: usize = 128;

/// llama.cpp's figures, tokens per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaCppFigures {
    pub build: String,
    /// Prefill throughput per prompt length.
    pub prefill: Vec<(usize, f64)>,
    /// Decode throughput at batch 1.
    pub decode_b1: f64,
    /// Aggregate decode throughput per number of parallel sequences.
    pub batched: Vec<(usize, f64)>,
}

#[derive(Debug, Deserialize)]
struct BenchLine {
    build_commit: String,
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
}

#[derive(Debug, Deserialize)]
struct BatchedLine {
    pl: usize,
    speed_tg: f64,
}

/// Runs both tools of the build in `dir` on `model` with `threads` threads.
pub fn run(
    dir: &Path,
    model: &Path,
    threads: usize,
    prefill: &[usize],
    batches: &[usize],
) -> Result<LlamaCppFigures> {
    let list = |v: &[usize]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let (model, threads) = (model.as_os_str().to_owned(), threads.to_string());
    let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
    let mut bench_args = args(&["-m"]);
    bench_args.push(model.clone());
    bench_args.extend(args(&[
        "-t",
        &threads,
        "-p",
        &list(prefill),
        "-n",
        &DECODE_TOKENS.to_string(),
        "-r",
        "3",
        "-o",
        "jsonl",
    ]));
    let bench = run_tool(&dir.join("llama-bench"), bench_args)?;
    let context =
        batches.iter().max().copied().unwrap_or(1) * (BATCHED_PROMPT + BATCHED_GENERATE) + 64;
    let mut batched_args = args(&["-m"]);
    batched_args.push(model);
    batched_args.extend(args(&[
        "-t",
        &threads,
        "-c",
        &context.to_string(),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        &BATCHED_PROMPT.to_string(),
        "-ntg",
        &BATCHED_GENERATE.to_string(),
        "-npl",
        &list(batches),
        "--output-format",
        "jsonl",
    ]));
    let batched = run_tool(&dir.join("llama-batched-bench"), batched_args)?;
    parse(&bench, &batched)
}

fn run_tool(path: &Path, args: Vec<OsString>) -> Result<String> {
    if !path.is_file() {
        bail!(
            "{} not found: --llama-cpp takes the folder of a llama.cpp build that has \
             llama-bench and llama-batched-bench",
            path.display()
        );
    }
    let out = Command::new(path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} failed ({}): {}",
            path.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The figures from `llama-bench -o jsonl` and `llama-batched-bench --output-format jsonl`
/// output; lines that are not JSON objects (banners) are skipped.
pub fn parse(bench: &str, batched: &str) -> Result<LlamaCppFigures> {
    let objects = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{'))
            .map(String::from)
            .collect()
    };
    let mut build = String::new();
    let mut prefill = Vec::new();
    let mut decode_b1 = None;
    for line in objects(bench) {
        let l: BenchLine =
            serde_json::from_str(&line).with_context(|| format!("llama-bench line {line}"))?;
        build = l.build_commit;
        match (l.n_prompt, l.n_gen) {
            (0, _) => decode_b1 = Some(l.avg_ts),
            (n, 0) => prefill.push((n, l.avg_ts)),
            _ => {}
        }
    }
    let batched: Vec<(usize, f64)> = objects(batched)
        .iter()
        .map(|line| {
            serde_json::from_str::<BatchedLine>(line)
                .map(|l| (l.pl, l.speed_tg))
                .with_context(|| format!("llama-batched-bench line {line}"))
        })
        .collect::<Result<_>>()?;
    let Some(decode_b1) = decode_b1 else {
        bail!("llama-bench printed no decode (tg) result");
    };
    if prefill.is_empty() || batched.is_empty() {
        bail!("llama.cpp printed no prefill or no batched result");
    }
    Ok(LlamaCppFigures {
        build,
        prefill,
        decode_b1,
        batched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as llama.cpp c392e5094 prints them (fields trimmed to the ones read and a few).
    const BENCH: &str = r#"{"build_commit": "c392e5094", "n_threads": 2, "n_prompt": 512, "n_gen": 0, "avg_ts": 373.65}
{"build_commit": "c392e5094", "n_threads": 2, "n_prompt": 2048, "n_gen": 0, "avg_ts": 201.5}
{"build_commit": "c392e5094", "n_threads": 2, "n_prompt": 0, "n_gen": 128, "avg_ts": 154.2}
"#;
    const BATCHED: &str = r#"
build: 4748 (c392e5094) with cc
{"n_kv_max": 12352, "pp": 128, "tg": 64, "pl": 8, "n_kv": 1536, "speed_pp": 365.8, "speed_tg": 124.4, "speed": 263.5}
{"n_kv_max": 12352, "pp": 128, "tg": 64, "pl": 16, "n_kv": 3072, "speed_pp": 360.1, "speed_tg": 110.0, "speed": 200.0}
"#;

    #[test]
    fn reads_both_tools_json_lines() {
        let f = parse(BENCH, BATCHED).unwrap();
        assert_eq!(f.build, "c392e5094");
        assert_eq!(f.prefill, vec![(512, 373.65), (2048, 201.5)]);
        assert_eq!(f.decode_b1, 154.2);
        assert_eq!(f.batched, vec![(8, 124.4), (16, 110.0)]);
    }

    #[test]
    fn missing_results_and_missing_tools_are_errors() {
        assert!(parse("", BATCHED).is_err());
        assert!(parse(BENCH, "build: only a banner").is_err());
        let err = run(
            Path::new("/nonexistent"),
            Path::new("m.gguf"),
            2,
            &[512],
            &[8],
        )
        .expect_err("no build there");
        assert!(err.to_string().contains("llama-bench"), "{err}");
    }
}
