//! Which rows are label errors, decided by confident learning (Northcutt et
//! al. 2021, cleanlab) over the proxy's class probabilities (`probs`):
//!
//! 1. per class `j`, the threshold `t_j` is the mean probability of `j` over
//!    the rows given label `j` (the class's mean self-confidence);
//! 2. a row's confident class is, among the classes whose probability
//!    reaches their threshold, the most probable; rows with none have none;
//! 3. the confident joint counts rows by (given label, confident class),
//!    each class's row calibrated to the rows given that class (rows with no
//!    confident class are counted in proportion); its off-diagonal sum is
//!    the number of label errors in the class;
//! 4. that many rows of the class with the highest `label_quality` are the
//!    `label_issue`s: cleanlab's `filter_by="prune_by_class"`.
//!
//! Every row also gets `label_quality = 1 - p(given label)` (higher = more
//! likely wrong, like every sieve score; cleanlab's self-confidence, turned
//! around) and `confident_label` (its confident class; null without one),
//! the evidence a user re-decides from in SQL. Two streaming passes over
//! the raw scores: memory is the classes² joint and three small columns per
//! row, never the probabilities of every row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use serde::{Deserialize, Serialize};
use sieve_schemas::OutputColumns;

use crate::choices::IssueCount;
use crate::error::Result;
use crate::score::ROW;

/// Column: whether confident learning decides the row's label is wrong.
pub const LABEL_ISSUE: &str = "label_issue";
/// Column: `1 - p(given label)`; higher = more likely mislabeled.
pub const LABEL_QUALITY: &str = "label_quality";
/// Column: the class the row confidently belongs to (null: none).
pub const CONFIDENT_LABEL: &str = "confident_label";

/// Flagged rows of one given class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassIssues {
    /// The given label.
    pub label: i64,
    /// Rows given this label (scored without error).
    pub rows: u64,
    /// Of them, flagged as label issues.
    pub flagged: u64,
    /// The label errors its calibrated confident joint counts.
    #[serde(default)]
    pub joint_errors: u64,
    /// The class's threshold: its mean self-confidence.
    pub threshold: f64,
}

/// What confident learning decided, for the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelIssues {
    /// Rows flagged in all.
    pub flagged: u64,
    /// How they were counted: by the held-out estimate, or the confident
    /// joint (asked for, or without a held-out accuracy to estimate from).
    #[serde(default = "joint")]
    pub counted_by: IssueCount,
    /// The held-out accuracy of the proxies behind the probabilities, when
    /// known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_accuracy: Option<f64>,
    /// The label errors estimated from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_errors: Option<u64>,
    /// Per given class.
    pub per_class: Vec<ClassIssues>,
    /// The confident joint: `joint[i][j]` rows given `i` confidently `j`.
    pub confident_joint: Vec<Vec<u64>>,
    /// Whether the probabilities are in-sample (the proxy trained on these
    /// rows), which makes them overconfident on the rows it memorised.
    pub in_sample: bool,
    /// Of the rows decided, the fraction whose most probable class is their
    /// given label: the proxy's accuracy against the given labels, on rows it
    /// never saw when out-of-sample.
    #[serde(default)]
    pub agreement: f64,
    /// Rows dropped for it before selection (`--drop-label-issues`).
    pub dropped: bool,
}

fn joint() -> IssueCount {
    IssueCount::Joint
}

/// One row's decision.
struct Decided {
    row: i64,
    label: usize,
    issue: bool,
    quality: f32,
    confident: Option<i64>,
}

/// The label errors of class `i` the calibrated confident joint estimates:
/// its row `joint_row` scaled to the `rows` given the class, off the
/// diagonal, rounded.
fn estimated_errors(joint_row: &[u64], i: usize, rows: u64) -> u64 {
    let counted: u64 = joint_row.iter().sum();
    if counted == 0 {
        return 0;
    }
    let off = (counted - joint_row[i]) as f64;
    (off * rows as f64 / counted as f64).round() as u64
}

