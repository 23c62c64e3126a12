//! Atomic output directories. A job writes into a hidden sibling
//! `.<name>.tmp-<pid>` and moves it into place only when everything is
//! written, so a crashed or killed job never leaves a directory that looks
//! complete.
//!
//! # The commit
//!
//! Replacing an existing output is one `renameat2(RENAME_EXCHANGE)`: the
//! kernel swaps the two directories in one step, so at every instant the
//! output's path holds a complete output, the old one or the new one. The
//! old output, now under the staging name, is then removed. A commit stopped
//! at any step leaves either the old output in place and the new one in its
//! staging directory, or the new one in place and the old one in the staging
//! directory; the next job for that output removes the staging directories
//! of dead processes ([`Staging::new`]). A first output is a plain rename.
//!
//! On a filesystem without `RENAME_EXCHANGE` (NFS, some FUSE mounts; and
//! every system but Linux) the old output is first renamed aside to
//! `.<name>.old-<pid>`, then the new one into place: for the instant between
//! the two renames the path is empty, and a job interrupted there leaves the
//! old output aside, which the next job renames back before it starts.
//!
//! The fault points (see [`crate::fault`]) `commit:staged`,
//! `commit:swapped` and `commit:done` stop the process at each step for the
//! crash tests.
//!
//! An `s3://` output is staged in its local shadow directory
//! ([`crate::store::local_shadow`]) and uploaded on commit, markers last.

use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};
use crate::fault;

/// A directory being written, to be moved into place by [`Staging::commit`].
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates the hidden temporary sibling of `target`, after recovering
    /// what interrupted jobs for the same output left (see the module doc).
    pub fn new(target: &Path) -> Result<Self> {
        let (parent, name) = parent_and_name(target);
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        recover(&parent, &name)?;
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
        fault::point("commit:staged");
        // After the swap the staging path holds the previous output (if any).
        let previous = if self.target.exists() { Some(self.replace()?) } else { None };
        if previous.is_none() {
            std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        }
        self.committed = true;
        fault::point("commit:swapped");
        if let Some(previous) = previous {
            std::fs::remove_dir_all(&previous).map_err(io_err(&previous))?;
        }
        fault::point("commit:done");
        Ok(())
    }

    /// Puts the staging directory in place of the existing output and
    /// returns where the previous output now is.
    fn replace(&self) -> Result<PathBuf> {
        match exchange(&self.tmp, &self.target) {
            Ok(()) => Ok(self.tmp.clone()),
            Err(e) if exchange_unsupported(&e) => {
                let (parent, name) = parent_and_name(&self.target);
                let aside = parent.join(format!(".{name}.old-{}", std::process::id()));
                std::fs::rename(&self.target, &aside).map_err(io_err(&self.target))?;
                std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
                Ok(aside)
            }
            Err(e) => Err(io_err(&self.target)(e)),
        }
    }
}

/// Swaps two existing paths in one step (`renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Swaps two existing paths in one step: not available here.
#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether `exchange` failed because the filesystem or system cannot swap
/// (rather than because of the paths).
fn exchange_unsupported(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
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

/// What interrupted jobs (their process no longer exists) left beside the
/// output `parent/name`: an output set aside by a commit stopped between its
/// two renames is renamed back when the output is missing; then their
/// staging and set-aside directories are removed (best effort: what cannot
/// be read or removed stays). Process liveness is read from `/proc`;
/// elsewhere nothing is touched.
fn recover(parent: &Path, name: &str) -> Result<()> {
    if !Path::new("/proc/self").exists() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(()) };
    let (tmp_prefix, old_prefix) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    let mut abandoned = Vec::new();
    let mut set_aside = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        let (pid, list) = if let Some(pid) = file_name.strip_prefix(&tmp_prefix) {
            (pid, &mut abandoned)
        } else if let Some(pid) = file_name.strip_prefix(&old_prefix) {
            (pid, &mut set_aside)
        } else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            list.push(entry.path());
        }
    }
    let target = parent.join(name);
    if !target.exists() {
        if let Some(previous) = set_aside.pop() {
            std::fs::rename(&previous, &target).map_err(io_err(&target))?;
            crate::log::info(
                "staging",
                "restored the output an interrupted commit had set aside",
                serde_json::json!({"from": previous}),
            );
        }
    }
    for dir in abandoned.into_iter().chain(set_aside) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
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

    fn write_output(dir: &Path, version: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("v"), version).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn commit_replaces_the_previous_output_and_failure_leaves_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        write_output(&target, "1");
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
        assert_eq!(names(tmp.path()), ["out"], "only the output remains");
    }

    #[test]
    fn the_exchange_swaps_two_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write_output(&a, "a");
        write_output(&b, "b");
        match exchange(&a, &b) {
            Ok(()) => {
                assert_eq!(std::fs::read_to_string(a.join("v")).unwrap(), "b");
                assert_eq!(std::fs::read_to_string(b.join("v")).unwrap(), "a");
            }
            // A filesystem without it takes the two-rename path.
            Err(e) => assert!(exchange_unsupported(&e), "{e}"),
        }
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

    #[test]
    fn an_output_set_aside_by_an_interrupted_commit_is_restored() {
        let tmp = tempfile::tempdir().unwrap();
        // A two-rename commit killed between its renames: the old output
        // aside, the new one still staged, nothing at the output's path.
        write_output(&tmp.path().join(".out.old-4194305"), "old");
        write_output(&tmp.path().join(".out.tmp-4194305"), "new");
        let target = tmp.path().join("out");
        let s = Staging::new(&target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("v")).unwrap(), "old");
        drop(s);
        assert_eq!(names(tmp.path()), ["out"]);
        // With an output in place, a set-aside one is stale and removed.
        write_output(&tmp.path().join(".out.old-4194305"), "older");
        drop(Staging::new(&target).unwrap());
        assert_eq!(std::fs::read_to_string(target.join("v")).unwrap(), "old");
        assert_eq!(names(tmp.path()), ["out"]);
    }
}
