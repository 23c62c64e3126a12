//! The self-supervised prototype score: Sorscher et al. 2022, "Beyond neural
//! scaling laws: beating power law scaling via data pruning"
//! (<https://arxiv.org/abs/2206.14486>), Section 5.
//!
//! Cluster the embeddings with k-means (here spherical, [`crate::kmeans`]);
//! an example's difficulty is its cosine distance to the nearest centroid,
//! `prototype = 1 - cos(x, c_nearest)`, in `[0, 2]`. **Higher = harder**:
//! examples far from every prototype are atypical. The paper uses k = the
//! number of classes (1000 on ImageNet) and SWaV embeddings; the caller
//! passes `k`.
//!
//! [`keeps_hard`] picks whether to keep the hard or the easy end, after the
//! paper's Section 2 and Fig. 1.

use crate::embeddings::{class_seed, classes, Embeddings, Result};
use crate::kmeans::{spherical_kmeans, KMeansConfig};

/// Per-row output of the prototype score.
#[derive(Clone, Debug, PartialEq)]
pub struct Prototypes {
    /// `1 - cos(x, nearest centroid)`; higher = harder. A zero row scores 1.
    pub prototype: Vec<f32>,
    /// The centroid each row is nearest to; per class, clusters are numbered
    /// on from the previous class's, so ids are unique across classes.
    pub cluster: Vec<u32>,
}

/// The prototype score with one clustering of all rows.
///
/// # Errors
///
/// The errors of [`spherical_kmeans`] (`k` of 0 or above the row count).
pub fn prototype_scores(emb: &Embeddings, cfg: &KMeansConfig) -> Result<Prototypes> {
    let km = spherical_kmeans(emb, cfg)?;
    Ok(Prototypes { prototype: km.similarity.iter().map(|&s| distance(s)).collect(), cluster: km.assignments })
}

/// The prototype score with each class clustered on its own (`labels` has one
/// entry per row), into `min(k, class size)` clusters, each class seeded from
/// `cfg.seed` and its label.
///
/// # Errors
///
/// [`crate::EmbeddingError::Mismatch`] when `labels` does not match the rows;
/// [`crate::EmbeddingError::InvalidK`] when `k` is 0.
pub fn prototype_scores_per_class(emb: &Embeddings, labels: &[u32], cfg: &KMeansConfig) -> Result<Prototypes> {
    let n = emb.n();
    let mut out = Prototypes { prototype: vec![0.0; n], cluster: vec![0; n] };
    let mut next_cluster = 0u32;
    for (label, rows) in classes(labels, n)? {
        let data = emb.gather(&rows);
        let class_emb = Embeddings::new(&data, emb.dim())?;
        // k = 0 stays 0 so the caller's mistake surfaces as InvalidK.
        let class_cfg = KMeansConfig { k: cfg.k.min(rows.len()), seed: class_seed(cfg.seed, label), ..cfg.clone() };
        let km = spherical_kmeans(&class_emb, &class_cfg)?;
        for (j, &i) in rows.iter().enumerate() {
            out.prototype[i] = distance(km.similarity[j]);
            out.cluster[i] = next_cluster + km.assignments[j];
        }
        next_cluster += class_cfg.k as u32;
    }
    Ok(out)
}

/// Cosine distance from a similarity, floored at 0 because rounding can put
/// a unit row's similarity to itself a few ulps above 1.
fn distance(similarity: f32) -> f32 {
    (1.0 - similarity).max(0.0)
}

/// Kept examples per class from which [`keeps_hard`] keeps the hard end.
///
/// The paper's ImageNet result (Section 5, Fig. 4) is that keeping the
/// hardest 80% (about 1,000 of 1,281 examples per class) costs no accuracy,
/// and its CIFAR-10 experiments keep hard examples with thousands per class;
/// its theory (Section 2, Fig. 1) says the advantage turns into a loss when
/// the kept set is small. 1,000 per class is the smallest kept set at which
/// the paper reports keeping hard examples working at scale.
pub const AUTO_HARD_MIN_KEPT_PER_CLASS: usize = 1000;