/// Class probabilities looked up by row: cross-fitting's out-of-sample
/// file (`row`, `probs`, sorted by row), held as `classes` floats per row.
struct ProbsByRow {
    rows: Vec<i64>,
    values: Vec<f32>,
    valid: Vec<bool>,
    classes: usize,
}

impl ProbsByRow {
    fn read(path: &Path) -> Result<Self> {
        let mut out = Self { rows: Vec::new(), values: Vec::new(), valid: Vec::new(), classes: 0 };
        for batch in crate::parquet_io::read_columns(path, &[ROW, OutputColumns::PROBS])? {
            let batch = batch?;
            let probs = batch.column(1).as_fixed_size_list();
            out.classes = probs.value_length() as usize;
            out.rows.extend(batch.column(0).as_primitive::<Int64Type>().values());
            out.values.extend(probs.values().as_primitive::<Float32Type>().values());
            out.valid.extend((0..batch.num_rows()).map(|i| probs.is_valid(i)));
        }
        Ok(out)
    }

    /// The probabilities of `row`; `None` when it has none.
    fn get(&self, row: i64) -> Option<&[f32]> {
        let i = self.rows.binary_search(&row).ok().filter(|&i| self.valid[i])?;
        Some(&self.values[i * self.classes..(i + 1) * self.classes])
    }
}

/// Calls `f` on every valid labeled row of `files`: (row, label,
/// probabilities), the probabilities from `probs_from` when given, else
/// the files' own.
fn for_each_row(
    files: &[PathBuf],
    probs_from: Option<&ProbsByRow>,
    mut f: impl FnMut(i64, usize, &[f32]),
) -> Result<()> {
    for path in files {
        let names = [ROW, "label", OutputColumns::ERROR, OutputColumns::PROBS];
        for batch in crate::parquet_io::read_columns(path, &names)? {
            let batch = batch?;
            let col = |name: &str| batch.column_by_name(name).expect("projected");
            let (rows, labels) = (col(ROW).as_primitive::<Int64Type>(), col("label").as_primitive::<Int64Type>());
            let (errors, probs) = (col(OutputColumns::ERROR), col(OutputColumns::PROBS).as_fixed_size_list());
            let k = probs.value_length() as usize;
            let values = probs.values().as_primitive::<Float32Type>().values();
            for i in (0..batch.num_rows()).filter(|&i| errors.is_null(i) && labels.is_valid(i) && probs.is_valid(i)) {
                let (row, label) = (rows.value(i), labels.value(i));
                let p = match probs_from {
                    Some(other) => other.get(row),
                    None => Some(&values[i * k..(i + 1) * k]),
                };
                if let Some(p) = p.filter(|p| (0..p.len() as i64).contains(&label)) {
                    f(row, label as usize, p);
                }
            }
        }
    }
    Ok(())
}

/// The confident class of a row with probabilities `p`: the most probable
/// of those that reach their class's threshold.
fn confident_class(p: &[f32], thresholds: &[f64]) -> Option<usize> {
    (0..p.len()).filter(|&j| p[j] as f64 >= thresholds[j]).max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
}

/// How many label errors there are in `rows` rows, estimated from the
/// held-out split: a proxy of held-out accuracy `a` predicts a clean label
/// with probability `a`, and a wrong one (flipped uniformly to one of the
/// other `classes - 1`) with `b = (1 - a) / (classes - 1)`, so the rows'
/// agreement with their given labels is `d = (1 - r) a + r b` and the error
/// rate `r = (a - d) / (a - b)`, clipped to [0, 1]. `None` when the proxy
/// is no better than chance, which says nothing.
fn heldout_errors(a: f64, agreement: f64, rows: u64, classes: usize) -> Option<u64> {
    let b = (1.0 - a) / (classes.max(2) - 1) as f64;
    (a > b).then(|| (((a - agreement) / (a - b)).clamp(0.0, 1.0) * rows as f64).round() as u64)
}

