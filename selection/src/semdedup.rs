//! SemDeDup: Abbas et al. 2023, "SemDeDup: Data-efficient learning at
//! web-scale through semantic deduplication"
//! (<https://arxiv.org/abs/2303.09540>), Algorithm 1.
//!
//! Rows are clustered with spherical k-means ([`crate::kmeans`]); inside each
//! cluster, rows are visited in row order and a row is a *duplicate* of the
//! first earlier **kept** row whose cosine similarity to it exceeds
//! `1 - eps`; otherwise it is kept. Only pairs inside one cluster are
//! compared, which is the paper's trick for avoiding the `n^2` all-pairs
//! search. The paper keeps the row farthest from the centroid of each
//! duplicate group; keeping the first in row order instead makes `dup_of`
//! point at the first occurrence, which is what a data platform user expects
//! of exact duplicates.
//!
//! This is a flag, not a score: `dup_of` names the kept row a duplicate
//! stands for, and `None` means keep.
//!
//! # Performance
//!
//! `O(sum_c m_c * kept_c * dim) <= O(sum_c m_c^2 * dim)` for clusters of
//! `m_c` rows, plus the k-means. Clusters run in parallel; memory is `O(n)`
//! (no similarity matrix: each row is compared against the cluster's kept
//! list and stops at the first match). With balanced clusters this is
//! `n^2 / k` comparisons: 50,000 rows in k = 100 clusters is 25M dot
//! products (about a second at dim 64 on 2 cores); choose `k` around
//! `sqrt(n)` or larger to keep it there. A degenerate clustering (one giant
//! cluster) falls back to the quadratic cost.

use rayon::prelude::*;

use crate::embeddings::{dot, EmbeddingError, Embeddings, Result};
use crate::kmeans::{fit, KMeansConfig};

/// Options of [`semdedup`].
#[derive(Clone, Debug, PartialEq)]
pub struct SemDedupConfig {
    /// Cosine-distance threshold: a pair with similarity `> 1 - eps` is a
    /// duplicate. `0 <= eps <= 2`; the paper uses 0.0 to 0.1 (LAION: 0.07
    /// removes about half); `1e-6` catches exact copies, which after
    /// normalisation can differ from similarity 1 by float rounding.
    pub eps: f32,
    /// The clustering; the paper uses 50,000 clusters for 440M LAION rows.
    pub kmeans: KMeansConfig,
}

/// Per-row result of [`semdedup`].
#[derive(Clone, Debug, PartialEq)]
pub struct SemDedup {
    /// The k-means cluster each row was compared within.
    pub dup_cluster: Vec<u32>,
    /// The kept row this row duplicates, `None` for a kept row. Always an
    /// earlier row of the same cluster, and never itself a duplicate.
    pub dup_of: Vec<Option<usize>>,
}

/// Flags the semantic duplicates among the rows of `emb`.
///
/// A zero row has no direction (similarity 0 to everything), so it is never
/// flagged, even against another zero row.
///
/// # Errors
///
/// [`EmbeddingError::OutOfRange`] when `eps` is not in `[0, 2]`; the
/// k-means errors of [`crate::kmeans::spherical_kmeans`].
pub fn semdedup(emb: &Embeddings, cfg: &SemDedupConfig) -> Result<SemDedup> {
    if !(0.0..=2.0).contains(&cfg.eps) {
        return Err(EmbeddingError::OutOfRange { what: "eps", value: f64::from(cfg.eps), expected: "0 <= eps <= 2" });
    }
    let dim = emb.dim();
    let unit = emb.normalized();
    let km = fit(&unit, dim, &cfg.kmeans)?;
    let mut members = vec![Vec::new(); cfg.kmeans.k];
    for (i, &c) in km.assignments.iter().enumerate() {
        members[c as usize].push(i);
    }
    let threshold = 1.0 - cfg.eps;
    let row = |i: usize| &unit[i * dim..(i + 1) * dim];
    // Largest clusters first, so one big cluster does not start last and
    // leave the other threads idle; the result does not depend on the order.
    members.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let pairs: Vec<(usize, usize)> = members
        .par_iter()
        .flat_map_iter(|rows| {
            let mut kept: Vec<usize> = Vec::new();
            let mut dups = Vec::new();
            for &i in rows {
                match kept.iter().find(|&&j| dot(row(i), row(j)) > threshold) {
                    Some(&j) => dups.push((i, j)),
                    None => kept.push(i),
                }
            }
            dups
        })
        .collect();
    let mut dup_of = vec![None; emb.n()];
    for (i, j) in pairs {
        dup_of[i] = Some(j);
    }
    Ok(SemDedup { dup_cluster: km.assignments, dup_of })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::tests::blobs;

    #[test]
    fn at_tiny_eps_exactly_the_planted_copies_are_flagged_and_point_at_the_first_occurrence() {
        let dim = 16;
        let mut data = blobs(4, 100, dim, 2.0, 21);
        // Plant copies: (row copied, positions of its copies). Row 250's copy
        // comes before it in row order, so the copy at 10 is the first
        // occurrence and 250 is its duplicate.
        let plants: [(usize, &[usize]); 4] = [(3, &[17, 305]), (120, &[121]), (399, &[0, 200, 398]), (250, &[10])];
        let mut expected = vec![None; 400];
        for (src, copies) in plants {
            let original = data[src * dim..(src + 1) * dim].to_vec();
            for &c in copies {
                data[c * dim..(c + 1) * dim].copy_from_slice(&original);
            }
            let mut group: Vec<usize> = copies.iter().copied().chain([src]).collect();
            group.sort_unstable();
            for &g in &group[1..] {
                expected[g] = Some(group[0]);
            }
        }
        let emb = Embeddings::new(&data, dim).unwrap();
        for k in [1, 4, 20] {
            let cfg = SemDedupConfig { eps: 1e-6, kmeans: KMeansConfig::new(k, 5) };
            let out = semdedup(&emb, &cfg).unwrap();
            assert_eq!(out.dup_of, expected, "k = {k}");
            for (i, j) in out.dup_of.iter().enumerate().filter_map(|(i, j)| j.map(|j| (i, j))) {
                assert_eq!(out.dup_cluster[i], out.dup_cluster[j]);
            }
        }
    }

    #[test]
    fn near_duplicates_are_caught_by_a_larger_eps_only() {
        // Row 1 is row 0 rotated by about 0.01 rad: cosine similarity
        // cos(0.01) = 0.99995, a cosine distance of 5e-5.
        let data = [1.0, 0.0, 1.0, 0.01, 0.0, 1.0];
        let emb = Embeddings::new(&data, 2).unwrap();
        let run = |eps| semdedup(&emb, &SemDedupConfig { eps, kmeans: KMeansConfig::new(1, 0) }).unwrap().dup_of;
        assert_eq!(run(1e-6), vec![None, None, None]);
        assert_eq!(run(1e-3), vec![None, Some(0), None]);
    }

    #[test]
    fn zero_rows_are_never_duplicates_and_bad_eps_is_an_error() {
        let data = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let emb = Embeddings::new(&data, 2).unwrap();
        let cfg = SemDedupConfig { eps: 1e-6, kmeans: KMeansConfig::new(2, 0) };
        assert_eq!(semdedup(&emb, &cfg).unwrap().dup_of, vec![None, None, None]);
        for eps in [-0.1, 2.5, f32::NAN] {
            let bad = SemDedupConfig { eps, ..cfg.clone() };
            assert!(matches!(semdedup(&emb, &bad), Err(EmbeddingError::OutOfRange { .. })));
        }
    }
}
