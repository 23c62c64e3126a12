//! Near-duplicates and leaks: planted pairs of known kinds are found, few
//! others are, the evidence is kept, `--drop-near-dups` keeps one row of
//! each component (`label`: of each label in it), and planted copies of
//! training rows in the test split are flagged as leaks of the right kind
//! (and `--drop-leaks` keeps none).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float32Type, Int32Type, Int64Type};
use sieve_fixtures::Plants;
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
    let planted = write_near_dup_text(dir.path(), 7).unwrap().pairs;
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
    assert_eq!(m["near_dups"]["dropped"], "none");
    // Not dropping: a copy can be kept beside its original.
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let kept: HashSet<i64> = (0..scores.num_rows()).filter(|&i| keep.value(i)).map(|i| ids.value(i)).collect();
    assert!(planted.iter().filter(|p| p.near).any(|p| kept.contains(&p.copy) && kept.contains(&p.original)));
}

#[test]
fn dropped_near_duplicates_keep_one_row_of_each_component() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_text(dir.path(), 7).unwrap().pairs;
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
    assert_eq!(manifest(&out)["near_dups"]["dropped"], "all");
}

/// `(filter, rows)` of the manifest's path from input rows to kept rows.
fn removed(m: &serde_json::Value) -> Vec<(String, u64)> {
    m["selection"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["filter"].as_str().unwrap().to_string(), r["rows"].as_u64().unwrap()))
        .collect()
}

#[test]
fn near_duplicates_dropped_per_label_keep_the_copies_that_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_text(dir.path(), 7).unwrap().pairs;
    let train = read_parquet(&dir.path().join("train.parquet"));
    let labels = train.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    let (same, other): (Vec<&Planted>, Vec<&Planted>) = planted
        .iter()
        .filter(|p| p.near)
        .partition(|p| labels.value(p.copy as usize) == labels.value(p.original as usize));
    assert!(!same.is_empty() && !other.is_empty(), "the fixture's random labels give both kinds");
    let out = prune(dir.path(), "--text-column", "text", &["--drop-near-dups", "label", "--strategy", "random"]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let kept: HashSet<i64> = (0..scores.num_rows()).filter(|&i| keep.value(i)).map(|i| ids.value(i)).collect();
    for p in &same {
        assert!(!kept.contains(&p.copy), "{}: same-label copy {} kept", p.kind, p.copy);
    }
    // The filter removed exactly the same-label copies; the selection keeps
    // half of the rest.
    let m = manifest(&out);
    assert_eq!(m["near_dups"]["dropped"], "label");
    let removed = removed(&m);
    assert!(removed.contains(&("near duplicates".to_string(), same.len() as u64)), "{removed:?}");
    let left = 320 - same.len();
    assert!(kept.len().abs_diff(left / 2) <= 1, "{} kept of {left}", kept.len());
}

