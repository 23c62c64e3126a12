//! Greedy k-center core-set: Sener & Savarese 2018, "Active Learning for
//! Convolutional Neural Networks: A Core-Set Approach"
//! (<https://arxiv.org/abs/1708.00489>), Algorithm 1 (`k-Center-Greedy`), as
//! used on a proxy's penultimate features by Selection via Proxy (Coleman et
//! al. 2020, <https://arxiv.org/abs/1906.11829>).
//!
//! Each pick is the row farthest (Euclidean) from everything selected so
//! far: `u = argmax_i min_{j in S} ||x_i - x_j||`. The output is a selection
//! *order*, not a score: keep the first `budget` picks.
//!
//! # Performance
//!
//! `O(n)` memory: one `min_dist` array of `n` squared distances, updated
//! against the newest pick only. `O(budget * n * dim)` time; each update is a
//! rayon pass over the rows, and its argmax is a reduction under a total order
//! (largest distance, then lowest row), so the pick does not depend on how
//! rayon splits the work.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::{class_seed, classes, sq_dist, EmbeddingError, Embeddings, Result};

/// Rows per rayon task in the distance update: big enough (about 256 KiB of
/// dim-64 rows) that scheduling costs nothing next to the distance math.
const CHUNK: usize = 1024;

/// Greedy k-center picks.
///
/// Starts from `initial` (the already-selected rows, e.g. the labeled pool in
/// active learning), or, when `initial` is empty, from a row drawn with
/// `seed`; that random first row counts as the first pick. Returns up to
/// `budget` new rows in pick order, never repeating a row or returning one of
/// `initial`; fewer when the rows run out (`budget` is clamped to
/// `n - initial.len()`, so `budget = 0` gives an empty order).
///
/// # Errors
///
/// [`EmbeddingError::Mismatch`] when an `initial` row is out of range.
pub fn k_center_greedy(emb: &Embeddings, budget: usize, initial: &[usize], seed: u64) -> Result<Vec<usize>> {
    let n = emb.n();
    if let Some(&bad) = initial.iter().find(|&&i| i >= n) {
        return Err(EmbeddingError::Mismatch { what: "initial row", found: bad, n });
    }
    let mut min_dist = vec![f32::INFINITY; n];
    let mut picks = Vec::new();
    let mut next = None;
    for &i in initial {
        next = update(emb, &mut min_dist, i);
    }
    if initial.is_empty() && budget > 0 {
        let first = ChaCha8Rng::seed_from_u64(seed).random_range(0..n);
        picks.push(first);
        next = update(emb, &mut min_dist, first);
    }
    while picks.len() < budget {
        let Some(u) = next else { break };
        picks.push(u);
        next = update(emb, &mut min_dist, u);
    }
    Ok(picks)
}

/// Marks `pick` selected and lowers every row's distance to the selection;
/// returns the next farthest unselected row (`None` when all are selected).
/// Selected rows hold `-1`, below every real distance, so duplicates of a
/// selected row (distance 0) are still picked before a selected row could be.
fn update(emb: &Embeddings, min_dist: &mut [f32], pick: usize) -> Option<usize> {
    let centre = emb.row(pick);
    min_dist[pick] = -1.0;
    let best = min_dist
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut best: Option<(f32, usize)> = None;
            for (j, d) in chunk.iter_mut().enumerate() {
                let i = c * CHUNK + j;
                if *d >= 0.0 {
                    *d = d.min(sq_dist(emb.row(i), centre));
                    if best.is_none_or(|(bd, _)| *d > bd) {
                        best = Some((*d, i));
                    }
                }
            }
            best
        })
        .reduce(|| None, farther);
    best.map(|(_, i)| i)
}

