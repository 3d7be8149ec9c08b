//! `loramux tasks list|show|export`: the task suite the zoo and the harness are built on.

use clap::{Args, Subcommand, ValueEnum};
use loramux_eval::tasks::{Split, Suite};

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// Every task with its cluster and description.
    List,
    /// Examples of one task as JSONL (`{"prompt", "answer"}`, the format `train --data` reads).
    Show {
        name: String,
        #[arg(long, value_enum, default_value = "test")]
        split: SplitArg,
        #[arg(short, long, default_value_t = 5)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Composite prompts (two tasks in one prompt) as JSONL.
    Composite {
        #[arg(short, long, default_value_t = 5)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(args: TasksArgs) -> anyhow::Result<()> {
    let suite = Suite::default_suite();
    match args.command {
        TasksCommand::List => {
            for (kind, tasks) in [
                ("in-domain", &suite.in_domain),
                ("out-of-domain", &suite.out_of_domain),
            ] {
                for t in tasks {
                    let related = t
                        .related()
                        .map(|r| format!(" (related: {r})"))
                        .unwrap_or_default();
                    println!(
                        "{kind:<14} {:<12} {:<18} {}{related}",
                        t.cluster(),
                        t.name(),
                        t.description()
                    );
                }
            }
        }
        TasksCommand::Show {
            name,
            split,
            n,
            seed,
        } => {
            let task = suite
                .task(&name)
                .ok_or_else(|| anyhow::anyhow!("no task {name:?}; see `loramux tasks list`"))?;
            let split = match split {
                SplitArg::Train => Split::Train,
                SplitArg::Test => Split::Test,
            };
            for e in task.generate(split, seed, n) {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        TasksCommand::Composite { n, seed } => {
            for c in suite.composite(seed, n) {
                println!("{}", serde_json::to_string(&c)?);
            }
        }
    }
    Ok(())
}
