//! Writing Parquet: one place that sets the writer properties (zstd, a
//! `created_by` naming sieve's version) and streams a DataFusion query into
//! a file; and reading the few named columns of a file sieve wrote.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;

use crate::error::{io_err, parquet_err, Result};
use crate::input::BATCH_ROWS;

/// Largest row group sieve writes, in (estimated) encoded bytes. An
/// `ArrowWriter` holds its open row group in memory, and Parquet's default
/// cap is a million rows, so without this a writer's memory grew with the
/// rows written (text) or held hundreds of megabytes (images).
pub const ROW_GROUP_BYTES: usize = 32 << 20;

/// The columns `names` of the Parquet file at `path`, in batches of
/// [`BATCH_ROWS`] (columns in file order); an error names a missing one.
pub fn read_columns(path: &Path, names: &[&str]) -> Result<ParquetRecordBatchReader> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let idx = names.iter().map(|c| builder.schema().index_of(c)).collect::<std::result::Result<Vec<_>, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))
}

/// The Arrow schema of the Parquet file at `path`, from its footer.
pub fn schema(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(io_err(path))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?.schema().clone())
}

/// Rows in the Parquet `files`, from their footers.
pub fn rows(files: &[PathBuf]) -> Result<u64> {
    files.iter().try_fold(0u64, |n, f| {
        let file = File::open(f).map_err(io_err(f))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(f))?;
        Ok(n + builder.metadata().file_metadata().num_rows() as u64)
    })
}

/// Writer properties of every file sieve writes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level 3 is valid")))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
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

/// A Parquet file written in batches of exactly [`BATCH_ROWS`] rows (the
/// last one shorter), whatever batches it is given. The writer decides
/// page boundaries batch by batch, so this makes a file's bytes depend on
/// its rows only, not on how they arrived: one shard per input file here,
/// one per row group on a cluster.
pub struct EvenWriter {
    writer: ArrowWriter<File>,
    even: BatchCoalescer,
    path: PathBuf,
}

impl EvenWriter {
    /// A writer creating `path`.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            writer: create(path, schema.clone())?,
            even: BatchCoalescer::new(schema, BATCH_ROWS),
            path: path.into(),
        })
    }

    /// Writes `batch`'s rows (those that complete a batch now, the rest later).
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.even.push_batch(batch)?;
        self.drain()
    }

    fn drain(&mut self) -> Result<()> {
        while let Some(batch) = self.even.next_completed_batch() {
            write(&mut self.writer, &batch, &self.path)?;
        }
        Ok(())
    }

    /// Writes the rows still buffered and finishes the file.
    pub fn close(mut self) -> Result<()> {
        self.even.finish_buffered_batch()?;
        self.drain()?;
        close(self.writer, &self.path)
    }
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
    let mut writer = EvenWriter::create(dest, schema)?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = map(batch?)?;
        rows += batch.num_rows() as u64;
        writer.write(batch)?;
    }
    writer.close()?;
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

    #[test]
    fn row_groups_are_capped_in_bytes_not_only_rows() {
        use datafusion::arrow::array::{BinaryArray, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, false)]));
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut writer = create(&path, schema.clone()).unwrap();
        // 96 MiB of incompressible values in 1,536 rows, written in batches of 64.
        let mut state = 1u64;
        for _ in 0..24 {
            let rows: Vec<Vec<u8>> = (0..64)
                .map(|_| {
                    (0..65_536)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            (state >> 56) as u8
                        })
                        .collect()
                })
                .collect();
            let batch =
                RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(BinaryArray::from_iter_values(rows))])
                    .unwrap();
            write(&mut writer, &batch, &path).unwrap();
        }
        close(writer, &path).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let meta = datafusion::parquet::file::reader::FileReader::metadata(
            &datafusion::parquet::file::reader::SerializedFileReader::new(file).unwrap(),
        )
        .clone();
        assert!(meta.num_row_groups() >= 3, "96 MiB in row groups of at most 32 MiB: {}", meta.num_row_groups());
    }
}
