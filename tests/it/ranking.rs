use std::collections::{HashMap, HashSet};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float32Type, Int64Type, UInt64Type};

use std::path::Path;

use crate::util::{pruned, read_parquet, sieve_ok, truth};

/// Ids of the `fraction` of rows with the highest `score` in `scores`.
fn top_ids(scores: &Path, score: &str, fraction: f64) -> Vec<i64> {
    let scores = read_parquet(scores);
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec();
    let values = scores.column_by_name(score).unwrap().as_primitive::<Float32Type>().values().to_vec();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let n = (ids.len() as f64 * fraction).round() as usize;
    order[..n].iter().map(|&i| ids[i]).collect()
}

/// The margin the ranking tests allow below the figures the README gives:
/// 2.5% of the flipped labels (3 of shapes' 120, 5 of reviews' 200), for
/// float sums that round differently on another CPU's kernels.
fn margin(flipped: usize) -> usize {
    flipped.div_ceil(40)
}

/// Asserts that the top 10% of rows by `score` hold within [`margin`] of
/// the flipped labels the README reports for each fixture (shapes, reviews).
fn assert_flipped_ranked_hard(score: &str, published: [usize; 2]) {
    for (fixture, expected) in ["shapes", "reviews"].into_iter().zip(published) {
        let flipped: HashSet<i64> = truth(fixture).flipped.into_iter().collect();
        let top: HashSet<i64> = top_ids(&pruned(fixture).join("scores.parquet"), score, 0.10).into_iter().collect();
        let found = flipped.intersection(&top).count();
        assert!(
            found + margin(flipped.len()) >= expected,
            "{fixture}: top 10% by {score} holds {found}/{} flipped labels; the README gives {expected}",
            flipped.len()
        );
    }
}

// The README's results table: shapes 120/120, reviews 169/200.
#[test]
fn el2n_top_tenth_holds_most_flipped_labels() {
    assert_flipped_ranked_hard("el2n", [120, 169]);
}

// The README's results table: aum shapes 120/120, reviews 158/200;
// learned_epoch shapes 116/120, reviews 144/200.
#[test]
fn training_dynamics_rank_flipped_labels_hard() {
    assert_flipped_ranked_hard("aum", [120, 158]);
    assert_flipped_ranked_hard("learned_epoch", [116, 144]);
}

/// A mislabeled image lies far from its (wrong) class's prototype: measured
/// 119/120 flipped labels in the top 10% (global prototypes, which ignore
/// labels, find 17).
#[test]
fn per_class_prototypes_rank_flipped_labels_far() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("proto");
    sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        pruned("shapes").to_str().unwrap(),
        "--score",
        "prototype",
        "--prototypes",
        "class",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let flipped: HashSet<i64> = truth("shapes").flipped.into_iter().collect();
    let top: HashSet<i64> = top_ids(&out.join("scores.parquet"), "prototype", 0.10).into_iter().collect();
    let found = flipped.intersection(&top).count();
    assert!(
        found + margin(flipped.len()) >= 119,
        "top 10% by per-class prototype holds {found}/{}; the README gives 119",
        flipped.len()
    );
}

#[test]
fn exact_duplicates_share_a_content_hash_and_keep_distinct_ids() {
    for fixture in ["shapes", "reviews"] {
        let scores = read_parquet(&pruned(fixture).join("scores.parquet"));
        let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let hashes = scores.column_by_name("content_hash").unwrap().as_primitive::<UInt64Type>();
        let hash_of: HashMap<i64, u64> = ids.values().iter().zip(hashes.values()).map(|(&i, &h)| (i, h)).collect();
        let pairs = truth(fixture).duplicates;
        assert!(!pairs.is_empty());
        for (a, b) in &pairs {
            assert_ne!(a, b);
            assert_eq!(hash_of[a], hash_of[b], "{fixture}: duplicates {a} and {b} hash differently");
        }
        let distinct: HashSet<u64> = hashes.values().iter().copied().collect();
        assert_eq!(distinct.len(), ids.len() - pairs.len(), "{fixture}: only the planted duplicates collide");
    }
}

