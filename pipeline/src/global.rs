//! Selection methods that need every row's embedding at once, run between
//! scoring and the SQL selection: the prototype score (Sorscher et al.
//! 2022), greedy k-center (Sener & Savarese 2018, as SVP uses it), semantic
//! de-duplication (SemDeDup, Abbas et al. 2023) and data schedules. They read
//! `row`, `label`, `error` and `embedding` from the raw scores (memory is
//! linear in rows: `rows x dim` floats, no `n x n` matrix) and write their
//! columns, keyed by `row`, for the select stage to join.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use serde::Serialize;
use sieve_schemas::{OutputColumns, ScoreName};
use sieve_selection::kcenter::{k_center_greedy, k_center_greedy_per_class};
use sieve_selection::kmeans::KMeansConfig;
use sieve_selection::prototype::{prototype_scores, prototype_scores_per_class};
use sieve_selection::schedule::{assign_stages, Ranking, Schedule};
use sieve_selection::semdedup::{semdedup, SemDedupConfig};
use sieve_selection::Embeddings;

use crate::choices::{Balance, Prototypes, ScheduleOrder, Strategy};
use crate::error::{io_err, parquet_err, PipelineError, Result};
use crate::parquet_io;
use crate::plan::SelectPlan;
use crate::score::ROW;

/// Column of the prototype score (higher = farther from its centroid = harder).
pub const PROTOTYPE: &str = ScoreName::Prototype.column();
/// Column of the k-center pick order (0 = first pick; null = not picked).
pub const KCENTER_RANK: &str = "kcenter_rank";
/// Column of the SemDeDup cluster.
pub const DUP_CLUSTER: &str = "dup_cluster";
/// Column of the row a duplicate duplicates (null for kept rows).
pub const DUP_OF: &str = "dup_of";
/// Column of the first schedule stage (0-based) a row is used in.
pub const STAGE: &str = "stage";
/// Column of the last schedule stage a row is used in.
pub const LAST_STAGE: &str = "last_stage";

/// What the global step did, for the manifest.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct GlobalOutcome {
    /// Rows flagged as semantic duplicates.
    pub duplicates: Option<u64>,
    /// Per-stage fraction of the valid rows actually used.
    pub stage_fractions: Option<Vec<f64>>,
    /// Seconds per method.
    pub seconds: Vec<(String, f64)>,
}

/// Whether `plan` needs the embeddings at all.
pub fn needed(plan: &SelectPlan) -> bool {
    plan.score == ScoreName::Prototype
        || plan.strategy == Strategy::Kcenter
        || plan.dedup.is_some()
        || plan.schedule.is_some()
}

/// The valid rows' positions, labels, embeddings and one score.
pub(crate) struct Valid {
    /// Input positions, ascending.
    pub rows: Vec<i64>,
    /// Labels (0 where null).
    pub labels: Vec<u32>,
    /// `rows x dim` embedding values.
    pub embeddings: Vec<f32>,
    /// Embedding width.
    pub dim: usize,
    /// The requested score of each row.
    pub score: Vec<f32>,
}

/// Reads the valid rows of the raw scores (a file, or a directory of
/// shards), sorted by `row`, with the column `score` when given.
pub(crate) fn read_valid(raw: &Path, score: Option<&str>) -> Result<Valid> {
    let mut valid = Valid { rows: Vec::new(), labels: Vec::new(), embeddings: Vec::new(), dim: 0, score: Vec::new() };
    for file in sieve_schemas::paths::resolve_files(&raw.to_string_lossy())? {
        read_valid_file(&file, score, &mut valid)?;
    }
    let mut order: Vec<usize> = (0..valid.rows.len()).collect();
    order.sort_by_key(|&i| valid.rows[i]);
    let dim = valid.dim;
    let score = if score.is_some() { order.iter().map(|&i| valid.score[i]).collect() } else { Vec::new() };
    Ok(Valid {
        rows: order.iter().map(|&i| valid.rows[i]).collect(),
        labels: order.iter().map(|&i| valid.labels[i]).collect(),
        embeddings: order.iter().flat_map(|&i| valid.embeddings[i * dim..(i + 1) * dim].iter().copied()).collect(),
        dim,
        score,
    })
}

