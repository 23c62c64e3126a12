//! Near-duplicates within the training rows, from the hashes scoring wrote:
//! MinHash signatures of text (`minhash`) or perceptual hashes of images
//! (`phash`).
//!
//! 1. **Identical hashes, in SQL.** `GROUP BY` each valid row's whole hash
//!    (`HAVING count(*) > 1`): every later row of a group is a copy of the
//!    group's first row (evidence: Jaccard 1, or 0 bits), and only first
//!    rows go on. A dataset sampled with replacement, or one with many exact
//!    copies, leaves few rows for the next steps.
//! 2. **Candidates, in SQL.** Every valid row's band keys (`band_keys`: LSH
//!    bands of its signature, or bands of its hash's bits) are unnested and
//!    grouped by key and whole hash first, keeping each copy group's first
//!    row (`min`), then by key: `GROUP BY key HAVING count(*) > 1`. The
//!    aggregations run in a memory-limited session and spill; what comes
//!    back is the buckets of first rows that share a key, and the lists
//!    never hold a copy (on 1,000,000 rows with 933,046 copies the band
//!    query's peak fell from 488 to 175 MiB).
//! 3. **Verification.** Only the rows in some bucket (the candidates) and
//!    the first rows of identical groups have their hashes read back.
//!    Within a bucket the rows are compared pairwise, by estimated Jaccard
//!    similarity (text: at least `--near-dup J`) or Hamming distance
//!    (images: at most `--near-dup-bits D`).
//! 4. **Components.** Verified pairs are joined by union-find; a
//!    component's representative is its first row in input order, the one
//!    kept. Every other member gets `near_dup_of` (the representative's id)
//!    and its evidence: `near_dup_jaccard` (text: the estimated Jaccard
//!    similarity to the representative) or `near_dup_bits` (images: the
//!    Hamming distance to it). A copy's representative is its first row's.
//!
//! With MinHash LSH (bands and rows chosen as datasketch chooses them for
//! J) a pair of similarity `s` becomes a candidate with probability
//! `1 - (1 - s^r)^b`: pairs well above J are found almost surely, pairs
//! near it about half the time. With `D + 1` bands of bits, every pair
//! within D bits shares a band: nothing within the distance is missed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, Float32Array, Int32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt32Type, UInt64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sieve_neardup::components::Components;
use sieve_neardup::lsh::Banding;
use sieve_neardup::minhash::jaccard;
use sieve_neardup::phash::hamming;
use sieve_schemas::OutputColumns;

use crate::error::{PipelineError, Result};
use crate::plan::{NearDupPlan, RowSet};
use crate::score::ROW;
use crate::session::Runtime;

/// Column of a text row's MinHash signature (scores.parquet).
const MINHASH: &str = OutputColumns::MINHASH;
/// Column of an image row's perceptual hash (scores.parquet).
const PHASH: &str = OutputColumns::PHASH;

/// Memory the candidate queries may hold before they spill.
const CANDIDATE_MEMORY: usize = 256 << 20;

/// The least memory the candidate queries get: an aggregation of lists
/// cannot spill in much less.
const CANDIDATE_FLOOR: usize = 64 << 20;

/// The candidate queries' memory: [`CANDIDATE_MEMORY`], or the job's
/// session's pool (`--memory-limit`) when that is smaller, but at least
/// [`CANDIDATE_FLOOR`].
pub(crate) fn candidate_memory(ctx: &SessionContext) -> usize {
    crate::session::capped_memory(ctx, CANDIDATE_MEMORY).max(CANDIDATE_FLOOR)
}

