use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::ArrowWriter;

use crate::util::{read_parquet, root, sieve_ok, truth};

/// The harness itself, on the text fixture with 30% of its labels flipped:
/// dropping the 30% hardest rows by EL2N (keeping the easy 70%) trains a
/// better target than dropping a random 30%.
#[test]
fn removing_the_hardest_rows_beats_removing_random_ones_under_label_noise() {
    if !crate::util::have_font("removing_the_hardest_rows_beats_removing_random_ones_under_label_noise") {
        return;
    }
    let train = read_parquet(&root().join("fixtures/reviews/train.parquet"));
    let n = train.num_rows();
    let ids = train.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let labels = train.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    // 10% are flipped already; flip every third of the others up to 30%.
    let mut flipped: HashSet<i64> = truth("reviews").flipped.into_iter().collect();
    for i in (0..n).step_by(3) {
        if flipped.len() * 10 >= n * 3 {
            break;
        }
        flipped.insert(ids.value(i));
    }
    let already: HashSet<i64> = truth("reviews").flipped.into_iter().collect();
    let noisy: Int64Array = (0..n)
        .map(|i| {
            let flip = flipped.contains(&ids.value(i)) && !already.contains(&ids.value(i));
            if flip {
                1 - labels.value(i)
            } else {
                labels.value(i)
            }
        })
        .collect();
    let mut columns = train.columns().to_vec();
    columns[train.schema().index_of("label").unwrap()] = Arc::new(noisy);
    let noisy = datafusion::arrow::array::RecordBatch::try_new(train.schema(), columns).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("noisy.parquet");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), noisy.schema(), None).unwrap();
    w.write(&noisy).unwrap();
    w.close().unwrap();
    let out = tmp.path().join("eval");
    let heldout = root().join("fixtures/reviews/validation.parquet");
    sieve_ok(&[
        "eval",
        "--input",
        path.to_str().unwrap(),
        "--text-column",
        "sentence",
        "--heldout",
        heldout.to_str().unwrap(),
        "--fractions",
        "0.7",
        "--strategies",
        "el2n,random",
        "--orders",
        "easy",
        "--seeds",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value = crate::util::json(&out.join("eval.json"));
    let mean = |strategy: &str| {
        report["cells"].as_array().unwrap().iter().find(|c| c["method"]["strategy"] == strategy).unwrap()["mean"]
            .as_f64()
            .unwrap()
    };
    let (el2n, random) = (mean("el2n"), mean("random"));
    assert!(el2n > random, "keeping the easiest 70% by el2n: {el2n:.3}, a random 70%: {random:.3}");
    assert_eq!(report["runs"].as_array().unwrap().len(), 9, "3 seeds x (full, el2n easy, random)");
    let md = std::fs::read_to_string(out.join("eval.md")).unwrap();
    assert!(md.contains("| el2n easy |") && md.contains("| full data (1.0) |"), "{md}");
    let png = std::fs::read(out.join("eval.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// `--target-budget steps`: a target on half the rows trains twice the
/// epochs (the same SGD steps as on the full data), and says so.
#[test]
fn a_steps_budget_trains_a_subset_for_as_many_steps_as_the_full_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    let fixture = root().join("fixtures/reviews");
    sieve_ok(&[
        "eval",
        "--input",
        fixture.join("train.parquet").to_str().unwrap(),
        "--text-column",
        "sentence",
        "--heldout",
        fixture.join("validation.parquet").to_str().unwrap(),
        "--fractions",
        "0.5",
        "--strategies",
        "random",
        "--seeds",
        "1",
        "--target-epochs",
        "3",
        "--target-budget",
        "steps",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value = crate::util::json(&out.join("eval.json"));
    let runs = report["runs"].as_array().unwrap();
    let epochs = |full: bool| runs.iter().find(|r| r["method"].is_null() == full).unwrap()["epochs"].as_u64().unwrap();
    assert_eq!((epochs(true), epochs(false)), (3, 6), "{runs:?}");
    assert_eq!(report["target_budget"], "steps");
    let md = std::fs::read_to_string(out.join("eval.md")).unwrap();
    assert!(md.contains("3 epochs on the full data; a subset trains epochs ÷ kept fraction, so as many steps"), "{md}");
}

/// `--scores DIR`: eval reuses a `sieve prune` run's scores and reports that
/// run's proxy (name, held-out accuracy, seconds) instead of training one.
#[test]
fn eval_reports_the_proxy_of_the_scores_it_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = root().join("fixtures/reviews");
    let (train, heldout) = (fixture.join("train.parquet"), fixture.join("validation.parquet"));
    let input =
        ["--input", train.to_str().unwrap(), "--text-column", "sentence", "--heldout", heldout.to_str().unwrap()];
    let pruned = tmp.path().join("pruned");
    sieve_ok(&[&["prune"][..], &input, &["--keep", "0.5", "--quiet", "--out", pruned.to_str().unwrap()]].concat());
    let out = tmp.path().join("eval");
    sieve_ok(
        &[
            &["eval"][..],
            &input,
            &["--scores", pruned.to_str().unwrap(), "--fractions", "0.5", "--strategies", "el2n", "--orders", "hard"],
            &["--seeds", "1", "--quiet", "--out", out.to_str().unwrap()],
        ]
        .concat(),
    );
    let manifest: serde_json::Value = crate::util::manifest(&pruned);
    let report: serde_json::Value = crate::util::json(&out.join("eval.json"));
    assert_eq!(report["proxy"], "fasttext");
    assert!(report["proxy_accuracy"].as_f64().is_some(), "{report}");
    assert_eq!(report["proxy_accuracy"], manifest["proxy"]["heldout_accuracy"]);
    assert_eq!(report["proxy_seconds"], manifest["seconds"]["train"]);
}

/// `--agreement` trains a proxy with the next seed and one of half the
/// width, and reports Spearman's rho of every score between each and the
/// job's proxy over every valid row: SVP's premise, that proxies rank alike.
#[test]
fn agreement_ranks_every_score_against_proxies_of_another_seed_and_width() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    let sweep = ["--fractions", "0.5", "--strategies", "el2n", "--orders", "hard", "--seeds", "1", "--agreement"];
    sieve_ok(
        &[&reviews_eval()[..], &sweep.map(String::from), &["--quiet".into(), "--out".into(), path(&out)]].concat(),
    );
    let report: serde_json::Value = crate::util::json(&out.join("eval.json"));
    let agreement = report["agreement"].as_array().unwrap();
    for between in ["seed", "width"] {
        let of = |score: &str| {
            agreement
                .iter()
                .find(|a| a["between"] == between && a["score"] == score)
                .unwrap_or_else(|| panic!("no {between} {score}"))
        };
        for score in ["el2n", "entropy", "least_confidence", "margin", "loss"] {
            assert_eq!(of(score)["rows"], 2000, "{between} {score}: every row of the fixture");
        }
        let rho = of("el2n")["spearman"].as_f64().unwrap();
        assert!(rho > 0.5 && rho <= 1.0, "{between}: el2n rho {rho}");
    }
}

/// `sieve eval` on the text fixture: its training and validation splits.
fn reviews_eval() -> Vec<String> {
    let fixture = root().join("fixtures/reviews");
    let input = ["eval", "--input", "", "--text-column", "sentence", "--heldout", ""].map(String::from);
    let mut args = input.to_vec();
    args[2] = path(&fixture.join("train.parquet"));
    args[6] = path(&fixture.join("validation.parquet"));
    args
}

/// A path as an argument.
fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A sweep killed after its first target training resumes there: the rerun
/// reads that training's result back (the same accuracy a fresh sweep
/// measures) and trains only the rest; a later, wider sweep trains only its
/// new method.
#[test]
fn a_killed_sweep_resumes_at_the_first_training_it_had_not_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |out: &std::path::Path, strategies: &str| -> Vec<String> {
        let sweep = ["--fractions", "0.5", "--strategies", strategies, "--orders", "easy", "--seeds", "1", "--quiet"];
        [&reviews_eval()[..], &sweep.map(String::from), &["--out".into(), path(out)]].concat()
    };
    let out = tmp.path().join("eval");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .args(args(&out, "random"))
        .env("SIEVE_FAULT_POINT", "eval:target-trained")
        .current_dir(root())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "killed after the first training");
    assert!(!out.join("eval.json").exists(), "no results before the sweep ends");
    let targets = tmp.path().join(".eval.work/targets");
    assert_eq!(std::fs::read_dir(&targets).unwrap().count(), 1, "one training recorded");
    let runs = |dir: &std::path::Path| crate::util::json(&dir.join("eval.json"))["runs"].as_array().unwrap().clone();
    let resumed = |dir: &std::path::Path| -> Vec<bool> { runs(dir).iter().map(|r| r["resumed"] == true).collect() };
    sieve_ok(&args(&out, "random"));
    assert_eq!(resumed(&out), [true, false], "the full-data training read back, the random one trained");
    sieve_ok(&args(&out, "random,el2n"));
    assert_eq!(resumed(&out), [true, true, false], "only el2n easy is new");
    let fresh = tmp.path().join("fresh");
    sieve_ok(&args(&fresh, "random,el2n"));
    assert_eq!(resumed(&fresh), [false; 3]);
    let accuracy =
        |dir: &std::path::Path| -> Vec<f64> { runs(dir).iter().map(|r| r["accuracy"].as_f64().unwrap()).collect() };
    assert_eq!(accuracy(&out), accuracy(&fresh), "what is read back is what a fresh sweep measures");
}
