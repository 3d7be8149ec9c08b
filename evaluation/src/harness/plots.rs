//! PNG plots of a run: exact match by strategy (grouped by prompt kind) and retrieval
//! accuracy by task. Text is drawn with a system TrueType font (DejaVu Sans or Liberation
//! Sans); without one the plots are skipped with a reason, the report still written.

use super::items::Kind;
use super::results::EvalResults;
use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font for plotters once per process.
fn ensure_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = FONT_PATHS
                .iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| format!("no TrueType font found (looked in {FONT_PATHS:?})"))?;
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Writes the plots into `dir` and returns their file names.
pub fn write_all(r: &EvalResults, dir: &Path) -> anyhow::Result<Vec<String>> {
    ensure_font()?;
    let mut names = Vec::new();
    let name = "accuracy_by_strategy.png";
    accuracy_by_strategy(r, &dir.join(name)).context("plotting accuracy by strategy")?;
    names.push(name.to_string());
    let name = "retrieval_by_task.png";
    retrieval_by_task(r, &dir.join(name)).context("plotting retrieval accuracy")?;
    names.push(name.to_string());
    Ok(names)
}

/// One per [`Kind::ALL`], in its order.
const KIND_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

fn accuracy_by_strategy(r: &EvalResults, path: &Path) -> anyhow::Result<()> {
    let mut strategies: Vec<String> = r.strategies.clone();
    if let Some((id, _)) = r.best_single(Kind::OutOfDomain) {
        strategies.push(format!("single:{id}"));
    }
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = strategies.len();
    let mut chart = ChartBuilder::on(&root)
        .caption("Exact match by strategy", ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n as f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            centered(*x)
                .and_then(|i| strategies.get(i).cloned())
                .unwrap_or_default()
        })
        .y_desc("exact match (%)")
        .label_style(("sans-serif", 14))
        .draw()?;
    let width = 0.8 / Kind::ALL.len() as f64;
    for (k, kind) in Kind::ALL.iter().enumerate() {
        let color = KIND_COLORS[k];
        let bars: Vec<(f64, f64)> = strategies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                r.average(s, *kind)
                    .map(|v| (i as f64 + 0.1 + k as f64 * width, v * 100.0))
            })
            .collect();
        chart
            .draw_series(
                bars.iter().map(|&(x, v)| {
                    Rectangle::new([(x, 0.0), (x + width * 0.95, v)], color.filled())
                }),
            )?
            .label(kind.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

fn retrieval_by_task(r: &EvalResults, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = r.retrieval.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Retrieval accuracy by task (held-out templates)",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(90)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n as f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            centered(*x)
                .and_then(|i| r.retrieval.get(i))
                .map(|row| row.task.clone())
                .unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("accuracy (%)")
        .draw()?;
    for (k, (label, pick)) in [("top-1", 0usize), ("top-3", 1)].into_iter().enumerate() {
        let color = KIND_COLORS[k];
        chart
            .draw_series(r.retrieval.iter().enumerate().map(|(i, row)| {
                let v = if pick == 0 { row.top1 } else { row.top3 } * 100.0;
                let x = i as f64 + 0.1 + k as f64 * 0.4;
                Rectangle::new([(x, 0.0), (x + 0.38, v)], color.filled())
            }))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The group whose center is `x`, for x-axis labels. Asking plotters for 2n + 1 labels over
/// `0..n` puts them every half unit; only the centers `i + 0.5` get a name, so every group is
/// labelled once, under its bars (n labels alone would be thinned to every other group).
fn centered(x: f64) -> Option<usize> {
    ((x.fract() - 0.5).abs() < 1e-6 && x >= 0.0).then(|| x.floor() as usize)
}