/// How confident learning decides how many rows are label issues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Counting {
    /// As many as [`heldout_errors`] estimates from this held-out accuracy
    /// of the proxies that gave the probabilities: the rows with the
    /// highest `label_quality`.
    Heldout(f64),
    /// Per class, as many as its calibrated confident joint counts off the
    /// diagonal: that class's rows with the highest `label_quality`.
    Joint,
}

impl Counting {
    /// The counting `--issue-count choice` asks for, given the held-out
    /// accuracy of the proxies behind the probabilities (when known).
    pub fn of(choice: IssueCount, heldout_accuracy: Option<f64>) -> Self {
        match (choice, heldout_accuracy) {
            (IssueCount::Heldout, Some(a)) => Self::Heldout(a),
            _ => Self::Joint,
        }
    }
}

/// Decides the label issues of the raw scores `files` (rows of a proxy of
/// `classes` classes), counted as `counting` says, and writes `dest`:
/// `row`, [`LABEL_ISSUE`], [`LABEL_QUALITY`] and [`CONFIDENT_LABEL`] for
/// every valid labeled row, sorted by `row`. The probabilities are
/// cross-fitting's out-of-sample ones in `out_of_sample` when given, else
/// the raw scores' own (in-sample).
pub fn run(
    files: &[PathBuf],
    out_of_sample: Option<&Path>,
    counting: Counting,
    classes: usize,
    dest: &Path,
) -> Result<LabelIssues> {
    let probs_from = out_of_sample.map(ProbsByRow::read).transpose()?;
    let probs_from = probs_from.as_ref();
    let (mut sums, mut counts, mut agree) = (vec![0.0f64; classes], vec![0u64; classes], 0u64);
    for_each_row(files, probs_from, |_, y, p| {
        agree += u64::from(sieve_selection::scores::argmax(p) == y);
        sums[y] += p[y] as f64;
        counts[y] += 1;
    })?;
    let rows: u64 = counts.iter().sum();
    let agreement = if rows == 0 { 0.0 } else { agree as f64 / rows as f64 };
    // A class nobody is given can never be confidently reached.
    let thresholds: Vec<f64> =
        sums.iter().zip(&counts).map(|(s, &n)| if n == 0 { f64::INFINITY } else { s / n as f64 }).collect();
    let mut joint = vec![vec![0u64; classes]; classes];
    let mut decided: Vec<Decided> = Vec::new();
    for_each_row(files, probs_from, |row, y, p| {
        let confident = confident_class(p, &thresholds);
        if let Some(j) = confident {
            joint[y][j] += 1;
        }
        decided.push(Decided {
            row,
            label: y,
            issue: false,
            quality: 1.0 - p[y],
            confident: confident.map(|j| j as i64),
        });
    })?;
    let joint_errors: Vec<u64> = (0..classes).map(|i| estimated_errors(&joint[i], i, counts[i])).collect();
    let heldout = match counting {
        Counting::Heldout(a) => heldout_errors(a, agreement, rows, classes),
        Counting::Joint => None,
    };
    // The rankings: one over all rows (held-out count) or one per class
    // (joint), by label quality (ties: earlier rows), each flagging its quota.
    let ranking = |d: &Decided| if heldout.is_some() { 0 } else { d.label };
    let quotas: Vec<u64> = heldout.map_or(joint_errors.clone(), |n| vec![n]);
    let mut order: Vec<usize> = (0..decided.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&decided[a], &decided[b]);
        ranking(a).cmp(&ranking(b)).then(b.quality.total_cmp(&a.quality)).then(a.row.cmp(&b.row))
    });
    let (mut taken, mut flagged_in) = (vec![0u64; quotas.len()], vec![0u64; classes]);
    for i in order {
        let g = ranking(&decided[i]);
        if taken[g] < quotas[g] {
            decided[i].issue = true;
            taken[g] += 1;
            flagged_in[decided[i].label] += 1;
        }
    }
    decided.sort_by_key(|d| d.row);
    write(&decided, dest)?;
    let per_class: Vec<ClassIssues> = (0..classes)
        .filter(|&i| counts[i] > 0)
        .map(|i| ClassIssues {
            label: i as i64,
            rows: counts[i],
            flagged: flagged_in[i],
            joint_errors: joint_errors[i],
            threshold: thresholds[i],
        })
        .collect();
    Ok(LabelIssues {
        flagged: flagged_in.iter().sum(),
        counted_by: if heldout.is_some() { IssueCount::Heldout } else { IssueCount::Joint },
        heldout_accuracy: match counting {
            Counting::Heldout(a) => Some(a),
            Counting::Joint => None,
        },
        heldout_errors: heldout,
        per_class,
        confident_joint: joint,
        in_sample: out_of_sample.is_none() && !cross_fitted(files)?,
        agreement,
        dropped: false,
    })
}

