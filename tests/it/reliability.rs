use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use xxhash_rust::xxh3::xxh3_64;

use crate::util::{pruned, read_parquet, root, sieve, sieve_ok};

fn hash_file(path: &Path) -> u64 {
    xxh3_64(&std::fs::read(path).unwrap())
}

fn write_batch(path: &Path, batch: &RecordBatch) {
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn the_same_input_and_seed_give_byte_identical_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("shapes");
    sieve_ok(&[
        "prune",
        "--dataset",
        "shapes",
        "--keep",
        "0.5",
        "--balance",
        "class",
        "--quiet",
        "--out",
        again.to_str().unwrap(),
    ]);
    let first = pruned("shapes");
    for file in ["scores.parquet", "proxy/model.safetensors", "data/part-00000.parquet"] {
        assert_eq!(hash_file(&first.join(file)), hash_file(&again.join(file)), "{file} differs between runs");
    }
}

#[test]
fn a_run_leaves_its_input_files_untouched() {
    let fixtures = root().join("fixtures/reviews");
    let files: Vec<PathBuf> = ["train.parquet", "validation.parquet"].iter().map(|f| fixtures.join(f)).collect();
    let before: Vec<u64> = files.iter().map(|f| hash_file(f)).collect();
    let modified: Vec<_> = files.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect();
    let tmp = tempfile::tempdir().unwrap();
    sieve_ok(&["prune", "--dataset", "reviews", "--quiet", "--out", tmp.path().join("o").to_str().unwrap()]);
    let after: Vec<u64> = files.iter().map(|f| hash_file(f)).collect();
    assert_eq!(before, after);
    let modified_after: Vec<_> = files.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect();
    assert_eq!(modified, modified_after);
}

/// Copies a directory tree (the outputs are two levels deep at most).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_killed_run_leaves_the_previous_output_intact_and_nothing_that_looks_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shapes");
    copy_dir(pruned("shapes"), &out);
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    for delay_ms in [200, 1500, 4000] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sieve"))
            .args(["prune", "--dataset", "shapes", "--keep", "0.2", "--quiet", "--out", out.to_str().unwrap()])
            .current_dir(root())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
        child.wait().unwrap();
        assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest, "killed after {delay_ms} ms");
        let complete: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &out && p.join("manifest.json").exists())
            .collect();
        assert!(complete.is_empty(), "a directory that looks complete: {complete:?}");
    }
    // The next run that finishes replaces the output and clears what the
    // killed runs left behind.
    sieve_ok(&["prune", "--dataset", "shapes", "--keep", "0.2", "--quiet", "--out", out.to_str().unwrap()]);
    assert_ne!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["shapes"], "leftovers of killed runs: {names:?}");
}

#[test]
fn a_memory_limit_makes_the_decision_spill_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // 200,000 text rows: the decision's sort holds about 10 MB of them.
    let reviews = read_parquet(&root().join("fixtures/reviews/train.parquet"));
    let big = datafusion::arrow::compute::concat_batches(&reviews.schema(), &vec![reviews.clone(); 100]).unwrap();
    let input = tmp.path().join("big.parquet");
    write_batch(&input, &big);
    let input = input.to_str().unwrap();
    let proxy = pruned("reviews").join("proxy");
    let scored = tmp.path().join("scored");
    sieve_ok(&[
        "score",
        "--input",
        input,
        "--text-column",
        "sentence",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--quiet",
        "--out",
        scored.to_str().unwrap(),
    ]);
    let select = |name: &str, limit: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "select",
            "--input",
            input,
            "--text-column",
            "sentence",
            "--scores",
            scored.to_str().unwrap(),
            "--keep",
            "0.5",
            "--no-report",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(limit);
        sieve_ok(&args);
        let m: serde_json::Value = crate::util::manifest(&out);
        (content(&out), m["selection"]["spill_count"].as_u64().unwrap())
    };
    let (unlimited, spills_unlimited) = select("unlimited", &[]);
    let (limited, spills_limited) = select("limited", &["--memory-limit", "4M"]);
    assert_eq!(spills_unlimited, 0);
    assert!(spills_limited > 0, "the decision did not spill within 4 MiB");
    assert_eq!(limited, unlimited, "spilling changed the output");
}

#[test]
fn a_truncated_parquet_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(root().join("fixtures/shapes/train.parquet")).unwrap();
    let truncated = tmp.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = sieve(&[
        "prune",
        "--input",
        truncated.to_str().unwrap(),
        "--image-column",
        "img",
        "--quiet",
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("truncated.parquet"), "{err}");
}

