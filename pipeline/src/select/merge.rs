//! Merging the raw score shards (streamed in input order) with the extra
//! columns (read alongside, joined by position) into one file: the narrow
//! table the decision query reads, or the selected `scores.parquet` with
//! `keep`. Only one batch of wide rows, and of each extra, is held.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{Field, Int64Type, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use sieve_schemas::OutputColumns;

use crate::error::{io_err, parquet_err, PipelineError, Result};
use crate::input::BATCH_ROWS;
use crate::parquet_io;
use crate::plan::RowSet;
use crate::score::ROW;

fn reader(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(io_err(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))
}

/// What [`write`] produces.
pub(super) enum Output<'a> {
    /// Only these columns (those that exist), for the decision query.
    Columns(&'a [&'a str]),
    /// Every column, and `keep`: true for these positions.
    Decided(&'a RowSet),
}

impl Output<'_> {
    fn wants(&self, name: &str) -> bool {
        match self {
            Output::Columns(names) => names.contains(&name),
            Output::Decided(_) => name != OutputColumns::KEEP,
        }
    }
}

/// An extra table (one row per position, sorted by position), read in step
/// with the raw shards: it holds only the rows from the current batch's
/// first position on, a batch or two of a few numbers per row.
struct Extra {
    batches: ParquetRecordBatchReader,
    /// Its rows not yet passed, with the position column first.
    window: RecordBatch,
    fields: Vec<Field>,
    path: PathBuf,
}

impl Extra {
    fn open(path: &Path, output: &Output) -> Result<Self> {
        let builder = reader(path)?;
        let schema = builder.schema().clone();
        let row = schema.index_of(ROW)?;
        let wanted: Vec<usize> =
            (0..schema.fields().len()).filter(|&i| i != row && output.wants(schema.field(i).name())).collect();
        // A projection reads its columns in file order; the window puts the
        // position column first.
        let read: Vec<usize> = (0..schema.fields().len()).filter(|i| *i == row || wanted.contains(i)).collect();
        let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), read.iter().copied());
        let batches = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))?;
        let order: Vec<usize> = std::iter::once(row).chain(wanted.iter().copied()).collect();
        let window_schema = Arc::new(schema.project(&order)?);
        Ok(Self {
            batches,
            window: RecordBatch::new_empty(window_schema),
            // Rows the extra lacks get nulls, as a left join gives.
            fields: wanted.iter().map(|&i| schema.field(i).as_ref().clone().with_nullable(true)).collect(),
            path: path.into(),
        })
    }

    /// Its columns at `positions`, which rise from call to call (null where
    /// it has no row); the rows before them are let go.
    fn at(&mut self, positions: &Int64Array) -> Result<Vec<ArrayRef>> {
        let last = positions.values().last().copied().unwrap_or(i64::MIN);
        let mut parts = vec![self.window.clone()];
        while parts.last().is_some_and(|b| b.num_rows() == 0 || rows_of(b)[b.num_rows() - 1] <= last) {
            let Some(batch) = self.batches.next() else { break };
            let batch = batch?;
            // Reorder the projected columns: the position column first.
            let row = batch.schema().index_of(ROW)?;
            let columns = std::iter::once(row).chain((0..batch.num_columns()).filter(|&i| i != row));
            parts.push(RecordBatch::try_new(self.window.schema(), columns.map(|i| batch.column(i).clone()).collect())?);
        }
        let window = concat_batches(&self.window.schema(), &parts)?;
        let rows = rows_of(&window);
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PipelineError::Data {
                path: self.path.clone(),
                reason: "rows are not sorted by position".into(),
            });
        }
        let idx: UInt32Array =
            positions.values().iter().map(|p| rows.binary_search(p).ok().map(|i| i as u32)).collect();
        let columns = window.columns()[1..].iter().map(|c| take(c.as_ref(), &idx, None)).collect::<Result<_, _>>()?;
        let passed = rows.partition_point(|&r| r <= last);
        self.window = window.slice(passed, window.num_rows() - passed);
        Ok(columns)
    }
}

/// The position column of an extra's window.
fn rows_of(batch: &RecordBatch) -> &[i64] {
    batch.column(0).as_primitive::<Int64Type>().values()
}

