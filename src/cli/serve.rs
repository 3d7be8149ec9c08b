//! `loramux serve`: the OpenAI-compatible server on the default model (or any model).

use super::generate::{resolve_model, DtypeArg};
use anyhow::Context;
use clap::Args;
use loramux::server::{configure, DirCatalog, Limits, LoadedAdapters, ServerMetrics, ServerState};
use loramux_runtime::engine::{self, EngineConfig};
use loramux_runtime::{AdapterBank, BankConfig, BaseModel};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "default")]
    model: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long, value_enum, default_value = "native")]
    dtype: DtypeArg,
    /// A folder whose sub-folders are PEFT adapters, served under their folder names.
    #[arg(long)]
    adapters_dir: Option<PathBuf>,
    /// Adapters resident at once (LRU beyond).
    #[arg(long, default_value_t = 16)]
    bank_slots: usize,
    /// Largest adapter rank the bank holds.
    #[arg(long, default_value_t = 64)]
    bank_rank: usize,
    /// Sequences batched together at most.
    #[arg(long, default_value_t = 32)]
    max_running: usize,
    /// Requests waiting beyond the batch; past it the server answers 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let path = resolve_model(&args.model)?;
    let base = Arc::new(
        BaseModel::load(&path, args.dtype.into())
            .with_context(|| format!("loading {}", path.display()))?,
    );
    let bank = AdapterBank::new(
        base.model.config(),
        BankConfig {
            slots: args.bank_slots,
            r_max: args.bank_rank,
        },
    )?;
    let engine = engine::spawn(
        base.clone(),
        bank,
        EngineConfig {
            queue_capacity: args.queue,
            max_running: args.max_running,
            ..EngineConfig::default()
        },
    );
    let adapters_dir = args
        .adapters_dir
        .unwrap_or_else(|| loramux_runtime::fetch::home().join("adapters"));
    let base_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "base".into());
    let state = Arc::new(ServerState {
        base,
        base_name,
        engine,
        catalog: Arc::new(DirCatalog::new(adapters_dir)),
        loaded: LoadedAdapters::default(),
        limits: Limits::default(),
        metrics: ServerMetrics::default(),
    });
    let addr = (args.host.as_str(), args.port);
    eprintln!(
        "loramux serving {} on http://{}:{}",
        path.display(),
        args.host,
        args.port
    );
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(configure(state.clone()))
        })
        .bind(addr)?
        .run()
        .await
    })?;
    Ok(())
}