#[test]
fn an_empty_dataset_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = read_parquet(&root().join("fixtures/shapes/train.parquet")).slice(0, 0);
    let path = tmp.path().join("empty.parquet");
    write_batch(&path, &empty);
    let out = sieve(&[
        "prune",
        "--input",
        path.to_str().unwrap(),
        "--image-column",
        "img",
        "--quiet",
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a data error, not a usage error: {err}");
    assert!(err.contains("no rows"), "{err}");
}

#[test]
fn bad_text_rows_and_bad_labels_are_flagged_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // Text in a Binary column, so that non-UTF-8 bytes can occur.
    let texts: Vec<&[u8]> = vec![b"a fine and moving film .", b"", &[0xff, 0xfe, 0x20], b"dull", b"a good film"];
    let labels = Int64Array::from(vec![Some(1), Some(0), Some(1), None, Some(7)]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("sentence", DataType::Binary, false),
        Field::new("label", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![Arc::new(BinaryArray::from(texts)), Arc::new(labels)];
    let path = tmp.path().join("texts.parquet");
    write_batch(&path, &RecordBatch::try_new(schema, columns).unwrap());
    let proxy = pruned("reviews").join("proxy");
    let out = tmp.path().join("o");
    sieve_ok(&[
        "prune",
        "--input",
        path.to_str().unwrap(),
        "--text-column",
        "sentence",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--keep",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let errors = scores.column_by_name("error").unwrap().as_string::<i32>();
    let reasons: Vec<Option<&str>> =
        (0..errors.len()).map(|i| errors.is_valid(i).then(|| errors.value(i).split(':').next().unwrap())).collect();
    assert_eq!(reasons, [None, Some("empty_text"), Some("not_utf8"), Some("null_label"), Some("label_out_of_range")]);
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    assert_eq!((0..5).filter(|&i| keep.value(i)).collect::<Vec<_>>(), [0]);
}

/// The shapes fixture split into three files under `dir`, row 10 of the last
/// one truncated when `damaged`; images as a plain Binary column.
fn three_files(dir: &Path, damaged: bool) {
    let input = read_parquet(&root().join("fixtures/shapes/train.parquet"));
    let img = input.column_by_name("img").unwrap().as_struct();
    let bytes = img.column_by_name("bytes").unwrap().as_binary::<i32>();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("img", DataType::Binary, false),
        Field::new("label", DataType::Int64, true),
    ]));
    std::fs::create_dir_all(dir).unwrap();
    for (part, start) in [0usize, 400, 800].into_iter().enumerate() {
        let images: Vec<&[u8]> = (start..start + 400)
            .map(|i| if damaged && i == 810 { &bytes.value(i)[..20] } else { bytes.value(i) })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            input.column_by_name("id").unwrap().slice(start, 400),
            Arc::new(BinaryArray::from(images)),
            input.column_by_name("label").unwrap().slice(start, 400),
        ];
        write_batch(&dir.join(format!("part-{part}.parquet")), &RecordBatch::try_new(schema.clone(), columns).unwrap());
    }
}

#[test]
fn an_interrupted_run_resumes_with_its_proxy_and_finished_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    three_files(&data, true);
    let glob = format!("{}/*.parquet", data.display());
    let args = |out: &Path, on_error: &'static str| -> Vec<String> {
        [
            "prune",
            "--input",
            &glob,
            "--image-column",
            "img",
            "--id-column",
            "id",
            "--epochs",
            "6",
            "--batch-size",
            "64",
            "--on-error",
            on_error,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let resumed = tmp.path().join("resumed");
    // Stopped by the bad row in the third file, after training and scoring two files.
    let first = sieve(&args(&resumed, "fail"));
    assert_eq!(first.status.code(), Some(1), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(!resumed.exists());
    // A restore from backup gives the same files other modification times:
    // still the same job.
    for entry in std::fs::read_dir(&data).unwrap() {
        let file = std::fs::File::options().write(true).open(entry.unwrap().path()).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)).unwrap();
    }
    sieve_ok(&args(&resumed, "skip"));
    let m: serde_json::Value = crate::util::manifest(&resumed);
    assert_eq!(m["resumed_proxy"], true, "the proxy was not trained again");
    assert_eq!(m["scoring"]["reused_shards"], 2, "two files were not scored again");
    assert!(m["seconds"]["train"].is_null());
    // The same job without the interruption gives the same bytes.
    let fresh = tmp.path().join("fresh");
    sieve_ok(&args(&fresh, "skip"));
    for file in ["scores.parquet", "proxy/model.safetensors"] {
        assert_eq!(hash_file(&resumed.join(file)), hash_file(&fresh.join(file)), "{file}");
    }
    let names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".work")), "work directories are removed: {names:?}");
}

