//! The choices a job's options make (what a bad row does, which end of a
//! ranking is kept, how a ranking is made, ...): domain types the plans and
//! stages use, which the command line parses as they are.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// What to do with a row that cannot be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Null scores, an `error` reason, never kept.
    Skip,
    /// Stop with an error naming the file, row and column.
    Fail,
}

/// Which near-duplicates a selection leaves out (`--drop-near-dups`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearDupDrop {
    /// None: they are flagged and may be kept.
    #[default]
    None,
    /// Every row of a component but its first.
    All,
    /// Every row of a component but the first of each label: near-duplicates
    /// that disagree on the label stay, same-label copies go.
    Label,
}

/// Which end of the ranking is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Highest scores (hard examples).
    Hard,
    /// Lowest scores (easy examples).
    Easy,
    /// Hard when the kept set is large, easy when it is small (resolved per job; the manifest records the choice).
    Auto,
}

/// How confident learning counts the label errors of the rows it ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueCount {
    /// From the proxies' held-out accuracy and their agreement with the given labels (the confident joint without a held-out split).
    Heldout,
    /// The calibrated confident joint, per class (cleanlab's prune_by_class).
    Joint,
}

/// How long a target trains on a subset, against the full data's epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetBudget {
    /// The same epochs: a subset of 70% trains 70% of the steps.
    Epochs,
    /// The same SGD steps: epochs ÷ kept fraction, rounded to the nearest.
    Steps,
}

/// Per-class quotas or one global ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Every class keeps the same fraction (window functions per label).
    Class,
    /// One ranking over all rows.
    None,
}

/// Where the prototype score's k-means runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prototypes {
    /// One k-means over all rows, labels unused.
    Global,
    /// One k-means per class.
    Class,
}

/// How the ranking is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Rank by the chosen score.
    Score,
    /// A seeded random subset of the same size (the baseline).
    Random,
    /// Greedy k-center on the embeddings (per class with `--balance class`).
    Kcenter,
    /// Coverage-centric (Zheng et al. 2023): drop the hardest `--hard-cutoff`, then sample evenly across `--strata` score strata.
    Ccs,
    /// One of the above, chosen by the kept fraction and the rows kept per class (the README's rule; the manifest records the choice and why).
    Auto,
}

/// How active learning picks rows to label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acquisition {
    /// Highest `1 - max p`.
    LeastConfidence,
    /// Highest entropy of the softmax.
    Entropy,
    /// Smallest gap between the top two classes.
    Margin,
    /// Greedy k-center: the rows farthest from the labeled set and each other.
    Kcenter,
}

/// In which order examples enter a data schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleOrder {
    /// Easiest first, by the `--score` column.
    Easy,
    /// A seeded random order.
    Random,
}