#[test]
fn planted_image_near_duplicates_are_found_within_the_bits() {
    let dir = tempfile::tempdir().unwrap();
    let planted = write_near_dup_images(dir.path(), 7).unwrap().pairs;
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

/// The leaks of `out`'s scores, by training id: (kind, test id, distance).
fn leaks(out: &Path) -> HashMap<i64, (String, i64, f32)> {
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let kind = scores.column_by_name("leak_kind").unwrap().as_string::<i32>();
    let of = scores.column_by_name("leak_of").unwrap().as_primitive::<Int64Type>();
    let distance = scores.column_by_name("leak_distance").unwrap().as_primitive::<Float32Type>();
    (0..scores.num_rows())
        .filter(|&i| kind.is_valid(i))
        .map(|i| (ids.value(i), (kind.value(i).to_string(), of.value(i), distance.value(i))))
        .collect()
}

/// Every planted exact or near leak is flagged with its kind and test row,
/// within `most` of distance (near), no far one is, nor any other row; the
/// manifest counts them.
fn assert_leaks_found(plants: &Plants, out: &Path, most: f32) {
    let found = leaks(out);
    for l in &plants.leaks {
        match (l.near, found.get(&l.original)) {
            (false, None) => {}
            (false, Some(f)) => panic!("far copy of {} flagged: {f:?}", l.original),
            (true, None) => panic!("{} of {} (test {}) not flagged", l.kind, l.original, l.copy),
            (true, Some((kind, of, distance))) => {
                assert_eq!(*of, l.copy, "{} of {}", l.kind, l.original);
                let (want, exact) = if l.kind == "exact copy" { ("exact", true) } else { ("near", false) };
                assert_eq!(kind, want, "{} of {}", l.kind, l.original);
                assert!(if exact { *distance == 0.0 } else { (0.0..=most).contains(distance) }, "{l:?}: {distance}");
            }
        }
    }
    assert_eq!(found.len(), 40, "only the 20 exact and 20 near leaks: {found:?}");
    let m = manifest(out);
    assert_eq!((m["leaks"]["exact"].as_u64(), m["leaks"]["near"].as_u64()), (Some(20), Some(20)));
    assert_eq!(m["leaks"]["rows"], 80);
    assert_eq!(m["leaks"]["leaked"], 40, "each planted leak copies its own test row");
}

#[test]
fn planted_text_leaks_are_flagged_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let plants = write_near_dup_text(dir.path(), 7).unwrap();
    let test = dir.path().join("test.parquet");
    let extra = ["--heldout", test.to_str().unwrap(), "--drop-leaks", "--strategy", "random"];
    let out = prune(dir.path(), "--text-column", "text", &extra);
    // One word replaced of 100: true Jaccard 95/101, distance about 0.06.
    assert_leaks_found(&plants, &out, 0.2);
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let found = leaks(&out);
    assert!((0..scores.num_rows()).all(|i| !(keep.value(i) && found.contains_key(&ids.value(i)))), "a leak kept");
    let m = manifest(&out);
    assert_eq!(m["leaks"]["dropped"], true);
    // From the input rows to the kept ones: no bad rows, the 40 leaks, then
    // the selection's half of the other 280.
    let removed = removed(&m);
    let kept = m["selection"]["kept"].as_u64().unwrap();
    assert_eq!(removed[..2], [("bad rows".to_string(), 0), ("leaks".to_string(), 40)]);
    assert_eq!(removed[2].0, "selection");
    assert_eq!(removed.iter().map(|r| r.1).sum::<u64>() + kept, 320);
    assert!(kept.abs_diff(140) <= 1, "{kept} kept");
}