/// Confident learning on in-sample probabilities, with the label errors
/// counted from the proxy's held-out accuracy (the default): the flagged
/// rows are flipped labels, and on shapes all of them are found (the
/// issue's target, recall 0.9 at precision 0.8, is met there); the
/// fastText proxy memorises reviews' flips, so it finds fewer of them
/// (the figures the README gives, within [`margin`]). `label_quality`
/// ranks the flips as `el2n` does.
#[test]
fn label_issues_are_flipped_labels() {
    // README: shapes 120 of 120 flagged are flips (of 120), reviews 82 of 82 (of 200).
    for (fixture, published_hits, published_flagged) in [("shapes", 120, 120), ("reviews", 82, 82)] {
        let scores = read_parquet(&pruned(fixture).join("scores.parquet"));
        let flipped: HashSet<i64> = truth(fixture).flipped.into_iter().collect();
        let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let issue = scores.column_by_name("label_issue").unwrap().as_boolean();
        let flagged: Vec<i64> = (0..scores.num_rows()).filter(|&i| issue.value(i)).map(|i| ids.value(i)).collect();
        let hits = flagged.iter().filter(|id| flipped.contains(id)).count();
        let slack = margin(flipped.len());
        assert!(hits + slack >= published_hits, "{fixture}: {hits} flips among {} flagged", flagged.len());
        assert!(flagged.len() <= published_flagged + slack, "{fixture}: {} flagged", flagged.len());
        assert!(hits as f64 >= 0.9 * flagged.len() as f64, "{fixture}: precision {hits}/{}", flagged.len());
        let manifest = crate::util::manifest(pruned(fixture));
        let issues = &manifest["label_issues"];
        assert_eq!(issues["flagged"], flagged.len(), "{fixture}: the manifest counts them");
        assert_eq!(issues["in_sample"], true);
        assert_eq!(issues["counted_by"], "heldout");
        assert_eq!(issues["heldout_errors"], flagged.len(), "{fixture}: as many as the held-out estimate");
    }
    assert_flipped_ranked_hard("label_quality", [120, 169]);
}

/// `--drop-label-issues` never keeps a flagged row, whatever the strategy,
/// and each class keeps its fraction of the rows that remain.
#[test]
fn dropped_label_issues_are_never_kept() {
    let tmp = tempfile::tempdir().unwrap();
    for strategy in ["score", "random", "ccs"] {
        let out = tmp.path().join(strategy);
        let mut args = vec!["select", "--dataset", "shapes", "--scores", pruned("shapes").to_str().unwrap()];
        args.extend(["--strategy", strategy, "--keep", "0.5", "--drop-label-issues", "--quiet"]);
        args.extend(["--out", out.to_str().unwrap()]);
        sieve_ok(&args);
        let scores = read_parquet(&out.join("scores.parquet"));
        let issue = scores.column_by_name("label_issue").unwrap().as_boolean();
        let keep = scores.column_by_name("keep").unwrap().as_boolean();
        let label = scores.column_by_name("label").unwrap().as_primitive::<Int64Type>();
        assert!(issue.true_count() > 50, "{strategy}: the fixture has label issues");
        assert!(
            (0..scores.num_rows()).all(|i| !(issue.value(i) && keep.value(i))),
            "{strategy}: a flagged row is kept"
        );
        let mut per_class: HashMap<i64, (usize, usize)> = HashMap::new();
        for i in (0..scores.num_rows()).filter(|&i| !issue.value(i)) {
            let e = per_class.entry(label.value(i)).or_default();
            e.0 += 1;
            e.1 += keep.value(i) as usize;
        }
        for (class, (rows, kept)) in per_class {
            assert_eq!(kept, (rows as f64 * 0.5).round() as usize, "{strategy}, class {class}");
        }
    }
}
