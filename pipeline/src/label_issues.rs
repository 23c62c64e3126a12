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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};
use sieve_schemas::OutputColumns;

use crate::error::{io_err, parquet_err, Result};
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
    /// The class's threshold: its mean self-confidence.
    pub threshold: f64,
}

/// What confident learning decided, for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelIssues {
    /// Rows flagged in all.
    pub flagged: u64,
    /// Per given class.
    pub per_class: Vec<ClassIssues>,
    /// The confident joint: `joint[i][j]` rows given `i` confidently `j`.
    pub confident_joint: Vec<Vec<u64>>,
    /// Whether the probabilities are in-sample (the proxy trained on these
    /// rows), which makes them overconfident on the rows it memorised.
    pub in_sample: bool,
    /// Rows dropped for it before selection (`--drop-label-issues`).
    pub dropped: bool,
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

/// Calls `f` on every valid labeled row of `files`: (row, label, probabilities).
fn for_each_row(files: &[PathBuf], mut f: impl FnMut(i64, usize, &[f32])) -> Result<()> {
    for path in files {
        let file = File::open(path).map_err(io_err(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path))?;
        let names = [ROW, "label", OutputColumns::ERROR, OutputColumns::PROBS];
        let idx = names.iter().map(|c| builder.schema().index_of(c)).collect::<std::result::Result<Vec<_>, _>>()?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        for batch in builder.with_projection(mask).build().map_err(parquet_err(path))? {
            let batch = batch?;
            let col = |name: &str| batch.column_by_name(name).expect("projected");
            let (rows, labels) = (col(ROW).as_primitive::<Int64Type>(), col("label").as_primitive::<Int64Type>());
            let (errors, probs) = (col(OutputColumns::ERROR), col(OutputColumns::PROBS).as_fixed_size_list());
            let k = probs.value_length() as usize;
            let values = probs.values().as_primitive::<Float32Type>().values();
            for i in (0..batch.num_rows()).filter(|&i| errors.is_null(i) && labels.is_valid(i) && probs.is_valid(i)) {
                let label = labels.value(i);
                if (0..k as i64).contains(&label) {
                    f(rows.value(i), label as usize, &values[i * k..(i + 1) * k]);
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

/// Decides the label issues of the raw scores `files` (rows of a proxy of
/// `classes` classes) and writes `dest`: `row`, [`LABEL_ISSUE`],
/// [`LABEL_QUALITY`] and [`CONFIDENT_LABEL`] for every valid labeled row,
/// sorted by `row`.
pub fn run(files: &[PathBuf], classes: usize, in_sample: bool, dest: &Path) -> Result<LabelIssues> {
    let (mut sums, mut counts) = (vec![0.0f64; classes], vec![0u64; classes]);
    for_each_row(files, |_, y, p| {
        sums[y] += p[y] as f64;
        counts[y] += 1;
    })?;
    // A class nobody is given can never be confidently reached.
    let thresholds: Vec<f64> =
        sums.iter().zip(&counts).map(|(s, &n)| if n == 0 { f64::INFINITY } else { s / n as f64 }).collect();
    let mut joint = vec![vec![0u64; classes]; classes];
    let mut decided: Vec<Decided> = Vec::new();
    for_each_row(files, |row, y, p| {
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
    let errors: Vec<u64> = (0..classes).map(|i| estimated_errors(&joint[i], i, counts[i])).collect();
    // Per class, the `errors[i]` rows with the highest label quality (ties: earlier rows).
    let mut by_class: Vec<usize> = (0..decided.len()).collect();
    by_class.sort_by(|&a, &b| {
        let (a, b) = (&decided[a], &decided[b]);
        a.label.cmp(&b.label).then(b.quality.total_cmp(&a.quality)).then(a.row.cmp(&b.row))
    });
    let mut taken = vec![0u64; classes];
    for i in by_class {
        let y = decided[i].label;
        if taken[y] < errors[y] {
            decided[i].issue = true;
            taken[y] += 1;
        }
    }
    decided.sort_by_key(|d| d.row);
    write(&decided, dest)?;
    let per_class: Vec<ClassIssues> = (0..classes)
        .filter(|&i| counts[i] > 0)
        .map(|i| ClassIssues { label: i as i64, rows: counts[i], flagged: taken[i], threshold: thresholds[i] })
        .collect();
    let flagged = per_class.iter().map(|c| c.flagged).sum();
    Ok(LabelIssues { flagged, per_class, confident_joint: joint, in_sample, dropped: false })
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
    fn the_joint_is_calibrated_to_the_rows_of_the_class() {
        // 80 of 100 rows counted, 8 of them off the diagonal: 10 errors expected.
        assert_eq!(estimated_errors(&[72, 5, 3], 0, 100), 10);
        assert_eq!(estimated_errors(&[0, 0, 0], 0, 100), 0);
    }
}
