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
        "prune", "--input", input.to_str().unwrap(), "--image-column", "picture", "--quiet", "--out", "/tmp/sieve-never",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("picture") && err.contains("img") && err.contains("label"), "{err}");
}

#[test]
fn an_unknown_dataset_names_the_known_ones() {
    let (code, err) = stderr_of(&["prune", "--dataset", "nope", "--quiet"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("shapes") && err.contains("cifar10"), "{err}");
}
