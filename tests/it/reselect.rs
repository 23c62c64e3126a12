use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;

use crate::util::{pruned, read_parquet, sieve_ok};

#[test]
fn select_reuses_scores_and_random_baseline_is_seeded() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = tmp.path().join(name);
        sieve_ok(&[
            "select", "--dataset", "shapes", "--scores", scored.to_str().unwrap(), "--keep", "0.3",
            "--strategy", "random", "--balance", "none", "--seed", seed, "--quiet", "--out", out.to_str().unwrap(),
        ]);
        read_parquet(&out.join("scores.parquet"))
    };
    let a = run("a", "7");
    let b = run("b", "7");
    let c = run("c", "8");
    let keep = |s: &datafusion::arrow::array::RecordBatch| s.column_by_name("keep").unwrap().as_boolean().clone();
    assert_eq!(keep(&a), keep(&b), "same seed, same subset");
    assert_ne!(keep(&a), keep(&c), "another seed, another subset");
    let n = a.num_rows();
    assert_eq!(keep(&a).true_count(), (n as f64 * 0.3).round() as usize);
    // Re-selecting does not rescore: the scores are carried over unchanged.
    let original = read_parquet(&scored.join("scores.parquet"));
    assert_eq!(original.column_by_name("el2n").unwrap().to_data(), a.column_by_name("el2n").unwrap().to_data());
}

#[test]
fn sql_queries_the_output_tables() {
    let out = pruned("shapes");
    let result = sieve_ok(&[
        "sql", "--out", out.to_str().unwrap(), "--format", "csv",
        "SELECT (SELECT COUNT(*) FROM kept) AS kept, (SELECT SUM(CAST(keep AS BIGINT)) FROM scores) AS decided",
    ]);
    let text = String::from_utf8(result.stdout).unwrap();
    let row = text.lines().nth(1).expect("a header and a row");
    let (kept, decided) = row.split_once(',').unwrap();
    assert_eq!(kept, decided, "{text}");
    let scores = read_parquet(&out.join("scores.parquet"));
    let kept_in_scores = scores.column_by_name("keep").unwrap().as_boolean().true_count();
    assert_eq!(kept.parse::<usize>().unwrap(), kept_in_scores);
    let _ = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
}

#[test]
fn sql_lists_the_functions() {
    let out = sieve_ok(&["sql", "--functions"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for f in ["proxy_scores(", "content_hash(", "seeded_random("] {
        assert!(text.contains(f), "{f} missing from:\n{text}");
    }
}

#[test]
fn pruning_the_hardest_tenth_by_aum_removes_the_label_noise() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clean");
    sieve_ok(&[
        "select", "--dataset", "shapes", "--scores", scored.to_str().unwrap(), "--prune", "0.1", "--order", "easy",
        "--score", "aum", "--balance", "none", "--quiet", "--out", out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let flipped: std::collections::HashSet<i64> = crate::util::truth("shapes").flipped.into_iter().collect();
    let kept_noise = (0..ids.len()).filter(|&i| keep.value(i) && flipped.contains(&ids.value(i))).count();
    assert!(kept_noise * 4 <= flipped.len(), "{kept_noise} of {} flipped labels survived", flipped.len());
}
