//! Atomic output directories. A job writes into a hidden sibling
//! `.<name>.tmp-<pid>` and renames it into place only when everything is
//! written, so a crashed or killed job never leaves a directory that looks
//! complete, and the previous output stays intact until the new one is whole.
//! An `s3://` output is staged in its local shadow directory
//! ([`crate::store::local_shadow`]) and uploaded on commit, markers last.

use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// A directory being written, to be renamed into place by [`Staging::commit`].
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates the hidden temporary sibling of `target`.
    pub fn new(target: &Path) -> Result<Self> {
        let (parent, name) = parent_and_name(target);
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        remove_abandoned(&parent, &name);
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Self { target: target.to_path_buf(), tmp, committed: false })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished directory into place, replacing a previous one
    /// (uploads it, for an `s3://` target).
    pub fn commit(mut self) -> Result<()> {
        if crate::store::is_remote(&self.target) {
            crate::store::upload_dir(&self.tmp, &self.target)?;
            self.committed = true;
            return std::fs::remove_dir_all(&self.tmp).map_err(io_err(&self.tmp));
        }
        let old = self.tmp.with_extension("old");
        if self.target.exists() {
            std::fs::rename(&self.target, &old).map_err(io_err(&self.target))?;
        }
        std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        self.committed = true;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        Ok(())
    }
}

/// The directory holding `target` (`.` for a bare name) and `target`'s
/// name, from which the hidden siblings of an output are named; for an
/// `s3://` target, those of its local shadow.
pub(crate) fn parent_and_name(target: &Path) -> (PathBuf, String) {
    let target = &crate::store::local_shadow(target);
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    (parent, name)
}

/// Removes the staging directories of earlier jobs for the same output
/// that were killed (their process no longer exists), so that killed jobs do
/// not pile up partial outputs. Best effort: what cannot be read or removed
/// stays. Process liveness is read from `/proc`; elsewhere nothing is removed.
fn remove_abandoned(parent: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let pid = pid.trim_end_matches(".old");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Staging {
    /// A job that fails before committing removes its partial output.
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_the_previous_output_and_failure_leaves_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("v"), "1").unwrap();
        {
            let s = Staging::new(&target).unwrap();
            std::fs::write(s.path().join("v"), "2").unwrap();
            // dropped without commit: a failed job
        }
        assert_eq!(std::fs::read_to_string(target.join("v")).unwrap(), "1");
        let s = Staging::new(&target).unwrap();
        std::fs::write(s.path().join("v"), "3").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("v")).unwrap(), "3");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the output remains");
    }

    #[test]
    fn staging_directories_of_dead_processes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // PIDs above the kernel's limit (2^22) never belong to a live process.
        let dead = tmp.path().join(".out.tmp-4194305");
        let live = tmp.path().join(format!(".out.tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dead).unwrap();
        let other = tmp.path().join(".other.tmp-4194305");
        std::fs::create_dir_all(&other).unwrap();
        let s = Staging::new(&tmp.path().join("out")).unwrap();
        assert_eq!(s.path(), live);
        assert!(!dead.exists(), "a killed job's staging directory is removed");
        assert!(other.exists(), "another output's staging directory is left alone");
    }
}
