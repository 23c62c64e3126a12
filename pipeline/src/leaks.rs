//! Leaks: training rows that duplicate a row of the evaluation split, so
//! that a model trained on them is partly tested on what it saw (Barz &
//! Denzler 2020 found near-duplicates of 3.3% of CIFAR-10's test images in
//! its training split).
//!
//! The evaluation rows (`--against`: the held-out split by default) are
//! hashed here as scoring hashed the training rows: `content_hash` and the
//! near-duplicate hash (`minhash` for text, `phash` for images). Then, in
//! SQL over both:
//!
//! - **exact**: a join on `content_hash` (the same encoded bytes or text);
//! - **near**: a join on the band keys the near-duplicate stage uses
//!   ([`crate::near_dup::Search`]), whose filter verifies each candidate
//!   pair by estimated Jaccard similarity (`minhash_jaccard`, text) or
//!   Hamming distance (`hamming`, images) at the same thresholds
//!   (`--near-dup`, `--near-dup-bits`). The evaluation side is the join's
//!   build side: its rows' keys and hashes are what the stage holds.
//!
//! A leaking training row gets `leak_kind` (`exact`, else `near`),
//! `leak_of` (the evaluation row's id; the closest one, then the first) and
//! `leak_distance` (0 for an exact copy; the Hamming bits or 1 − the
//! estimated Jaccard similarity for a near one), so that a stricter
//! threshold can be applied in SQL later without hashing again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sieve_schemas::OutputColumns;

use crate::error::{io_err, PipelineError, Result};
use crate::input::{InputFiles, POS};
use crate::near_dup::{read_candidates, Measure, Search};
use crate::plan::{Against, DatasetPlan, LeakPlan, NearDupPlan, RowSet};
use crate::score::ROW;
use crate::session::Runtime;
use crate::sqlgen::ident;

/// What the leak stage found, for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Leaks {
    /// The evaluation rows: `heldout` or the files given.
    pub against: String,
    /// Evaluation rows checked.
    pub rows: u64,
    /// Evaluation rows without a hash (unreadable images, empty text).
    pub unhashed: u64,
    /// Training rows that are exact copies of an evaluation row.
    pub exact: u64,
    /// Training rows that are near-duplicates (and no exact copy) of one.
    pub near: u64,
    /// Evaluation rows some training row leaks (Barz & Denzler's count).
    pub leaked: u64,
    /// (training, evaluation) pairs within the threshold, counted once per
    /// band they share.
    pub verified: u64,
    /// Whether the leaking rows are never kept.
    pub dropped: bool,
}

/// The evaluation rows `plan` names for `dataset`, and how to name them in
/// the manifest; `None` when there are none to check against, which is a
/// usage error with `--drop-leaks`. Jobs call it before their first stage,
/// so that a wrong `--against` fails at once.
pub fn against(dataset: &DatasetPlan, plan: &LeakPlan) -> Result<Option<(String, Arc<InputFiles>)>> {
    let found = named(dataset, plan)?;
    if found.is_none() && plan.drop {
        return Err(PipelineError::Usage(
            "--drop-leaks: no evaluation rows to check against: the dataset has no held-out split \
             (give --against PATH, or --heldout with --input)"
                .into(),
        ));
    }
    Ok(found)
}

/// The evaluation rows `plan` names, if any.
fn named(dataset: &DatasetPlan, plan: &LeakPlan) -> Result<Option<(String, Arc<InputFiles>)>> {
    match &plan.against {
        Against::None => Ok(None),
        Against::Heldout => Ok(dataset.heldout.clone().map(|h| ("heldout".to_string(), h))),
        Against::Files(pattern) => {
            let files = InputFiles::open(pattern)?;
            crate::plan::check_columns(&files, dataset.kind, &dataset.input_column, None)?;
            Ok(Some((pattern.clone(), Arc::new(files))))
        }
    }
}

/// One training row's leak: the evaluation row it duplicates (by `row`),
/// how, and how far from it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Leak {
    of: i64,
    exact: bool,
    distance: f64,
}