fn write(decided: &[Decided], dest: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW, DataType::Int64, false),
        Field::new(LABEL_ISSUE, DataType::Boolean, true),
        Field::new(LABEL_QUALITY, DataType::Float32, true),
        Field::new(CONFIDENT_LABEL, DataType::Int64, true),
    ]));
    let mut writer = crate::parquet_io::EvenWriter::create(dest, schema.clone())?;
    for chunk in decided.chunks(crate::input::BATCH_ROWS) {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(|d| d.row))),
            Arc::new(BooleanArray::from_iter(chunk.iter().map(|d| Some(d.issue)))),
            Arc::new(Float32Array::from_iter_values(chunk.iter().map(|d| d.quality))),
            Arc::new(Int64Array::from_iter(chunk.iter().map(|d| d.confident))),
        ];
        writer.write(RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    writer.close()
}

/// Whether `files` are scores whose own `probs` are already cross-fitted
/// (a scores.parquet of `prune --folds`, selected from again).
fn cross_fitted(files: &[PathBuf]) -> Result<bool> {
    Ok(match files.first() {
        Some(first) => crate::global::has_column(first, crate::crossfit::FOLD)?,
        None => false,
    })
}

/// Whether the raw scores at `scores` (a file or a directory of shards)
/// carry the labels and class probabilities confident learning reads
/// (scores written before sieve wrote `probs` do not).
pub fn possible(scores: &Path) -> Result<bool> {
    Ok(crate::global::has_column(scores, OutputColumns::PROBS)? && crate::global::has_column(scores, "label")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confident_class_is_the_most_probable_above_its_threshold() {
        let t = [0.6, 0.3, 0.5];
        // Class 0 is the most probable but under its threshold; 1 and 2 reach theirs.
        assert_eq!(confident_class(&[0.55, 0.31, 0.14], &t), Some(1));
        assert_eq!(confident_class(&[0.2, 0.25, 0.55], &t), Some(2));
        assert_eq!(confident_class(&[0.5, 0.2, 0.3], &t), None);
    }

    #[test]
    fn the_heldout_estimate_solves_for_the_error_rate() {
        // a = 0.8 over 5 classes: b = 0.05; 10% errors give d = 0.9 * 0.8 + 0.1 * 0.05 = 0.725.
        assert_eq!(heldout_errors(0.8, 0.725, 10_000, 5), Some(1000));
        assert_eq!(heldout_errors(0.8, 0.85, 10_000, 5), Some(0), "agreeing above the held-out accuracy: none");
        assert_eq!(heldout_errors(0.8, 0.0, 100, 5), Some(100), "at most every row");
        assert_eq!(heldout_errors(0.2, 0.1, 100, 5), None, "a proxy at chance says nothing");
    }

    #[test]
    fn the_joint_is_calibrated_to_the_rows_of_the_class() {
        // 80 of 100 rows counted, 8 of them off the diagonal: 10 errors expected.
        assert_eq!(estimated_errors(&[72, 5, 3], 0, 100), 10);
        assert_eq!(estimated_errors(&[0, 0, 0], 0, 100), 0);
    }
}
