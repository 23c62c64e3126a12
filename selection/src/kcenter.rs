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
//! The textbook loop lowers every row's distance against each new pick: a
//! pass over all `n` rows per pick, bound by memory bandwidth once the rows
//! outgrow the cache (83 s on SST-2's 67,349 x 384 MiniLM embeddings at
//! keep 0.7). Here most of those passes are skipped, for the same picks: a
//! row's distance to the selection only falls as picks are added, so the
//! distance it was last brought up to date with is an upper bound, and a
//! row whose bound is below the farthest up-to-date row cannot be the next
//! pick. Only the *working set*, the rows whose bound is at least a
//! threshold, is kept up to date pick by pick (a few thousand rows, which
//! stay in cache); when it runs dry the threshold is lowered to admit the
//! next few thousand rows by bound, and those are brought up to date
//! against the picks they missed, a block of rows at a time. That catching
//! up is most of the work (on SST-2's MiniLM embeddings at keep 0.7, 0.93
//! billion row-pick pairs against the textbook loop's 1.05 billion: almost
//! every row has to be up to date when it is picked), so it is screened first by a matrix product
//! (`|x|² + |c|² - 2 x·c` for a block of rows against a chunk of picks,
//! through `gemm`), which is each distance to within a rounding bound:
//! only the picks it places below a row's bound plus that slack get the
//! exact distance, which is given up as soon as it reaches the bound.
//! Every distance that counts is the same `sq_dist` of the same two rows
//! as in the textbook loop and the minimum does not depend on the order,
//! so the picks are identical to it, ties to the lowest row included (a
//! test checks, also on rows far from the origin, where the screen's
//! products cancel badly). The admitted rows are blocked by the pick they
//! were last brought up to date with, so a block's product starts near
//! where each of its rows needs it to, and the picks' rows are kept
//! contiguous in pick order, the product's right-hand side in place.
//! Measured in one process on SST-2's MiniLM embeddings (384-d, keep 0.7,
//! 47,144 picks; `kcenter_speed`, idle cores, a CPU without AVX-512):
//! 27.1 s against the textbook loop's 243.3 s, identical picks; 45.8 s
//! before the blocking by pick and the contiguous picks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::embeddings::{class_seed, classes, dot, sq_dist, sq_dist_until, EmbeddingError, Embeddings, Result};

/// Rows admitted to the working set at a time (at least; all that are left
/// when fewer): 6 MiB of 384-d rows, which stay in cache. Measured on
/// SST-2's static embeddings: 256 rows 30.5 s, 1,024 rows 28.2 s, 4,096
/// rows 26.3 s (with another job on the cores).
const ADMIT: usize = 4096;

/// Rows brought up to date together: each pick they missed is read once
/// for the block (256 rows: a little faster than 64 on SST-2's MiniLM
/// embeddings, with another job on the cores).
const BLOCK: usize = 256;

/// Picks screened against a block in one matrix product.
const CHUNK: usize = 128;

/// Working sets at least this large are updated in parallel.
const PARALLEL: usize = 4096;

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
    picks_admitting(emb, budget, initial, seed, ADMIT)
}

/// [`k_center_greedy`], admitting `admit` rows at a time to the working set.
fn picks_admitting(emb: &Embeddings, budget: usize, initial: &[usize], seed: u64, admit: usize) -> Result<Vec<usize>> {
    let n = emb.n();
    if let Some(&bad) = initial.iter().find(|&&i| i >= n) {
        return Err(EmbeddingError::Mismatch { what: "initial row", found: bad, n });
    }
    if budget == 0 {
        return Ok(Vec::new());
    }
    let mut picks = Vec::new();
    let mut centres: Vec<usize> = initial.to_vec();
    if initial.is_empty() {
        let first = ChaCha8Rng::seed_from_u64(seed).random_range(0..n);
        picks.push(first);
        centres.push(first);
    }
    let mut state = State::new(emb, &centres, admit);
    while picks.len() < budget {
        let Some(row) = state.farthest(&centres) else { break };
        picks.push(row);
        centres.push(row);
        state.add(row);
    }
    Ok(picks)
}

/// The rows' distance bounds and the working set.
struct State<'a> {
    emb: &'a Embeddings<'a>,
    /// Squared distance to the nearest of the first `seen[i]` centres;
    /// `None` once the row is a centre.
    bound: Vec<Option<f32>>,
    seen: Vec<usize>,
    /// The working set: exactly the rows whose bound is at least
    /// `threshold`, each up to date with every centre.
    working: Vec<usize>,
    threshold: f32,
    /// Rows admitted at a time.
    admit: usize,
    screen: Screen,
    /// The centres' rows, in order, contiguous: the right-hand side of the
    /// screen's products, read in place (at most `budget x dim` floats
    /// beside the rows).
    centre_rows: Vec<f32>,
}