fn read_valid_file(raw: &Path, score: Option<&str>, valid: &mut Valid) -> Result<()> {
    let file = std::fs::File::open(raw).map_err(io_err(raw))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(raw))?;
    let schema = builder.schema().clone();
    let mut names = vec![ROW, "label", OutputColumns::ERROR, OutputColumns::EMBEDDING];
    names.extend(score);
    let idx = names.iter().map(|c| schema.index_of(c)).collect::<Result<Vec<_>, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let reader = builder.with_projection(mask).build().map_err(parquet_err(raw))?;
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| batch.column_by_name(name).expect("projected");
        let rows = col(ROW).as_primitive::<Int64Type>();
        let labels = col("label").as_primitive::<Int64Type>();
        let errors = col(OutputColumns::ERROR);
        let emb = col(OutputColumns::EMBEDDING).as_fixed_size_list();
        let scores = score.map(|s| col(s).as_primitive::<Float32Type>());
        valid.dim = emb.value_length() as usize;
        let values = emb.values().as_primitive::<Float32Type>().values();
        for i in (0..batch.num_rows()).filter(|&i| errors.is_null(i)) {
            valid.rows.push(rows.value(i));
            valid.labels.push(if labels.is_valid(i) { labels.value(i) as u32 } else { 0 });
            valid.embeddings.extend_from_slice(&values[i * valid.dim..(i + 1) * valid.dim]);
            valid.score.extend(scores.map(|s| s.value(i)));
        }
    }
    Ok(())
}

/// Whether the first Parquet file of `path` (a file, or a directory of
/// shards with one schema) has a column `name`.
pub(crate) fn has_column(path: &Path, name: &str) -> Result<bool> {
    let files = sieve_schemas::paths::resolve_files(&path.to_string_lossy())?;
    let Some(first) = files.first() else { return Ok(false) };
    let file = std::fs::File::open(first).map_err(io_err(first))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(first))?;
    Ok(builder.schema().fields().iter().any(|f| f.name() == name))
}

/// The Float32 column `name` of the file `path`, indexed by its `row`
/// column (input positions); `None` where the file has no value.
fn read_by_row(path: &Path, name: &str) -> Result<Vec<Option<f32>>> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let idx = [ROW, name].iter().map(|c| builder.schema().index_of(c)).collect::<Result<Vec<_>, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let mut values = Vec::new();
    for batch in builder.with_projection(mask).build().map_err(parquet_err(path))? {
        let batch = batch?;
        let rows = batch.column_by_name(ROW).expect("projected").as_primitive::<Int64Type>();
        let column = batch.column_by_name(name).expect("projected").as_primitive::<Float32Type>();
        for i in 0..batch.num_rows() {
            let row = usize::try_from(rows.value(i)).unwrap_or(usize::MAX);
            if row >= values.len() && row != usize::MAX {
                values.resize(row + 1, None);
            }
            if let Some(slot) = values.get_mut(row) {
                *slot = column.is_valid(i).then(|| column.value(i));
            }
        }
    }
    Ok(values)
}

/// The score a data schedule's easy-first order ranks `valid` by: the
/// column `plan.score` of the raw scores (`in_raw`: read with `valid`), of a
/// file joined on `row`
/// (`extras`: the training dynamics), or the prototype score computed in
/// this step. A score the job does not have is a usage error, never a
/// silent substitute.
fn schedule_score(
    plan: &SelectPlan,
    in_raw: bool,
    valid: &Valid,
    extras: &[PathBuf],
    prototype: Option<&[f32]>,
) -> Result<Vec<f32>> {
    if plan.score == ScoreName::Prototype {
        return prototype.map(<[f32]>::to_vec).ok_or_else(|| {
            PipelineError::Internal("the schedule ranks by a prototype score that was not computed".into())
        });
    }
    if in_raw {
        return Ok(valid.score.clone());
    }
    for extra in extras {
        if has_column(extra, plan.score.column())? {
            let by_row = read_by_row(extra, plan.score.column())?;
            return Ok(valid
                .rows
                .iter()
                .map(|&r| by_row.get(r as usize).copied().flatten().unwrap_or(f32::NAN))
                .collect());
        }
    }
    Err(PipelineError::Usage(format!(
        "--schedule-order easy orders by --score {}, which these scores do not have (training dynamics exist only for a proxy trained on these files)",
        plan.score
    )))
}

fn timed<T>(outcome: &mut GlobalOutcome, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = std::time::Instant::now();
    let out = f()?;
    outcome.seconds.push((name.to_string(), started.elapsed().as_secs_f64()));
    Ok(out)
}

fn embedding_err(e: sieve_selection::EmbeddingError) -> PipelineError {
    PipelineError::Internal(e.to_string())
}