/// What the near-duplicate stage found, for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NearDups {
    /// The hash compared: `minhash` or `phash`.
    pub hash: String,
    /// Text: the Jaccard threshold; images: the bits.
    pub threshold: f64,
    /// Bands of the candidate search.
    pub bands: usize,
    /// Text: signature values per band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_band: Option<usize>,
    /// Keys shared by more than one row.
    pub buckets: u64,
    /// Rows whose hash equals an earlier row's (flagged without banding).
    #[serde(default)]
    pub identical: u64,
    /// Rows in some bucket, and the first rows of identical hashes.
    pub candidates: u64,
    /// Pairs whose similarity was computed.
    pub compared: u64,
    /// Components of more than one row.
    pub components: u64,
    /// Rows that duplicate an earlier one (`near_dup_of` set).
    pub flagged: u64,
    /// Which flagged rows are never kept (`--drop-near-dups`).
    pub dropped: crate::choices::NearDupDrop,
    /// Flagged rows whose evidence passes a stricter threshold: (Jaccard at
    /// least, or bits at most; rows), what re-thresholding `near_dup_jaccard`
    /// or `near_dup_bits` in SQL gives.
    pub by_threshold: Vec<(f64, u64)>,
}

/// Which hash the raw scores carry, if any.
pub fn hash_column(files: &[PathBuf]) -> Result<Option<&'static str>> {
    let Some(first) = files.first() else { return Ok(None) };
    let schema = crate::parquet_io::schema(first)?;
    Ok([MINHASH, PHASH].into_iter().find(|c| schema.index_of(c).is_ok()))
}

/// The candidate rows' hashes: sorted by row, with their ids.
pub(crate) struct Candidates {
    /// Their `row`s, ascending.
    pub rows: Vec<i64>,
    /// Their ids, in the same order.
    pub ids: ArrayRef,
    /// Text: `num_perm` values a row; images: two (the hash's high and low
    /// halves).
    values: Vec<u32>,
    width: usize,
}

impl Candidates {
    /// The index of `row`, which must be a candidate.
    pub fn index(&self, row: i64) -> usize {
        self.rows.binary_search(&row).expect("every bucket row is a candidate")
    }

