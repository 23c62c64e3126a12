//! `sieve import`: turns data people have lying around into Parquet in the
//! Hugging Face layout that every other subcommand reads.
//!
//! * An image folder in the class-per-subdirectory layout torchvision's
//!   `ImageFolder` reads (`root/<class>/<file>.png|jpg|jpeg`): classes are the
//!   subdirectory names in sorted order; rows hold `img: struct<bytes,
//!   path>` (the file's bytes, untouched) and `label`.
//! * A CSV (with a header) or JSON Lines file of text: every column is kept;
//!   a string label column becomes class indices in sorted name order, with
//!   the names in the metadata.
//!
//! Output: `part-NNNNN.parquet` files of at most `--shard-rows` rows with the
//! `huggingface` schema metadata (features, class names), written into a
//! staging directory and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder, Int64Array, RecordBatch, StringBuilder, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};
use futures::StreamExt;
use serde_json::json;

use crate::error::{io_err, PipelineError, Result};
use crate::sqlgen::ident;
use crate::staging::Staging;
use crate::write::Parts;

/// Image file extensions `ImageFolder`-style import picks up.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn hf_metadata(features: serde_json::Value) -> std::collections::HashMap<String, String> {
    [(sieve_schemas::huggingface::KEY.to_string(), json!({"info": {"features": features}}).to_string())].into()
}

/// Imports an image folder into `out`; returns the rows written.
pub fn images(root: &Path, out: &Path, shard_rows: usize) -> Result<usize> {
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(PipelineError::Data { path: root.into(), reason: "no class subdirectories".into() });
    }
    let mut files: Vec<(PathBuf, i64)> = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (p, label as i64)));
    }
    let struct_fields =
        Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)]);
    let features = json!({"img": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}});
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("img", DataType::Struct(struct_fields.clone()), true),
            Field::new("label", DataType::Int64, true),
        ],
        hf_metadata(features),
    ));
    let staging = Staging::new(out)?;
    let mut shards = Parts::new(staging.path(), schema.clone(), shard_rows);
    // Read a bounded number of images at a time, not the whole folder.
    for chunk in files.chunks(shard_rows.min(1024)) {
        let (mut bytes, mut paths) = (BinaryBuilder::new(), StringBuilder::new());
        for (path, _) in chunk {
            bytes.append_value(std::fs::read(path).map_err(io_err(path))?);
            paths.append_value(path.strip_prefix(root).unwrap_or(path).to_string_lossy());
        }
        let img = StructArray::new(
            struct_fields.clone(),
            vec![Arc::new(bytes.finish()) as ArrayRef, Arc::new(paths.finish())],
            None,
        );
        let labels = Int64Array::from_iter_values(chunk.iter().map(|(_, l)| *l));
        shards.write(RecordBatch::try_new(schema.clone(), vec![Arc::new(img), Arc::new(labels)])?)?;
    }
    shards.close_current()?;
    staging.commit()?;
    Ok(files.len())
}

/// Imports a CSV or JSON Lines text file into `out`; returns the rows written.
pub async fn text(file: &Path, text_column: &str, label_column: &str, out: &Path, shard_rows: usize) -> Result<usize> {
    let ctx = SessionContext::new();
    let path = file.to_string_lossy();
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let df = match extension.as_str() {
        "csv" => ctx.read_csv(path.as_ref(), CsvReadOptions::new().file_extension(".csv")).await?,
        "jsonl" | "json" | "ndjson" => {
            let ext = format!(".{extension}");
            ctx.read_json(path.as_ref(), JsonReadOptions::default().file_extension(&ext)).await?
        }
        _ => return Err(PipelineError::Usage(format!("{}: import reads .csv or .jsonl text files", file.display()))),
    };
    let schema = df.schema().as_arrow().clone();
    for column in [text_column, label_column] {
        sieve_schemas::columns::require(&schema, column, "import", &path)?;
    }
    ctx.register_table("raw", df.into_view())?;
    let label_type = schema.field_with_name(label_column)?.data_type().clone();
    let label = ident(label_column);
    // String labels become indices of the sorted distinct names.
    let names: Vec<String> = if label_type.is_integer() {
        Vec::new()
    } else {
        let df = ctx
            .sql(&format!("SELECT DISTINCT CAST({label} AS VARCHAR) FROM raw WHERE {label} IS NOT NULL ORDER BY 1"))
            .await?;
        let mut names = Vec::new();
        for batch in df.collect().await? {
            let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
            let column = column.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().expect("cast to Utf8");
            names.extend(column.iter().flatten().map(str::to_string));
        }
        names
    };
    let select: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = ident(f.name());
            if f.name() == label_column && !names.is_empty() {
                let cases: Vec<String> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("WHEN {c} = {} THEN {i}", crate::sqlgen::literal(n)))
                    .collect();
                format!("CAST(CASE {} END AS BIGINT) AS {c}", cases.join(" "))
            } else {
                c
            }
        })
        .collect();
    let df = ctx.sql(&format!("SELECT {} FROM raw", select.join(", "))).await?;
    let mut features = serde_json::Map::new();
    for f in df.schema().fields() {
        let feature = if f.name() == label_column && !names.is_empty() {
            json!({"names": names, "_type": "ClassLabel"})
        } else {
            json!({"dtype": if f.data_type().is_integer() { "int64" } else if f.data_type().is_floating() { "float64" } else { "string" }, "_type": "Value"})
        };
        features.insert(f.name().clone(), feature);
    }
    let schema =
        Arc::new(Schema::new_with_metadata(df.schema().as_arrow().fields().clone(), hf_metadata(features.into())));
    let staging = Staging::new(out)?;
    let mut shards = Parts::new(staging.path(), schema.clone(), shard_rows);
    let mut stream = df.execute_stream().await?;
    let mut written = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        written += batch.num_rows();
        shards.write(RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?)?;
    }
    shards.close_current()?;
    staging.commit()?;
    Ok(written)
}
