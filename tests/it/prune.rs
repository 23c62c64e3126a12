use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};

use crate::util::{parquet_metadata, pruned, read_parquet, root};

fn fixture_train(fixture: &str) -> RecordBatch {
    read_parquet(&root().join("fixtures").join(fixture).join("train.parquet"))
}

fn int64(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let c = batch.column_by_name(column).unwrap_or_else(|| panic!("no column {column}"));
    let c = datafusion::arrow::compute::cast(c, &DataType::Int64).unwrap();
    c.as_primitive::<Int64Type>().values().to_vec()
}

#[test]
fn scores_have_one_row_per_input_row_in_input_order() {
    for fixture in ["shapes", "reviews"] {
        let input = fixture_train(fixture);
        let scores = read_parquet(&pruned(fixture).join("scores.parquet"));
        assert_eq!(scores.num_rows(), input.num_rows(), "{fixture}");
        assert_eq!(int64(&scores, "id"), int64(&input, "id"), "{fixture}: ids in input order");
        assert_eq!(int64(&scores, "label"), int64(&input, "label"), "{fixture}");
        // Plain Utf8, not a view type: every Parquet reader knows it.
        assert_eq!(scores.column_by_name("error").unwrap().data_type(), &DataType::Utf8);
        let rows = int64(&scores, "row");
        assert!(rows.iter().enumerate().all(|(i, &r)| r == i as i64), "{fixture}: row is the position");
        for column in [
            "entropy",
            "least_confidence",
            "margin",
            "el2n",
            "loss",
            "forgetting",
            "aum",
            "learned_epoch",
            "el2n_early",
        ] {
            let c = scores.column_by_name(column).unwrap();
            assert_eq!(c.data_type(), &DataType::Float32);
            assert_eq!(c.null_count(), 0, "{fixture}: {column} has nulls on clean rows");
        }
    }
}

#[test]
fn keep_half_per_class_keeps_half_of_every_class() {
    for fixture in ["shapes", "reviews"] {
        let scores = read_parquet(&pruned(fixture).join("scores.parquet"));
        let labels = int64(&scores, "label");
        let keep = scores.column_by_name("keep").unwrap().as_boolean().clone();
        // The default (`auto`) drops the label issues first: half of the rest.
        let issue = scores.column_by_name("label_issue").unwrap().as_boolean().clone();
        let mut per_class: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for (i, &l) in labels.iter().enumerate() {
            assert!(!(issue.value(i) && keep.value(i)), "{fixture}: a label issue is kept");
            let e = per_class.entry(l).or_default();
            e.0 += u64::from(!issue.value(i));
            e.1 += u64::from(keep.value(i));
        }
        for (label, (rows, kept)) in &per_class {
            assert_eq!(*kept, (*rows as f64 * 0.5).round() as u64, "{fixture} class {label}: {kept} of {rows}");
        }
        let data = read_parquet(&pruned(fixture).join("data"));
        assert_eq!(data.num_rows() as u64, per_class.values().map(|c| c.1).sum::<u64>());
    }
}

#[test]
fn kept_rows_carry_the_input_columns_unchanged() {
    for (fixture, input_column) in [("shapes", "img"), ("reviews", "sentence")] {
        let input = fixture_train(fixture);
        let data = read_parquet(&pruned(fixture).join("data"));
        let by_id: HashMap<i64, usize> = int64(&input, "id").into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        let kept_ids = int64(&data, "id");
        let inp = input.column_by_name(input_column).unwrap();
        let out = data.column_by_name(input_column).unwrap();
        assert_eq!(inp.data_type(), out.data_type());
        for (k, id) in kept_ids.iter().enumerate() {
            let i = by_id[id];
            assert_eq!(
                inp.slice(i, 1).to_data(),
                out.slice(k, 1).to_data(),
                "{fixture} id {id}: {input_column} differs"
            );
            assert_eq!(int64(&input, "label")[i], int64(&data, "label")[k]);
        }
        for column in ["el2n", "entropy", "pred", "correct", "aum", "forgetting"] {
            assert!(data.column_by_name(column).is_some(), "{fixture}: kept rows lack {column}");
        }
    }
}

#[test]
fn output_keeps_and_extends_the_hugging_face_metadata() {
    let part = pruned("shapes").join("data").join("part-00000.parquet");
    let meta = parquet_metadata(&part);
    let doc: serde_json::Value = serde_json::from_str(&meta["huggingface"]).unwrap();
    let features = &doc["info"]["features"];
    assert_eq!(features["img"]["_type"], "Image");
    assert_eq!(features["label"]["_type"], "ClassLabel");
    assert!(features["label"]["names"].as_array().unwrap().len() >= 2);
    assert_eq!(features["el2n"]["dtype"], "float32");
    assert_eq!(features["correct"]["dtype"], "bool");
}

