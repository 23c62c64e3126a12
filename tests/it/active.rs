use std::collections::HashSet;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float32Type, Int64Type};
use datafusion::parquet::arrow::ArrowWriter;

use crate::util::{manifest, read_parquet, root, sieve_ok};

fn write(batch: &RecordBatch, path: &Path) {
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// The reviews fixture split into a labeled part (300 rows) and an
/// unlabeled pool (the rest, label column removed), in `dir`.
pub(crate) fn labeled_and_pool(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, RecordBatch) {
    let all = read_parquet(&root().join("fixtures/reviews/train.parquet"));
    let (labeled, pool) = (dir.join("labeled.parquet"), dir.join("pool.parquet"));
    write(&all.slice(0, 300), &labeled);
    let mut unlabeled = all.slice(300, all.num_rows() - 300);
    unlabeled.remove_column(unlabeled.schema().index_of("label").unwrap());
    write(&unlabeled, &pool);
    (labeled, pool, unlabeled)
}

/// `sieve select --labeled --unlabeled --budget 50 --acquisition A` into
/// `dir/A`: the pool's scores and the picked rows in rank order.
fn next_batch(dir: &Path, acquisition: &str) -> (RecordBatch, Vec<usize>) {
    let (labeled, pool, unlabeled) = labeled_and_pool(dir);
    let out = dir.join(acquisition);
    sieve_ok(&[
        "select",
        "--dataset",
        "reviews",
        "--labeled",
        labeled.to_str().unwrap(),
        "--unlabeled",
        pool.to_str().unwrap(),
        "--budget",
        "50",
        "--acquisition",
        acquisition,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    assert_eq!(scores.num_rows(), unlabeled.num_rows());
    let rank = scores.column_by_name("acquisition_rank").unwrap().as_primitive::<Int64Type>();
    let mut picked: Vec<usize> = (0..scores.num_rows()).filter(|&i| rank.is_valid(i)).collect();
    picked.sort_by_key(|&i| rank.value(i));
    assert_eq!(picked.len(), 50);
    assert_eq!(manifest(&out)["active"]["picked"], 50);
    // The written rows are the picked pool rows, their input values unchanged.
    let data = read_parquet(&out.join("data"));
    let sentences = unlabeled.column_by_name("sentence").unwrap().as_string::<i32>();
    let written = data.column_by_name("sentence").unwrap().as_string::<i32>();
    let expected: HashSet<&str> = picked.iter().map(|&i| sentences.value(i)).collect();
    let got: HashSet<&str> = (0..data.num_rows()).map(|i| written.value(i)).collect();
    assert_eq!(got, expected, "{acquisition}");
    assert!(data.column_by_name("el2n").is_none(), "scores that need a label are left out");
    (scores, picked)
}

/// With a score acquisition the next batch is the `budget` pool rows with
/// the highest score, in rank order, copied unchanged from the pool (which
/// has no label column).
#[test]
fn the_next_batch_is_the_most_uncertain_pool_rows_copied_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    for (acquisition, column) in
        [("least-confidence", "least_confidence"), ("entropy", "entropy"), ("margin", "margin")]
    {
        let (scores, picked) = next_batch(tmp.path(), acquisition);
        let score = scores.column_by_name(column).unwrap().as_primitive::<Float32Type>();
        let threshold = picked.iter().map(|&i| score.value(i)).fold(f32::INFINITY, f32::min);
        let is_picked: HashSet<usize> = picked.iter().copied().collect();
        let above = (0..scores.num_rows()).filter(|&i| !is_picked.contains(&i) && score.value(i) > threshold).count();
        assert_eq!(above, 0, "{acquisition}: an unpicked row scores higher than a picked one");
        assert!(
            picked.windows(2).all(|w| score.value(w[0]) >= score.value(w[1])),
            "{acquisition}: rank 0 scores highest"
        );
    }
}

/// With `kcenter` the next batch is the greedy k-center kernel's picks over
/// the pool's embeddings, with the labeled rows' embeddings (scored by the
/// same proxy) as the initial centers, in pick order.
#[test]
fn the_kcenter_batch_is_the_kernels_picks_from_the_labeled_centers() {
    use sieve_selection::{kcenter::k_center_greedy, Embeddings};
    let tmp = tempfile::tempdir().unwrap();
    let (scores, picked) = next_batch(tmp.path(), "kcenter");
    let lab = tmp.path().join("labeled-scores");
    let proxy = tmp.path().join("kcenter/proxy");
    sieve_ok(&[
        "score",
        "--input",
        tmp.path().join("labeled.parquet").to_str().unwrap(),
        "--text-column",
        "sentence",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--quiet",
        "--out",
        lab.to_str().unwrap(),
    ]);
    let embedding = |batch: &RecordBatch| {
        let list = batch.column_by_name("embedding").unwrap().as_fixed_size_list();
        (list.values().as_primitive::<Float32Type>().values().to_vec(), list.value_length() as usize)
    };
    let (mut values, dim) = embedding(&scores);
    let pool_rows = scores.num_rows();
    let (centers, _) = embedding(&read_parquet(&lab.join("scores.parquet")));
    values.extend(centers);
    let initial: Vec<usize> = (pool_rows..values.len() / dim).collect();
    let emb = Embeddings::new(&values, dim).unwrap();
    let expected = k_center_greedy(&emb, 50, &initial, 0).unwrap();
    let expected: Vec<usize> = expected.into_iter().filter(|&i| i < pool_rows).collect();
    assert_eq!(picked, expected);
}

/// Simulated rounds grow the labeled set by the budget each round; on the
/// text fixture, by the third round least-confidence batches train a better
/// proxy than random ones. Earlier rounds do not: the proxy of the 200-row
/// random start is at chance (50%), so its uncertainty picks little better
/// than chance. Measured, rounds 1-3, seed 0: 74.7/82.3/88.3% against
/// 77.0/83.0/85.7%; the third round is ahead for seeds 0-4 by 1.0 to 2.7
/// points.
#[test]
fn simulated_rounds_beat_random_batches_once_the_proxy_has_learned() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rounds");
    sieve_ok(&[
        "select",
        "--dataset",
        "reviews",
        "--rounds",
        "3",
        "--budget",
        "200",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let rounds = manifest(&out)["active"]["rounds"].as_array().unwrap().clone();
    assert_eq!(rounds.len(), 4);
    for (r, round) in rounds.iter().enumerate() {
        assert_eq!(round["labeled"], 200 * (r as u64 + 1));
    }
    let last = &rounds[3];
    let (acquired, random) = (last["acquired_accuracy"].as_f64().unwrap(), last["random_accuracy"].as_f64().unwrap());
    assert!(acquired > random + 0.01, "third round: acquired {acquired:.3} vs random {random:.3}");
}
