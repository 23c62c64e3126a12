//! The score stage: `SELECT ..., proxy_scores(proxy, input, label) FROM input`
//! in DataFusion, streamed into a Parquet file with one row per input row in
//! input order. Bad rows keep their place with null scores and an `error`;
//! with `--on-error fail` the first one stops the job, naming file, row and
//! column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema};
use datafusion::prelude::SessionContext;
use sieve_schemas::{ErrorColumn, InputKind, OutputColumns, RowErrorReason};

use crate::choices::OnError;
use crate::error::{PipelineError, Result};
use crate::input::{InputFiles, POS};
use crate::resume::{publish, WorkDir};

/// Column of scores.parquet holding each row's position in the input.
pub const ROW: &str = "row";
use crate::parquet_io;
use crate::plan::{DatasetPlan, Embedding, RunPlan};
use crate::sqlgen::{ident, literal};

/// What the score stage measured.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScoreOutcome {
    /// Rows scored (all input rows, bad ones included).
    pub rows: u64,
    /// Rows with an error, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Rows the proxy predicts correctly.
    pub correct: u64,
    /// Fraction of scored rows the proxy predicts correctly.
    pub train_accuracy: f64,
    /// Input files whose scores an interrupted run had already written.
    pub reused_shards: usize,
}

impl ScoreOutcome {
    /// Adds another part's counts (and recomputes the accuracy).
    pub(crate) fn absorb(&mut self, other: ScoreOutcome) {
        self.rows += other.rows;
        self.correct += other.correct;
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        self.update_accuracy();
    }

    /// Sets `train_accuracy` from the counts.
    fn update_accuracy(&mut self) {
        let valid = self.rows - self.skipped.values().sum::<u64>();
        self.train_accuracy = if valid == 0 { 0.0 } else { self.correct as f64 / valid as f64 };
    }

    /// Counts a finished shard's rows, errors and correct predictions; with
    /// `fail_on` (`--on-error fail`), stops at its first bad row, naming it
    /// in `fail_on`'s input.
    pub(crate) fn of_shard(path: &Path, fail_on: Option<&DatasetPlan>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(crate::error::io_err(path))?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, crate::input::BATCH_ROWS)
                .map_err(crate::error::parquet_err(path))?;
        let mut outcome = Self::default();
        for batch in reader {
            let batch = batch?;
            if let Some(dataset) = fail_on {
                fail_on_bad_row(&batch, dataset)?;
            }
            outcome.count(&batch);
        }
        outcome.update_accuracy();
        Ok(outcome)
    }

    /// Counts one scored batch.
    fn count(&mut self, batch: &RecordBatch) {
        let errors = batch.column_by_name(OutputColumns::ERROR).expect("scores have error").as_string::<i32>();
        for i in (0..batch.num_rows()).filter(|&i| errors.is_valid(i)) {
            let reason = RowErrorReason::of(errors.value(i)).map_or("unknown", RowErrorReason::name);
            *self.skipped.entry(reason.to_string()).or_default() += 1;
        }
        let hits = batch.column_by_name(OutputColumns::CORRECT).expect("scores have correct").as_boolean();
        self.correct += hits.true_count() as u64;
        self.rows += batch.num_rows() as u64;
    }
}

/// Name of the struct column the scoring query returns; [`flatten_scores`]
/// turns it into one column per score.
const SCORES: &str = "__scores";
/// Name of the text encoder's embedding column in the scoring query; it
/// replaces the proxy's `embedding`.
const ENCODED: &str = "__encoded";

/// The scoring query: `row` (the input position), id, label, content hash,
/// the near-duplicate hash (a text's MinHash signature, an image's
/// perceptual hash) and the struct of scores. The struct is flattened in Rust, not with
/// `get_field` in SQL: DataFusion merges the projections and would then call
/// the proxy once per field.
pub fn scoring_sql(dataset: &DatasetPlan, proxy_dir: &Path) -> String {
    let input = ident(&dataset.input_column);
    let label = if dataset.hide_labels { "NULL".to_string() } else { ident(&dataset.label_column) };
    let id = dataset.id_column.as_deref().map_or_else(|| ident(POS), ident);
    let encoder = match &dataset.embedding {
        Embedding::Proxy => String::new(),
        Embedding::Encoder(dir) => {
            format!(", text_embedding({}, {input}) AS {}", literal(&dir.to_string_lossy()), ident(ENCODED))
        }
    };
    let near = near_hash_sql(dataset.kind, &input);
    format!(
        "SELECT {pos} AS row, {id} AS id, CAST({label} AS BIGINT) AS label, content_hash({input}) AS content_hash, \
         {near}, proxy_scores({dir}, {input}, {label}) AS {scores}{encoder} FROM input",
        pos = ident(POS),
        dir = literal(&proxy_dir.to_string_lossy()),
        scores = ident(SCORES),
    )
}

