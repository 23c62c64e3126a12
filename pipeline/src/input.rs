//! Reading the input dataset in a stable order. Files are read in sorted path
//! order and rows in file order, and every batch gets a `__pos` column: the
//! row's position in the whole input, which is the example id when the
//! dataset has no id column and the key that keeps `scores.parquet` in input
//! order. Batches stream from a background thread; nothing holds more than a
//! few batches. Inputs may be local paths or `s3://` URLs ([`crate::store`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::file::reader::ChunkReader;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use sieve_schemas::paths::resolve_files;

use crate::error::{io_err, parquet_err, PipelineError, Result};
use crate::store::{self, RemoteFile};

/// Name of the position column appended to every input batch.
pub const POS: &str = "__pos";

/// Rows per batch read from Parquet; DataFusion's default batch size.
pub const BATCH_ROWS: usize = 8192;

/// One input file and where its rows sit in the whole input.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// The file: a local path or an `s3://` URL.
    pub path: PathBuf,
    /// The object, when the file is remote.
    remote: Option<RemoteFile>,
    /// Its footer, read once.
    meta: ArrowReaderMetadata,
    /// What changes when the file does: its size and a hash of its footer
    /// (the object's size, modification time and entity tag when remote).
    pub version: String,
    /// Its number of rows.
    pub rows: u64,
    /// Rows of each row group.
    pub row_groups: Vec<u64>,
    /// Position of its first row in the whole input.
    pub first_pos: u64,
}

/// A contiguous piece of input: one row group of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index into [`InputFiles::files`].
    pub file: usize,
    /// Row group within the file.
    pub row_group: usize,
}

/// The resolved input files of one split, with their common schema.
#[derive(Clone, Debug)]
pub struct InputFiles {
    /// The files, sorted by path.
    pub files: Vec<FileInfo>,
    /// The schema they share, with the first file's metadata.
    pub schema: SchemaRef,
}

/// The footer of a local file, and its version.
fn local_file(path: &Path) -> Result<(ArrowReaderMetadata, String)> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).map_err(parquet_err(path))?;
    let version = content_version(&mut file).map_err(io_err(path))?;
    Ok((meta, version))
}

/// What identifies a local Parquet file's content: its size and a hash of
/// its footer, whose row groups' offsets, sizes and statistics change with
/// the data. A copy, a restore from backup or a `touch` keeps it, so a
/// resumable job keeps its finished work; a rewrite changes it.
fn content_version(file: &mut File) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let size = file.seek(SeekFrom::End(0))?;
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    let footer = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("four bytes")));
    let mut bytes = vec![0u8; footer.min(size.saturating_sub(8)) as usize];
    file.seek(SeekFrom::End(-8 - bytes.len() as i64))?;
    file.read_exact(&mut bytes)?;
    Ok(format!("{size}|{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// One input file as [`resolve`] finds it: its path, its remote object (if
/// any), its footer and its version.
type Resolved = (PathBuf, Option<RemoteFile>, ArrowReaderMetadata, String);

/// `pattern`'s files, each with its remote object (if any), footer and version.
fn resolve(pattern: &str) -> Result<Vec<Resolved>> {
    if store::is_remote(pattern) {
        store::list_parquet(pattern)?
            .iter()
            .map(|object| {
                let remote = RemoteFile::new(pattern, object)?;
                let meta = remote.metadata()?;
                let version = format!("{}|{}|{:?}", object.size, object.last_modified, object.e_tag);
                Ok((PathBuf::from(remote.url()), Some(remote), meta, version))
            })
            .collect()
    } else {
        resolve_files(pattern)?
            .into_iter()
            .map(|path| local_file(&path).map(|(meta, version)| (path, None, meta, version)))
            .collect()
    }
}

impl InputFiles {
    /// Resolves `pattern` (file, directory or glob, local or `s3://`) and
    /// reads every footer, checking that all files share the first one's
    /// columns.
    pub fn open(pattern: &str) -> Result<Self> {
        let mut files: Vec<FileInfo> = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        let mut pos = 0u64;
        for (path, remote, meta, version) in resolve(pattern)? {
            let row_groups: Vec<u64> = meta.metadata().row_groups().iter().map(|rg| rg.num_rows() as u64).collect();
            let rows = row_groups.iter().sum();
            match &schema {
                None => schema = Some(meta.schema().clone()),
                Some(first) if first.fields() != meta.schema().fields() => {
                    return Err(sieve_schemas::SchemaError::SchemaMismatch {
                        first: files.first().map_or_else(String::new, |f| f.path.display().to_string()),
                        file: path.display().to_string(),
                        message: format!("columns {:?} vs {:?}", first.fields(), meta.schema().fields()),
                    }
                    .into())
                }
                Some(_) => {}
            }
            files.push(FileInfo { path, remote, meta, version, rows, row_groups, first_pos: pos });
            pos += rows;
        }
        Ok(Self { files, schema: schema.expect("resolving returns at least one file") })
    }

    /// Rows in all files.
    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The file and row within it of input position `pos`.
    pub fn locate(&self, pos: u64) -> (&Path, u64) {
        let i = self.files.partition_point(|f| f.first_pos + f.rows <= pos).min(self.files.len() - 1);
        (&self.files[i].path, pos - self.files[i].first_pos)
    }

    /// Every row group of every file, in input order.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.files
            .iter()
            .enumerate()
            .flat_map(|(file, f)| (0..f.row_groups.len()).map(move |row_group| Chunk { file, row_group }))
            .collect()
    }

    /// The schema of batches read with `columns` (all when `None`), plus `__pos`.
    pub fn read_schema(&self, columns: Option<&[String]>) -> Result<SchemaRef> {
        let mut fields: Vec<Field> = match columns {
            None => self.schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            Some(cols) => cols
                .iter()
                .map(|c| {
                    let field = self
                        .schema
                        .field_with_name(c)
                        .map_err(|e| PipelineError::Data { path: self.files[0].path.clone(), reason: e.to_string() })?;
                    Ok(field.clone())
                })
                .collect::<Result<_>>()?,
        };
        fields.push(Field::new(POS, DataType::Int64, false));
        Ok(Arc::new(Schema::new_with_metadata(fields, self.schema.metadata().clone())))
    }

    /// Reads `chunks` in the given order, projected to `columns`, with
    /// `__pos` appended; calls `f` on each batch until it returns an error.
    pub fn for_each_batch(
        &self,
        chunks: &[Chunk],
        columns: Option<&[String]>,
        mut f: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let schema = self.read_schema(columns)?;
        for chunk in chunks {
            let info = &self.files[chunk.file];
            let mask = match columns {
                None => ProjectionMask::all(),
                Some(cols) => {
                    let idx = cols.iter().map(|c| info.meta.schema().index_of(c)).collect::<Result<Vec<_>, _>>()?;
                    ProjectionMask::roots(info.meta.parquet_schema(), idx)
                }
            };
            let first = info.first_pos + info.row_groups[..chunk.row_group].iter().sum::<u64>();
            let read = ReadChunk { info, row_group: chunk.row_group, mask, first, schema: &schema };
            match &info.remote {
                None => read.run(File::open(&info.path).map_err(io_err(&info.path))?, &mut f)?,
                Some(remote) => {
                    let fetched = remote.prefetch(read.byte_ranges())?;
                    read.run(fetched, &mut f)?
                }
            }
        }
        Ok(())
    }

    /// A DataFusion table over all rows in input order (one partition, so the
    /// order survives), with `__pos`.
    pub fn table(self: &Arc<Self>) -> Result<StreamingTable> {
        let schema = self.read_schema(None)?;
        let stream = OrderedStream { input: self.clone(), schema: schema.clone() };
        Ok(StreamingTable::try_new(schema, vec![Arc::new(stream)])?)
    }
}

/// One row group of one file, projected, read into batches with `__pos`.
struct ReadChunk<'a> {
    info: &'a FileInfo,
    row_group: usize,
    mask: ProjectionMask,
    first: u64,
    schema: &'a SchemaRef,
}

