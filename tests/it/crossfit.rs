use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float32Type, Int32Type, Int64Type};
use sieve::crossfit::Folds;

use crate::util::{manifest, read_parquet, sieve_ok, truth};

/// `sieve prune --folds 2` of each fixture, shared by this module's tests.
fn cross_fitted(fixture: &'static str) -> &'static Path {
    static OUTS: OnceLock<(tempfile::TempDir, HashMap<&'static str, PathBuf>)> = OnceLock::new();
    let (_, outs) = OUTS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let outs = ["shapes", "reviews"]
            .into_iter()
            .map(|name| {
                let out = tmp.path().join(name);
                let args = ["prune", "--dataset", name, "--folds", "2", "--quiet", "--out", out.to_str().unwrap()];
                sieve_ok(&args);
                (name, out)
            })
            .collect();
        (tmp, outs)
    });
    &outs[fixture]
}

/// Each row's `probs`, by position.
fn probs_by_row(scores: &RecordBatch) -> HashMap<i64, Vec<f32>> {
    let rows = scores.column_by_name("row").unwrap().as_primitive::<Int64Type>();
    let probs = scores.column_by_name("probs").unwrap().as_fixed_size_list();
    (0..scores.num_rows())
        .filter(|&i| probs.is_valid(i))
        .map(|i| (rows.value(i), probs.value(i).as_primitive::<Float32Type>().values().to_vec()))
        .collect()
}

/// The property cross-fitting exists for: every row's probabilities come
/// from a fold proxy that never trained on it. Each published fold proxy's
/// training dynamics are empty exactly on its fold, and rescoring a fold
/// with its proxy gives back, bit for bit, the probabilities in scores.parquet.
#[test]
fn cross_fitted_probabilities_never_come_from_a_proxy_trained_on_the_row() {
    let out = cross_fitted("shapes");
    let m = manifest(out);
    assert_eq!(m["cross_fit"]["folds"], 2);
    assert_eq!(m["label_issues"]["in_sample"], false);
    let folds = Folds::new(2, m["config"]["train"]["seed"].as_u64().unwrap()).unwrap();
    let scores = read_parquet(&out.join("scores.parquet"));
    let rows = scores.column_by_name("row").unwrap().as_primitive::<Int64Type>();
    let fold = scores.column_by_name("fold").unwrap().as_primitive::<Int32Type>();
    let error = scores.column_by_name("error").unwrap();
    for i in 0..scores.num_rows() {
        assert_eq!(fold.value(i) as usize, folds.of(rows.value(i) as u64), "row {}'s fold", rows.value(i));
    }
    let ours = probs_by_row(&scores);
    let tmp = tempfile::tempdir().unwrap();
    for k in 0..2 {
        let proxy = out.join("folds").join(format!("fold-{k}"));
        let dynamics = read_parquet(&proxy.join("dynamics.parquet"));
        let (seen_rows, forgetting) = (
            dynamics.column_by_name("row").unwrap().as_primitive::<Int64Type>(),
            dynamics.column_by_name("forgetting").unwrap(),
        );
        let seen: HashSet<i64> =
            (0..dynamics.num_rows()).filter(|&i| forgetting.is_valid(i)).map(|i| seen_rows.value(i)).collect();
        for i in 0..scores.num_rows() {
            let row = rows.value(i);
            let trainable = error.is_null(i) && fold.value(i) as usize != k;
            assert_eq!(seen.contains(&row), trainable, "fold proxy {k} and row {row} (fold {})", fold.value(i));
        }
        let rescored = tmp.path().join(format!("fold-{k}"));
        let args = ["score", "--dataset", "shapes", "--proxy-dir", proxy.to_str().unwrap(), "--quiet"];
        sieve_ok(&[&args[..], &["--out", rescored.to_str().unwrap()]].concat());
        let theirs = probs_by_row(&read_parquet(&rescored.join("scores.parquet")));
        let mut compared = 0;
        for i in (0..scores.num_rows()).filter(|&i| fold.value(i) as usize == k && error.is_null(i)) {
            let row = rows.value(i);
            assert_eq!(ours[&row], theirs[&row], "row {row}: probs are fold proxy {k}'s");
            compared += 1;
        }
        assert!(compared > 500, "fold {k} holds {compared} rows");
    }
}