/// Runs the methods `plan` asks for over the raw scores and writes their
/// columns to `dest`. `extras` are the files the select stage joins on
/// `row` (the training dynamics), read for a schedule's score.
pub fn run(raw: &Path, extras: &[PathBuf], plan: &SelectPlan, classes: usize, dest: &Path) -> Result<GlobalOutcome> {
    let mut outcome = GlobalOutcome::default();
    // The score comes with the rows when the raw scores hold it (a schedule
    // ranks by it); else from `extras` or this step, if at all.
    let in_raw = has_column(raw, plan.score.column())?;
    let valid = read_valid(raw, in_raw.then_some(plan.score.column()))?;
    let n = valid.rows.len();
    let mut fields = vec![Field::new(ROW, DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(valid.rows.clone()))];
    if n > 0 {
        let emb = Embeddings::new(&valid.embeddings, valid.dim).map_err(embedding_err)?;
        let mut prototype = None;
        if plan.score == ScoreName::Prototype {
            let p = timed(&mut outcome, PROTOTYPE, || {
                match plan.prototypes {
                    Prototypes::Global => {
                        let k = plan.clusters.unwrap_or(classes).min(n);
                        prototype_scores(&emb, &KMeansConfig::new(k, plan.seed))
                    }
                    Prototypes::Class => {
                        let k = plan.clusters.unwrap_or(1);
                        prototype_scores_per_class(&emb, &valid.labels, &KMeansConfig::new(k, plan.seed))
                    }
                }
                .map_err(embedding_err)
            })?;
            fields.push(Field::new(PROTOTYPE, DataType::Float32, true));
            columns.push(Arc::new(Float32Array::from(p.prototype.clone())));
            prototype = Some(p.prototype);
        }
        if plan.strategy == Strategy::Kcenter {
            let picks = timed(&mut outcome, "kcenter", || {
                match plan.balance {
                    Balance::None => k_center_greedy(&emb, (plan.keep * n as f64).round() as usize, &[], plan.seed),
                    Balance::Class => k_center_greedy_per_class(&emb, &valid.labels, plan.keep, &[], plan.seed),
                }
                .map_err(embedding_err)
            })?;
            let mut rank = vec![None; n];
            for (order, &i) in picks.iter().enumerate() {
                rank[i] = Some(order as i64);
            }
            fields.push(Field::new(KCENTER_RANK, DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(rank)));
        }
        if let Some(eps) = plan.dedup {
            // SemDeDup compares pairs inside each cluster: about sqrt(n)
            // clusters keeps that quadratic cost near n^1.5.
            let clusters = ((n as f64).sqrt().ceil() as usize).max(1);
            let d = timed(&mut outcome, "dedup", || {
                let cfg = SemDedupConfig { eps: eps as f32, kmeans: KMeansConfig::new(clusters, plan.seed) };
                semdedup(&emb, &cfg).map_err(embedding_err)
            })?;
            outcome.duplicates = Some(d.dup_of.iter().filter(|x| x.is_some()).count() as u64);
            let dup_of: Int64Array = d.dup_of.iter().map(|o| o.map(|i| valid.rows[i])).collect();
            fields.push(Field::new(DUP_CLUSTER, DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from_iter_values(d.dup_cluster.iter().map(|&c| c as i64))));
            fields.push(Field::new(DUP_OF, DataType::Int64, true));
            columns.push(Arc::new(dup_of));
        }
        if let Some(spec) = &plan.schedule {
            let schedule: Schedule = spec.parse().map_err(embedding_err)?;
            let score = match plan.schedule_order {
                ScheduleOrder::Easy => schedule_score(plan, in_raw, &valid, extras, prototype.as_deref())?,
                ScheduleOrder::Random => Vec::new(),
            };
            let order = match plan.schedule_order {
                ScheduleOrder::Easy => Ranking::EasyFirst(&score),
                ScheduleOrder::Random => Ranking::Random { n, seed: plan.seed },
            };
            let stages = timed(&mut outcome, "schedule", || Ok(assign_stages(order, &schedule)))?;
            outcome.stage_fractions = Some(stages.realised.clone());
            let to_i64 = |v: &[Option<u32>]| -> Int64Array { v.iter().map(|s| s.map(i64::from)).collect() };
            fields.push(Field::new(STAGE, DataType::Int64, true));
            columns.push(Arc::new(to_i64(&stages.stage)));
            fields.push(Field::new(LAST_STAGE, DataType::Int64, true));
            columns.push(Arc::new(to_i64(&stages.last_stage)));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let mut writer = parquet_io::create(dest, schema.clone())?;
    parquet_io::write(&mut writer, &RecordBatch::try_new(schema, columns)?, dest)?;
    parquet_io::close(writer, dest)?;
    Ok(outcome)
}