/// The near-duplicate hash of the SQL expression `input`, named as its
/// column: a text's MinHash signature, an image's perceptual hash.
pub(crate) fn near_hash_sql(kind: InputKind, input: &str) -> String {
    match kind {
        InputKind::Text => format!("minhash({input}) AS {}", OutputColumns::MINHASH),
        InputKind::Image => format!("phash({input}) AS {}", OutputColumns::PHASH),
    }
}

/// Replaces the struct column of scores by its fields, as top-level columns,
/// and the proxy's embedding by the encoder's when the query has one.
pub(crate) fn flatten_scores(batch: RecordBatch) -> Result<RecordBatch> {
    let idx = batch.schema().index_of(SCORES)?;
    let scores = batch.column(idx).as_struct().clone();
    let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    fields.splice(idx..=idx, scores.fields().iter().cloned());
    columns.splice(idx..=idx, scores.columns().iter().cloned());
    if let Some(encoded) = fields.iter().position(|f| f.name() == ENCODED) {
        let embedding =
            fields.iter().position(|f| f.name() == OutputColumns::EMBEDDING).expect("scores have embedding");
        let column = columns.remove(encoded);
        fields.remove(encoded);
        fields[embedding] = Arc::new(Field::new(OutputColumns::EMBEDDING, column.data_type().clone(), true));
        columns[embedding] = column;
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// The error of the first row of `batch` that could not be scored, naming
/// its file, row and column.
fn fail_on_bad_row(batch: &RecordBatch, dataset: &DatasetPlan) -> Result<()> {
    let errors = batch.column_by_name(OutputColumns::ERROR).expect("scores have error").as_string::<i32>();
    let Some(i) = (0..batch.num_rows()).find(|&i| errors.is_valid(i)) else { return Ok(()) };
    let message = errors.value(i);
    let pos = batch.column_by_name(ROW).expect("scores have row").as_primitive::<Int64Type>().value(i);
    let (file, row) = dataset.train.locate(pos as u64);
    let column = match RowErrorReason::of(message).map(RowErrorReason::column) {
        Some(ErrorColumn::Label) => &dataset.label_column,
        Some(ErrorColumn::Input) | None => &dataset.input_column,
    };
    Err(PipelineError::BadRow { file: file.to_path_buf(), row, column: column.clone(), reason: message.to_string() })
}

/// Scores `dataset.train` one input file at a time into the shards of
/// `work`, reusing the shards an interrupted run finished; returns the
/// directory of shards (one row per input row; select orders them by `row`).
pub async fn run_resumable(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    work: &WorkDir,
) -> Result<(PathBuf, ScoreOutcome)> {
    let mut outcome = ScoreOutcome::default();
    let shards: Vec<PathBuf> = dataset.train.files.iter().map(|file| work.shard(file)).collect();
    work.retain_shards(&shards.iter().filter_map(|s| s.file_name()?.to_str().map(String::from)).collect::<Vec<_>>())?;
    for (file, shard) in dataset.train.files.iter().zip(shards) {
        if shard.exists() {
            outcome.absorb(ScoreOutcome::of_shard(&shard, None)?);
            outcome.reused_shards += 1;
            continue;
        }
        let one = InputFiles { files: vec![file.clone()], schema: dataset.train.schema.clone() };
        let part = DatasetPlan { train: Arc::new(one), ..dataset.clone() };
        let tmp = work.temporary("shard");
        outcome.absorb(self::run(ctx, &part, proxy_dir, run, &tmp).await?);
        publish(&tmp, &shard)?;
    }
    Ok((work.shards_dir(), outcome))
}

/// Scores every row of `dataset.train` with the proxy in `proxy_dir` into
/// the Parquet file `dest`.
pub async fn run(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    dest: &Path,
) -> Result<ScoreOutcome> {
    ctx.register_table("input", Arc::new(dataset.train.table()?))?;
    let df = ctx.sql(&scoring_sql(dataset, proxy_dir)).await?;
    let bar = crate::progress::bar("score", dataset.train.total_rows(), "rows", run.quiet);
    let mut outcome = ScoreOutcome::default();
    parquet_io::write_query(df, dest, |batch| {
        let batch = flatten_scores(batch)?;
        if run.on_error == OnError::Fail {
            fail_on_bad_row(&batch, dataset)?;
        }
        outcome.count(&batch);
        bar.inc(batch.num_rows() as u64);
        Ok(batch)
    })
    .await?;
    bar.finish_and_clear();
    ctx.deregister_table("input")?;
    outcome.update_accuracy();
    Ok(outcome)
}
