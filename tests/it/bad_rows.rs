use std::fs::File;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::util::{pruned, read_parquet, root, sieve, sieve_ok};

/// The first 40 rows of the shapes fixture with row 3's image truncated and
/// row 5's image emptied, as a plain Binary column (no Hugging Face struct).
fn damaged_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let input = read_parquet(&root().join("fixtures/shapes/train.parquet")).slice(0, 40);
    let img = input.column_by_name("img").unwrap().as_struct();
    let bytes = img.column_by_name("bytes").unwrap().as_binary::<i32>();
    let damaged: Vec<&[u8]> = (0..bytes.len())
        .map(|i| match i {
            3 => &bytes.value(i)[..20],
            5 => &b""[..],
            _ => bytes.value(i),
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("picture", DataType::Binary, false),
        Field::new("label", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(BinaryArray::from(damaged)), input.column_by_name("label").unwrap().clone()];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let path = dir.join("damaged.parquet");
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

#[test]
fn undecodable_images_get_an_error_and_are_never_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let input = damaged_copy(tmp.path());
    let proxy = pruned("shapes").join("proxy");
    let out = tmp.path().join("out");
    sieve_ok(&[
        "prune",
        "--input",
        input.to_str().unwrap(),
        "--image-column",
        "picture",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--keep",
        "1",
        // A ranking: `auto` would also drop the label issues.
        "--strategy",
        "score",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let errors = scores.column_by_name("error").unwrap().as_string::<i32>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    assert!(errors.value(3).starts_with("undecodable_image"), "{}", errors.value(3));
    assert!(errors.value(5).starts_with("empty_image"), "{}", errors.value(5));
    assert_eq!(errors.null_count(), scores.num_rows() - 2);
    assert!(!keep.value(3) && !keep.value(5));
    assert_eq!(keep.true_count(), scores.num_rows() - 2, "--keep 1 keeps every valid row");
    let manifest: serde_json::Value = crate::util::manifest(&out);
    assert_eq!(manifest["scoring"]["skipped"]["undecodable_image"], 1);
    assert_eq!(manifest["scoring"]["skipped"]["empty_image"], 1);
}

#[test]
fn on_error_fail_names_file_row_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let input = damaged_copy(tmp.path());
    let proxy = pruned("shapes").join("proxy");
    let out = tmp.path().join("out");
    let result = sieve(&[
        "prune",
        "--input",
        input.to_str().unwrap(),
        "--image-column",
        "picture",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--on-error",
        "fail",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{err}");
    assert!(err.contains("damaged.parquet") && err.contains("row 3") && err.contains("picture"), "{err}");
    assert!(!out.exists(), "a failed job leaves no output");
}

/// PNG bytes of `img`.
fn png(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Grayscale, RGBA, 16-bit, non-square and very large images are converted
/// and resized, not rejected: each variant of a fixture image is scored, and
/// those that carry the same pixels score as the original does.
#[test]
fn other_image_modes_and_sizes_are_converted_and_resized() {
    let input = read_parquet(&root().join("fixtures/shapes/train.parquet")).slice(0, 8);
    let bytes =
        input.column_by_name("img").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
    let mut variants: Vec<Vec<u8>> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let label = input.column_by_name("label").unwrap().as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    for i in 0..bytes.len() {
        let original = image::load_from_memory(bytes.value(i)).unwrap();
        let big = original.resize_exact(2048, 2048, image::imageops::FilterType::Nearest);
        for v in [
            original.clone(),
            image::DynamicImage::ImageRgba8(original.to_rgba8()),
            image::DynamicImage::ImageRgb16(original.to_rgb16()),
            image::DynamicImage::ImageLuma8(original.to_luma8()),
            original.resize_exact(48, 20, image::imageops::FilterType::Triangle),
            big,
        ] {
            variants.push(png(&v));
            labels.push(label.value(i));
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("picture", DataType::Binary, false),
        Field::new("label", DataType::Int64, true),
    ]));
    let refs: Vec<&[u8]> = variants.iter().map(Vec::as_slice).collect();
    let columns: Vec<ArrayRef> =
        vec![Arc::new(BinaryArray::from(refs)), Arc::new(datafusion::arrow::array::Int64Array::from(labels))];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("modes.parquet");
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema.clone(), None).unwrap();
    w.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
    w.close().unwrap();
    let out = tmp.path().join("out");
    let proxy = pruned("shapes").join("proxy");
    sieve_ok(&[
        "score",
        "--input",
        path.to_str().unwrap(),
        "--image-column",
        "picture",
        "--proxy-dir",
        proxy.to_str().unwrap(),
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    assert_eq!(scores.column_by_name("error").unwrap().null_count(), scores.num_rows(), "every variant is scored");
    let el2n = scores.column_by_name("el2n").unwrap().as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let pred = scores.column_by_name("pred").unwrap().as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    for image in 0..bytes.len() {
        let at = |k: usize| image * 6 + k;
        // RGBA with opaque alpha and 16-bit RGB hold exactly the original's pixels.
        for k in [1, 2] {
            assert!((el2n.value(at(k)) - el2n.value(at(0))).abs() < 1e-5, "image {image}, variant {k}");
        }
        // A 2048x2048 nearest-neighbour blow-up resizes back to the same class.
        assert_eq!(pred.value(at(5)), pred.value(at(0)), "image {image}: large");
    }
}
