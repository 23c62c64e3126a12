//! Dynamic data schedules written as data: Data Step, Data Increment and Data
//! Cut, where training uses a changing subset per stage instead of one fixed
//! subset. sieve does not train the target model; it writes, per row, the
//! stage from which the row is used, and a training loop filters on it.
//!
//! Rows are ranked by a [`Ranking`]: easy first (lowest score first, scores
//! being higher = harder) or a seeded random order. Stage `s` uses exactly
//! `c_s = round(F_s * n)` rows (`f64::round`, halves away from zero):
//!
//! - `step:F1,F2,...` (Data Step, `F` non-decreasing, each in `[0, 1]`) and
//!   `increment:START,STEP,STAGES` (Data Increment: `F_s = START + s * STEP`)
//!   use the **first** `c_s` rows of the ranking: the subset grows from the
//!   easy end towards the hard end, and a row never leaves.
//! - `cut:F1,F2,...` (Data Cut, `F` non-increasing) uses the **last** `c_s`
//!   rows: the easiest rows are cut first, since they are learned first, and
//!   the hard ones stay to the end.
//!
//! Every schedule's stage `s` is a window of the ranking, so each row has a
//! first stage (`stage`) and a last stage (`last_stage`) in which it is used;
//! a row is used in every stage in between. For step and increment
//! `last_stage` is the final stage for every used row.

use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::{EmbeddingError, Result};

/// Slack for the last increment fraction: `0.1 + 9 * 0.1` is
/// `1.0000000000000002` in f64, which means 1.
const FRACTION_SLACK: f64 = 1e-9;

/// A schedule: the fraction of rows each stage uses, and from which end.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Fraction of rows used in each stage, in `[0, 1]`.
    pub fractions: Vec<f64>,
    /// Whether stages take the hard end of the ranking (Data Cut) rather than
    /// the easy end.
    pub from_hard_end: bool,
}

impl FromStr for Schedule {
    type Err = EmbeddingError;

    /// Parses `step:F1,F2,...`, `increment:START,STEP,STAGES` or
    /// `cut:F1,F2,...`.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: &str| EmbeddingError::Schedule { spec: spec.to_owned(), reason: reason.to_owned() };
        let (kind, args) = spec.split_once(':').ok_or_else(|| bad("expected KIND:ARGS"))?;
        let numbers = args
            .split(',')
            .map(|a| a.trim().parse::<f64>().map_err(|_| bad(&format!("{a:?} is not a number"))))
            .collect::<Result<Vec<f64>>>()?;
        let fractions = match kind.trim() {
            "step" | "cut" => numbers,
            "increment" => {
                let [start, step, stages] = numbers[..] else {
                    return Err(bad("increment takes START,STEP,STAGES"));
                };
                if !(stages >= 1.0 && stages.fract() == 0.0 && stages <= 1e6) {
                    return Err(bad("STAGES must be a whole number from 1 to 1e6"));
                }
                if step.is_nan() || step < 0.0 {
                    return Err(bad("STEP must be >= 0"));
                }
                (0..stages as usize)
                    .map(|s| {
                        let f = start + s as f64 * step;
                        if (1.0..=1.0 + FRACTION_SLACK).contains(&f) {
                            1.0
                        } else {
                            f
                        }
                    })
                    .collect()
            }
            other => return Err(bad(&format!("unknown kind {other:?} (step, increment or cut)"))),
        };
        if let Some(f) = fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
            return Err(bad(&format!("fraction {f} is not in [0, 1]")));
        }
        let from_hard_end = kind.trim() == "cut";
        let ordered = fractions.windows(2).all(|w| if from_hard_end { w[0] >= w[1] } else { w[0] <= w[1] });
        if !ordered {
            return Err(bad(if from_hard_end {
                "cut fractions must not increase"
            } else {
                "fractions must not decrease"
            }));
        }
        Ok(Self { fractions, from_hard_end })
    }
}

/// How rows are ranked before the schedule takes its windows.
#[derive(Clone, Copy, Debug)]
pub enum Ranking<'a> {
    /// Lowest score first (scores are higher = harder); ties by row. A NaN
    /// score ranks after every number: an unscored row counts as hardest.
    EasyFirst(&'a [f32]),
    /// A uniform random permutation of `n` rows drawn from `seed`.
    Random {
        /// Number of rows.
        n: usize,
        /// Seed of the permutation.
        seed: u64,
    },
}

/// Per-row stages of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Stages {
    /// First stage (0-based) in which each row is used; `None` = never.
    pub stage: Vec<Option<u32>>,
    /// Last stage in which each row is used; `None` = never.
    pub last_stage: Vec<Option<u32>>,
    /// Rows used per stage, `round(F_s * n)`.
    pub counts: Vec<usize>,
    /// `counts[s] / n`, the fraction actually realised (0 when `n = 0`).
    pub realised: Vec<f64>,
}

/// Assigns each row its first and last stage under `schedule`.
pub fn assign_stages(order: Ranking, schedule: &Schedule) -> Stages {
    let ranking = rank(order);
    let n = ranking.len();
    let counts: Vec<usize> = schedule.fractions.iter().map(|f| (f * n as f64).round() as usize).collect();
    let realised = counts.iter().map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 }).collect();
    let mut stage = vec![None; n];
    let mut last_stage = vec![None; n];
    // Position from the end the windows grow from: counts are monotone, so
    // the row at position p is used in exactly the stages with count > p.
    for (pos, &row) in ranking.iter().enumerate() {
        let p = if schedule.from_hard_end { n - 1 - pos } else { pos };
        stage[row] = counts.iter().position(|&c| c > p).map(|s| s as u32);
        last_stage[row] = counts.iter().rposition(|&c| c > p).map(|s| s as u32);
    }
    Stages { stage, last_stage, counts, realised }
}

