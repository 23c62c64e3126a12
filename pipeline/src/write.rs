//! The write stage: the kept rows, with every original column exactly as
//! read (same Arrow values, so the same bytes) plus the score columns, into
//! `data/part-NNNNN.parquet`. The input and `scores.parquet` are both in
//! input order, so they are merged in lockstep, one batch at a time, with no
//! join table: memory does not grow with the dataset.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchReader};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::ProjectionMask;
use sieve_schemas::{huggingface, OutputColumns};

use crate::error::{io_err, parquet_err, PipelineError, Result};
use crate::input::{InputFiles, BATCH_ROWS};
use crate::parquet_io;
use crate::score::ROW;

/// Columns of scores.parquet that are not copied into the kept rows: the
/// identity columns (the kept rows carry the originals), the near-duplicate
/// hashes (evidence for re-deciding, not features) and `error`, always
/// null there since rows with errors are never kept. `keep` is read to
/// filter, then dropped.
/// The embedding and the probabilities stay in scores.parquet: they would
/// make every kept row tens to hundreds of bytes larger for columns training
/// does not read.
const NOT_COPIED: [&str; 9] = [
    ROW,
    OutputColumns::ID,
    OutputColumns::CONTENT_HASH,
    OutputColumns::MINHASH,
    OutputColumns::PHASH,
    "label",
    OutputColumns::ERROR,
    OutputColumns::EMBEDDING,
    OutputColumns::PROBS,
];

/// Reads scores.parquet and hands out exactly the rows asked for.
struct ScoreCursor {
    reader: ParquetRecordBatchReader,
    pending: Option<RecordBatch>,
    path: PathBuf,
}

impl ScoreCursor {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_err(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
        let idx: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !NOT_COPIED.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        let reader = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))?;
        Ok(Self { reader, pending: None, path: path.to_path_buf() })
    }

    /// The next `n` score rows.
    fn take(&mut self, n: usize) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        let mut have = 0;
        while have < n {
            let batch = match self.pending.take() {
                Some(b) => b,
                None => match self.reader.next() {
                    Some(b) => b?,
                    None => {
                        return Err(PipelineError::Data {
                            path: self.path.clone(),
                            reason: "fewer rows than the input: it was made from other data".into(),
                        })
                    }
                },
            };
            let used = (n - have).min(batch.num_rows());
            if used < batch.num_rows() {
                self.pending = Some(batch.slice(used, batch.num_rows() - used));
            }
            have += used;
            parts.push(batch.slice(0, used));
        }
        let schema = parts.first().map_or_else(|| self.reader.schema(), |b| b.schema());
        Ok(concat_batches(&schema, &parts)?)
    }

    /// Errors unless every score row was consumed.
    fn finish(mut self) -> Result<()> {
        let rest = self.pending.map_or(0, |b| b.num_rows())
            + self.reader.by_ref().map(|b| b.map_or(0, |b| b.num_rows())).sum::<usize>();
        if rest > 0 {
            return Err(PipelineError::Data {
                path: self.path.clone(),
                reason: format!("{rest} more rows than the input: it was made from other data"),
            });
        }
        Ok(())
    }
}

/// Part files `part-NNNNN.parquet` being written, rotated every
/// `rows_per_file` rows.
pub(crate) struct Parts {
    dir: PathBuf,
    schema: SchemaRef,
    rows_per_file: usize,
    current: Option<(ArrowWriter<File>, PathBuf, usize)>,
    files: Vec<PathBuf>,
}

impl Parts {
    /// Parts under `dir` with `schema`.
    pub(crate) fn new(dir: &Path, schema: SchemaRef, rows_per_file: usize) -> Self {
        Self { dir: dir.to_path_buf(), schema, rows_per_file, current: None, files: Vec::new() }
    }

    /// Appends `batch`, starting new files as they fill.
    pub(crate) fn write(&mut self, mut batch: RecordBatch) -> Result<()> {
        while batch.num_rows() > 0 {
            if self.current.is_none() {
                let path = self.dir.join(format!("part-{:05}.parquet", self.files.len()));
                self.current = Some((parquet_io::create(&path, self.schema.clone())?, path.clone(), 0));
                self.files.push(path);
            }
            let (writer, path, rows) = self.current.as_mut().expect("opened above");
            let n = (self.rows_per_file - *rows).min(batch.num_rows());
            parquet_io::write(writer, &batch.slice(0, n), path)?;
            *rows += n;
            batch = batch.slice(n, batch.num_rows() - n);
            if *rows == self.rows_per_file {
                self.close_current()?;
            }
        }
        Ok(())
    }

    /// Closes the file being written.
    pub(crate) fn close_current(&mut self) -> Result<()> {
        if let Some((writer, path, _)) = self.current.take() {
            parquet_io::close(writer, &path)?;
        }
        Ok(())
    }
}

/// Writes the kept rows of `input` (decided in `scores`) under `data_dir`;
/// returns the files written and the rows they hold.
pub fn run(
    input: &InputFiles,
    scores: &Path,
    data_dir: &Path,
    rows_per_file: usize,
    quiet: bool,
) -> Result<(Vec<PathBuf>, u64)> {
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let mut cursor = ScoreCursor::open(scores)?;
    let score_schema = cursor.reader.schema();
    let mut fields: Vec<Field> = input.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(score_schema.fields().iter().filter(|f| f.name() != OutputColumns::KEEP).map(|f| f.as_ref().clone()));
    let bare = Schema::new(fields.clone());
    let metadata = huggingface::extend(input.schema.metadata(), &bare)?;
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let mut parts = Parts::new(data_dir, schema.clone(), rows_per_file);
    let bar = crate::progress::bar("write", input.total_rows(), "rows", quiet);
    let mut kept_rows = 0u64;
    let originals = input.schema.fields().len();
    input.for_each_batch(&input.chunks(), None, |batch| {
        let scores = cursor.take(batch.num_rows())?;
        let keep_idx = scores.schema().index_of(OutputColumns::KEEP)?;
        let keep = scores.column(keep_idx).as_boolean().clone();
        let mut columns: Vec<ArrayRef> = batch.columns()[..originals].to_vec();
        columns.extend(scores.columns().iter().enumerate().filter(|(i, _)| *i != keep_idx).map(|(_, c)| c.clone()));
        let joined = RecordBatch::try_new(schema.clone(), columns)?;
        let kept = filter_record_batch(&joined, &keep)?;
        kept_rows += kept.num_rows() as u64;
        bar.inc(batch.num_rows() as u64);
        parts.write(kept)
    })?;
    cursor.finish()?;
    if parts.files.is_empty() {
        // Nothing kept still gives readers a file with the schema.
        let path = data_dir.join("part-00000.parquet");
        parquet_io::close(parquet_io::create(&path, parts.schema.clone())?, &path)?;
        parts.files.push(path);
    }
    parts.close_current()?;
    bar.finish_and_clear();
    Ok((parts.files, kept_rows))
}
