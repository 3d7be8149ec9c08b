//! The registry's managed folder: allowed roots, staging copies with sha256, the atomic
//! move into place, and the sweep of leftovers.
//!
//! Layout under `<registry>/adapters/`: `<id>@<tag>/` for each registered adapter (the
//! catalog records the folder name), `.staging-<pid>-<random>/` while a registration is
//! copying. A new folder name per registration means a replacement never overwrites the
//! files of the version still recorded; the old folder is deleted after the commit.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::record::FileRecord;
use crate::{IndexError, Result};

/// The files of a PEFT adapter that the runtime reads; only these are copied.
pub const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

const STAGING_PREFIX: &str = ".staging-";

/// Canonical `source` if it lies under one of `roots` (both resolved through symlinks).
pub(crate) fn check_roots(source: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let canonical = source.canonicalize().map_err(|e| IndexError::BadSource {
        path: source.to_path_buf(),
        reason: format!("cannot be resolved: {e}"),
    })?;
    let inside = roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| canonical.starts_with(&root));
    if !inside {
        let roots = roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(IndexError::OutsideRoots {
            path: canonical,
            roots,
        });
    }
    Ok(canonical)
}

/// A copy of an adapter's files in a staging folder, removed on drop unless placed.
pub(crate) struct Staged {
    dir: Option<tempfile::TempDir>,
    pub(crate) files: Vec<FileRecord>,
}

impl Staged {
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// The random part of the staging name, reused in the final folder name.
    pub(crate) fn tag(&self) -> String {
        let name = self
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.rsplit('-')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// Renames the staging folder to `target` (same file system, so atomic) and makes the
    /// rename durable. After this the caller owns `target`.
    pub(crate) fn place(mut self, target: &Path) -> Result<()> {
        let Some(dir) = self.dir.take() else {
            return Err(IndexError::io(
                target,
                std::io::Error::other("staging folder already placed"),
            ));
        };
        let from = dir.keep();
        if let Err(e) = std::fs::rename(&from, target) {
            let _ = std::fs::remove_dir_all(&from);
            return Err(IndexError::io(target, e));
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

/// Copies the adapter files of `source` into a new staging folder under `adapters`,
/// hashing as it copies and syncing each file to disk. Each file must itself resolve
/// inside `roots` (a symlink cannot smuggle in a file from elsewhere).
pub(crate) fn stage(adapters: &Path, source: &Path, roots: &[PathBuf]) -> Result<Staged> {
    let prefix = format!("{STAGING_PREFIX}{}-", std::process::id());
    let dir = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(adapters)
        .map_err(|e| IndexError::io(adapters, e))?;
    let mut files = Vec::new();
    for name in ADAPTER_FILES {
        let from = source.join(name);
        if !from.exists() {
            return Err(IndexError::BadSource {
                path: source.to_path_buf(),
                reason: format!("{name} is missing"),
            });
        }
        let resolved = check_roots(&from, roots)?;
        if !resolved.is_file() {
            return Err(IndexError::BadSource {
                path: resolved,
                reason: "not a regular file".into(),
            });
        }
        let (sha256, bytes) = copy_hashed(&resolved, &dir.path().join(name))?;
        files.push(FileRecord {
            name: name.to_string(),
            sha256,
            bytes,
        });
    }
    sync_dir(dir.path())?;
    Ok(Staged {
        dir: Some(dir),
        files,
    })
}

fn copy_hashed(from: &Path, to: &Path) -> Result<(String, u64)> {
    let mut src = File::open(from).map_err(|e| IndexError::io(from, e))?;
    let mut dst = File::create(to).map_err(|e| IndexError::io(to, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| IndexError::io(from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| IndexError::io(to, e))?;
        total += n as u64;
    }
    dst.sync_all().map_err(|e| IndexError::io(to, e))?;
    Ok((hex::encode(hasher.finalize()), total))
}

/// sha256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    loramux_types::sha256_file(path).map_err(|e| IndexError::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| IndexError::io(dir, e))
}

/// Deletes what no registration owns: staging folders of dead processes and folders no
/// catalog row names. Must run under the catalog's write lock, so no registration can be
/// between its folder rename and its commit. Returns what it deleted.
pub(crate) fn sweep(adapters: &Path, known: &[String]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let read = std::fs::read_dir(adapters).map_err(|e| IndexError::io(adapters, e))?;
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = match name.strip_prefix(STAGING_PREFIX) {
            Some(rest) => !owner_alive(rest),
            None => !known.contains(&name),
        };
        if orphan {
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.map_err(|e| IndexError::io(&path, e))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(adapters)?;
    }
    Ok(removed)
}

/// Whether the process that made a staging folder (`<pid>-<random>`) still runs. Without
/// `/proc` the answer is "no": a sweep then may delete a live registration's copy, which
/// fails that registration cleanly (its rename finds no folder) rather than corrupting.
fn owner_alive(rest: &str) -> bool {
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_admit_subfolders_only() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("a");
        std::fs::create_dir(&inside).unwrap();
        let other = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        assert!(check_roots(&inside, &roots).is_ok());
        assert!(matches!(
            check_roots(other.path(), &roots),
            Err(IndexError::OutsideRoots { .. })
        ));
        // `..` is resolved before the check.
        let escape = inside.join("..").join("..");
        assert!(matches!(
            check_roots(&escape, &roots),
            Err(IndexError::OutsideRoots { .. })
        ));
    }

    #[test]
    fn sweep_keeps_known_folders_and_live_staging() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |n: &str| std::fs::create_dir(dir.path().join(n)).unwrap();
        mk("a@1");
        mk("b@2");
        mk(".staging-4000000000-x"); // no such pid
        mk(&format!(".staging-{}-y", std::process::id()));
        let removed = sweep(dir.path(), &["a@1".to_string()]).unwrap();
        let mut names: Vec<String> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".staging-4000000000-x", "b@2"]);
    }
}