impl ReadChunk<'_> {
    /// The byte ranges of the projected columns in the row group: all a
    /// remote read fetches.
    fn byte_ranges(&self) -> Vec<std::ops::Range<u64>> {
        let rg = self.info.meta.metadata().row_group(self.row_group);
        (0..rg.num_columns())
            .filter(|&leaf| self.mask.leaf_included(leaf))
            .map(|leaf| {
                let (start, len) = rg.column(leaf).byte_range();
                start..start + len
            })
            .collect()
    }

    fn run<T: ChunkReader + 'static>(self, input: T, f: &mut impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let path = &self.info.path;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, self.info.meta.clone())
            .with_row_groups(vec![self.row_group])
            .with_projection(self.mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(parquet_err(path))?;
        let mut pos = self.first;
        for batch in reader {
            let batch = batch.map_err(|e| PipelineError::Parquet { path: path.clone(), source: e.into() })?;
            let n = batch.num_rows() as u64;
            let positions: ArrayRef = Arc::new(Int64Array::from_iter_values(pos as i64..(pos + n) as i64));
            let mut columns = batch.columns().to_vec();
            columns.push(positions);
            f(RecordBatch::try_new(self.schema.clone(), columns)?)?;
            pos += n;
        }
        Ok(())
    }
}

/// The one partition of [`InputFiles::table`].
#[derive(Debug)]
struct OrderedStream {
    input: Arc<InputFiles>,
    schema: SchemaRef,
}

impl PartitionStream for OrderedStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let input = self.input.clone();
        reader_stream(self.schema.clone(), move |send| input.for_each_batch(&input.chunks(), None, send))
    }
}

/// A stream of the batches `read` produces on a blocking thread, two in
/// flight: the next one is read while the current one is scored, without
/// holding more of the dataset. `read` gets the function that sends a
/// batch; it fails with [`PipelineError::ReaderStopped`] once the stream is
/// dropped, which ends the read quietly.
pub(crate) fn reader_stream(
    schema: SchemaRef,
    read: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> + Send + 'static,
) -> SendableRecordBatchStream {
    let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 2);
    let tx = builder.tx();
    builder.spawn_blocking(move || {
        let sent = read(&mut |batch| tx.blocking_send(Ok(batch)).map_err(|_| PipelineError::ReaderStopped));
        match sent {
            Ok(()) | Err(PipelineError::ReaderStopped) => Ok(()),
            Err(e) => Err(datafusion::error::DataFusionError::External(Box::new(e))),
        }
    });
    builder.build()
}