    /// The hash of the candidate at index `i`.
    pub fn hash(&self, i: usize) -> &[u32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// How two candidates compare, and whether they are near-duplicates.
pub(crate) enum Measure {
    /// Estimated Jaccard similarity of MinHash signatures, at least this.
    Jaccard(f64),
    /// Hamming distance of perceptual hashes, at most this.
    Bits(u32),
}

impl Measure {
    /// The evidence for a pair, and whether it passes.
    pub fn of(&self, a: &[u32], b: &[u32]) -> (f64, bool) {
        match *self {
            Measure::Jaccard(j) => {
                let s = jaccard(a, b);
                (s, s >= j)
            }
            Measure::Bits(d) => {
                let whole = |h: &[u32]| (h[0] as u64) << 32 | h[1] as u64;
                let bits = hamming(whole(a), whole(b));
                (bits as f64, bits <= d)
            }
        }
    }
}

/// How candidate pairs are found (band keys) and verified for one hash
/// column at one plan's threshold.
pub(crate) struct Search {
    /// A row's band keys, as SQL over the hash column.
    pub keys: String,
    /// A key of a row's whole hash, as SQL: equal for identical hashes.
    pub identity: String,
    /// How a candidate pair is verified.
    pub measure: Measure,
    /// Text: the Jaccard threshold; images: the bits.
    pub threshold: f64,
    /// Bands of the keys.
    pub bands: usize,
    /// Text: signature values per band.
    pub rows_per_band: Option<usize>,
}

impl Search {
    /// The SQL of a pair's evidence (estimated Jaccard similarity or
    /// Hamming bits) between the hashes of the tables aliased `a` and `b`,
    /// and of its passing the threshold.
    pub fn verify_sql(&self, a: &str, b: &str) -> (String, String) {
        match self.measure {
            Measure::Jaccard(j) => {
                let s = format!("minhash_jaccard({a}.{MINHASH}, {b}.{MINHASH})");
                (s.clone(), format!("{s} >= {j}"))
            }
            Measure::Bits(d) => {
                let s = format!("hamming({a}.{PHASH}, {b}.{PHASH})");
                (s.clone(), format!("{s} <= {d}"))
            }
        }
    }

    /// The search for `hash` (`minhash` or `phash`, as in `files`) at
    /// `plan`'s threshold: LSH bands chosen for the Jaccard threshold as
    /// datasketch chooses them, or `bits + 1` bands of the hash's bits.
    pub fn new(hash: &str, plan: &NearDupPlan, files: &[PathBuf]) -> Result<Self> {
        if hash == MINHASH {
            let width = signature_width(files)?;
            let banding = Banding::for_threshold(plan.jaccard, width);
            Ok(Self {
                keys: format!("band_keys({MINHASH}, {}, {})", banding.bands, banding.rows),
                identity: format!("band_keys({MINHASH}, 1, {width})[1]"),
                measure: Measure::Jaccard(plan.jaccard),
                threshold: plan.jaccard,
                bands: banding.bands,
                rows_per_band: Some(banding.rows),
            })
        } else {
            let bands = plan.bits as usize + 1;
            Ok(Self {
                keys: format!("band_keys({PHASH}, {bands})"),
                identity: PHASH.to_string(),
                measure: Measure::Bits(plan.bits),
                threshold: plan.bits as f64,
                bands,
                rows_per_band: None,
            })
        }
    }
}

/// Finds the near-duplicates among the raw scores `files` (every row's
/// `row`, `id`, `error` and hash column) and writes `dest`: `row`,
/// `near_dup_of` and its evidence for every flagged row, sorted by row.
pub async fn run(ctx: &SessionContext, files: &[PathBuf], plan: &NearDupPlan, dest: &Path) -> Result<NearDups> {
    let hash = hash_column(files)?.ok_or_else(|| {
        PipelineError::Usage("no minhash or phash column in the scores: rescore them with this sieve".into())
    })?;
    let session = Runtime::of(ctx)?.session(Some(candidate_memory(ctx)))?;
    let paths: Vec<String> = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    session.register_table("raw", session.read_parquet(paths, ParquetReadOptions::default()).await?.into_view())?;
    let Search { keys, identity, measure, threshold, bands, rows_per_band } = Search::new(hash, plan, files)?;
    let mut outcome = NearDups { hash: hash.into(), threshold, bands, rows_per_band, ..NearDups::default() };
    let valid = format!("{} IS NULL AND {hash} IS NOT NULL", OutputColumns::ERROR);
    let total = crate::parquet_io::rows(files)?;
    // Identical hashes first: each later row of a group is a copy of its
    // first, and only the first goes on to the band keys.
    let mut copies: Vec<(i64, i64)> = Vec::new();
    let identical = format!("SELECT array_agg({ROW}) FROM raw WHERE {valid} GROUP BY {identity} HAVING count(*) > 1");
    for_each_group(&session, &identical, |members| copies.extend(members[1..].iter().map(|&r| (r, members[0]))))
        .await?;
    // A key's bucket holds the first row of each distinct hash that has it:
    // the inner `GROUP BY key, hash` keeps one row (its least) of every
    // copy group, with `min`, which spills, instead of listing them all.
    let firsts = format!("SELECT k, min({ROW}) AS first FROM (SELECT {ROW}, {identity} AS h, unnest({keys}) AS k FROM raw WHERE {valid}) GROUP BY k, h");
    let banded = format!("SELECT array_agg(first) FROM ({firsts}) GROUP BY k HAVING count(*) > 1");
    let mut buckets: Vec<Vec<i64>> = Vec::new();
    for_each_group(&session, &banded, |members| buckets.push(members.to_vec())).await?;
    let mut wanted = RowSet::new(total);
    buckets.iter().flatten().chain(copies.iter().map(|(_, first)| first)).for_each(|&r| wanted.insert(r as u64));
    let candidates = read_candidates(files, hash, &wanted)?;
    outcome.buckets = buckets.len() as u64;
    outcome.candidates = candidates.rows.len() as u64;
    outcome.identical = copies.len() as u64;
    let mut components = Components::new(candidates.rows.len());
    for bucket in &buckets {
        let members: Vec<usize> = bucket.iter().map(|&r| candidates.index(r)).collect();
        for (k, &a) in members.iter().enumerate() {
            for &b in &members[k + 1..] {
                if components.find(a) == components.find(b) {
                    continue;
                }
                outcome.compared += 1;
                if measure.of(candidates.hash(a), candidates.hash(b)).1 {
                    components.union(a, b);
                }
            }
        }
    }
    // (row, its representative's candidate index, the evidence between them).
    let mut flagged: Vec<(i64, usize, f64)> = Vec::new();
    let mut roots = std::collections::HashSet::new();
    let mut flag = |i: usize, row: i64, components: &mut Components| {
        let root = components.find(i);
        if root != i || row != candidates.rows[i] {
            roots.insert(root);
            flagged.push((row, root, measure.of(candidates.hash(i), candidates.hash(root)).0));
        }
    };
    for i in 0..candidates.rows.len() {
        flag(i, candidates.rows[i], &mut components);
    }
    // A copy is as near its first's representative as its first is.
    for &(copy, first) in &copies {
        flag(candidates.index(first), copy, &mut components);
    }
    flagged.sort_unstable_by_key(|f| f.0);
    outcome.components = roots.len() as u64;
    outcome.flagged = flagged.len() as u64;
    outcome.dropped = plan.drop;
    outcome.by_threshold = curve(&measure, &flagged);
    write(&candidates, &flagged, &measure, dest)?;
    Ok(outcome)
}

/// Streams the groups of rows a query returns (its one column: `List` of
/// `row`), each sorted, to `f`.
async fn for_each_group(session: &SessionContext, query: &str, mut f: impl FnMut(&[i64])) -> Result<()> {
    let mut stream = session.sql(query).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let lists = batch.column(0).as_list::<i32>();
        for i in 0..batch.num_rows() {
            let mut members: Vec<i64> = lists.value(i).as_primitive::<Int64Type>().values().to_vec();
            members.sort_unstable();
            f(&members);
        }
    }
    Ok(())
}

/// Flagged rows by stricter thresholds: Jaccard from the threshold to 1 in
/// steps of 0.05, or bits from the distance down to 0.
fn curve(measure: &Measure, flagged: &[(i64, usize, f64)]) -> Vec<(f64, u64)> {
    let count = |pass: &dyn Fn(f64) -> bool| flagged.iter().filter(|f| pass(f.2)).count() as u64;
    match *measure {
        Measure::Jaccard(j) => {
            let steps = ((1.0 - j) / 0.05).round() as usize;
            (0..=steps)
                .map(|k| {
                    let t = ((j + k as f64 * 0.05) * 100.0).round().min(100.0) / 100.0;
                    (t, count(&|s| s >= t - 1e-9))
                })
                .collect()
        }
        Measure::Bits(d) => (0..=d).rev().map(|b| (b as f64, count(&|s| s <= b as f64))).collect(),
    }
}

/// Values per MinHash signature in the scores.
fn signature_width(files: &[PathBuf]) -> Result<usize> {
    let schema = crate::parquet_io::schema(&files[0])?;
    match schema.field_with_name(MINHASH)?.data_type() {
        DataType::FixedSizeList(_, w) => Ok(*w as usize),
        other => Err(PipelineError::Usage(format!("the minhash column is {other}, not a signature"))),
    }
}

/// Reads the hashes and ids of the rows in `wanted` (from `files` of
/// `row`, `id` and the `hash` column), sorted by row.
pub(crate) fn read_candidates(files: &[PathBuf], hash: &str, wanted: &RowSet) -> Result<Candidates> {
    // The hashes are the stage's largest allocation (128 values a text
    // row): sized once, and reordered only when the shards are not in row
    // order.
    let width = if hash == MINHASH { signature_width(files)? } else { 2 };
    let mut rows: Vec<i64> = Vec::with_capacity(wanted.len() as usize);
    let mut ids: Vec<ArrayRef> = Vec::new();
    let mut values: Vec<u32> = Vec::with_capacity(wanted.len() as usize * width);
    for file in files {
        for batch in crate::parquet_io::read_columns(file, &[ROW, OutputColumns::ID, hash])? {
            let batch = batch?;
            let row = batch.column_by_name(ROW).expect("read").as_primitive::<Int64Type>();
            let keep: datafusion::arrow::array::BooleanArray =
                row.values().iter().map(|&r| Some(wanted.contains(r as u64))).collect();
            let batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)?;
            let column = |name: &str| batch.column_by_name(name).expect("read").clone();
            rows.extend(column(ROW).as_primitive::<Int64Type>().values());
            ids.push(column(OutputColumns::ID));
            let hashes = column(hash);
            match hashes.data_type() {
                DataType::FixedSizeList(..) => {
                    let list = hashes.as_fixed_size_list();
                    let v = list.values().as_primitive::<UInt32Type>().values();
                    for i in 0..list.len() {
                        let start = list.value_offset(i) as usize;
                        values.extend(&v[start..start + width]);
                    }
                }
                _ => {
                    for &h in hashes.as_primitive::<UInt64Type>().values() {
                        values.extend([(h >> 32) as u32, h as u32]);
                    }
                }
            }
        }
    }
    let ids: Vec<&dyn Array> = ids.iter().map(|a| a.as_ref()).collect();
    let ids = match ids.is_empty() {
        // No candidates: an empty id column of the scores' id type.
        true => new_empty_array(crate::parquet_io::schema(&files[0])?.field_with_name(OutputColumns::ID)?.data_type()),
        false => concat(&ids)?,
    };
    if rows.is_sorted() {
        return Ok(Candidates { rows, ids, values, width });
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i]);
    let idx = datafusion::arrow::array::UInt32Array::from_iter_values(order.iter().map(|&i| i as u32));
    Ok(Candidates {
        rows: order.iter().map(|&i| rows[i]).collect(),
        ids: take(ids.as_ref(), &idx, None)?,
        values: order.iter().flat_map(|&i| values[i * width..(i + 1) * width].iter().copied()).collect(),
        width,
    })
}

