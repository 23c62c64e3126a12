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
//! - **semantic** (with `--semantic-leaks EPS`): the evaluation rows are
//!   embedded as the training rows were (the proxy's features, or the text
//!   encoder's embedding), and a training row whose embedding has cosine
//!   similarity above `1 − EPS` with an evaluation row's leaks it: a
//!   brute-force search ([`sieve_selection::nearest`]) over the training
//!   rows in streamed batches, the evaluation rows' embeddings held.
//!
//! A leaking training row gets `leak_kind` (`exact`, else `near`, else
//! `semantic`), `leak_of` (the evaluation row's id; the closest one, then
//! the first) and `leak_distance` (0 for an exact copy; the Hamming bits or
//! 1 − the estimated Jaccard similarity for a near one; 1 − the cosine
//! similarity for a semantic one), so that a stricter threshold can be
//! applied in SQL later without hashing or embedding again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sieve_schemas::OutputColumns;

use crate::error::{io_err, PipelineError, Result};
use crate::input::{InputFiles, POS};
use crate::near_dup::{read_candidates, Measure, Search};
use crate::plan::{Against, DatasetPlan, Embedding, LeakPlan, NearDupPlan, RowSet};
use crate::score::ROW;
use crate::session::Runtime;
use crate::sqlgen::{ident, literal};
use sieve_selection::nearest::most_similar;
use sieve_selection::Embeddings;

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
    /// Training rows that are semantic duplicates (and neither exact nor
    /// near copies) of one, with `--semantic-leaks`.
    #[serde(default)]
    pub semantic: u64,
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

/// What embedded the training rows' `embedding` column, so that the
/// evaluation rows are embedded alike for semantic leaks.
#[derive(Clone, Debug)]
pub struct Embedder {
    /// The proxy whose penultimate features they are (with `Embedding::Proxy`).
    pub proxy_dir: PathBuf,
    /// The proxy's features or a text encoder's embedding.
    pub embedding: Embedding,
}

impl Embedder {
    /// The SQL expression that embeds the input column `input`.
    fn sql(&self, input: &str) -> String {
        let (function, dir) = match &self.embedding {
            Embedding::Proxy => ("proxy_embedding", &self.proxy_dir),
            Embedding::Encoder(dir) => ("text_embedding", dir),
        };
        format!("{function}({}, {input})", literal(&dir.to_string_lossy()))
    }
}

/// What the leak stage looks for besides exact copies.
#[derive(Clone, Copy, Debug)]
pub struct Checks<'a> {
    /// The near-duplicate thresholds.
    pub near_dup: &'a NearDupPlan,
    /// Semantic leaks: the cosine distance below which an embedding pair
    /// leaks, and how to embed the evaluation rows.
    pub semantic: Option<(f64, &'a Embedder)>,
}

/// How a training row leaks an evaluation row, the strongest evidence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Exact,
    Near,
    Semantic,
}

impl Kind {
    /// Its name in `leak_kind`.
    fn name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Near => "near",
            Kind::Semantic => "semantic",
        }
    }
}

/// One training row's leak: the evaluation row it duplicates (by `row`),
/// how, and how far from it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Leak {
    of: i64,
    kind: Kind,
    distance: f64,
}

impl Leak {
    /// Whether this leak is better evidence than `other`: exact first, then
    /// near, then semantic; then nearer; then the earlier evaluation row.
    fn beats(&self, other: &Leak) -> bool {
        (self.kind, self.distance, self.of) < (other.kind, other.distance, other.of)
    }
}

/// Keeps `leak` for training row `row` when it is better evidence than the
/// one held.
fn offer(leaks: &mut BTreeMap<i64, Leak>, row: i64, leak: Leak) {
    match leaks.get(&row) {
        Some(best) if !leak.beats(best) => {}
        _ => {
            leaks.insert(row, leak);
        }
    }
}

/// Checks the raw training scores `files` (`row`, `id`, `error`,
/// `content_hash` and the near-duplicate hash) against the evaluation rows
/// `against` and writes `dest`: `row`, `leak_kind`, `leak_of` and
/// `leak_distance` of every leaking training row, sorted by row. `scratch`
/// holds the evaluation rows' hashes (and embeddings) while it runs.
pub async fn run(
    ctx: &SessionContext,
    files: &[PathBuf],
    dataset: &DatasetPlan,
    against: (&str, &Arc<InputFiles>),
    checks: Checks<'_>,
    scratch: &Path,
    dest: &Path,
) -> Result<Leaks> {
    let hash = crate::near_dup::hash_column(files)?.ok_or_else(|| {
        PipelineError::Usage("no minhash or phash column in the scores to check leaks with: rescore them".into())
    })?;
    let session = Runtime::of(ctx)?.session(Some(crate::near_dup::candidate_memory(ctx)))?;
    let eval_file = scratch.join(".against.parquet");
    let embedder = checks.semantic.map(|(_, e)| e);
    let rows = hash_against(&session, dataset, against.1, embedder, &eval_file).await?;
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
        leaks.insert(train, Leak { of, kind: Kind::Exact, distance: 0.0 });
    }
    let search = Search::new(hash, checks.near_dup, files)?;
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
            offer(&mut leaks, t.value(i), Leak { of: e.value(i), kind: Kind::Near, distance });
        }
    }
    drop(stream);
    if let Some((eps, _)) = checks.semantic {
        semantic(&session, eps, &mut leaks).await?;
    }
    let unhashed = count(&session, &format!("SELECT count(*) FROM eval WHERE {hash} IS NULL")).await?;
    let mut wanted = RowSet::new(rows);
    leaks.values().for_each(|l| wanted.insert(l.of as u64));
    let eval = read_candidates(&eval_files, hash, &wanted)?;
    write(&leaks, &eval, dest)?;
    std::fs::remove_file(&eval_file).map_err(io_err(&eval_file))?;
    let of_kind = |kind| leaks.values().filter(|l| l.kind == kind).count() as u64;
    Ok(Leaks {
        against: against.0.to_string(),
        rows,
        unhashed,
        exact: of_kind(Kind::Exact),
        near: of_kind(Kind::Near),
        semantic: of_kind(Kind::Semantic),
        leaked: leaks.values().map(|l| l.of).collect::<std::collections::BTreeSet<_>>().len() as u64,
        verified,
        dropped: false,
    })
}

