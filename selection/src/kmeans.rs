//! Spherical k-means: Lloyd's algorithm in cosine geometry (Dhillon & Modha
//! 2001, "Concept Decompositions for Large Sparse Text Data using
//! Clustering"), seeded with k-means++ (Arthur & Vassilvitskii 2007,
//! "k-means++: The Advantages of Careful Seeding").
//!
//! Rows are L2-normalised first; each row joins the centroid of highest
//! cosine similarity, and each centroid is the normalised mean of its rows.
//! This is the clustering of the prototype score (Sorscher et al. 2022,
//! arXiv:2206.14486) and of SemDeDup (Abbas et al. 2023, arXiv:2303.09540).
//!
//! # Notes
//!
//! - Ties go to the lowest centroid; a zero row (no direction) has
//!   similarity 0 to every centroid and so joins centroid 0.
//! - A centroid that loses all its rows keeps its previous position rather
//!   than being re-seeded, so `k` centroids always come back.
//!
//! # Performance
//!
//! `O(n * k * dim)` per iteration, rayon-parallel over rows for the
//! assignment and over centroids for the update. The update sums each
//! centroid's rows in row order (after an `O(n)` counting sort), so it is
//! deterministic for any thread count; memory is `O(n + k * dim)`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::{dot, sq_dist, EmbeddingError, Embeddings, Result};

/// Rows per rayon task when summing the seeding distances; a fixed size so
/// the partial sums, and hence the draws, are the same on every machine.
const CHUNK: usize = 4096;

/// Options of [`spherical_kmeans`].
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters, `1 <= k <= n`.
    pub k: usize,
    /// Most Lloyd iterations; 100 is far more than the 10-20 that
    /// well-separated data needs, and bounds the cost on data that is not.
    pub max_iter: usize,
    /// Stop when no centroid moves more than this (Euclidean distance between
    /// unit vectors, `sqrt(2 - 2 cos)`); `1e-4` is a cosine change of 5e-9.
    pub tol: f32,
    /// Seed of the k-means++ draws.
    pub seed: u64,
}

impl KMeansConfig {
    /// `k` clusters from `seed`, with the default `max_iter` and `tol`.
    pub fn new(k: usize, seed: u64) -> Self {
        Self { k, max_iter: 100, tol: 1e-4, seed }
    }
}

/// A fitted clustering.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans {
    /// Cluster of each row.
    pub assignments: Vec<u32>,
    /// Cosine similarity of each row to its centroid (0 for a zero row).
    pub similarity: Vec<f32>,
    /// `k x dim` unit-norm centroids, row-major.
    pub centroids: Vec<f32>,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Whether it stopped on `tol` (or on stable assignments) rather than on
    /// `max_iter`.
    pub converged: bool,
}

/// Clusters the rows of `emb` by cosine similarity.
///
/// # Errors
///
/// [`EmbeddingError::InvalidK`] when `k` is 0 or more than the rows;
/// [`EmbeddingError::OutOfRange`] when `tol` is negative or NaN.
pub fn spherical_kmeans(emb: &Embeddings, cfg: &KMeansConfig) -> Result<KMeans> {
    fit(&emb.normalized(), emb.dim(), cfg)
}

/// [`spherical_kmeans`] on rows that are already unit-norm (or zero), for
/// callers that need the normalised rows themselves too.
pub(crate) fn fit(unit: &[f32], dim: usize, cfg: &KMeansConfig) -> Result<KMeans> {
    let n = unit.len() / dim;
    if cfg.k == 0 || cfg.k > n {
        return Err(EmbeddingError::InvalidK { k: cfg.k, n });
    }
    if cfg.tol.is_nan() || cfg.tol < 0.0 {
        return Err(EmbeddingError::OutOfRange { what: "tol", value: f64::from(cfg.tol), expected: "tol >= 0" });
    }
    let mut centroids = plus_plus(unit, dim, cfg.k, cfg.seed);
    let (mut assignments, mut similarity) = assign(unit, dim, &centroids);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < cfg.max_iter {
        let shift = update(unit, dim, &assignments, &mut centroids);
        iterations += 1;
        let (next, sims) = assign(unit, dim, &centroids);
        let stable = next == assignments;
        assignments = next;
        similarity = sims;
        if stable || shift <= cfg.tol {
            converged = true;
            break;
        }
    }
    Ok(KMeans { assignments, similarity, centroids, iterations, converged })
}