/// The raw score shards in input order: each shard holds contiguous
/// positions, so they sort by their first one.
fn in_input_order(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut first: Vec<(i64, PathBuf)> = Vec::with_capacity(files.len());
    for f in files {
        let builder = reader(f)?;
        let idx = builder.schema().index_of(ROW)?;
        let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let mut rows = builder.with_projection(mask).with_batch_size(1).build().map_err(parquet_err(f))?;
        if let Some(batch) = rows.next() {
            first.push((batch?.column(0).as_primitive::<Int64Type>().value(0), f.clone()));
        }
    }
    first.sort();
    Ok(first.into_iter().map(|(_, f)| f).collect())
}

/// Writes `dest`: every row of `raw` in input order, with the columns
/// `extras` provide replacing the raw ones of the same name, limited to or
/// completed as `output` says.
pub(super) fn write(raw: &[PathBuf], extras: &[PathBuf], output: Output, dest: &Path) -> Result<()> {
    let mut extras: Vec<Extra> = extras.iter().map(|p| Extra::open(p, &output)).collect::<Result<_>>()?;
    let provided: Vec<String> = extras.iter().flat_map(|e| e.fields.iter().map(|f| f.name().clone())).collect();
    let files = in_input_order(raw)?;
    let mut writer = None;
    let mut last: Option<i64> = None;
    let mut schema: Option<SchemaRef> = None;
    for file in &files {
        let builder = reader(file)?;
        let file_schema = builder.schema().clone();
        let row = file_schema.index_of(ROW)?;
        let own: Vec<usize> = (0..file_schema.fields().len())
            .filter(|&i| {
                let name = file_schema.field(i).name();
                i == row || (output.wants(name) && !provided.contains(name))
            })
            .collect();
        let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), own.iter().copied());
        let out_schema = schema.get_or_insert_with(|| {
            let mut fields: Vec<Field> = own.iter().map(|&i| file_schema.field(i).clone()).collect();
            fields.extend(extras.iter().flat_map(|e| e.fields.iter().cloned()));
            if let Output::Decided(_) = output {
                fields.push(Field::new(OutputColumns::KEEP, datafusion::arrow::datatypes::DataType::Boolean, true));
            }
            Arc::new(Schema::new_with_metadata(fields, file_schema.metadata().clone()))
        });
        let writer = match &mut writer {
            Some(w) => w,
            None => writer.insert(parquet_io::EvenWriter::create(dest, out_schema.clone())?),
        };
        // Projected batches hold the chosen columns in file order.
        let row_in_batch = own.iter().position(|&i| i == row).expect("the position column is always read");
        for batch in builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(file))? {
            let batch = batch?;
            let positions = batch.column(row_in_batch).as_primitive::<Int64Type>().clone();
            for &p in positions.values() {
                if last.is_some_and(|l| p <= l) {
                    return Err(PipelineError::Data {
                        path: file.clone(),
                        reason: "score shards overlap or are out of order".into(),
                    });
                }
                last = Some(p);
            }
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            for extra in &mut extras {
                columns.extend(extra.at(&positions)?);
            }
            if let Output::Decided(kept) = output {
                let keep: BooleanArray = positions.values().iter().map(|&p| Some(kept.contains(p as u64))).collect();
                columns.push(Arc::new(keep));
            }
            writer.write(RecordBatch::try_new(out_schema.clone(), columns)?)?;
        }
    }
    match writer {
        Some(w) => w.close(),
        None => Err(PipelineError::Data { path: dest.into(), reason: "no scores to select from".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Float32Array;
    use datafusion::arrow::datatypes::DataType;

    fn write_file(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
        let mut w = parquet_io::create(path, batch.schema()).unwrap();
        parquet_io::write(&mut w, &batch, path).unwrap();
        parquet_io::close(w, path).unwrap();
    }

    #[test]
    fn shards_merge_in_input_order_with_extras_by_position() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = |name: &str, rows: std::ops::Range<i64>| {
            let path = tmp.path().join(name);
            let stale: ArrayRef = Arc::new(Float32Array::from(vec![-1.0; rows.clone().count()]));
            let keep: ArrayRef = Arc::new(BooleanArray::from(vec![true; rows.clone().count()]));
            write_file(
                &path,
                vec![(ROW, Arc::new(Int64Array::from_iter_values(rows)) as ArrayRef), ("x", stale), ("keep", keep)],
            );
            path
        };
        // Named so that path order is not input order.
        let raw = vec![shard("a.parquet", 3..6), shard("b.parquet", 0..3)];
        let extra = tmp.path().join("extra.parquet");
        write_file(
            &extra,
            vec![
                (ROW, Arc::new(Int64Array::from(vec![1, 4])) as ArrayRef),
                ("x", Arc::new(Float32Array::from(vec![10.0, 40.0]))),
            ],
        );
        let mut kept = RowSet::new(6);
        kept.insert(0);
        kept.insert(4);
        let dest = tmp.path().join("out.parquet");
        write(&raw, &[extra], Output::Decided(&kept), &dest).unwrap();
        let builder = reader(&dest).unwrap();
        let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, [ROW, "x", "keep"], "the extra's x replaces the raw one; the old keep is dropped");
        assert_eq!(builder.schema().field(2).data_type(), &DataType::Boolean);
        let batch = builder.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![0, 1, 2, 3, 4, 5]);
        let x: Vec<Option<f32>> =
            batch.column(1).as_primitive::<datafusion::arrow::datatypes::Float32Type>().iter().collect();
        assert_eq!(x, vec![None, Some(10.0), None, None, Some(40.0), None]);
        let keep: Vec<Option<bool>> = batch.column(2).as_boolean().iter().collect();
        assert_eq!(keep, [true, false, false, false, true, false].map(Some));
    }

    #[test]
    fn extras_are_joined_across_batches_of_both_sides() {
        // Several batches of raw rows against an extra whose batches end
        // elsewhere, with rows the raw shards lack: every row gets its own
        // value or null, whatever batch either side is in.
        let tmp = tempfile::tempdir().unwrap();
        let n = 3 * BATCH_ROWS as i64 + 5;
        let raw = tmp.path().join("raw.parquet");
        write_file(&raw, vec![(ROW, Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef)]);
        let extra = tmp.path().join("extra.parquet");
        let has = |p: i64| p % 3 == 0;
        let rows: Vec<i64> = (0..n + 10).filter(|&p| has(p)).collect();
        let values: Vec<f32> = rows.iter().map(|&p| p as f32).collect();
        write_file(
            &extra,
            vec![(ROW, Arc::new(Int64Array::from(rows)) as ArrayRef), ("x", Arc::new(Float32Array::from(values)))],
        );
        let dest = tmp.path().join("out.parquet");
        write(&[raw], &[extra], Output::Columns(&["x"]), &dest).unwrap();
        let mut got = Vec::new();
        for batch in reader(&dest).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            got.extend(batch.column(1).as_primitive::<datafusion::arrow::datatypes::Float32Type>().iter());
        }
        let want: Vec<Option<f32>> = (0..n).map(|p| has(p).then_some(p as f32)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unsorted_extras_are_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("raw.parquet");
        write_file(&raw, vec![(ROW, Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef)]);
        let extra = tmp.path().join("extra.parquet");
        write_file(&extra, vec![(ROW, Arc::new(Int64Array::from(vec![2, 1])) as ArrayRef)]);
        let err =
            write(&[raw], &[extra], Output::Decided(&RowSet::new(3)), &tmp.path().join("out.parquet")).unwrap_err();
        assert!(err.to_string().contains("not sorted"), "{err}");
    }

    #[test]
    fn overlapping_shards_are_an_error_not_a_silent_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = |name: &str, rows: Vec<i64>| {
            let path = tmp.path().join(name);
            write_file(&path, vec![(ROW, Arc::new(Int64Array::from(rows)) as ArrayRef)]);
            path
        };
        let raw = vec![shard("a.parquet", vec![0, 1, 2]), shard("b.parquet", vec![2, 3])];
        let err = write(&raw, &[], Output::Decided(&RowSet::new(4)), &tmp.path().join("out.parquet")).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }
}
