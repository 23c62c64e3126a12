//! What the report reads from `scores.parquet`: one streamed pass picks the
//! hardest and easiest rows with bounded heaps and a seeded sample of the
//! pruned rows with a reservoir, and counts the rows without scores; a
//! second pass bins each class's scores for the histograms. Only the columns
//! needed are read and memory does not grow with the dataset (the grids hold
//! `n` rows each, the histograms `bins` counts per class).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sieve_schemas::OutputColumns;

use crate::error::{io_err, parquet_err, PipelineError, Result};
use crate::input::BATCH_ROWS;
use crate::score::ROW;

/// One scored row, as a grid shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Its input position (`row`).
    pub pos: u64,
    /// Its label.
    pub label: Option<i64>,
    /// The proxy's predicted class.
    pub pred: Option<i64>,
    /// The selection score (higher = harder).
    pub score: f32,
    /// Whether the selection kept it.
    pub keep: bool,
}

/// An `f32` ordered by [`f32::total_cmp`].
#[derive(Clone, Copy, Debug)]
struct Total(f32);

impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Total {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Total {}

/// A row with the key it is ranked by; ordered by the key alone.
#[derive(Clone, Copy, Debug)]
struct Ranked<K>(K, Scored);

impl<K: Ord> Ord for Ranked<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl<K: Ord> PartialOrd for Ranked<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> PartialEq for Ranked<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord> Eq for Ranked<K> {}

/// The key that puts the hardest rows first: highest score, then the
/// earliest row among equal scores.
type Hardest = (Total, Reverse<u64>);
/// The key that puts the easiest rows first: lowest score, then the
/// earliest row among equal scores.
type Easiest = Reverse<(Total, u64)>;

fn hardest_key(row: &Scored) -> Hardest {
    (Total(row.score), Reverse(row.pos))
}

fn easiest_key(row: &Scored) -> Easiest {
    Reverse((Total(row.score), row.pos))
}

/// The `n` largest items pushed, held in a min-heap of at most `n`.
struct Largest<T: Ord> {
    n: usize,
    heap: BinaryHeap<Reverse<T>>,
}

impl<T: Ord> Largest<T> {
    fn new(n: usize) -> Self {
        Self { n, heap: BinaryHeap::with_capacity(n + 1) }
    }

    fn push(&mut self, item: T) {
        self.heap.push(Reverse(item));
        if self.heap.len() > self.n {
            self.heap.pop();
        }
    }

    /// The items, largest first.
    fn into_sorted(self) -> Vec<T> {
        self.heap.into_sorted_vec().into_iter().map(|Reverse(item)| item).collect()
    }
}

/// A uniform sample of `n` of the items pushed (Algorithm R), drawn from a
/// seeded generator: the same stream and seed give the same sample.
struct Reservoir<T> {
    n: usize,
    seen: u64,
    items: Vec<T>,
    rng: ChaCha8Rng,
}

impl<T> Reservoir<T> {
    fn new(n: usize, seed: u64) -> Self {
        Self { n, seen: 0, items: Vec::with_capacity(n), rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    fn push(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.n {
            self.items.push(item);
        } else {
            let j = self.rng.random_range(0..self.seen);
            if let Some(slot) = self.items.get_mut(j as usize) {
                *slot = item;
            }
        }
    }
}

/// What the first pass over scores.parquet found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Rows read.
    pub rows: u64,
    /// Rows without a score (an `error`, or a null score), left out of the grids.
    pub unscored: u64,
    /// The highest-scoring rows, hardest first.
    pub hardest: Vec<Scored>,
    /// The lowest-scoring rows, easiest first.
    pub easiest: Vec<Scored>,
    /// A seeded sample of the pruned rows, hardest first.
    pub pruned_sample: Vec<Scored>,
    /// The lowest and highest score, when any row has one.
    pub range: Option<(f32, f32)>,
}

/// Reads `score` and the row's identity and decision from scores.parquet at
/// `path`, calling `f` on every row: `Some` for a scored row, `None` for a
/// row with an error or a null score.
fn for_each_row(path: &Path, score: &str, mut f: impl FnMut(Option<Scored>)) -> Result<()> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let wanted = [ROW, "label", OutputColumns::PRED, OutputColumns::KEEP, OutputColumns::ERROR, score];
    if let Some(missing) = wanted.iter().find(|c| builder.schema().column_with_name(c).is_none()) {
        return Err(PipelineError::Data { path: path.into(), reason: format!("no column '{missing}'") });
    }
    let idx: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| wanted.contains(&field.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let reader = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))?;
    for batch in reader {
        let batch = batch.map_err(|e| PipelineError::Parquet { path: path.to_path_buf(), source: e.into() })?;
        rows_of(&batch, score, &mut f)?;
    }
    Ok(())
}