#[test]
fn manifest_records_the_job() {
    for fixture in ["shapes", "reviews"] {
        let dir = pruned(fixture);
        let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        let acc = m["proxy"]["heldout_accuracy"].as_f64().expect("held-out accuracy");
        assert!(acc > 0.6, "{fixture}: proxy held-out accuracy {acc}");
        assert!(m["versions"]["datafusion"].as_str().unwrap().starts_with("55."));
        assert!(m["dataset"]["train"][0]["rows"].as_u64().unwrap() > 0);
        assert!(!m["selection"]["per_class"].as_array().unwrap().is_empty());
        for stage in ["train", "score", "select", "write"] {
            assert!(m["seconds"][stage].as_f64().is_some(), "{fixture}: no seconds for {stage}");
        }
        assert!(dir.join("proxy").join("proxy.json").is_file());
        // Nothing of the staging directory is left beside the output.
        let parent = dir.parent().unwrap();
        let names: Vec<String> =
            std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}

/// The manifest reads back as the type that wrote it: every field of the
/// file survives a read and a write unchanged.
#[test]
fn the_manifest_reads_back_as_it_was_written() {
    for fixture in ["shapes", "reviews"] {
        let dir = pruned(fixture);
        let manifest = sieve::manifest::Manifest::read(dir).unwrap();
        assert_eq!(manifest.dataset.name, fixture);
        assert!(manifest.seconds.contains_key(&sieve_schemas::Stage::Train), "{fixture}");
        let written = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let again = serde_json::to_string_pretty(&manifest).unwrap();
        // Compared as JSON values, floats to a few ulps: serde_json without
        // `float_roundtrip` may read a 17-digit float one ulp off
        // (30.863361394000002 came back as 30.863361394), which is the
        // parser's rounding, not a field the manifest type lost or changed.
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&again).unwrap(), serde_json::from_str(&written).unwrap());
        assert!(same_json(&a, &b), "{fixture}: a field was lost or changed:\n{again}\n---\n{written}");
    }
}

/// Equal JSON values, with floats equal to within 1e-15 of their size.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What Python's `datasets`, `pyarrow` and `polars` see in the output;
/// `.ci/run` installs them.
#[test]
fn real_readers_load_the_output() {
    let dir = pruned("shapes");
    let script = format!(
        r#"
import glob, datasets, polars, pyarrow.parquet as pq
files = sorted(glob.glob("{data}/*.parquet"))
ds = datasets.load_dataset("parquet", data_files=files, split="train")
f = ds.features
assert type(f["img"]).__name__ == "Image", f
assert f["label"].names == ["circle", "square", "triangle", "cross"], f["label"]
assert (f["el2n"].dtype, f["aum"].dtype, f["pred"].dtype, f["correct"].dtype) == ("float32", "float32", "int64", "bool"), f
image = ds[0]["img"]
assert image.size == (32, 32), image
table = pq.read_table("{data}")
frame = polars.read_parquet(files)
assert table.num_rows == frame.height == ds.num_rows > 0
scores = pq.read_table("{scores}")
assert scores.num_rows > table.num_rows and "keep" in scores.column_names
print(ds.num_rows)
"#,
        data = dir.join("data").display(),
        scores = dir.join("scores.parquet").display()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "readers failed (are datasets, pyarrow and polars installed? .ci/run installs them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn built_in_datasets_work_from_any_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .args(["train", "--dataset", "shapes", "--epochs", "1", "--quiet", "--out", "proxy"])
        .current_dir(tmp.path())
        .env_remove("SIEVE_DATASETS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("proxy/proxy.json").is_file());
}

/// The default strategy is `auto`: at keep 0.5 it runs coverage-centric
/// selection with the label issues dropped, and the manifest says so.
#[test]
fn the_default_strategy_is_auto_and_the_manifest_says_what_it_chose() {
    for fixture in ["shapes", "reviews"] {
        let m = crate::util::manifest(pruned(fixture));
        let select = &m["config"]["select"];
        assert_eq!(select["strategy"], "ccs", "{fixture}");
        assert_eq!(select["drop_label_issues"], true, "{fixture}");
        let why = select["auto"].as_str().unwrap();
        assert!(why.contains("coverage-centric"), "{fixture}: {why}");
        assert_eq!(m["label_issues"]["dropped"], true, "{fixture}");
    }
}
