//! The adapter zoo: one adapter per in-domain task of the default suite, trained with the
//! project's trainer and committed under `evaluation/zoo/` with a manifest (`zoo.json`)
//! holding each adapter's description, example prompts and training figures.
//!
//! The manifest is what registration reads: the server registers every zoo adapter on its
//! first start, and the evaluation harness registers them into a scratch registry.

use crate::tasks::{Split, Task};
use crate::training::TrainSummary;
use anyhow::Context;
use loramux_index::{AdapterId, NewAdapter, Registry};
use loramux_router::PeftValidator;
use loramux_runtime::ModelConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "zoo.json";

/// Seed of the example prompts registered with each adapter: apart from training data.
const EXAMPLES_SEED: u64 = 1_000_003;
/// Registered example prompts per training template: every phrasing the adapter learned is
/// in the index, so retrieval never depends on which templates a random draw happened to hit.
const EXAMPLES_PER_TEMPLATE: usize = 3;

/// The prompts registered with a task's adapter for retrieval (train templates only: the
/// test templates stay unseen by both the adapter and the index).
pub fn zoo_examples(task: &dyn Task) -> Vec<String> {
    task.generate_covering(Split::Train, EXAMPLES_SEED, EXAMPLES_PER_TEMPLATE)
        .into_iter()
        .map(|e| e.prompt)
        .collect()
}

/// How every zoo adapter was trained (the flags of `loramux train`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooTraining {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub dtype: String,
    /// Tasks that need more steps than `steps` to reach 80% exact match (arithmetic and
    /// letter-level tasks: the 135M base model learns them slowly).
    #[serde(default)]
    pub task_steps: BTreeMap<String, usize>,
    /// Tasks trained further after the first run, phase after phase: each a warm restart
    /// from the previous phase's adapter with a new schedule and fresh examples
    /// (`loramux train --init`).
    #[serde(default)]
    pub continued: BTreeMap<String, Vec<TrainPhase>>,
}

/// The schedule of one training run of a task: the first run or a continuation phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPhase {
    pub steps: usize,
    pub lr: f64,
    /// Seed of the run's examples and order: each phase draws other examples.
    pub seed: u64,
}

impl Default for ZooTraining {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: ["q_proj", "v_proj"].map(String::from).to_vec(),
            steps: 120,
            batch_size: 8,
            lr: 2e-3,
            seed: 0,
            dtype: "f16".into(),
            task_steps: [
                ("add_numbers", 300),
                ("acronym", 300),
                ("sort_numbers", 300),
            ]
            .map(|(t, s)| (t.to_string(), s))
            .into(),
            continued: [
                ("add_numbers", vec![(300, 1e-3), (300, 5e-4)]),
                ("acronym", vec![(300, 1e-3)]),
                ("sort_numbers", vec![(200, 1e-3), (200, 5e-4)]),
            ]
            .map(|(t, phases)| {
                let phases = phases
                    .into_iter()
                    .zip(1..)
                    .map(|((steps, lr), seed)| TrainPhase { steps, lr, seed })
                    .collect();
                (t.to_string(), phases)
            })
            .into(),
        }
    }
}

impl ZooTraining {
    pub fn steps_for(&self, task: &str) -> usize {
        self.task_steps.get(task).copied().unwrap_or(self.steps)
    }

    /// The `loramux train` arguments for one task's first run.
    pub fn train_args(&self, task: &str, out: &Path) -> Vec<String> {
        let shape = [
            "--rank".into(),
            self.rank.to_string(),
            "--alpha".into(),
            self.alpha.to_string(),
            "--targets".into(),
            self.targets.join(","),
        ];
        let schedule = TrainPhase {
            steps: self.steps_for(task),
            lr: self.lr,
            seed: self.seed,
        };
        let mut args = vec!["--out".into(), out.display().to_string()];
        args.extend(shape);
        self.run_args(task, &schedule, args)
    }

    /// The continuation phases of a task (none for most).
    pub fn phases_for(&self, task: &str) -> &[TrainPhase] {
        self.continued.get(task).map_or(&[], Vec::as_slice)
    }

    /// The `loramux train` arguments of a task's continuation phase `index` (0-based),
    /// which trains the adapter at `out` further in place; `None` past its last phase.
    pub fn continue_args(&self, task: &str, index: usize, out: &Path) -> Option<Vec<String>> {
        let phase = self.phases_for(task).get(index)?;
        let out = out.display().to_string();
        let args = vec!["--init".into(), out.clone(), "--out".into(), out];
        Some(self.run_args(task, phase, args))
    }

