//! The output directory of a job: the name of every file and directory in
//! it, so jobs, staging, resume, the object-store sync, `sieve sql` and the
//! report agree on one layout.
//!
//! ```text
//! <out>/data/part-*.parquet   kept rows (train, prune, select)
//! <out>/scores.parquet        every row: id, label, scores, keep
//! <out>/proxy/                the trained proxy (model.safetensors, proxy.json, dynamics.parquet)
//! <out>/manifest.json         how the output was made
//! <out>/report.html           the human-readable report
//! ```

use std::path::{Path, PathBuf};

/// The kept rows' directory.
pub const DATA_DIR: &str = "data";
/// Every row's scores.
pub const SCORES_FILE: &str = "scores.parquet";
/// The proxy trained by the job.
pub const PROXY_DIR: &str = "proxy";
/// The job's record.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The job's report.
pub const REPORT_FILE: &str = "report.html";

/// `out/data`.
pub fn data(out: &Path) -> PathBuf {
    out.join(DATA_DIR)
}

/// `out/scores.parquet`.
pub fn scores(out: &Path) -> PathBuf {
    out.join(SCORES_FILE)
}

/// `out/proxy`.
pub fn proxy(out: &Path) -> PathBuf {
    out.join(PROXY_DIR)
}

/// `out/folds/fold-<k>`: cross-fitting's proxy that did not train on fold `k`.
pub fn fold_proxy(out: &Path, k: usize) -> PathBuf {
    out.join("folds").join(format!("fold-{k}"))
}

/// `out/manifest.json`.
pub fn manifest(out: &Path) -> PathBuf {
    out.join(MANIFEST_FILE)
}

/// `out/report.html`.
pub fn report(out: &Path) -> PathBuf {
    out.join(REPORT_FILE)
}

/// The scores a user names: a `scores.parquet`, or an output directory
/// holding one.
pub fn scores_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        scores(path)
    } else {
        path.to_path_buf()
    }
}