impl Leak {
    /// Whether this leak is better evidence than `other`: exact first, then
    /// nearer, then the earlier evaluation row.
    fn beats(&self, other: &Leak) -> bool {
        (!self.exact, self.distance, self.of) < (!other.exact, other.distance, other.of)
    }
}

/// Checks the raw training scores `files` (`row`, `id`, `error`,
/// `content_hash` and the near-duplicate hash) against the evaluation rows
/// `against` and writes `dest`: `row`, `leak_kind`, `leak_of` and
/// `leak_distance` of every leaking training row, sorted by row. `scratch`
/// holds the evaluation rows' hashes while it runs.
pub async fn run(
    ctx: &SessionContext,
    files: &[PathBuf],
    dataset: &DatasetPlan,
    against: (&str, &Arc<InputFiles>),
    plan: &NearDupPlan,
    scratch: &Path,
    dest: &Path,
) -> Result<Leaks> {
    let hash = crate::near_dup::hash_column(files)?.ok_or_else(|| {
        PipelineError::Usage("no minhash or phash column in the scores to check leaks with: rescore them".into())
    })?;
    let session = Runtime::of(ctx)?.session(Some(crate::near_dup::candidate_memory(ctx)))?;
    let eval_file = scratch.join(".against.parquet");
    let rows = hash_against(&session, dataset, against.1, &eval_file).await?;
    let eval_files = vec![eval_file.clone()];
    let paths: Vec<String> = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    session.register_table("raw", session.read_parquet(paths, ParquetReadOptions::default()).await?.into_view())?;
    session.register_parquet("eval", eval_file.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
    let (err, content) = (OutputColumns::ERROR, OutputColumns::CONTENT_HASH);
    let mut leaks: BTreeMap<i64, Leak> = BTreeMap::new();
    let exact = format!(
        "SELECT r.{ROW}, min(e.{ROW}) FROM raw r JOIN eval e ON r.{content} = e.{content} \
         WHERE r.{err} IS NULL GROUP BY r.{ROW}"
    );
    for (train, of) in pairs(&session, &exact).await? {
        leaks.insert(train, Leak { of, exact: true, distance: 0.0 });
    }
    let search = Search::new(hash, plan, files)?;
    let keys = &search.keys;
    let (evidence, pass) = search.verify_sql("t", "e");
    // Candidates share a band key; the join's filter verifies them, so only
    // verified pairs come back.
    // The evaluation side first: the join builds its table from it.
    let near = format!(
        "SELECT t.{ROW}, e.{ROW}, CAST({evidence} AS DOUBLE) FROM \
         (SELECT {ROW}, {hash}, unnest({keys}) AS k FROM eval WHERE {hash} IS NOT NULL) e JOIN \
         (SELECT {ROW}, {hash}, unnest({keys}) AS k FROM raw WHERE {err} IS NULL AND {hash} IS NOT NULL) t \
         ON e.k = t.k WHERE {pass}"
    );
    let mut verified = 0;
    let mut stream = session.sql(&near).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (t, e) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_primitive::<Int64Type>());
        let evidence = batch.column(2).as_primitive::<Float64Type>();
        for i in 0..batch.num_rows() {
            verified += 1;
            let distance = match search.measure {
                Measure::Jaccard(_) => 1.0 - evidence.value(i),
                Measure::Bits(_) => evidence.value(i),
            };
            let leak = Leak { of: e.value(i), exact: false, distance };
            match leaks.get(&t.value(i)) {
                Some(best) if !leak.beats(best) => {}
                _ => {
                    leaks.insert(t.value(i), leak);
                }
            }
        }
    }
    drop(stream);
    let unhashed = count(&session, &format!("SELECT count(*) FROM eval WHERE {hash} IS NULL")).await?;
    let mut wanted = RowSet::new(rows);
    leaks.values().for_each(|l| wanted.insert(l.of as u64));
    let eval = read_candidates(&eval_files, hash, &wanted)?;
    write(&leaks, &eval, dest)?;
    std::fs::remove_file(&eval_file).map_err(io_err(&eval_file))?;
    let exact = leaks.values().filter(|l| l.exact).count() as u64;
    Ok(Leaks {
        against: against.0.to_string(),
        rows,
        unhashed,
        exact,
        near: leaks.len() as u64 - exact,
        leaked: leaks.values().map(|l| l.of).collect::<std::collections::BTreeSet<_>>().len() as u64,
        verified,
        dropped: false,
    })
}