/// What screening a distance by a matrix product needs: every row's
/// squared norm, and how far the screened distance may be from the exact
/// one, relative to the two norms' sum.
struct Screen {
    norms: Vec<f32>,
    slack: f32,
}

impl Screen {
    /// The rows' squared norms, and the slack for rows of `emb.dim()`
    /// values: with `g = γ(dim + 2)`, the standard bound on a sum of that
    /// many products in f32 (any order), the product `x·c` is off by at
    /// most `g·(|x|² + |c|²)/2`, each norm by `g` of itself, the two
    /// additions by `2u` of `2(|x|² + |c|²)` each, and the exact distance
    /// itself by `g·2(|x|² + |c|²)`: `4g + 4u` in all, doubled for margin.
    fn new(emb: &Embeddings) -> Self {
        let norms = (0..emb.n()).into_par_iter().map(|i| dot(emb.row(i), emb.row(i))).collect();
        let u = f32::EPSILON / 2.0;
        let terms = (emb.dim() + 2) as f32;
        let g = terms * u / (1.0 - terms * u);
        Self { norms, slack: 2.0 * (4.0 * g + 4.0 * u) }
    }
}

impl<'a> State<'a> {
    /// Every row up to date with the starting `centres`, in parallel, and
    /// an empty working set (threshold infinite).
    fn new(emb: &'a Embeddings<'a>, centres: &[usize], admit: usize) -> Self {
        let n = emb.n();
        let mut bound: Vec<Option<f32>> = (0..n)
            .into_par_iter()
            .map(|i| Some(centres.iter().map(|&c| sq_dist(emb.row(i), emb.row(c))).fold(f32::INFINITY, f32::min)))
            .collect();
        centres.iter().for_each(|&c| bound[c] = None);
        let (seen, screen, centre_rows) = (vec![centres.len(); n], Screen::new(emb), emb.gather(centres));
        Self { emb, bound, seen, working: Vec::new(), threshold: f32::INFINITY, admit, screen, centre_rows }
    }

