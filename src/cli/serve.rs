//! `loramux serve`: the OpenAI-compatible server on the default model (or any model).

use super::adapters::RegistryArgs;
use super::generate::{resolve_model, DtypeArg};
use anyhow::Context;
use clap::Args;
use loramux::server::{
    configure, AdapterCatalog, DirCatalog, Limits, RegistryCatalog, ServerMetrics, ServerState,
};
use loramux_eval::harness::model::GATE_FILE;
use loramux_eval::route_calibration::zoo_router_config;
use loramux_eval::zoo::default_zoo_dir;
use loramux_router::gate::{GateConfig, GateWeights, LearnedGate};
use loramux_router::{PeftValidator, Router, RouterConfig};
use loramux_runtime::engine::{self, EngineConfig};
use loramux_runtime::{AdapterBank, BankConfig, BaseModel, DeviceChoice, HostCache};
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
    /// Where the base model runs: cpu (the host backend) or cuda / cuda:N (the device
    /// backend, adapters resident on the GPU; needs a build with scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Serve a plain folder of PEFT adapters (sub-folder names are ids) instead of the
    /// registry; `auto` then falls back to the base model.
    #[arg(long)]
    adapters_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Do not register the project's adapter zoo on the registry's first start.
    #[arg(long)]
    no_zoo: bool,
    /// Learned gate for `auto` (from `loramux train-gate`) [default: the zoo's
    /// gate.safetensors when it exists]; adapters it was not trained on fall back to
    /// their retrieval prior.
    #[arg(long)]
    gate: Option<PathBuf>,
    /// Serve `auto` with the retrieval prior only, even when a gate exists.
    #[arg(long, conflicts_with = "gate")]
    no_gate: bool,
    /// Best similarity under which `auto` serves the base model [default: the zoo's
    /// calibrated routing.json, from `loramux calibrate-route`].
    #[arg(long, conflicts_with = "adapters_dir")]
    route_threshold: Option<f32>,
    /// Experts per token the gate keeps.
    #[arg(long, default_value_t = GateConfig::default().top_k)]
    gate_top_k: usize,
    /// Bearer token required by the admin endpoints; LORAMUX_ADMIN_TOKEN also sets it.
    #[arg(long)]
    admin_token: Option<String>,
    /// Adapters resident at once (LRU beyond).
    #[arg(long, default_value_t = 16)]
    bank_slots: usize,
    /// Host memory for loaded adapters, in bytes (suffixes K, M, G: powers of 1024);
    /// least recently used adapters are dropped beyond it and read again from disk.
    #[arg(long, default_value = "2G", value_parser = parse_bytes)]
    host_cache_bytes: usize,
    /// Largest adapter rank the bank holds.
    #[arg(long, default_value_t = 64)]
    bank_rank: usize,
    /// Sequences batched together at most.
    #[arg(long, default_value_t = 32)]
    max_running: usize,
    /// Requests waiting beyond the batch; past it the server answers 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Prompt tokens prefilled per engine step, shared fairly by the prompts prefilling.
    #[arg(long, default_value_t = EngineConfig::default().prefill_chunk)]
    prefill_chunk: usize,
    /// Engine steps a request may wait for a bank slot while younger requests for resident
    /// adapters pass it; after that it goes first.
    #[arg(long, default_value_t = EngineConfig::default().max_wait_steps)]
    max_wait_steps: usize,
}