/// The semantic leaks: every valid training row of `raw` whose embedding's
/// most similar evaluation row (of `eval`) is within cosine distance `eps`,
/// offered to `leaks`. The evaluation rows' embeddings are held; the
/// training rows stream through in the query's batches.
async fn semantic(session: &SessionContext, eps: f64, leaks: &mut BTreeMap<i64, Leak>) -> Result<()> {
    let emb = OutputColumns::EMBEDDING;
    let query = |table: &str, valid: &str| format!("SELECT {ROW}, {emb} FROM {table} WHERE {emb} IS NOT NULL{valid}");
    let (mut eval_rows, mut eval_values, mut dim) = (Vec::new(), Vec::new(), 0);
    let mut stream = session.sql(&query("eval", "")).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        dim = embeddings_of(&batch?, &mut eval_rows, &mut eval_values);
    }
    if eval_rows.is_empty() {
        return Ok(());
    }
    let refs = Embeddings::new(&eval_values, dim).map_err(embedding_err)?;
    let rt = Runtime::of(session)?;
    let valid = format!(" AND {} IS NULL", OutputColumns::ERROR);
    let mut stream = session.sql(&query("raw", &valid)).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let (mut rows, mut values) = (Vec::new(), Vec::new());
        let width = embeddings_of(&batch?, &mut rows, &mut values);
        if rows.is_empty() {
            continue;
        }
        let queries = Embeddings::new(&values, width).map_err(embedding_err)?;
        let found = rt.install(|| most_similar(&queries, &refs)).map_err(embedding_err)?;
        for (row, nearest) in rows.iter().zip(found) {
            let Some(n) = nearest.filter(|n| 1.0 - f64::from(n.similarity) < eps) else { continue };
            let distance = (1.0 - f64::from(n.similarity)).max(0.0);
            offer(leaks, *row, Leak { of: eval_rows[n.of], kind: Kind::Semantic, distance });
        }
    }
    Ok(())
}

/// Appends the `row`s and embedding values of a (`row`, `embedding`) batch
/// without nulls; returns the embedding's width.
fn embeddings_of(batch: &RecordBatch, rows: &mut Vec<i64>, values: &mut Vec<f32>) -> usize {
    let list = batch.column(1).as_fixed_size_list();
    let dim = list.value_length() as usize;
    let all = list.values().as_primitive::<Float32Type>().values();
    let start = list.offset() * dim;
    rows.extend_from_slice(batch.column(0).as_primitive::<Int64Type>().values());
    values.extend_from_slice(&all[start..start + list.len() * dim]);
    dim
}

fn embedding_err(e: sieve_selection::EmbeddingError) -> PipelineError {
    PipelineError::Internal(format!("semantic leaks: {e}"))
}

/// Hashes the evaluation rows into `dest` (`row`: their position, `id`,
/// `content_hash` and the near-duplicate hash; their embedding, with an
/// `embedder`); returns how many.
async fn hash_against(
    session: &SessionContext,
    dataset: &DatasetPlan,
    against: &Arc<InputFiles>,
    embedder: Option<&Embedder>,
    dest: &Path,
) -> Result<u64> {
    session.register_table("against", Arc::new(against.table()?))?;
    // The dataset's id column where the evaluation rows have it too.
    let id = match &dataset.id_column {
        Some(id) if against.schema.index_of(id).is_ok() => ident(id),
        _ => ident(POS),
    };
    let input = ident(&dataset.input_column);
    let embedding =
        embedder.map_or_else(String::new, |e| format!(", {} AS {}", e.sql(&input), OutputColumns::EMBEDDING));
    let query = format!(
        "SELECT {pos} AS {ROW}, {id} AS {}, content_hash({input}) AS {}, {}{embedding} FROM against",
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
    let kinds = StringArray::from_iter_values(leaks.values().map(|l| l.kind.name()));
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
        let exact = Leak { of: 9, kind: Kind::Exact, distance: 0.0 };
        let near = Leak { of: 1, kind: Kind::Near, distance: 0.0 };
        assert!(exact.beats(&near) && !near.beats(&exact));
        let farther = Leak { of: 0, kind: Kind::Near, distance: 2.0 };
        assert!(near.beats(&farther));
        let later = Leak { of: 5, kind: Kind::Near, distance: 0.0 };
        assert!(near.beats(&later) && !later.beats(&near));
        let semantic = Leak { of: 0, kind: Kind::Semantic, distance: 0.0 };
        assert!(farther.beats(&semantic), "any hash match is stronger evidence than an embedding's");
        let mut held = BTreeMap::from([(3, near)]);
        offer(&mut held, 3, semantic);
        offer(&mut held, 4, semantic);
        assert_eq!((held[&3], held[&4]), (near, semantic));
    }
}