/// Hashes the evaluation rows into `dest` (`row`: their position, `id`,
/// `content_hash` and the near-duplicate hash); returns how many.
async fn hash_against(
    session: &SessionContext,
    dataset: &DatasetPlan,
    against: &Arc<InputFiles>,
    dest: &Path,
) -> Result<u64> {
    session.register_table("against", Arc::new(against.table()?))?;
    // The dataset's id column where the evaluation rows have it too.
    let id = match &dataset.id_column {
        Some(id) if against.schema.index_of(id).is_ok() => ident(id),
        _ => ident(POS),
    };
    let input = ident(&dataset.input_column);
    let query = format!(
        "SELECT {pos} AS {ROW}, {id} AS {}, content_hash({input}) AS {}, {} FROM against",
        OutputColumns::ID,
        OutputColumns::CONTENT_HASH,
        crate::score::near_hash_sql(dataset.kind, &input),
        pos = ident(POS),
    );
    let rows = crate::parquet_io::write_query(session.sql(&query).await?, dest, Ok).await?;
    session.deregister_table("against")?;
    Ok(rows)
}

/// The (training row, evaluation row) pairs a query returns.
async fn pairs(session: &SessionContext, query: &str) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let mut stream = session.sql(query).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (a, b) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_primitive::<Int64Type>());
        out.extend(a.values().iter().copied().zip(b.values().iter().copied()));
    }
    Ok(out)
}

/// The one number a `count(*)` query returns.
async fn count(session: &SessionContext, query: &str) -> Result<u64> {
    let batches = session.sql(query).await?.collect().await?;
    Ok(batches.first().map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0) as u64))
}

/// Writes the leaks, sorted by training row, with the evaluation rows' ids
/// from `eval`.
fn write(leaks: &BTreeMap<i64, Leak>, eval: &crate::near_dup::Candidates, dest: &Path) -> Result<()> {
    let rows = Int64Array::from_iter_values(leaks.keys().copied());
    let kinds = StringArray::from_iter_values(leaks.values().map(|l| if l.exact { "exact" } else { "near" }));
    let index: HashMap<i64, u32> = eval.rows.iter().enumerate().map(|(i, &r)| (r, i as u32)).collect();
    let of = take(eval.ids.as_ref(), &UInt32Array::from_iter_values(leaks.values().map(|l| index[&l.of])), None)?;
    let distance = Float32Array::from_iter_values(leaks.values().map(|l| l.distance as f32));
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW, DataType::Int64, false),
        Field::new(OutputColumns::LEAK_KIND, DataType::Utf8, true),
        Field::new(OutputColumns::LEAK_OF, of.data_type().clone(), true),
        Field::new(OutputColumns::LEAK_DISTANCE, DataType::Float32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![Arc::new(rows), Arc::new(kinds), of, Arc::new(distance)];
    let mut writer = crate::parquet_io::EvenWriter::create(dest, schema.clone())?;
    writer.write(RecordBatch::try_new(schema, columns)?)?;
    writer.close()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_copy_beats_a_nearer_row_and_ties_go_to_the_first() {
        let exact = Leak { of: 9, exact: true, distance: 0.0 };
        let near = Leak { of: 1, exact: false, distance: 0.0 };
        assert!(exact.beats(&near) && !near.beats(&exact));
        let farther = Leak { of: 0, exact: false, distance: 2.0 };
        assert!(near.beats(&farther));
        let later = Leak { of: 5, exact: false, distance: 0.0 };
        assert!(near.beats(&later) && !later.beats(&near));
    }
}
