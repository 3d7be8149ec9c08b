//! The command-line interface: one subcommand per file.

mod adapters;
mod bench;
mod bench_route;
mod calibrate_route;
mod eval;
mod generate;
mod models;
mod route;
mod serve;
mod tasks;
mod train;
mod train_gate;
mod zoo;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loramux",
    version,
    about = "Adapter router and mixture-of-LoRA runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text with the base model and any mix of PEFT adapters.
    Generate(generate::GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Fetch and verify the default models.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Register, list and remove adapters.
    Adapters(adapters::AdaptersArgs),
    /// Show the route plan (candidate adapters with scores) for a prompt.
    Route(route::RouteArgs),
    /// Decode throughput: base, one adapter and mixed adapters, against candle's quantized_llama.
    Bench(bench::BenchArgs),
    /// Train a LoRA adapter (PEFT format) on a task of the suite or a JSONL file.
    Train(train::TrainArgs),
    /// Train the learned per-token gate over zoo adapters (base model and adapters frozen).
    TrainGate(train_gate::TrainGateArgs),
    /// Evaluate routing strategies on the task suite; writes results.json, report.md, plots.
    Eval(eval::EvalArgs),
    /// The task suite: list tasks, show examples, export training data.
    Tasks(tasks::TasksArgs),
    /// Build or register the adapter zoo (one adapter per task of the default suite).
    Zoo(zoo::ZooArgs),
    /// Fit the similarity under which `auto` serves the base model; writes the zoo's routing.json.
    CalibrateRoute(calibrate_route::CalibrateRouteArgs),
    /// Routing benchmark: embedding throughput, index build/load, search and route latency.
    BenchRoute(bench_route::BenchRouteArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Models { command } => models::run(command),
        Command::Serve(args) => serve::run(args),
        Command::Adapters(args) => adapters::run(args),
        Command::Route(args) => route::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchRoute(args) => bench_route::run(args),
        Command::CalibrateRoute(args) => calibrate_route::run(args),
        Command::Train(args) => train::run(args),
        Command::TrainGate(args) => train_gate::run(args),
        Command::Zoo(args) => zoo::run(args),
        Command::Tasks(args) => tasks::run(args),
        Command::Eval(args) => eval::run_cli(args),
    }
}