/// Calls `f` on each row of one projected batch (see [`for_each_row`]).
fn rows_of(batch: &RecordBatch, score: &str, f: &mut impl FnMut(Option<Scored>)) -> Result<()> {
    let column = |name: &str| batch.column_by_name(name).expect("projected above");
    let int64 = |name: &str| cast(column(name), &DataType::Int64);
    let (pos, label, pred) = (int64(ROW)?, int64("label")?, int64(OutputColumns::PRED)?);
    let (pos, label, pred) =
        (pos.as_primitive::<Int64Type>(), label.as_primitive::<Int64Type>(), pred.as_primitive::<Int64Type>());
    let scores = cast(column(score), &DataType::Float32)?;
    let scores = scores.as_primitive::<Float32Type>();
    let keep = column(OutputColumns::KEEP).as_boolean();
    let errors = column(OutputColumns::ERROR);
    let value = |a: &datafusion::arrow::array::Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    for i in 0..batch.num_rows() {
        let scored = errors.is_null(i) && scores.is_valid(i) && !scores.value(i).is_nan();
        f(scored.then(|| Scored {
            pos: pos.value(i) as u64,
            label: value(label, i),
            pred: value(pred, i),
            score: scores.value(i),
            keep: keep.is_valid(i) && keep.value(i),
        }));
    }
    Ok(())
}

/// The first pass: `n` hardest, `n` easiest, a sample of `n` pruned rows
/// (drawn with `seed`), the row counts and the score range.
pub fn scan(path: &Path, score: &str, n: usize, seed: u64) -> Result<Scan> {
    let mut hardest = Largest::new(n);
    let mut easiest = Largest::new(n);
    let mut pruned = Reservoir::new(n, seed);
    let mut out = Scan::default();
    for_each_row(path, score, |row| {
        out.rows += 1;
        let Some(row) = row else {
            out.unscored += 1;
            return;
        };
        let (lo, hi) = out.range.unwrap_or((row.score, row.score));
        out.range = Some((lo.min(row.score), hi.max(row.score)));
        hardest.push(Ranked(hardest_key(&row), row));
        easiest.push(Ranked(easiest_key(&row), row));
        if !row.keep {
            pruned.push(row);
        }
    })?;
    out.hardest = hardest.into_sorted().into_iter().map(|Ranked(_, row)| row).collect();
    out.easiest = easiest.into_sorted().into_iter().map(|Ranked(_, row)| row).collect();
    out.pruned_sample = pruned.items;
    out.pruned_sample.sort_by_key(|row| Reverse(hardest_key(row)));
    Ok(out)
}

/// Kept and pruned rows per score bin, for one class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bins {
    /// Kept rows per bin.
    pub kept: Vec<u64>,
    /// Pruned rows per bin.
    pub pruned: Vec<u64>,
}

/// Each class's scores, binned over one shared range.
#[derive(Clone, Debug, PartialEq)]
pub struct Histograms {
    /// Lower edge of the first bin.
    pub lo: f32,
    /// Upper edge of the last bin.
    pub hi: f32,
    /// Bins per class.
    pub bins: usize,
    /// Per label (scored rows without a label are left out).
    pub classes: BTreeMap<i64, Bins>,
}

impl Histograms {
    /// Empty histograms of `bins` bins over `[lo, hi]` (widened when empty).
    fn new((lo, hi): (f32, f32), bins: usize) -> Self {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
        Self { lo, hi, bins: bins.max(1), classes: BTreeMap::new() }
    }

    /// The bin of `score`.
    fn bin(&self, score: f32) -> usize {
        let t = (score - self.lo) / (self.hi - self.lo);
        ((t * self.bins as f32) as usize).min(self.bins - 1)
    }

