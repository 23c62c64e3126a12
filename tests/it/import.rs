use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;

use crate::util::{parquet_metadata, read_parquet, root, sieve_ok};

#[test]
fn an_image_folder_becomes_hugging_face_parquet_with_its_bytes_and_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    // Two classes from the fixture's PNGs, written as files.
    let fixture = read_parquet(&root().join("fixtures/shapes/train.parquet"));
    let bytes =
        fixture.column_by_name("img").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
    let mut originals = Vec::new();
    for (class, rows) in [("zebra", 0..3), ("ant", 3..5)] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in rows {
            std::fs::write(folder.join(class).join(format!("{i}.png")), bytes.value(i)).unwrap();
            originals.push((class, bytes.value(i).to_vec()));
        }
    }
    std::fs::write(folder.join("ant").join("README.txt"), "not an image").unwrap();
    let out = tmp.path().join("out");
    sieve_ok(&[
        "import",
        "--images",
        folder.to_str().unwrap(),
        "--shard-rows",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let files: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(files.len(), 3, "5 rows in shards of 2");
    let doc: serde_json::Value =
        serde_json::from_str(&parquet_metadata(&out.join("part-00000.parquet"))["huggingface"]).unwrap();
    assert_eq!(
        doc["info"]["features"]["label"]["names"],
        serde_json::json!(["ant", "zebra"]),
        "sorted, as ImageFolder"
    );
    assert_eq!(doc["info"]["features"]["img"]["_type"], "Image");
    let table = read_parquet(&out);
    let labels = table.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    let imported =
        table.column_by_name("img").unwrap().as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().clone();
    assert_eq!(labels.values().to_vec(), [0, 0, 1, 1, 1]);
    for (i, (class, original)) in
        originals.iter().filter(|(c, _)| *c == "ant").chain(originals.iter().filter(|(c, _)| *c == "zebra")).enumerate()
    {
        assert_eq!(imported.value(i), original.as_slice(), "{class} image {i} bytes");
    }
}

#[test]
fn a_json_lines_file_with_string_labels_becomes_class_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("reviews.jsonl");
    std::fs::write(&file, "{\"text\": \"a fine film\", \"label\": \"pos\"}\n{\"text\": \"dull\", \"label\": \"neg\"}\n{\"text\": \"great\", \"label\": \"pos\"}\n").unwrap();
    let out = tmp.path().join("out");
    sieve_ok(&["import", "--text", file.to_str().unwrap(), "--quiet", "--out", out.to_str().unwrap()]);
    let table = read_parquet(&out);
    let labels = table.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    assert_eq!(labels.values().to_vec(), [1, 0, 1]);
    assert_eq!(labels.null_count(), 0);
    let doc: serde_json::Value =
        serde_json::from_str(&parquet_metadata(&out.join("part-00000.parquet"))["huggingface"]).unwrap();
    assert_eq!(doc["info"]["features"]["label"]["names"], serde_json::json!(["neg", "pos"]));
}
