//! `loramux route --prompt TEXT`: the route plan the router makes for a prompt.

use std::sync::{Arc, RwLock};

use clap::Args;
use loramux_router::{Choice, RetrievalConfig, RoutePlan, Router, RouterConfig};

use super::adapters::RegistryArgs;
use loramux_eval::route_calibration::zoo_router_config;
use loramux_eval::zoo::default_zoo_dir;

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[arg(long)]
    pub prompt: String,
    /// `auto` (retrieve), `base`, or an adapter id.
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// Candidates kept.
    #[arg(long, default_value_t = RetrievalConfig::default().top_n)]
    pub top_n: usize,
    /// Below this cosine similarity, route to the base model [default: the zoo's calibrated
    /// routing.json, as `serve` uses it].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Softmax temperature of the prior.
    #[arg(long, default_value_t = RetrievalConfig::default().temperature)]
    pub temperature: f32,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RouteArgs) -> anyhow::Result<()> {
    let registry = args.registry.open()?;
    let served = zoo_router_config(&default_zoo_dir())?.retrieval;
    let retrieval = RetrievalConfig {
        top_n: args.top_n,
        search_k: served.search_k.max(args.top_n),
        threshold: args.threshold.unwrap_or(served.threshold),
        temperature: args.temperature,
        top_k: served.top_k.min(args.top_n),
    };
    let router = Router::new(
        Arc::new(RwLock::new(registry)),
        RouterConfig {
            retrieval,
            cache_size: 0,
        },
    )?;
    let start = std::time::Instant::now();
    let plan = router.resolve(&Choice::parse(&args.model)?, &args.prompt)?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "plan": plan, "elapsed_ms": elapsed_ms })
            )?
        );
        return Ok(());
    }
    match plan {
        RoutePlan::Base => println!("base model (no adapter is similar enough)"),
        RoutePlan::Fixed { adapters } => {
            for (id, w) in adapters {
                println!("{:<28} weight {w:.3}", id.as_str());
            }
        }
        RoutePlan::Auto { candidates, top_k } => {
            println!(
                "{:<28} {:>10} {:>7} {:>5}   (top_k {top_k})",
                "candidate", "similarity", "prior", "hits"
            );
            for c in candidates {
                println!(
                    "{:<28} {:>10.4} {:>7.3} {:>5}",
                    c.id.as_str(),
                    c.similarity,
                    c.prior,
                    c.hits
                );
            }
        }
    }
    eprintln!("routed in {elapsed_ms:.1} ms");
    Ok(())
}