    /// Counts one scored row under its label.
    fn add(&mut self, row: &Scored) {
        let Some(label) = row.label else { return };
        let (bin, bins) = (self.bin(row.score), self.bins);
        let class = self.classes.entry(label).or_insert_with(|| Bins { kept: vec![0; bins], pruned: vec![0; bins] });
        let counts = if row.keep { &mut class.kept } else { &mut class.pruned };
        counts[bin] += 1;
    }
}

/// The second pass: every scored row's `score` in one of `bins` bins over
/// `range` (the first pass's), per class, kept and pruned apart.
pub fn histograms(path: &Path, score: &str, range: (f32, f32), bins: usize) -> Result<Histograms> {
    let mut out = Histograms::new(range, bins);
    for_each_row(path, score, |row| {
        if let Some(row) = row {
            out.add(&row);
        }
    })?;
    Ok(out)
}

/// The `n` flagged label issues with the highest `label_quality`, most
/// likely wrong first; each row's `pred` is its confident class and its
/// score its label quality. Empty when the scores have no label issues.
pub fn label_issues(path: &Path, n: usize) -> Result<Vec<Scored>> {
    use crate::label_issues::{CONFIDENT_LABEL, LABEL_ISSUE, LABEL_QUALITY};
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let wanted = [ROW, "label", LABEL_ISSUE, LABEL_QUALITY, CONFIDENT_LABEL, OutputColumns::KEEP];
    let Ok(idx) = wanted.iter().map(|c| builder.schema().index_of(c)).collect::<std::result::Result<Vec<_>, _>>()
    else {
        return Ok(Vec::new());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let mut top = Largest::new(n);
    for batch in builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))? {
        let batch = batch.map_err(|e| PipelineError::Parquet { path: path.to_path_buf(), source: e.into() })?;
        let column = |name: &str| batch.column_by_name(name).expect("projected above");
        let (pos, label) = (column(ROW).as_primitive::<Int64Type>(), cast(column("label"), &DataType::Int64)?);
        let label = label.as_primitive::<Int64Type>();
        let (issue, keep) = (column(LABEL_ISSUE).as_boolean(), column(OutputColumns::KEEP).as_boolean());
        let quality = column(LABEL_QUALITY).as_primitive::<Float32Type>();
        let confident = column(CONFIDENT_LABEL).as_primitive::<Int64Type>();
        for i in (0..batch.num_rows()).filter(|&i| issue.is_valid(i) && issue.value(i)) {
            let row = Scored {
                pos: pos.value(i) as u64,
                label: label.is_valid(i).then(|| label.value(i)),
                pred: confident.is_valid(i).then(|| confident.value(i)),
                score: quality.value(i),
                keep: keep.is_valid(i) && keep.value(i),
            };
            top.push(Ranked(hardest_key(&row), row));
        }
    }
    Ok(top.into_sorted().into_iter().map(|Ranked(_, row)| row).collect())
}

/// A training row that duplicates another row: a near-duplicate of an
/// earlier training row, or a leak of an evaluation row.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The training row's input position.
    pub pos: u64,
    /// The other row's id, as text.
    pub of: String,
    /// Near-duplicates: the Jaccard similarity or bits; leaks: the distance.
    pub evidence: f32,
    /// Leaks: `exact` or `near`.
    pub kind: Option<String>,
}

/// The first `n` near-duplicates and the first `n` leaks of a scores.parquet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Duplicates {
    /// Near-duplicates, in input order.
    pub near: Vec<Pair>,
    /// Leaks, in input order.
    pub leaks: Vec<Pair>,
}