/// Rows in the order of `order`, easiest (or first drawn) first.
fn rank(order: Ranking) -> Vec<usize> {
    match order {
        Ranking::EasyFirst(scores) => {
            let mut idx: Vec<usize> = (0..scores.len()).collect();
            // Sort key (is NaN, score, row) is a total order, so the parallel
            // sort gives the same ranking every run.
            idx.par_sort_unstable_by(|&a, &b| {
                let (x, y) = (scores[a], scores[b]);
                (x.is_nan(), x).partial_cmp(&(y.is_nan(), y)).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
            });
            idx
        }
        Ranking::Random { n, seed } => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            idx
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores `(i * 37) mod n` for `n = 1000`: a permutation, so row order and
    /// difficulty order differ.
    fn scores(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37) % n) as f32).collect()
    }

    fn used_in(st: &Stages, s: u32) -> usize {
        st.stage
            .iter()
            .zip(&st.last_stage)
            .filter(|(a, b)| a.is_some_and(|a| a <= s) && b.is_some_and(|b| b >= s))
            .count()
    }

    #[test]
    fn every_stage_holds_exactly_round_f_times_n_rows() {
        let n = 1001;
        let sc = scores(n);
        for spec in ["step:0.1,0.25,0.5,1", "increment:0.2,0.15,5", "cut:1,0.7,0.333,0.05", "step:0,0.0005"] {
            let schedule: Schedule = spec.parse().unwrap();
            let st = assign_stages(Ranking::EasyFirst(&sc), &schedule);
            for (s, f) in schedule.fractions.iter().enumerate() {
                let want = (f * n as f64).round() as usize;
                assert_eq!(st.counts[s], want, "{spec} stage {s}");
                assert_eq!(used_in(&st, s as u32), want, "{spec} stage {s}");
            }
        }
    }

    #[test]
    fn stage_is_monotone_in_the_score_easy_first() {
        let sc = scores(1000);
        let never = u32::MAX;
        for spec in ["step:0.1,0.4,0.9", "increment:0.1,0.2,4"] {
            let st = assign_stages(Ranking::EasyFirst(&sc), &spec.parse().unwrap());
            let mut by_score: Vec<usize> = (0..1000).collect();
            by_score.sort_by(|&a, &b| sc[a].total_cmp(&sc[b]));
            let stages: Vec<u32> = by_score.iter().map(|&i| st.stage[i].unwrap_or(never)).collect();
            assert!(stages.windows(2).all(|w| w[0] <= w[1]), "{spec}: harder rows never start earlier");
        }
        // Data Cut: the easiest rows leave first.
        let st = assign_stages(Ranking::EasyFirst(&sc), &"cut:1,0.5,0.1".parse().unwrap());
        let easiest = sc.iter().position(|&s| s == 0.0).unwrap();
        let hardest = sc.iter().position(|&s| s == 999.0).unwrap();
        assert_eq!((st.stage[easiest], st.last_stage[easiest]), (Some(0), Some(0)));
        assert_eq!((st.stage[hardest], st.last_stage[hardest]), (Some(0), Some(2)));
    }

    #[test]
    fn random_order_is_seeded() {
        let schedule: Schedule = "step:0.3,1".parse().unwrap();
        let a = assign_stages(Ranking::Random { n: 500, seed: 4 }, &schedule);
        let b = assign_stages(Ranking::Random { n: 500, seed: 4 }, &schedule);
        let c = assign_stages(Ranking::Random { n: 500, seed: 5 }, &schedule);
        assert_eq!(a, b);
        assert_ne!(a.stage, c.stage);
        assert_eq!(used_in(&a, 0), 150);
    }

    #[test]
    fn nan_scores_rank_hardest_and_empty_input_gives_empty_stages() {
        let sc = [f32::NAN, 1.0, 0.0];
        let st = assign_stages(Ranking::EasyFirst(&sc), &"step:0.67,1".parse().unwrap());
        assert_eq!(st.stage, vec![Some(1), Some(0), Some(0)]);
        let empty = assign_stages(Ranking::EasyFirst(&[]), &"step:0.5".parse().unwrap());
        assert_eq!((empty.stage.len(), empty.realised.clone()), (0, vec![0.0]));
    }

    #[test]
    fn malformed_or_unordered_specs_are_errors() {
        for spec in [
            "step",
            "step:",
            "step:0.5,x",
            "step:0.5,0.2",
            "cut:0.2,0.5",
            "step:1.5",
            "step:-0.1",
            "increment:0.1,0.1",
            "increment:0.5,0.2,4",
            "increment:0.1,-0.1,3",
            "increment:0.1,0.1,2.5",
            "warp:0.1",
            "step:NaN",
        ] {
            assert!(matches!(spec.parse::<Schedule>(), Err(EmbeddingError::Schedule { .. })), "{spec}");
        }
        let inc: Schedule = "increment:0.1,0.1,10".parse().unwrap();
        assert_eq!(inc.fractions.last(), Some(&1.0), "float slack is absorbed");
    }
}
