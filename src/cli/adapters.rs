//! `loramux adapters add|list|rm`: the adapter registry from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use loramux_index::{
    AdapterId, BertEmbedder, BertEmbedderConfig, NewAdapter, Registry, RegistryConfig,
};
use loramux_router::PeftValidator;
use loramux_runtime::fetch::{default_model_path, home, DEFAULT_EMBEDDER};

/// Where the registry lives and where adapters may come from (shared with `route`).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry folder [default: $LORAMUX_HOME/registry].
    #[arg(long, global = true)]
    pub registry: Option<PathBuf>,
    /// A folder adapters may be registered from (repeatable; also LORAMUX_ADAPTER_ROOTS,
    /// colon-separated). The registry's own folder is always allowed.
    #[arg(long = "allow-root", global = true)]
    pub allow_roots: Vec<PathBuf>,
}

impl RegistryArgs {
    pub fn dir(&self) -> PathBuf {
        self.registry
            .clone()
            .unwrap_or_else(|| home().join("registry"))
    }

    pub fn config(&self) -> RegistryConfig {
        let mut roots = self.allow_roots.clone();
        if let Some(env) = std::env::var_os("LORAMUX_ADAPTER_ROOTS") {
            roots.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
        }
        RegistryConfig {
            allowed_roots: roots,
            ..Default::default()
        }
    }

    /// Opens the registry with the default embedder.
    pub fn open(&self) -> anyhow::Result<Registry> {
        let embedder_dir = DEFAULT_EMBEDDER.path()?;
        let embedder = BertEmbedder::load(&embedder_dir, BertEmbedderConfig::default())?;
        let dir = self.dir();
        let registry = Registry::open(&dir, self.config(), Arc::new(embedder))
            .with_context(|| format!("opening the registry in {}", dir.display()))?;
        let report = registry.open_report();
        for path in &report.swept {
            eprintln!(
                "note: removed leftovers of an interrupted registration: {}",
                path.display()
            );
        }
        for id in &report.dropped {
            eprintln!("warning: adapter {id} lost its files and was removed from the registry");
        }
        Ok(registry)
    }
}

#[derive(Debug, Args)]
pub struct AdaptersArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(subcommand)]
    pub command: AdaptersCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// Register a PEFT adapter folder: copy, validate against the base model, index.
    Add {
        /// The PEFT folder (adapter_config.json, adapter_model.safetensors).
        dir: PathBuf,
        #[arg(long)]
        id: String,
        /// What the adapter is for; it is embedded for retrieval.
        #[arg(long)]
        description: String,
        /// Example prompts, one per line (blank lines and lines starting with # skipped).
        #[arg(long)]
        examples: Option<PathBuf>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Overwrite an adapter already registered under this id.
        #[arg(long)]
        replace: bool,
    },
    /// List registered adapters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an adapter and its files.
    Rm { id: String },
}

pub fn run(args: AdaptersArgs) -> anyhow::Result<()> {
    match args.command {
        AdaptersCommand::Add {
            dir,
            id,
            description,
            examples,
            tags,
            replace,
        } => {
            let id = AdapterId::new(&id)?;
            let examples = match examples {
                Some(path) => read_examples(&path)?,
                None => Vec::new(),
            };
            let model = loramux_runtime::weights::open(&default_model_path()?)?;
            let validator = PeftValidator::new(model.config().clone());
            let mut registry = args.registry.open()?;
            let request = NewAdapter {
                id,
                source: dir,
                description,
                examples,
                tags,
                replace,
            };
            let record = registry.register(request, &validator)?;
            println!(
                "registered {} (rank {}, {} modules, {} examples) in {}",
                record.id,
                record.config.rank,
                record.config.target_modules.join("+"),
                record.examples.len(),
                registry.adapter_dir(&record).display()
            );
        }
        AdaptersCommand::List { json } => {
            let registry = args.registry.open()?;
            let records = registry.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else if records.is_empty() {
                println!("no adapters registered in {}", registry.root().display());
            } else {
                println!(
                    "{:<28} {:>4} {:>8} {:<24} description",
                    "id", "rank", "examples", "modules"
                );
                for r in records {
                    println!(
                        "{:<28} {:>4} {:>8} {:<24} {}",
                        r.id,
                        r.config.rank,
                        r.examples.len(),
                        r.config.target_modules.join("+"),
                        r.description
                    );
                }
            }
        }
        AdaptersCommand::Rm { id } => {
            let id = AdapterId::new(&id)?;
            let mut registry = args.registry.open()?;
            registry.remove(&id)?;
            println!("removed {id}");
        }
    }
    Ok(())
}

fn read_examples(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading examples from {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