/// The first `n` near-duplicate and leaking rows of the scores at `path`,
/// with their evidence; empty where the job found none (or looked for none).
/// Reads only those columns, and stops once both lists are full.
pub fn duplicates(path: &Path, n: usize) -> Result<Duplicates> {
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
    let present = |c: &str| builder.schema().index_of(c).ok();
    let evidence =
        [OutputColumns::NEAR_DUP_JACCARD, OutputColumns::NEAR_DUP_BITS].into_iter().find(|c| present(c).is_some());
    let wanted: Vec<&str> = [Some(ROW), Some(OutputColumns::NEAR_DUP_OF), evidence]
        .into_iter()
        .flatten()
        .chain([OutputColumns::LEAK_KIND, OutputColumns::LEAK_OF, OutputColumns::LEAK_DISTANCE])
        .filter(|c| present(c).is_some())
        .collect();
    let idx: Vec<usize> = wanted.iter().filter_map(|c| present(c)).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let mut out = Duplicates::default();
    for batch in builder.with_projection(mask).with_batch_size(BATCH_ROWS).build().map_err(parquet_err(path))? {
        let batch = batch.map_err(|e| PipelineError::Parquet { path: path.to_path_buf(), source: e.into() })?;
        let pos = batch.column_by_name(ROW).expect("projected").as_primitive::<Int64Type>().clone();
        let text = |name: &str| batch.column_by_name(name).map(|c| cast(c, &DataType::Utf8)).transpose();
        let number = |name: Option<&str>| {
            name.and_then(|n| batch.column_by_name(n)).map(|c| cast(c, &DataType::Float32)).transpose()
        };
        let pairs = [
            (&mut out.near, text(OutputColumns::NEAR_DUP_OF)?, number(evidence)?, None),
            (
                &mut out.leaks,
                text(OutputColumns::LEAK_OF)?,
                number(Some(OutputColumns::LEAK_DISTANCE))?,
                text(OutputColumns::LEAK_KIND)?,
            ),
        ];
        for (list, of, evidence, kind) in pairs {
            let (Some(of), Some(evidence)) = (of, evidence) else { continue };
            let (of, evidence) = (of.as_string::<i32>(), evidence.as_primitive::<Float32Type>());
            let kind = kind.as_ref().map(|k| k.as_string::<i32>());
            for i in (0..batch.num_rows()).filter(|&i| of.is_valid(i)).take(n - list.len().min(n)) {
                list.push(Pair {
                    pos: pos.value(i) as u64,
                    of: of.value(i).to_string(),
                    evidence: evidence.value(i),
                    kind: kind.map(|k| k.value(i).to_string()),
                });
            }
        }
        if out.near.len() >= n && out.leaks.len() >= n {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_keeps_the_n_largest_in_descending_order() {
        let mut top = Largest::new(3);
        for x in [5, 1, 9, 7, 3, 9, 2] {
            top.push(x);
        }
        assert_eq!(top.into_sorted(), vec![9, 9, 7]);
        let mut bottom = Largest::new(2);
        for x in [5, 1, 9, 7, 3] {
            bottom.push(Reverse(x));
        }
        assert_eq!(bottom.into_sorted(), vec![Reverse(1), Reverse(3)]);
    }

    #[test]
    fn ties_rank_the_earliest_row_first_at_both_ends() {
        let row = |pos, score| Scored { pos, label: None, pred: None, score, keep: true };
        let (mut hard, mut easy) = (Largest::new(3), Largest::new(3));
        for r in [row(0, 0.5), row(1, 0.9), row(2, 0.5), row(3, 0.9), row(4, 0.1)] {
            hard.push(Ranked(hardest_key(&r), r));
            easy.push(Ranked(easiest_key(&r), r));
        }
        let hard: Vec<u64> = hard.into_sorted().iter().map(|r| r.1.pos).collect();
        let easy: Vec<u64> = easy.into_sorted().iter().map(|r| r.1.pos).collect();
        assert_eq!((hard, easy), (vec![1, 3, 0], vec![4, 0, 2]));
    }

    #[test]
    fn reservoir_samples_every_item_about_equally_and_repeats_with_its_seed() {
        let draw = |seed| {
            let mut r = Reservoir::new(10, seed);
            (0..100).for_each(|x| r.push(x));
            r.items
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut hits = [0u32; 100];
        for seed in 0..2000 {
            draw(seed).into_iter().for_each(|x| hits[x] += 1);
        }
        // Each item is drawn with probability 0.1: 200 of 2,000 expected.
        assert!(hits.iter().all(|&h| (140..=260).contains(&h)), "{hits:?}");
    }

    #[test]
    fn scores_fall_in_bins_with_the_maximum_in_the_last() {
        let mut h = Histograms::new((0.0, 1.0), 4);
        let row = |score, keep| Scored { pos: 0, label: Some(2), pred: None, score, keep };
        for (score, keep) in [(0.0, true), (0.26, false), (0.5, true), (1.0, true), (0.99, false)] {
            h.add(&row(score, keep));
        }
        assert_eq!(h.classes[&2], Bins { kept: vec![1, 0, 1, 1], pruned: vec![0, 1, 0, 1] });
        let flat = Histograms::new((3.0, 3.0), 4);
        assert_eq!((flat.lo, flat.hi), (2.5, 3.5));
    }
}
