//! Training dynamics, recorded while the proxy trains and keyed by the
//! example's input position (`row`), then joined into the scores:
//!
//! * `forgetting` — forgetting events (Toneva et al. 2019, "An Empirical
//!   Study of Example Forgetting during Deep Neural Network Learning",
//!   arXiv:1812.05159; SVP's forgetting score): correct-to-incorrect
//!   transitions between consecutive presentations. An example never
//!   classified correctly gets `epochs`, more than any learned example can
//!   have (at most `epochs / 2`), so it ranks hardest, as in SVP.
//! * `aum` — area under the margin (Pleiss et al. 2020, arXiv:2001.10528):
//!   the mean over presentations of `logit_label - max other logit`,
//!   **negated** so that higher = harder like every sieve score.
//! * `learned_epoch` — the first epoch from which the example stays
//!   correctly classified to the end of training; `epochs + 1` if it never
//!   does.
//! * `el2n_early` — EL2N (Paul et al. 2021, arXiv:2107.07075) averaged over
//!   the first half of the epochs (at least one), where it predicts
//!   difficulty best.
//!
//! The logits are those the training step computed before its update (on
//! the augmented input, for images), so recording costs no extra forward
//! pass. Memory is a few scalars per row.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use sieve_selection::scores::row_scores;

use sieve_schemas::{ScoreName, ScoreSource};

use crate::error::Result;
use crate::parquet_io;

/// File name of the dynamics inside a proxy directory.
pub const FILE: &str = "dynamics.parquet";

/// What is known of one example so far.
#[derive(Clone, Copy, Debug, Default)]
struct RowDynamics {
    presentations: u32,
    last_correct: bool,
    ever_correct: bool,
    forgets: u32,
    margin_sum: f32,
    /// Epoch since which every presentation was correct.
    learned_since: Option<u32>,
    el2n_early_sum: f32,
    early: u32,
}

/// Per-example training dynamics of one training run.
#[derive(Clone, Debug)]
pub struct Dynamics {
    rows: Vec<RowDynamics>,
    epochs: u32,
    early_epochs: u32,
    probs: Vec<f32>,
}

impl Dynamics {
    /// Dynamics for `rows` examples trained for `epochs` epochs over `classes` classes.
    pub fn new(rows: usize, epochs: usize, classes: usize) -> Self {
        Self {
            rows: vec![RowDynamics::default(); rows],
            epochs: epochs as u32,
            early_epochs: (epochs as u32 / 2).max(1),
            probs: vec![0.0; classes],
        }
    }

    /// Records one presentation of example `row` in `epoch` (1-based) with
    /// the logits the model gave it and its label.
    pub fn record(&mut self, row: u64, epoch: usize, logits: &[f32], label: usize) {
        let Some(d) = self.rows.get_mut(row as usize) else { return };
        let s = row_scores(logits, Some(label), &mut self.probs);
        let correct = s.pred == label;
        let best_other =
            logits.iter().enumerate().filter(|&(k, _)| k != label).map(|(_, &l)| l).fold(f32::NEG_INFINITY, f32::max);
        if d.presentations > 0 && d.last_correct && !correct {
            d.forgets += 1;
        }
        d.learned_since = match (correct, d.learned_since) {
            (false, _) => None,
            (true, None) => Some(epoch as u32),
            (true, since) => since,
        };
        d.last_correct = correct;
        d.ever_correct |= correct;
        d.presentations += 1;
        d.margin_sum += logits[label] - best_other;
        if epoch as u32 <= self.early_epochs {
            d.el2n_early_sum += s.el2n.unwrap_or(0.0);
            d.early += 1;
        }
    }

    /// The four columns for every row, in row order and in the order
    /// [`ScoreName::ALL`] names them; rows never presented
    /// (bad inputs) are null.
    pub fn columns(&self) -> [Float32Array; 4] {
        let seen = |d: &RowDynamics| d.presentations > 0;
        let column = |f: &dyn Fn(&RowDynamics) -> f32| -> Float32Array {
            self.rows.iter().map(|d| seen(d).then(|| f(d))).collect()
        };
        let epochs = self.epochs as f32;
        [
            column(&|d| if d.ever_correct { d.forgets as f32 } else { epochs }),
            column(&|d| -d.margin_sum / d.presentations as f32),
            column(&|d| d.learned_since.map_or(epochs + 1.0, |e| e as f32)),
            column(&|d| if d.early > 0 { d.el2n_early_sum / d.early as f32 } else { f32::NAN }),
        ]
    }

    /// Writes `row` and the four columns to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut fields = vec![Field::new("row", DataType::Int64, false)];
        let names = ScoreName::columns_of(ScoreSource::Dynamics);
        fields.extend(names.map(|c| Field::new(c, DataType::Float32, true)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..self.rows.len() as i64))];
        columns.extend(self.columns().into_iter().map(|c| Arc::new(c) as ArrayRef));
        let mut writer = parquet_io::create(path, schema.clone())?;
        parquet_io::write(&mut writer, &RecordBatch::try_new(schema, columns)?, path)?;
        parquet_io::close(writer, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    const RIGHT: [f32; 2] = [3.0, 0.0];
    const WRONG: [f32; 2] = [0.0, 3.0];

    fn replay(sequence: &[&[f32; 2]]) -> [f32; 4] {
        let mut d = Dynamics::new(1, sequence.len(), 2);
        for (e, logits) in sequence.iter().enumerate() {
            d.record(0, e + 1, &logits[..], 0);
        }
        d.columns().map(|c| c.value(0))
    }

    // Hand-computed: presentations R W R R W R -> correct-to-incorrect at
    // 2 and 5: 2 forgetting events; learned since epoch 6 (the last one).
    #[test]
    fn forgetting_counts_match_a_hand_computed_sequence() {
        let [forgetting, aum, learned, _] = replay(&[&RIGHT, &WRONG, &RIGHT, &RIGHT, &WRONG, &RIGHT]);
        assert_eq!(forgetting, 2.0);
        assert_eq!(learned, 6.0);
        // margins +3 -3 +3 +3 -3 +3: mean 1, negated
        assert_eq!(aum, -1.0);
    }

    #[test]
    fn never_learned_ranks_hardest_and_stays_learned_is_easiest() {
        let never = replay(&[&WRONG, &WRONG, &WRONG, &WRONG]);
        let forgotten_once = replay(&[&RIGHT, &WRONG, &RIGHT, &RIGHT]);
        let always = replay(&[&RIGHT, &RIGHT, &RIGHT, &RIGHT]);
        assert_eq!([never[0], forgotten_once[0], always[0]], [4.0, 1.0, 0.0]);
        assert_eq!([never[2], forgotten_once[2], always[2]], [5.0, 3.0, 1.0]);
        assert!(never[1] > forgotten_once[1] && forgotten_once[1] > always[1]);
        assert!(never[3] > always[3]);
    }

    #[test]
    fn rows_never_presented_are_null() {
        let d = Dynamics::new(3, 2, 2);
        assert!(d.columns().iter().all(|c| c.null_count() == 3));
    }
}