impl ServeArgs {
    fn router_config(&self) -> anyhow::Result<RouterConfig> {
        let mut config = zoo_router_config(&default_zoo_dir())?;
        if let Some(t) = self.route_threshold {
            config.retrieval.threshold = t;
        }
        Ok(config)
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // The device first: a missing GPU or CUDA support fails before anything is loaded.
    let backend = args.device.backend()?;
    let path = resolve_model(&args.model)?;
    let base = Arc::new(
        BaseModel::load_on(&path, args.dtype.into(), &backend)
            .with_context(|| format!("loading {} on {}", path.display(), args.device))?,
    );
    let bank = AdapterBank::on_device(
        base.model.config(),
        BankConfig {
            slots: args.bank_slots,
            r_max: args.bank_rank,
        },
        &base.model.device(),
    )?;
    let gate = if args.adapters_dir.is_some() || args.no_gate {
        None
    } else {
        load_gate(args.gate.as_deref(), base.model.config(), args.gate_top_k)?
    };
    let gate_top_k = gate.as_ref().map(|_| args.gate_top_k);
    let engine = engine::spawn_with_gate(
        base.clone(),
        bank,
        EngineConfig {
            queue_capacity: args.queue,
            max_running: args.max_running,
            prefill_chunk: args.prefill_chunk,
            max_wait_steps: args.max_wait_steps,
        },
        gate,
    );
    let catalog: Arc<dyn AdapterCatalog> = match &args.adapters_dir {
        Some(dir) => Arc::new(DirCatalog::new(dir)),
        None => {
            let mut registry = args.registry.open()?;
            if !args.no_zoo {
                super::zoo::register_on_first_start(
                    &args.registry.dir(),
                    &mut registry,
                    base.model.config(),
                )?;
            }
            let registry = Arc::new(std::sync::RwLock::new(registry));
            let router = Router::new(registry, args.router_config()?)?;
            let catalog = RegistryCatalog::new(
                router,
                PeftValidator::new(base.model.config().clone()).with_max_rank(args.bank_rank),
            );
            Arc::new(if gate_top_k.is_some() {
                catalog.with_all_candidates()
            } else {
                catalog
            })
        }
    };
    if let Some(uploads) = catalog.upload_dir() {
        let swept = loramux::server::sweep_stale_staging(&uploads);
        if swept > 0 {
            tracing::info!("removed {swept} staging folders of interrupted uploads");
        }
    }
    let base_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "base".into());
    let state = Arc::new(ServerState {
        base,
        base_name,
        engine,
        catalog,
        adapters: HostCache::new(args.host_cache_bytes),
        limits: Limits::default(),
        metrics: ServerMetrics::default(),
        admin_token: args
            .admin_token
            .or_else(|| std::env::var("LORAMUX_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        gate_top_k,
        upload_permits: tokio::sync::Semaphore::new(Limits::default().max_concurrent_uploads),
    });
    let addr = (args.host.as_str(), args.port);
    eprintln!(
        "loramux serving {} ({}) on http://{}:{}",
        path.display(),
        args.device,
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

/// The learned gate to serve `auto` with: `path`, or else the zoo's gate if there is one.
fn load_gate(
    path: Option<&std::path::Path>,
    model: &loramux_runtime::ModelConfig,
    top_k: usize,
) -> anyhow::Result<Option<Arc<dyn loramux_runtime::Gate>>> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let zoo_gate = loramux_eval::zoo::default_zoo_dir().join(GATE_FILE);
            if !zoo_gate.exists() {
                return Ok(None);
            }
            zoo_gate
        }
    };
    let weights = GateWeights::load(&path)?;
    if weights.num_layers != model.num_layers || weights.hidden_size != model.hidden_size {
        anyhow::bail!(
            "gate {} was trained for {} layers × {} hidden, the model has {} × {}",
            path.display(),
            weights.num_layers,
            weights.hidden_size,
            model.num_layers,
            model.hidden_size
        );
    }
    eprintln!(
        "auto routing mixes per token with the learned gate {} over {} adapters (top-{top_k})",
        path.display(),
        weights.experts()
    );
    Ok(Some(Arc::new(LearnedGate::new(
        weights,
        GateConfig {
            top_k,
            ..GateConfig::default()
        },
    ))))
}

/// `1048576`, `512K`, `64M`, `2G` (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale: usize = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use K, M or G)"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a byte count"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("2T").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("").is_err());
    }
}
