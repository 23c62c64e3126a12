use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A child process (a server a test started) killed and reaped when
/// dropped, so a failing test leaves nothing running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `sieve` with `args` (`&str`s or `String`s) from the repository root.
pub fn sieve<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sieve")).args(args).current_dir(root()).output().expect("the sieve binary runs")
}

/// Runs `sieve` and fails the test, showing stderr, unless it succeeds.
pub fn sieve_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Output {
    let out = sieve(args);
    assert!(out.status.success(), "sieve {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// All rows of Parquet files (a file, or every file of a directory) as one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut batches = Vec::new();
    let mut schema = None;
    for f in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap()).unwrap();
        schema.get_or_insert_with(|| builder.schema().clone());
        batches.extend(builder.build().unwrap().map(|b| b.unwrap()));
    }
    concat_batches(&schema.unwrap(), &batches).unwrap()
}

/// A JSON file (eval.json, proxy.json), parsed.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The manifest.json of the output `dir`, parsed.
pub fn manifest(dir: &Path) -> serde_json::Value {
    json(&dir.join("manifest.json"))
}

/// The Arrow schema metadata of a Parquet file.
pub fn parquet_metadata(path: &Path) -> HashMap<String, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder.schema().metadata().clone()
}

/// A fixture's ground truth (`fixtures/<name>/truth.json`).
pub struct Truth {
    pub flipped: Vec<i64>,
    pub duplicates: Vec<(i64, i64)>,
}

pub fn truth(fixture: &str) -> Truth {
    let text = std::fs::read_to_string(root().join("fixtures").join(fixture).join("truth.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let flipped = v["flipped"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let duplicates =
        v["duplicates"].as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap())).collect();
    Truth { flipped, duplicates }
}

/// Output directories of one `sieve prune` per fixture, shared by the tests
/// of this binary (training a proxy is the slow part).
pub fn pruned(fixture: &'static str) -> &'static Path {
    static SHAPES: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static REVIEWS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = match fixture {
        "shapes" => &SHAPES,
        "reviews" => &REVIEWS,
        other => panic!("no fixture {other}"),
    };
    &cell
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join(fixture);
            sieve_ok(&[
                "prune",
                "--dataset",
                fixture,
                "--keep",
                "0.5",
                "--balance",
                "class",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ]);
            (tmp, out)
        })
        .1
}

/// A test's dependency outside Rust (moto, Chromium, a font) is missing.
/// Under CI (`CI=true`, which `.ci/run` sets, as most CI services do) that
/// fails the test, since CI installs them; elsewhere the test says on stderr
/// that it skips, and why. Returns so that the caller can `return`.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: {why} (CI=true: a missing dependency fails the test)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// The font the plots are drawn with, as the report and eval look for it.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Whether the plots can be drawn here: else [`skip`]s `test`.
pub fn have_font(test: &str) -> bool {
    let found = std::env::var_os("SIEVE_FONT").is_some() || Path::new(FONT).is_file();
    if !found {
        skip(test, &format!("no {FONT} to draw plots with (apt-get install fonts-dejavu-core)"));
    }
    found
}