    /// `train --task TASK`, then `where_to` (folders, shape), then the schedule and the
    /// flags every run shares.
    fn run_args(&self, task: &str, schedule: &TrainPhase, where_to: Vec<String>) -> Vec<String> {
        let mut args: Vec<String> = vec!["train".into(), "--task".into(), task.into()];
        args.extend(where_to);
        args.extend([
            "--steps".into(),
            schedule.steps.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--lr".into(),
            schedule.lr.to_string(),
            "--seed".into(),
            schedule.seed.to_string(),
            "--dtype".into(),
            self.dtype.clone(),
            "--json".into(),
        ]);
        args
    }
}

/// One adapter of the zoo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooEntry {
    /// Adapter id, equal to the task name.
    pub id: String,
    pub cluster: String,
    pub description: String,
    /// Prompts (train split) registered with the adapter for retrieval.
    pub examples: Vec<String>,
    /// Folder of the PEFT files, relative to the zoo folder.
    pub dir: String,
    pub train: TrainSummary,
    /// The continuation phases, for tasks trained further (see [`ZooTraining::continued`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continued: Vec<TrainSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooManifest {
    pub base_model: String,
    /// The command that rebuilds this zoo.
    pub rebuild: String,
    pub training: ZooTraining,
    pub adapters: Vec<ZooEntry>,
}

impl ZooManifest {
    pub fn load(zoo_dir: &Path) -> anyhow::Result<Self> {
        let path = zoo_dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the zoo manifest {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, zoo_dir: &Path) -> anyhow::Result<()> {
        let path = zoo_dir.join(MANIFEST);
        // Write then rename, so a killed build never leaves half a manifest.
        let tmp = zoo_dir.join(format!("{MANIFEST}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn entry(&self, id: &str) -> Option<&ZooEntry> {
        self.adapters.iter().find(|e| e.id == id)
    }

    /// Absolute folder of an entry's PEFT files.
    pub fn adapter_dir(zoo_dir: &Path, entry: &ZooEntry) -> PathBuf {
        zoo_dir.join(&entry.dir)
    }
}

/// The zoo committed with the project (`LORAMUX_ZOO` overrides it).
pub fn default_zoo_dir() -> PathBuf {
    std::env::var_os("LORAMUX_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo"))
}

/// Registers every adapter of the zoo at `zoo` that `registry` lacks and returns how many;
/// `on_added` hears each id. The zoo folder becomes an allowed source root of `registry`.
pub fn register_zoo(
    zoo: &Path,
    registry: &mut Registry,
    model: &ModelConfig,
    on_added: &mut dyn FnMut(&str),
) -> anyhow::Result<usize> {
    let manifest = ZooManifest::load(zoo)?;
    let have: Vec<String> = registry
        .list()?
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    let validator = PeftValidator::new(model.clone());
    registry.allow_root(zoo);
    let mut added = 0;
    for entry in &manifest.adapters {
        if have.contains(&entry.id) {
            continue;
        }
        registry
            .register(
                NewAdapter {
                    id: AdapterId::new(&entry.id)?,
                    source: ZooManifest::adapter_dir(zoo, entry),
                    description: entry.description.clone(),
                    examples: entry.examples.clone(),
                    tags: vec!["zoo".into(), entry.cluster.clone()],
                    replace: false,
                },
                &validator,
            )
            .with_context(|| format!("registering zoo adapter {}", entry.id))?;
        added += 1;
        on_added(&entry.id);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn training_arguments_name_the_shape_first_and_the_phase_schedules_after() {
        let t = ZooTraining::default();
        let out = Path::new("/z/add_numbers");
        assert_eq!(
            t.train_args("add_numbers", out),
            strings(&[
                "train",
                "--task",
                "add_numbers",
                "--out",
                "/z/add_numbers",
                "--rank",
                "8",
                "--alpha",
                "16",
                "--targets",
                "q_proj,v_proj",
                "--steps",
                "300",
                "--batch-size",
                "8",
                "--lr",
                "0.002",
                "--seed",
                "0",
                "--dtype",
                "f16",
                "--json",
            ])
        );
        assert_eq!(
            t.continue_args("add_numbers", 1, out),
            Some(strings(&[
                "train",
                "--task",
                "add_numbers",
                "--init",
                "/z/add_numbers",
                "--out",
                "/z/add_numbers",
                "--steps",
                "300",
                "--batch-size",
                "8",
                "--lr",
                "0.0005",
                "--seed",
                "2",
                "--dtype",
                "f16",
                "--json",
            ]))
        );
        assert_eq!(t.continue_args("add_numbers", 2, out), None);
        assert_eq!(t.continue_args("iso_date", 0, out), None);
        assert_eq!(t.train_args("iso_date", out)[12], "120");
    }
}