#[test]
fn planted_image_leaks_are_flagged_against_a_given_split() {
    let dir = tempfile::tempdir().unwrap();
    let plants = write_near_dup_images(dir.path(), 7).unwrap();
    let test = dir.path().join("test.parquet");
    let out = prune(dir.path(), "--image-column", "img", &["--against", test.to_str().unwrap()]);
    assert_leaks_found(&plants, &out, 6.0);
    assert_eq!(manifest(&out)["leaks"]["against"], test.to_str().unwrap());
    // The report's duplicates section: counts, and pairs side by side.
    let report = dir.path().join("report");
    let (train, out_dir) = (dir.path().join("train.parquet"), out.to_str().unwrap());
    let args = ["select", "--input", train.to_str().unwrap(), "--image-column", "img", "--id-column", "id"];
    crate::util::sieve_ok(
        &[
            &args[..],
            &["--scores", out_dir, "--against", test.to_str().unwrap(), "--quiet", "--out", report.to_str().unwrap()],
        ]
        .concat(),
    );
    let page = std::fs::read_to_string(report.join("report.html")).unwrap();
    let section = &page[page.find("<section id=\"duplicates\">").expect("a duplicates section")..];
    let section = &section[..section.find("</section>").unwrap()];
    for expected in ["<td>near duplicates</td><td class=\"n\">90</td>", "<td>leaks: exact</td><td class=\"n\">20</td>"]
    {
        assert!(section.contains(expected), "{expected} in {section:.2000}");
    }
    // 12 near-duplicate and 12 leak pairs, each of two pictures.
    assert_eq!(section.matches("<figure").count(), 24);
    assert_eq!(section.matches("<img").count(), 48);
    // Without a held-out split there is nothing to drop leaks against.
    let err = crate::util::sieve(&[
        "prune",
        "--input",
        dir.path().join("train.parquet").to_str().unwrap(),
        "--image-column",
        "img",
        "--drop-leaks",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("--drop-leaks"), "{}", String::from_utf8_lossy(&err.stderr));
}

/// `--semantic-leaks`: each test image flipped left to right, which no
/// perceptual hash joins, is the nearest test row of its original by the
/// proxy's features, and a semantic leak of it (`leak_distance` = 1 -
/// cosine); the exact and near ones keep their hash kinds; `sieve select`
/// re-decides a stricter distance from the same scores (embedding the test
/// rows with the published proxy), and without a proxy to embed with it
/// refuses. This fixture's proxy (one epoch, random labels) puts every pair
/// of scenes within 0.04 of each other, so the distance separates the
/// mirrored copies only in rank: theirs are below the others' median.
#[test]
fn mirrored_image_leaks_are_semantic_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let plants = write_near_dup_images(dir.path(), 7).unwrap();
    let test = dir.path().join("test.parquet");
    let against = ["--against", test.to_str().unwrap()];
    let out = prune(dir.path(), "--image-column", "img", &[&against[..], &["--semantic-leaks", "0.05"]].concat());
    let found = leaks(&out);
    let mirrored_ids: HashSet<i64> =
        plants.leaks.iter().filter(|l| l.kind == "mirrored copy").map(|l| l.original).collect();
    let mut others: Vec<f32> =
        found.iter().filter(|(id, f)| f.0 == "semantic" && !mirrored_ids.contains(id)).map(|(_, f)| f.2).collect();
    let mut mirrored = Vec::new();
    for l in &plants.leaks {
        let (kind, of, distance) = found.get(&l.original).unwrap_or_else(|| panic!("{l:?} not flagged"));
        match l.kind {
            "mirrored copy" => {
                assert_eq!((kind.as_str(), *of), ("semantic", l.copy), "{l:?}: its own mirror image is nearest");
                mirrored.push(*distance);
            }
            "exact copy" => assert_eq!(kind, "exact"),
            "near copy" => assert_eq!(kind, "near", "a hash match is stronger evidence than an embedding's"),
            _ => {}
        }
    }
    others.sort_by(f32::total_cmp);
    let median = others[others.len() / 2];
    assert!(mirrored.iter().all(|&d| d < median), "mirrored {mirrored:?}, the others' median {median}");
    let m = manifest(&out);
    assert_eq!(m["leaks"]["semantic"].as_u64(), Some(20 + others.len() as u64));
    // A stricter distance, decided again from the same scores.
    let strict = run(
        "select",
        dir.path(),
        "--image-column",
        "img",
        &[&against[..], &["--scores", out.to_str().unwrap(), "--semantic-leaks", "0.008"]].concat(),
        "strict",
    );
    let semantic = |f: &HashMap<i64, (String, i64, f32)>, below: f32| -> HashSet<(i64, i64)> {
        f.iter().filter(|(_, l)| l.0 == "semantic" && l.2 < below).map(|(id, l)| (*id, l.1)).collect()
    };
    let (before, after) = (semantic(&found, 0.008), semantic(&leaks(&strict), 1.0));
    assert!(!after.is_empty() && after.len() < found.len());
    assert_eq!(after, before, "the same pairs as the first run's within 0.008");
    // Scores without their job's manifest: nothing says how to embed the test rows.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(out.join("scores.parquet"), bare.join("scores.parquet")).unwrap();
    let train = dir.path().join("train.parquet");
    let err = crate::util::sieve(&[
        "select",
        "--input",
        train.to_str().unwrap(),
        "--image-column",
        "img",
        "--scores",
        bare.to_str().unwrap(),
        "--against",
        test.to_str().unwrap(),
        "--semantic-leaks",
        "0.01",
        "--quiet",
        "--out",
        dir.path().join("refused").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert_eq!(err.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--semantic-leaks"), "{stderr}");
}