/// The farther of two candidates; on equal distance the lower row, so the
/// reduction is a total order and its result does not depend on the split.
fn farther(a: Option<(f32, usize)>, b: Option<(f32, usize)>) -> Option<(f32, usize)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Greedy k-center run separately inside each class, each class allotted the
/// same `fraction` of its rows: `round(fraction * m_c)` picks in total for a
/// class of `m_c` rows, counting that class's `initial` rows as already
/// picked (so a class with many labeled rows gets fewer new ones).
///
/// Returns the new picks of every class, classes in ascending label order,
/// each class's picks in pick order. Each class draws its random first row
/// from a seed derived from `seed` and its label.
///
/// # Errors
///
/// [`EmbeddingError::Mismatch`] when `labels` does not have one entry per row
/// or an `initial` row is out of range; [`EmbeddingError::OutOfRange`] when
/// `fraction` is not in `[0, 1]`.
pub fn k_center_greedy_per_class(
    emb: &Embeddings,
    labels: &[u32],
    fraction: f64,
    initial: &[usize],
    seed: u64,
) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(EmbeddingError::OutOfRange { what: "fraction", value: fraction, expected: "0 <= fraction <= 1" });
    }
    let n = emb.n();
    if let Some(&bad) = initial.iter().find(|&&i| i >= n) {
        return Err(EmbeddingError::Mismatch { what: "initial row", found: bad, n });
    }
    let mut picks = Vec::new();
    for (label, rows) in classes(labels, n)? {
        let data = emb.gather(&rows);
        let class_emb = Embeddings::new(&data, emb.dim())?;
        // Position of each labeled row inside this class, found by binary
        // search because `rows` is ascending.
        let class_initial: Vec<usize> = initial.iter().filter_map(|i| rows.binary_search(i).ok()).collect();
        let quota = (fraction * rows.len() as f64).round() as usize;
        let budget = quota.saturating_sub(class_initial.len());
        let local = k_center_greedy(&class_emb, budget, &class_initial, class_seed(seed, label))?;
        picks.extend(local.into_iter().map(|j| rows[j]));
    }
    Ok(picks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::tests::blobs;

    #[test]
    fn first_eight_picks_cover_all_eight_clusters_before_any_repeats() {
        // 8 clusters, 50 points each, centres 14.1 apart, spread 0.5.
        for seed in 0..5 {
            let data = blobs(8, 50, 16, 0.5, 100 + seed);
            let emb = Embeddings::new(&data, 16).unwrap();
            let picks = k_center_greedy(&emb, 8, &[], seed).unwrap();
            let mut clusters: Vec<usize> = picks.iter().map(|i| i / 50).collect();
            clusters.sort_unstable();
            assert_eq!(clusters, (0..8).collect::<Vec<_>>(), "seed {seed}: picks {picks:?}");
        }
    }

    #[test]
    fn initial_set_is_extended_to_the_uncovered_clusters_and_never_repeated() {
        let data = blobs(8, 50, 16, 0.5, 7);
        let emb = Embeddings::new(&data, 16).unwrap();
        // Clusters 0..4 are already labeled; the next 4 picks must cover 4..8.
        let initial = [0, 60, 110, 170];
        let picks = k_center_greedy(&emb, 4, &initial, 0).unwrap();
        let mut clusters: Vec<usize> = picks.iter().map(|i| i / 50).collect();
        clusters.sort_unstable();
        assert_eq!(clusters, vec![4, 5, 6, 7]);
    }

    #[test]
    fn picks_are_distinct_and_clamped_to_the_rows_left_even_with_duplicates() {
        // 5 identical rows: every distance is 0, yet no row is picked twice.
        let data = [1.0f32; 10];
        let emb = Embeddings::new(&data, 2).unwrap();
        let mut picks = k_center_greedy(&emb, 99, &[3], 0).unwrap();
        picks.sort_unstable();
        assert_eq!(picks, vec![0, 1, 2, 4]);
        assert!(k_center_greedy(&emb, 0, &[], 0).unwrap().is_empty());
    }

    #[test]
    fn same_seed_gives_the_same_order_and_bad_initial_rows_are_errors() {
        let data = blobs(4, 300, 8, 3.0, 1);
        let emb = Embeddings::new(&data, 8).unwrap();
        let a = k_center_greedy(&emb, 50, &[], 9).unwrap();
        let b = k_center_greedy(&emb, 50, &[], 9).unwrap();
        assert_eq!(a, b);
        assert!(matches!(k_center_greedy(&emb, 5, &[1200], 0), Err(EmbeddingError::Mismatch { .. })));
    }

    #[test]
    fn per_class_run_gives_each_class_the_same_fraction() {
        let data = blobs(4, 50, 8, 1.0, 3);
        let emb = Embeddings::new(&data, 8).unwrap();
        // Labels: 150 rows of class 0, 50 of class 1.
        let labels: Vec<u32> = (0..200).map(|i| u32::from(i >= 150)).collect();
        let picks = k_center_greedy_per_class(&emb, &labels, 0.2, &[151], 5).unwrap();
        let class0 = picks.iter().filter(|&&i| i < 150).count();
        let class1 = picks.iter().filter(|&&i| i >= 150).count();
        // round(0.2 * 150) = 30; round(0.2 * 50) = 10, minus the labeled row 151.
        assert_eq!((class0, class1), (30, 9));
        assert!(!picks.contains(&151));
        assert!(matches!(
            k_center_greedy_per_class(&emb, &labels, 1.5, &[], 0),
            Err(EmbeddingError::OutOfRange { .. })
        ));
    }
}
