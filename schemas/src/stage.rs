//! The stages of a job, as `manifest.json`'s `seconds` and the log lines
//! name them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One stage of a job, in pipeline order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Training the proxy.
    Train,
    /// Scoring every row with the proxy.
    Score,
    /// Cross-fitting: the fold proxies and the out-of-sample probabilities.
    CrossFit,
    /// Confident learning: which rows are label errors.
    LabelIssues,
    /// Near-duplicates, from the MinHash or perceptual hashes.
    NearDups,
    /// Leaks: training rows that duplicate an evaluation row.
    Leaks,
    /// The methods over embeddings: prototypes, k-center, SemDeDup, schedules.
    EmbeddingMethods,
    /// Deciding which rows to keep.
    Select,
    /// Active learning: picking the next batch, or simulating rounds.
    Active,
    /// Writing the kept rows.
    Write,
    /// Writing `report.html`.
    Report,
    /// `sieve eval`'s target trainings, all together.
    Eval,
}

impl Stage {
    /// Its name in the manifest and the logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Score => "score",
            Self::CrossFit => "cross_fit",
            Self::LabelIssues => "label_issues",
            Self::NearDups => "near_dups",
            Self::Leaks => "leaks",
            Self::EmbeddingMethods => "embedding_methods",
            Self::Select => "select",
            Self::Active => "active",
            Self::Write => "write",
            Self::Report => "report",
            Self::Eval => "eval",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_serializes_as_its_name() {
        for stage in [
            Stage::Train,
            Stage::Score,
            Stage::CrossFit,
            Stage::LabelIssues,
            Stage::NearDups,
            Stage::Leaks,
            Stage::EmbeddingMethods,
            Stage::Select,
            Stage::Active,
            Stage::Write,
            Stage::Report,
            Stage::Eval,
        ] {
            assert_eq!(serde_json::to_value(stage).unwrap(), stage.name());
        }
    }
}