/// The files that decide an output's content, with their hashes: the
/// manifest and report also carry timings, so they differ between runs.
fn content(dir: &Path) -> Vec<(String, u64)> {
    let mut files = vec![("scores.parquet".to_string(), hash_file(&dir.join("scores.parquet")))];
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let path = entry.unwrap().path();
        files.push((format!("data/{}", path.file_name().unwrap().to_string_lossy()), hash_file(&path)));
    }
    files.sort();
    files
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_commit_stopped_at_any_step_leaves_a_complete_output_and_the_next_run_recovers() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let select = |keep: &str, out: &Path| -> Vec<String> {
        [
            "select",
            "--dataset",
            "shapes",
            "--scores",
            scored.to_str().unwrap(),
            "--keep",
            keep,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: &[String]| sieve_ok(args);
    let new_reference = tmp.path().join("new");
    run(&select("0.3", &new_reference));
    let new = content(&new_reference);
    let parent = tmp.path().join("jobs");
    let out = parent.join("out");
    run(&select("0.5", &out));
    let old = content(&out);
    assert_ne!(old, new);
    // Where each step leaves the output: before the swap the old one, after it the new one.
    for (step, expected) in [("commit:staged", &old), ("commit:swapped", &new), ("commit:done", &new)] {
        let status = Command::new(env!("CARGO_BIN_EXE_sieve"))
            .args(select("0.3", &out))
            .env("SIEVE_FAULT_POINT", step)
            .current_dir(root())
            .status()
            .unwrap();
        assert_eq!(status.code(), None, "the job was killed at {step}");
        assert_eq!(&content(&out), expected, "the output after a kill at {step}");
        let manifest: serde_json::Value = crate::util::manifest(&out);
        let keep = if expected == &old { 0.5 } else { 0.3 };
        assert_eq!(manifest["config"]["select"]["keep"], keep, "the manifest belongs to the same output ({step})");
        // The next run commits and clears what the killed one left.
        run(&select("0.5", &out));
        assert_eq!(content(&out), old);
        assert_eq!(entries(&parent), ["out"], "leftovers after a kill at {step}");
    }
}

#[test]
fn a_run_killed_while_scoring_resumes_and_gives_the_bytes_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Many small files, so that scoring publishes shards one by one over a while.
    let input = read_parquet(&root().join("fixtures/shapes/train.parquet"));
    std::fs::create_dir_all(&data).unwrap();
    let files = 24;
    let per_file = input.num_rows() / files;
    for part in 0..files {
        write_batch(&data.join(format!("part-{part:02}.parquet")), &input.slice(part * per_file, per_file));
    }
    let glob = format!("{}/*.parquet", data.display());
    let args = |out: &Path| -> Vec<String> {
        [
            "prune",
            "--input",
            &glob,
            "--image-column",
            "img",
            "--id-column",
            "id",
            "--epochs",
            "2",
            "--quiet",
            "--keep",
            "0.5",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let resumed = tmp.path().join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sieve")).args(args(&resumed)).current_dir(root()).spawn().unwrap();
    // Kill it as soon as the work directory holds a published shard.
    let shards = tmp.path().join(".resumed.work/scores");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let published = loop {
        let count = std::fs::read_dir(&shards)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("part-")).count())
            .unwrap_or(0);
        if count > 0 || std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break count;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(published > 0, "no shard was published within the deadline");
    assert!(!resumed.exists(), "the job was killed before it committed");
    sieve_ok(&args(&resumed));
    let m: serde_json::Value = crate::util::manifest(&resumed);
    assert_eq!(m["resumed_proxy"], true, "the proxy was not trained again");
    let reused = m["scoring"]["reused_shards"].as_u64().unwrap();
    assert!(reused >= 1 && reused < files as u64, "reused {reused} shards of {files}");
    let fresh = tmp.path().join("fresh");
    sieve_ok(&args(&fresh));
    assert_eq!(content(&resumed), content(&fresh), "scores.parquet and data/ equal an uninterrupted run's");
}
