use crate::util::{root, sieve};

fn stderr_of(args: &[&str]) -> (i32, String) {
    let out = sieve(args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn kept_fraction_outside_zero_one_is_a_usage_error() {
    for keep in ["--keep=0", "--keep=1.5", "--keep=-0.2", "--prune=1"] {
        let (code, err) = stderr_of(&["prune", "--dataset", "shapes", keep, "--quiet", "--out", "/tmp/sieve-never"]);
        assert_eq!(code, 2, "--keep {keep}: {err}");
        assert!(err.contains("(0, 1]"), "{err}");
    }
}

#[test]
fn a_missing_column_error_lists_the_columns_that_exist() {
    let input = root().join("fixtures/shapes/train.parquet");
    let (code, err) = stderr_of(&[
        "prune",
        "--input",
        input.to_str().unwrap(),
        "--image-column",
        "picture",
        "--quiet",
        "--out",
        "/tmp/sieve-never",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("picture") && err.contains("img") && err.contains("label"), "{err}");
}

#[test]
fn an_unknown_dataset_names_the_known_ones() {
    let (code, err) = stderr_of(&["prune", "--dataset", "nope", "--quiet"]);
    assert_eq!(code, 2, "a flag's value: {err}");
    assert!(err.contains("shapes") && err.contains("cifar10"), "{err}");
}

/// On a machine without a usable GPU (this build has no `cuda` feature, or
/// no GPU is present): `--device cuda:0` stops before any work and says
/// why, half precision on the CPU is refused, and `auto` runs on the CPU
/// with a log line giving the reason.
#[test]
fn devices_that_cannot_be_had_are_errors_and_auto_falls_back_to_the_cpu() {
    let out = std::env::temp_dir().join(format!("sieve-device-{}", std::process::id()));
    let out_arg = out.to_str().unwrap();
    let (code, err) = stderr_of(&["train", "--dataset", "shapes", "--device", "cuda:0", "--quiet", "--out", out_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cuda:0 is not available"), "{err}");
    let (code, err) =
        stderr_of(&["train", "--dataset", "shapes", "--device", "cpu", "--precision", "f16", "--out", out_arg]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--precision f16 needs a GPU"), "{err}");
    let (code, err) = stderr_of(&["train", "--dataset", "shapes", "--device", "tpu", "--out", out_arg]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auto, cpu or cuda:N"), "{err}");
    assert!(!out.exists(), "a refused run wrote {out:?}");

    let (code, err) =
        stderr_of(&["train", "--dataset", "shapes", "--epochs", "1", "--log-format", "json", "--out", out_arg]);
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(code, 0, "{err}");
    let line = err.lines().find(|l| l.contains("\"device\"")).unwrap_or_else(|| panic!("no device line in {err}"));
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(log["device"], "cpu", "{line}");
    assert!(log["fallback"].as_str().unwrap().contains("cuda:0 is not available"), "{line}");
}

/// Exit code 2 is for usage errors only: scores made from other data are a
/// data error (1), with a message that says so.
#[test]
fn scores_of_other_data_are_a_data_error_not_a_usage_error() {
    let scored = crate::util::pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/shapes/test.parquet");
    let (code, err) = stderr_of(&[
        "select",
        "--input",
        input.to_str().unwrap(),
        "--image-column",
        "img",
        "--scores",
        scored.to_str().unwrap(),
        "--quiet",
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("other data"), "{err}");
}

#[test]
fn a_query_that_does_not_parse_or_plan_is_a_usage_error() {
    for query in ["SELEC 1", "SELECT no_such_column FROM input"] {
        let (code, err) = stderr_of(&["sql", "--dataset", "shapes", query]);
        assert_eq!(code, 2, "{query}: {err}");
        assert!(err.contains("the query"), "{query}: {err}");
    }
}
