//! The command-line interface: one subcommand per file.

mod bench;
mod generate;
mod models;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "loramux", version, about = "Adapter router and mixture-of-LoRA runtime")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text with the base model and any mix of PEFT adapters.
    Generate(generate::GenerateArgs),
    /// Fetch and verify the default models.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Decode throughput: base, one adapter and mixed adapters, against candle's quantized_llama.
    Bench(bench::BenchArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Models { command } => models::run(command),
        Command::Bench(args) => bench::run(args),
    }
}
