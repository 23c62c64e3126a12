//! The scores `--score` may rank by: their names, the column each one is,
//! and which part of a job computes it. Every score means higher = harder /
//! more informative.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::columns::OutputColumns;

/// Which part of a job computes a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreSource {
    /// The scoring UDF, from one forward pass of the trained proxy.
    Proxy,
    /// The proxy's training dynamics (`dynamics.parquet`), recorded while it trained.
    Dynamics,
    /// The embedding methods, from k-means over the `embedding` column.
    Embeddings,
}

/// A score a selection can rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreName {
    /// Entropy of the softmax.
    Entropy,
    /// `1 - max p`.
    LeastConfidence,
    /// `1 - (p_label - max other p)`.
    Margin,
    /// `||softmax - onehot(label)||_2`.
    El2n,
    /// Cross-entropy of the label.
    Loss,
    /// Last-layer GraNd.
    Grand,
    /// Forgetting events over the proxy's training (Toneva et al. 2019).
    Forgetting,
    /// Area under the margin, negated (Pleiss et al. 2020).
    Aum,
    /// The first epoch from which the proxy keeps the example right.
    LearnedEpoch,
    /// EL2N averaged over the first half of the proxy's epochs.
    El2nEarly,
    /// Distance to the nearest k-means prototype (Sorscher et al. 2022).
    Prototype,
}

impl ScoreName {
    /// Every score, proxy scores first, in the order `--help` lists them.
    pub const ALL: [ScoreName; 11] = [
        Self::Entropy,
        Self::LeastConfidence,
        Self::Margin,
        Self::El2n,
        Self::Loss,
        Self::Grand,
        Self::Forgetting,
        Self::Aum,
        Self::LearnedEpoch,
        Self::El2nEarly,
        Self::Prototype,
    ];

    /// Its column in `scores.parquet` and the kept rows.
    pub const fn column(self) -> &'static str {
        match self {
            Self::Entropy => OutputColumns::ENTROPY,
            Self::LeastConfidence => OutputColumns::LEAST_CONFIDENCE,
            Self::Margin => OutputColumns::MARGIN,
            Self::El2n => OutputColumns::EL2N,
            Self::Loss => OutputColumns::LOSS,
            Self::Grand => OutputColumns::GRAND,
            Self::Forgetting => "forgetting",
            Self::Aum => "aum",
            Self::LearnedEpoch => "learned_epoch",
            Self::El2nEarly => "el2n_early",
            Self::Prototype => "prototype",
        }
    }

    /// What computes it.
    pub const fn source(self) -> ScoreSource {
        match self {
            Self::Entropy | Self::LeastConfidence | Self::Margin | Self::El2n | Self::Loss | Self::Grand => {
                ScoreSource::Proxy
            }
            Self::Forgetting | Self::Aum | Self::LearnedEpoch | Self::El2nEarly => ScoreSource::Dynamics,
            Self::Prototype => ScoreSource::Embeddings,
        }
    }

    /// The columns of the scores `source` computes, in [`Self::ALL`]'s order.
    pub fn columns_of(source: ScoreSource) -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().filter(move |s| s.source() == source).map(Self::column)
    }
}

impl fmt::Display for ScoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.column())
    }
}

/// A name that is no score, with the list of those that are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown score '{0}': one of {list}", list = ScoreName::ALL.map(ScoreName::column).join(", "))]
pub struct UnknownScore(pub String);

impl FromStr for ScoreName {
    type Err = UnknownScore;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|n| n.column() == s).ok_or_else(|| UnknownScore(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_score_parses_from_its_column_and_serializes_as_it() {
        for name in ScoreName::ALL {
            assert_eq!(name.column().parse::<ScoreName>(), Ok(name));
            assert_eq!(serde_json::to_value(name).unwrap(), name.column());
        }
        let err = "hardness".parse::<ScoreName>().unwrap_err().to_string();
        assert!(err.starts_with("unknown score 'hardness': one of entropy, ") && err.ends_with("prototype"), "{err}");
    }

    #[test]
    fn the_proxy_scores_are_the_udfs_float_columns() {
        assert!(ScoreName::columns_of(ScoreSource::Proxy).eq(OutputColumns::FLOAT_SCORES));
    }
}
