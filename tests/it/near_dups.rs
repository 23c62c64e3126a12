//! Near-duplicates: planted pairs of known kinds are found, few others
//! are, the evidence is kept, and `--drop-near-dups` keeps one row of each
//! component.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float32Type, Int32Type, Int64Type};
use sieve_fixtures::{write_near_dup_images, write_near_dup_text, Planted};

use crate::util::{manifest, read_parquet, sieve_ok};

/// `near_dup_of` of every flagged row, by id.
fn flagged(out: &Path) -> HashMap<i64, i64> {
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let of = scores.column_by_name("near_dup_of").unwrap().as_primitive::<Int64Type>();
    (0..scores.num_rows()).filter(|&i| of.is_valid(i)).map(|i| (ids.value(i), of.value(i))).collect()
}

/// Runs `command` (`prune`, or `select` with `--scores`) on `dir`'s train
/// split with the input column `kind column`, keeping half, into `dir/name`.
fn run(command: &str, dir: &Path, kind: &str, column: &str, extra: &[&str], name: &str) -> PathBuf {
    let out = dir.join(name);
    let input = dir.join("train.parquet");
    let mut args = vec![command, "--input", input.to_str().unwrap(), kind, column, "--label-column", "label"];
    args.extend(["--id-column", "id", "--keep", "0.5", "--no-report", "--quiet"]);
    if command == "prune" {
        args.extend(["--epochs", "1"]);
    }
    args.extend(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    sieve_ok(&args);
    out
}

/// `prune` into `dir/name`.
fn prune(dir: &Path, kind: &str, column: &str, extra: &[&str]) -> PathBuf {
    run("prune", dir, kind, column, extra, &format!("out-{}", extra.len()))
}

/// Every near planted copy points at its original, no far one is flagged,
/// and no other row is (the planted rows are the only near pairs).
fn assert_planted_found(planted: &[Planted], found: &HashMap<i64, i64>, what: &str) {
    for p in planted {
        match p.near {
            true => {
                assert_eq!(found.get(&p.copy), Some(&p.original), "{what}: {} ({} of {})", p.kind, p.copy, p.original)
            }
            false => assert!(!found.contains_key(&p.copy), "{what}: far copy {} ({}) flagged", p.copy, p.kind),
        }
    }
    let near: HashSet<i64> = planted.iter().filter(|p| p.near).map(|p| p.copy).collect();
    let others: Vec<&i64> = found.keys().filter(|id| !near.contains(id)).collect();
    assert!(others.is_empty(), "{what}: rows flagged that were not planted: {others:?}");
}

#[test]
fn planted_text_near_duplicates_are_found_with_their_jaccard() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_text(dir.path(), 7).unwrap();
    let out = prune(dir.path(), "--text-column", "text", &[]);
    let found = flagged(&out);
    assert_planted_found(&planted, &found, "text");
    let scores = read_parquet(&out.join("scores.parquet"));
    let jaccard = scores.column_by_name("near_dup_jaccard").unwrap().as_primitive::<Float32Type>();
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let by_id: HashMap<i64, f32> =
        (0..scores.num_rows()).filter(|&i| jaccard.is_valid(i)).map(|i| (ids.value(i), jaccard.value(i))).collect();
    for p in planted.iter().filter(|p| p.near) {
        let j = by_id[&p.copy];
        // True Jaccard: 95/101 (one word replaced), 97/98, 1 (case only).
        let truth = match p.kind {
            "one word replaced" => 95.0 / 101.0,
            "last word dropped" => 97.0 / 98.0,
            _ => 1.0,
        };
        assert!((j - truth).abs() <= 0.12, "{}: estimated {j}, true {truth}", p.kind);
        if p.kind == "case changed" {
            assert_eq!(j, 1.0, "lowercased shingles are equal");
        }
    }
    let m = manifest(&out);
    assert_eq!(m["near_dups"]["flagged"], 90);
    assert_eq!(m["near_dups"]["bands"], 9, "datasketch's banding for 0.8 and 128 permutations");
    assert_eq!(m["near_dups"]["dropped"], false);
    // Not dropping: a copy can be kept beside its original.
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let kept: HashSet<i64> = (0..scores.num_rows()).filter(|&i| keep.value(i)).map(|i| ids.value(i)).collect();
    assert!(planted.iter().filter(|p| p.near).any(|p| kept.contains(&p.copy) && kept.contains(&p.original)));
}

#[test]
fn dropped_near_duplicates_keep_one_row_of_each_component() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_text(dir.path(), 7).unwrap();
    let out = prune(dir.path(), "--text-column", "text", &["--drop-near-dups", "--strategy", "random"]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let kept: HashSet<i64> = (0..scores.num_rows()).filter(|&i| keep.value(i)).map(|i| ids.value(i)).collect();
    for p in planted.iter().filter(|p| p.near) {
        assert!(!kept.contains(&p.copy), "{}: copy {} kept", p.kind, p.copy);
    }
    // Half of what remains once the 90 copies are out (230 rows of 320), per class.
    assert!(kept.len().abs_diff(115) <= 1, "{} kept", kept.len());
    assert_eq!(manifest(&out)["near_dups"]["dropped"], true);
}

#[test]
fn planted_image_near_duplicates_are_found_within_the_bits() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_images(dir.path(), 7).unwrap();
    let out = prune(dir.path(), "--image-column", "img", &[]);
    let found = flagged(&out);
    assert_planted_found(&planted, &found, "images");
    let scores = read_parquet(&out.join("scores.parquet"));
    let bits = scores.column_by_name("near_dup_bits").unwrap().as_primitive::<Int32Type>();
    assert!((0..scores.num_rows()).filter(|&i| bits.is_valid(i)).all(|i| (0..=6).contains(&bits.value(i))));
    assert_eq!(manifest(&out)["near_dups"]["hash"], "phash");
    // A stricter distance, decided again from the same scores: fewer rows.
    let strict = run(
        "select",
        dir.path(),
        "--image-column",
        "img",
        &["--scores", out.to_str().unwrap(), "--near-dup-bits", "1"],
        "strict",
    );
    let strict_found = flagged(&strict);
    assert!(strict_found.len() < found.len());
    assert!(strict_found.iter().all(|(id, of)| found.get(id) == Some(of)));
}