/// k-means++ seeding: the first centroid is a uniform row, each next one a
/// row drawn with probability proportional to its squared distance to the
/// nearest centroid so far (`2 - 2 cos` on unit rows). When every row sits on
/// a centroid already (fewer distinct rows than `k`), the draw is uniform.
fn plus_plus(unit: &[f32], dim: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = unit.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centroids = Vec::with_capacity(k * dim);
    let mut min_dist = vec![f32::INFINITY; n];
    let mut pick = rng.random_range(0..n);
    loop {
        let c = &unit[pick * dim..(pick + 1) * dim];
        centroids.extend_from_slice(c);
        if centroids.len() == k * dim {
            return centroids;
        }
        min_dist.par_iter_mut().enumerate().for_each(|(i, d)| {
            *d = d.min(sq_dist(&unit[i * dim..(i + 1) * dim], c));
        });
        // Chunk sums in f64, then added in chunk order: fixed, so the total
        // (and the draw below) is bit-identical for any thread count.
        let partial: Vec<f64> = min_dist.par_chunks(CHUNK).map(|ch| ch.iter().map(|&d| f64::from(d)).sum()).collect();
        let total: f64 = partial.iter().sum();
        pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            // Walk to the chunk, then to the row, that holds `target`.
            let chunk = partial.iter().position(|&p| {
                target -= p;
                target < 0.0
            });
            match chunk {
                Some(c) => {
                    target += partial[c];
                    let rows = &min_dist[c * CHUNK..((c + 1) * CHUNK).min(n)];
                    let at = rows.iter().position(|&d| {
                        target -= f64::from(d);
                        target < 0.0
                    });
                    // Rounding can leave `target` a hair above the chunk's
                    // sum: take the chunk's last row with positive weight.
                    c * CHUNK + at.unwrap_or_else(|| rows.iter().rposition(|&d| d > 0.0).unwrap_or(0))
                }
                None => min_dist.iter().rposition(|&d| d > 0.0).unwrap_or(0),
            }
        } else {
            rng.random_range(0..n)
        };
    }
}

/// Each row's most similar centroid (lowest index on ties) and that
/// similarity.
fn assign(unit: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, Vec<f32>) {
    unit.par_chunks(dim)
        .map(|row| {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (c, centre) in centroids.chunks_exact(dim).enumerate() {
                let s = dot(row, centre);
                if s > best.1 {
                    best = (c as u32, s);
                }
            }
            best
        })
        .unzip()
}