/// `--order auto`: whether to keep the hardest examples (the highest
/// scores), as when the kept set is large, rather than the easiest ones.
///
/// The rule: with `n_keep` examples kept over `n_classes` classes, keep hard
/// iff `n_keep / n_classes >= AUTO_HARD_MIN_KEPT_PER_CLASS` (1,000).
///
/// This is a heuristic reading of Sorscher et al., Section 2 and Fig. 1:
/// with abundant data (a large kept set relative to the problem) the best
/// pruning keeps hard examples, with scarce data (a small kept fraction of a
/// small dataset) it keeps easy ones; the paper gives the crossover in its
/// teacher-student theory, not as an example count, so the count above is
/// this tool's calibration, not the paper's. `n_classes = 0` (unlabelled
/// data) counts as one class.
pub fn keeps_hard(n_keep: usize, n_classes: usize) -> bool {
    n_keep / n_classes.max(1) >= AUTO_HARD_MIN_KEPT_PER_CLASS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::tests::blobs;
    use crate::EmbeddingError;

    /// 5 blobs of 100 rows in 16-d plus `outliers` rows pointing along axes
    /// 8..16, which no blob centre uses (blob `c` sits on axis `c`).
    fn blobs_with_outliers(outliers: usize) -> Vec<f32> {
        let dim = 16;
        let mut data = blobs(5, 100, dim, 1.0, 8);
        for o in 0..outliers {
            let mut row = vec![0.0f32; dim];
            row[8 + o % 8] = 10.0;
            row[8 + (o + 3) % 8] = 4.0;
            data.extend(row);
        }
        data
    }

    #[test]
    fn planted_outliers_rank_highest() {
        let data = blobs_with_outliers(6);
        let emb = Embeddings::new(&data, 16).unwrap();
        let p = prototype_scores(&emb, &KMeansConfig::new(5, 1)).unwrap();
        let mut rank: Vec<usize> = (0..p.prototype.len()).collect();
        rank.sort_by(|&a, &b| p.prototype[b].total_cmp(&p.prototype[a]));
        let mut top: Vec<usize> = rank[..6].to_vec();
        top.sort_unstable();
        assert_eq!(top, (500..506).collect::<Vec<_>>());
        assert!(p.prototype.iter().all(|&s| (0.0..=2.0).contains(&s)));
    }

    #[test]
    fn per_class_outliers_rank_highest_within_their_class() {
        let data = blobs_with_outliers(6);
        let emb = Embeddings::new(&data, 16).unwrap();
        // Class 0: blobs 0-1 and outliers 500-502; class 1: the rest.
        let labels: Vec<u32> = (0..506).map(|i| u32::from(!(i < 200 || (500..503).contains(&i)))).collect();
        let p = prototype_scores_per_class(&emb, &labels, &KMeansConfig::new(3, 1)).unwrap();
        for class in 0..2 {
            let rows: Vec<usize> = (0..506).filter(|&i| labels[i] == class).collect();
            let mut by_score = rows.clone();
            by_score.sort_by(|&a, &b| p.prototype[b].total_cmp(&p.prototype[a]));
            let mut top = by_score[..3].to_vec();
            top.sort_unstable();
            assert!(top.iter().all(|&i| i >= 500), "class {class}: top {top:?}");
        }
        // 3 clusters per class, numbered 0-2 and 3-5.
        assert!(p.cluster.iter().all(|&c| c < 6));
        assert!(matches!(
            prototype_scores_per_class(&emb, &labels[1..], &KMeansConfig::new(3, 1)),
            Err(EmbeddingError::Mismatch { .. })
        ));
    }

    #[test]
    fn auto_order_keeps_hard_only_with_a_thousand_kept_per_class() {
        // CIFAR-10 at 50%: 25,000 kept / 10 classes = 2,500 per class.
        assert!(keeps_hard(25_000, 10));
        // CIFAR-10 at 10%: 500 per class.
        assert!(!keeps_hard(5_000, 10));
        assert!(keeps_hard(1_000, 1));
        assert!(!keeps_hard(999, 0));
    }
}