/// Writes the flagged rows (row, representative's candidate index,
/// evidence), sorted by row.
fn write(candidates: &Candidates, flagged: &[(i64, usize, f64)], measure: &Measure, dest: &Path) -> Result<()> {
    let rows = Int64Array::from_iter_values(flagged.iter().map(|f| f.0));
    let reps = datafusion::arrow::array::UInt32Array::from_iter_values(flagged.iter().map(|f| f.1 as u32));
    let of = take(candidates.ids.as_ref(), &reps, None)?;
    let (name, evidence): (&str, ArrayRef) = match measure {
        Measure::Jaccard(_) => (
            OutputColumns::NEAR_DUP_JACCARD,
            Arc::new(Float32Array::from_iter_values(flagged.iter().map(|f| f.2 as f32))),
        ),
        Measure::Bits(_) => {
            (OutputColumns::NEAR_DUP_BITS, Arc::new(Int32Array::from_iter_values(flagged.iter().map(|f| f.2 as i32))))
        }
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW, DataType::Int64, false),
        Field::new(OutputColumns::NEAR_DUP_OF, of.data_type().clone(), true),
        Field::new(name, evidence.data_type().clone(), true),
    ]));
    let mut writer = crate::parquet_io::EvenWriter::create(dest, schema.clone())?;
    writer.write(RecordBatch::try_new(schema, vec![Arc::new(rows), of, evidence])?)?;
    writer.close()
}
