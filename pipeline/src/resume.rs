//! Resumable jobs. `sieve prune` (and `sieve eval`, below) keeps its expensive intermediate results in
//! a work directory beside the output, `.<name>.work`: the trained proxy and
//! one scores shard per input file, each written to a temporary name and
//! renamed when complete. A job that is interrupted (killed, or stopped by a
//! bad row with `--on-error fail`) and run again with the same inputs and
//! training settings reuses the proxy and the finished shards; the work
//! directory is removed when the output is committed.
//!
//! What may be reused is decided by fingerprints: the work directory holds
//! the fingerprint of the job (sieve's version, every input file's path, size
//! and modification time, the training settings or the given proxy), and is
//! emptied when it differs. A shard's name carries its file's identity.
//!
//! `sieve eval` keeps its proxy there and the result of every finished
//! target training, named by the target's settings and the rows it trained
//! on, and leaves the directory in place when it commits: a sweep of hours
//! that is interrupted resumes at the first training it had not finished,
//! and a wider sweep later trains only what is new.

use std::path::{Path, PathBuf};

use sieve_schemas::layout;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{io_err, Result};
use crate::input::FileInfo;

/// The work directory of one output.
#[derive(Debug)]
pub struct WorkDir {
    dir: PathBuf,
}

/// A file's identity: path, version (size, modification time) and place in
/// the input, as a hash.
pub fn file_identity(file: &FileInfo) -> String {
    let text = format!("{}|{}|{}", file.path.display(), file.version, file.first_pos);
    format!("{:016x}", xxh3_64(text.as_bytes()))
}

/// A fingerprint of a job from the parts that decide its results.
pub fn fingerprint(parts: &[String]) -> String {
    format!("{:016x}", xxh3_64(parts.join("\n").as_bytes()))
}

const FINGERPRINT_FILE: &str = "fingerprint";

impl WorkDir {
    /// Opens (or creates) the work directory of `target`, emptying it when it
    /// was made for another job.
    pub fn open(target: &Path, fingerprint: &str) -> Result<Self> {
        let (parent, name) = crate::staging::parent_and_name(target);
        let dir = parent.join(format!(".{name}.work"));
        let stamp = dir.join(FINGERPRINT_FILE);
        let found = std::fs::read_to_string(&stamp).ok();
        if dir.exists() && found.as_deref() != Some(fingerprint) {
            crate::log::info(
                "resume",
                "emptied the work directory of another job",
                serde_json::json!({"dir": dir, "was": found, "now": fingerprint}),
            );
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        std::fs::create_dir_all(dir.join("scores")).map_err(io_err(&dir))?;
        std::fs::write(&stamp, fingerprint).map_err(io_err(&stamp))?;
        Ok(Self { dir })
    }

    /// Where the trained proxy lives once complete.
    pub fn proxy_dir(&self) -> PathBuf {
        layout::proxy(&self.dir)
    }

    /// Where cross-fitting's proxy of fold `k` lives once complete.
    pub fn fold_proxy_dir(&self, k: usize) -> PathBuf {
        self.dir.join(format!("fold-{k}"))
    }

    /// `sieve eval`'s finished target trainings, one small JSON file each.
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.join("targets")
    }

    /// Cross-fitting's out-of-sample probabilities, once complete.
    pub fn out_of_sample(&self) -> PathBuf {
        self.dir.join("out-of-sample.parquet")
    }

    /// A temporary name to build something before renaming it into place.
    pub fn temporary(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.tmp-{}", std::process::id()))
    }

    /// The scores shard of `file`.
    pub fn shard(&self, file: &FileInfo) -> PathBuf {
        self.dir.join("scores").join(format!("part-{}.parquet", file_identity(file)))
    }

    /// Removes every file of the shards directory not named in `names`: the
    /// shards of a run that split the input otherwise (a local run has one
    /// shard per file, a cluster run one per row group) and the temporary
    /// files of an interrupted one.
    pub fn retain_shards(&self, names: &[String]) -> Result<()> {
        let dir = self.shards_dir();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let known = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.iter().any(|m| m == n));
            if !known {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// The directory of all shards.
    pub fn shards_dir(&self) -> PathBuf {
        self.dir.join("scores")
    }

    /// Removes the work directory (the job is committed).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir))
    }
}

/// Renames `from` to `to`, the step that makes a finished piece visible.
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_err(to))
}