/// Moves each centroid to the normalised mean of its rows; returns the
/// largest Euclidean move. A centroid with no rows, or whose rows sum to
/// zero, stays where it is.
fn update(unit: &[f32], dim: usize, assignments: &[u32], centroids: &mut [f32]) -> f32 {
    let k = centroids.len() / dim;
    // Counting sort of the rows by cluster, keeping row order inside each.
    let mut start = vec![0usize; k + 1];
    for &a in assignments {
        start[a as usize + 1] += 1;
    }
    for c in 0..k {
        start[c + 1] += start[c];
    }
    let mut fill = start.clone();
    let mut members = vec![0usize; assignments.len()];
    for (i, &a) in assignments.iter().enumerate() {
        members[fill[a as usize]] = i;
        fill[a as usize] += 1;
    }
    centroids
        .par_chunks_mut(dim)
        .enumerate()
        .map(|(c, centre)| {
            // f64 sums: a 100k-row cluster would lose ~5 of f32's 24 bits.
            let mut sum = vec![0.0f64; dim];
            for &i in &members[start[c]..start[c + 1]] {
                for (s, &v) in sum.iter_mut().zip(&unit[i * dim..(i + 1) * dim]) {
                    *s += f64::from(v);
                }
            }
            let norm = sum.iter().map(|s| s * s).sum::<f64>().sqrt();
            if norm == 0.0 {
                return 0.0;
            }
            let new: Vec<f32> = sum.iter().map(|s| (s / norm) as f32).collect();
            let shift = sq_dist(centre, &new).sqrt();
            centre.copy_from_slice(&new);
            shift
        })
        .reduce(|| 0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::tests::blobs;

    /// Whether `assignments` splits rows into blocks of `per` exactly like
    /// the planted clusters (up to relabelling).
    fn recovers_blocks(assignments: &[u32], per: usize) -> bool {
        assignments.chunks(per).all(|b| b.iter().all(|&a| a == b[0])) && {
            let mut firsts: Vec<u32> = assignments.chunks(per).map(|b| b[0]).collect();
            firsts.sort_unstable();
            firsts.dedup();
            firsts.len() == assignments.len() / per
        }
    }

    #[test]
    fn recovers_well_separated_clusters() {
        for seed in 0..5 {
            let data = blobs(6, 80, 12, 1.0, seed);
            let emb = Embeddings::new(&data, 12).unwrap();
            let km = spherical_kmeans(&emb, &KMeansConfig::new(6, seed)).unwrap();
            assert!(recovers_blocks(&km.assignments, 80), "seed {seed}");
            assert!(km.converged);
            assert!(km.similarity.iter().all(|&s| s > 0.9));
            for c in km.centroids.chunks(12) {
                assert!((dot(c, c) - 1.0).abs() < 1e-5, "centroids are unit-norm");
            }
        }
    }

    #[test]
    fn same_seed_gives_bit_identical_results() {
        let data = blobs(5, 400, 16, 6.0, 11);
        let emb = Embeddings::new(&data, 16).unwrap();
        let cfg = KMeansConfig::new(7, 42);
        let a = spherical_kmeans(&emb, &cfg).unwrap();
        let b = spherical_kmeans(&emb, &cfg).unwrap();
        assert_eq!(a, b);
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let c = one_thread.install(|| spherical_kmeans(&emb, &cfg).unwrap());
        assert_eq!(a, c, "the thread count does not change the result");
    }

    #[test]
    fn zero_too_many_or_no_clusters_are_errors() {
        let data = blobs(2, 3, 4, 1.0, 0);
        let emb = Embeddings::new(&data, 4).unwrap();
        assert_eq!(
            spherical_kmeans(&emb, &KMeansConfig::new(0, 0)).unwrap_err(),
            EmbeddingError::InvalidK { k: 0, n: 6 }
        );
        assert_eq!(
            spherical_kmeans(&emb, &KMeansConfig::new(7, 0)).unwrap_err(),
            EmbeddingError::InvalidK { k: 7, n: 6 }
        );
        assert!(Embeddings::new(&[], 4).is_err(), "empty input fails before k-means");
        let bad_tol = KMeansConfig { tol: f32::NAN, ..KMeansConfig::new(2, 0) };
        assert!(matches!(spherical_kmeans(&emb, &bad_tol), Err(EmbeddingError::OutOfRange { .. })));
    }

    #[test]
    fn k_equal_to_n_with_duplicate_and_zero_rows_does_not_fail() {
        // Two identical rows and a zero row: k-means++ runs out of distinct
        // rows and falls back to uniform draws.
        let data = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let emb = Embeddings::new(&data, 2).unwrap();
        let km = spherical_kmeans(&emb, &KMeansConfig::new(4, 3)).unwrap();
        assert_eq!(km.assignments.len(), 4);
        assert_eq!(km.assignments[0], km.assignments[1]);
        assert_eq!(km.similarity[2], 0.0, "a zero row has no direction");
    }
}