/// Rows flagged as label issues, and how many of them are flipped labels.
fn flagged_and_hits(out: &Path, fixture: &str) -> (usize, usize) {
    let scores = read_parquet(&out.join("scores.parquet"));
    let flipped: HashSet<i64> = truth(fixture).flipped.into_iter().collect();
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let issue = scores.column_by_name("label_issue").unwrap().as_boolean();
    let flagged: Vec<i64> = (0..scores.num_rows()).filter(|&i| issue.value(i)).map(|i| ids.value(i)).collect();
    (flagged.len(), flagged.iter().filter(|id| flipped.contains(id)).count())
}

/// Asserts that the label issues in `dir` find at least `recall` of the
/// fixture's flipped labels at least at `precision`; `how` names the run.
fn assert_found(dir: &Path, fixture: &str, how: &str, (recall, precision): (f64, f64)) {
    let flips = truth(fixture).flipped.len() as f64;
    let (flagged, hits) = flagged_and_hits(dir, fixture);
    let what = format!("{fixture}, {how}: {hits} flips among {flagged} flagged, of {flips}");
    assert!(hits as f64 >= recall * flips && hits as f64 >= precision * flagged as f64, "{what}");
}

/// The issue's target on reviews, recall 0.9 at precision 0.8, holds with
/// ten folds of a proxy trained ten epochs (fastText's five suit SST-2's
/// 67,349 rows; on reviews' 1,800 a fold proxy reaches 95.2% held-out
/// accuracy with ten, 93.6% with five), counted by the confident joint: 182
/// flips among 221 flagged (of 200). Held-out count: 174 among 202.
#[test]
fn ten_fold_label_issues_meet_the_target_on_reviews() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reviews");
    let args = ["prune", "--dataset", "reviews", "--folds", "10", "--epochs", "10", "--issue-count", "joint"];
    sieve_ok(&[&args[..], &["--quiet", "--out", out.to_str().unwrap()]].concat());
    assert_eq!(manifest(&out)["cross_fit"]["folds"], 10);
    assert_found(&out, "reviews", "10 folds, joint", (0.9, 0.8));
}

/// On out-of-sample probabilities, confident learning finds the flipped
/// labels: floors on recall and precision a little under the README's
/// figures on both convolution kernels (they round differently, so the
/// shapes proxies differ). Counted from the held-out accuracy (the
/// default): shapes 105 flips among 109 flagged (of 120) with the AVX-512
/// kernels, 96 among 97 with the portable ones; reviews 144 among 193 (of
/// 200). By the confident joint, re-decided by `sieve select` from the same
/// scores (still out-of-sample): shapes 113 among 127 (portable: 111 among
/// 124), which meets the target of recall 0.9 at precision 0.8; reviews 171
/// among 275, which does not (ten folds do:
/// [`ten_fold_label_issues_meet_the_target_on_reviews`]).
#[test]
fn out_of_sample_label_issues_find_the_flipped_labels() {
    let tmp = tempfile::tempdir().unwrap();
    // (fixture, then per count: the least recall and precision)
    for (fixture, heldout, joint) in [("shapes", (0.78, 0.9), (0.9, 0.8)), ("reviews", (0.7, 0.72), (0.83, 0.6))] {
        let out = cross_fitted(fixture);
        let rejoint = tmp.path().join(fixture);
        let args = ["select", "--dataset", fixture, "--scores", out.to_str().unwrap(), "--issue-count", "joint"];
        sieve_ok(&[&args[..], &["--quiet", "--out", rejoint.to_str().unwrap()]].concat());
        assert_eq!(manifest(&rejoint)["label_issues"]["in_sample"], false, "{fixture}: re-decided, still cross-fitted");
        assert_eq!(manifest(&rejoint)["label_issues"]["counted_by"], "joint");
        assert_found(out, fixture, "heldout", heldout);
        assert_found(&rejoint, fixture, "joint", joint);
    }
}