    /// The next pick: the farthest row from `centres` (lowest row on equal
    /// distances), `None` when every row is a centre. Every row outside the
    /// working set has a bound, so a distance, below the threshold, and
    /// every working row is up to date and at or above it: the farthest
    /// working row is the farthest row.
    fn farthest(&mut self, centres: &[usize]) -> Option<usize> {
        while self.working.is_empty() {
            if !self.admit(centres) {
                return None;
            }
        }
        let (_, row) = self
            .working
            .iter()
            .map(|&i| (self.bound[i].expect("not a centre"), i))
            .fold((f32::NEG_INFINITY, usize::MAX), |a, b| if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) { b } else { a });
        Some(row)
    }

    /// Lowers the threshold to the `admit`-th largest bound outside the
    /// working set (below every bound when fewer rows are left), brings the
    /// rows at or above it up to date, and keeps in the working set those
    /// still at or above it; `false` when no row was left outside.
    fn admit(&mut self, centres: &[usize]) -> bool {
        let mut outside: Vec<f32> = self.bound.iter().filter_map(|b| b.filter(|&d| d < self.threshold)).collect();
        if outside.is_empty() {
            return false;
        }
        let threshold = match outside.len().checked_sub(self.admit) {
            Some(k) if k > 0 => *outside.select_nth_unstable_by(k, f32::total_cmp).1,
            _ => f32::NEG_INFINITY,
        };
        let mut admitted: Vec<usize> = (0..self.bound.len())
            .filter(|&i| self.bound[i].is_some_and(|d| d >= threshold && d < self.threshold))
            .collect();
        // Rows that missed the same picks share blocks: a block computes
        // products from the earliest pick any of its rows missed.
        admitted.sort_by_key(|&i| self.seen[i]);
        let fresh: Vec<f32> =
            admitted.par_chunks(BLOCK).flat_map_iter(|block| self.refreshed(block, centres)).collect();
        for (&i, d) in admitted.iter().zip(fresh) {
            self.bound[i] = Some(d);
            self.seen[i] = centres.len();
            if d >= threshold {
                self.working.push(i);
            }
        }
        self.threshold = threshold;
        true
    }

    /// The bounds of the rows `block` brought up to date with the centres
    /// each of them missed. The pairs are screened by a matrix product:
    /// `|x|² + |c|² - 2 x·c` is each distance to within [`Screen::slack`],
    /// so only a centre whose screened distance is below the row's bound
    /// plus the slack can lower it, and only those get the exact
    /// [`sq_dist`] (given up at the bound). The bound is a minimum of exact
    /// distances, as in the textbook loop.
    fn refreshed(&self, block: &[usize], centres: &[usize]) -> Vec<f32> {
        let (emb, dim) = (self.emb, self.emb.dim());
        let mut best: Vec<f32> = block.iter().map(|&i| self.bound[i].expect("not a centre")).collect();
        let from = block.iter().map(|&i| self.seen[i]).min().unwrap_or(centres.len());
        let rows = emb.gather(block);
        let mut products = vec![0.0f32; block.len() * CHUNK];
        for start in (from..centres.len()).step_by(CHUNK) {
            let end = centres.len().min(start + CHUNK);
            let batch = &centres[start..end];
            crate::matmul::times_transpose(&mut products, &rows, &self.centre_rows[start * dim..end * dim], dim);
            for (r, (slot, &i)) in best.iter_mut().zip(block).enumerate() {
                let norm = self.screen.norms[i];
                let screened = &products[r * batch.len()..(r + 1) * batch.len()];
                for (&c, &xc) in batch.iter().zip(screened).skip(self.seen[i].saturating_sub(start)) {
                    let norms = norm + self.screen.norms[c];
                    if norms - 2.0 * xc - self.screen.slack * norms < *slot {
                        *slot = slot.min(sq_dist_until(emb.row(i), emb.row(c), *slot));
                    }
                }
            }
        }
        best
    }

    /// Makes `pick` (a working row) a centre and brings the working set up
    /// to date with it, dropping the rows that fall below the threshold
    /// (their bounds stay up to date as of this pick).
    fn add(&mut self, pick: usize) {
        self.bound[pick] = None;
        self.centre_rows.extend_from_slice(self.emb.row(pick));
        self.working.retain(|&i| i != pick);
        let (emb, centre, bound) = (self.emb, self.emb.row(pick), &self.bound);
        let lowered = |&i: &usize| {
            let d = bound[i].expect("not a centre");
            d.min(sq_dist_until(emb.row(i), centre, d))
        };
        let distances: Vec<f32> = if self.working.len() >= PARALLEL {
            self.working.par_iter().map(lowered).collect()
        } else {
            self.working.iter().map(lowered).collect()
        };
        let (threshold, bound, seen) = (self.threshold, &mut self.bound, &mut self.seen);
        let mut distances = distances.into_iter();
        self.working.retain(|&i| {
            let d = distances.next().expect("one a row");
            bound[i] = Some(d);
            seen[i] += 1;
            d >= threshold
        });
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

    /// The textbook loop: every row's distance lowered against each pick,
    /// then the farthest unselected row (lowest row on ties) is the next.
    fn textbook(emb: &Embeddings, budget: usize, initial: &[usize], seed: u64) -> Vec<usize> {
        let n = emb.n();
        let mut min_dist = vec![f32::INFINITY; n];
        let mut taken = vec![false; n];
        let mut add = |c: usize, min_dist: &mut [f32]| {
            taken[c] = true;
            (0..n).for_each(|i| min_dist[i] = min_dist[i].min(sq_dist(emb.row(i), emb.row(c))));
            (0..n).filter(|&i| !taken[i]).min_by(|&a, &b| min_dist[b].total_cmp(&min_dist[a]).then(a.cmp(&b)))
        };
        let mut picks = Vec::new();
        let mut next = None;
        for &c in initial {
            next = add(c, &mut min_dist);
        }
        if initial.is_empty() && budget > 0 {
            let first = ChaCha8Rng::seed_from_u64(seed).random_range(0..n);
            picks.push(first);
            next = add(first, &mut min_dist);
        }
        while picks.len() < budget {
            let Some(u) = next else { break };
            picks.push(u);
            next = add(u, &mut min_dist);
        }
        picks
    }

    #[test]
    fn picks_are_the_textbook_loops_picks() {
        // Overlapping clusters, exact duplicates (distance ties) and rows on a
        // coarse grid (more ties), with and without a starting set, up to
        // every row picked.
        // Admitting 64 rows at a time, so the working set is refilled many
        // times, and rows wide enough that distances are given up early.
        const D: usize = 72;
        let mut data = blobs(6, 800, D, 6.0, 11);
        data.extend_from_within(0..D * 40);
        data.extend((0..D * 60).map(|i| ((i * 7919) % 5) as f32));
        // Shifted far from the origin, the screening products cancel
        // catastrophically (norms near 10^8 against distances near 10^2):
        // a slack too small for that would skip pairs that lower a bound.
        let shifted: Vec<f32> = data.iter().map(|v| v + 1000.0).collect();
        for (data, shift) in [(&data, 0), (&shifted, 1000)] {
            let emb = Embeddings::new(data, D).unwrap();
            let n = emb.n();
            for (budget, initial) in
                [(1, vec![]), (150, vec![]), (n, vec![]), (3000, vec![3, 500, 3, 4801]), (n, vec![0])]
            {
                for seed in 0..2 {
                    let expected = textbook(&emb, budget, &initial, seed);
                    for admit in [64, ADMIT] {
                        let picks = picks_admitting(&emb, budget, &initial, seed, admit).unwrap();
                        let what = format!("shift {shift}, budget {budget}, initial {initial:?}, admitting {admit}");
                        assert_eq!(picks, expected, "{what}");
                    }
                }
            }
        }
    }

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
