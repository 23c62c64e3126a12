//! `--strategy auto` (the default) and `--order auto`: which selection a
//! job runs, chosen from the kept fraction and the rows kept per class by a
//! rule read off sieve's own sweeps (the README's "Which strategy `auto`
//! picks" gives the tables):
//!
//! * keeping at most [`EASY_MAX_KEEP`] of the rows, the easiest by the
//!   score (Sorscher et al. 2022: with scarce data keep the easy examples;
//!   measured on SST-2 at keep 0.1, el2n easy 78.3% against random 77.6%,
//!   hard 55.1% and CCS 76.5%);
//! * above it, coverage-centric selection (Zheng et al. 2023) with its
//!   default hard cutoff: measured at or above random at keep 0.3, 0.7 and
//!   0.9 on SST-2, 0.2 points below it at 0.5 (within a standard
//!   deviation), where every ranking falls below random at some budget;
//! * in both, the rows confident learning flags as label errors are never
//!   kept (when the scores have the probabilities to decide them).
//!
//! `--order auto` keeps the hard end only with at least [`HARD_MIN_KEEP`]
//! of the rows and 1,000 rows per class
//! ([`sieve_selection::prototype::keeps_hard`]): el2n easy beats el2n hard
//! on SST-2 up to keep 0.5, hard wins from 0.7 (and on CIFAR-10 at 0.7 by
//! 4-5 points).

use crate::choices::{Order, Strategy};

/// What `auto` chose, and why (recorded in the manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The strategy run.
    pub strategy: Strategy,
    /// The end of the ranking kept, for a score strategy.
    pub order: Order,
    /// The rule's reason, in words.
    pub reason: String,
}

/// The kept fraction up to which `auto` keeps the easiest rows.
pub const EASY_MAX_KEEP: f64 = 0.15;

/// The kept fraction from which `--order auto` keeps the hard end.
pub const HARD_MIN_KEEP: f64 = 0.6;

/// The selection `--strategy auto` runs at kept fraction `keep` (label
/// issues dropped besides; see the module's rule).
pub fn choose(keep: f64) -> Choice {
    if keep <= EASY_MAX_KEEP {
        return Choice {
            strategy: Strategy::Score,
            order: Order::Easy,
            reason: format!("keep {keep} <= {EASY_MAX_KEEP}: scarce data, the easiest rows"),
        };
    }
    Choice {
        strategy: Strategy::Ccs,
        order: Order::Hard,
        reason: format!("keep {keep} > {EASY_MAX_KEEP}: coverage-centric selection"),
    }
}

/// The end `--order auto` keeps at kept fraction `keep`, keeping `kept`
/// rows of `classes` classes.
pub fn order(keep: f64, kept: usize, classes: usize) -> Order {
    if keep >= HARD_MIN_KEEP && sieve_selection::prototype::keeps_hard(kept, classes) {
        Order::Hard
    } else {
        Order::Easy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_easy_rows_when_scarce_and_covers_the_strata_otherwise() {
        assert_eq!((choose(0.1).strategy, choose(0.1).order), (Strategy::Score, Order::Easy));
        assert_eq!(choose(0.15).strategy, Strategy::Score);
        for keep in [0.2, 0.3, 0.5, 0.7, 0.9] {
            assert_eq!(choose(keep).strategy, Strategy::Ccs, "keep {keep}");
        }
    }

    #[test]
    fn auto_order_keeps_hard_only_with_most_rows_and_enough_per_class() {
        assert_eq!(order(0.7, 35_000, 10), Order::Hard);
        assert_eq!(order(0.5, 25_000, 10), Order::Easy, "half the rows: easy, as el2n on SST-2");
        assert_eq!(order(0.9, 900, 1), Order::Easy, "fewer than 1,000 rows per class");
    }
}
