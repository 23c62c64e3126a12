//! Writing Parquet: one place that sets the writer properties (zstd, a
//! `created_by` naming sieve's version) and streams a DataFusion query into
//! a file.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{io_err, parquet_err, Result};

/// Writer properties of every file sieve writes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level 3 is valid")))
        .set_created_by(format!("sieve version {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An `ArrowWriter` creating `path`.
pub fn create(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    let file = File::create(path).map_err(io_err(path))?;
    ArrowWriter::try_new(file, schema, Some(writer_properties())).map_err(parquet_err(path))
}

/// Writes one batch, naming the file on error.
pub fn write(writer: &mut ArrowWriter<File>, batch: &RecordBatch, path: &Path) -> Result<()> {
    writer.write(batch).map_err(parquet_err(path))
}

/// Finishes a file.
pub fn close(writer: ArrowWriter<File>, path: &Path) -> Result<()> {
    writer.close().map(|_| ()).map_err(parquet_err(path))
}

/// Streams the rows of `df` into the Parquet file `dest`, passing each batch
/// through `map` first (to reshape, count, check, or stop with an error);
/// returns the number of rows written. The file's schema is `map` applied to
/// an empty batch, so a query with no rows still writes a readable file.
pub async fn write_query(
    df: DataFrame,
    dest: &Path,
    mut map: impl FnMut(RecordBatch) -> Result<RecordBatch>,
) -> Result<u64> {
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let schema = map(RecordBatch::new_empty(schema))?.schema();
    let mut stream = df.execute_stream().await?;
    let mut writer = create(dest, schema)?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = map(batch?)?;
        write(&mut writer, &batch, dest)?;
        rows += batch.num_rows() as u64;
    }
    close(writer, dest)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_sieve_as_their_writer() {
        let props = writer_properties();
        assert!(props.created_by().starts_with("sieve version"));
    }
}
