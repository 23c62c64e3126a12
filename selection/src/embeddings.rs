//! The input every embedding algorithm takes ([`Embeddings`]: `n * dim`
//! row-major values), its error type and the small vector helpers they share.

use rayon::prelude::*;

/// Why an embedding algorithm refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// There are no rows (or `dim` is 0).
    #[error("no embeddings: {len} values with dim {dim}")]
    Empty {
        /// Number of values given.
        len: usize,
        /// Row width given.
        dim: usize,
    },
    /// The value count is not a multiple of `dim`.
    #[error("{len} values do not split into rows of dim {dim}")]
    Ragged {
        /// Number of values given.
        len: usize,
        /// Row width given.
        dim: usize,
    },
    /// A value is NaN or infinite.
    #[error("embedding row {row}, column {col} is not finite")]
    NonFinite {
        /// Row of the bad value.
        row: usize,
        /// Column of the bad value.
        col: usize,
    },
    /// k-means was asked for 0 clusters or more clusters than rows.
    #[error("k = {k} clusters is invalid for {n} rows (need 1 <= k <= n)")]
    InvalidK {
        /// Clusters asked for.
        k: usize,
        /// Rows available.
        n: usize,
    },
    /// A per-row side input (labels, initial set) does not match the rows.
    #[error("{what}: {found} does not fit {n} rows")]
    Mismatch {
        /// Which input.
        what: &'static str,
        /// The offending length or index.
        found: usize,
        /// Rows available.
        n: usize,
    },
    /// A numeric option is out of its range.
    #[error("{what} = {value} is out of range ({expected})")]
    OutOfRange {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// A schedule string does not parse.
    #[error("schedule {spec:?}: {reason}")]
    Schedule {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = EmbeddingError> = std::result::Result<T, E>;

/// A validated, borrowed `n x dim` row-major matrix of finite values.
#[derive(Clone, Copy, Debug)]
pub struct Embeddings<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Checks that `data` is non-empty, splits into rows of `dim` and holds
    /// only finite values.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 || data.is_empty() {
            return Err(EmbeddingError::Empty { len: data.len(), dim });
        }
        if !data.len().is_multiple_of(dim) {
            return Err(EmbeddingError::Ragged { len: data.len(), dim });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite { row: i / dim, col: i % dim });
        }
        Ok(Self { data, dim })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The whole row-major buffer.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// A copy of the rows scaled to unit L2 norm. A zero row stays zero: it
    /// has no direction, so its cosine similarity to anything is 0.
    pub fn normalized(&self) -> Vec<f32> {
        let mut out = self.data.to_vec();
        out.par_chunks_mut(self.dim).for_each(|row| {
            let norm = dot(row, row).sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        });
        out
    }

    /// Copies the rows `idx` (in that order) into a new buffer, for running an
    /// algorithm on one class.
    pub(crate) fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let mut rows = Vec::with_capacity(idx.len() * self.dim());
        idx.iter().for_each(|&i| rows.extend_from_slice(self.row(i)));
        rows
    }
}

/// Rows grouped by label: `(label, row indices in ascending order)`, labels
/// ascending. Errors when `labels` does not have one entry per row.
pub(crate) fn classes(labels: &[u32], n: usize) -> Result<Vec<(u32, Vec<usize>)>> {
    if labels.len() != n {
        return Err(EmbeddingError::Mismatch { what: "labels length", found: labels.len(), n });
    }
    let mut by_label = std::collections::BTreeMap::<u32, Vec<usize>>::new();
    for (i, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    Ok(by_label.into_iter().collect())
}

/// Dot product with 8 independent accumulators, so the compiler vectorises
/// it (a single running sum is a serial dependency chain). The summation
/// order is fixed, so the result is bit-identical on every run.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// Squared Euclidean distance, with the same fixed summation order as `dot`
/// (public so that benchmarks compare against the same distances).
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// [`sq_dist`], given up early when it is already at least `limit`: the sum
/// so far, every 64 values, is returned as soon as it reaches `limit`. The
/// sum only grows as values are added (rounding is monotone), so a result
/// at or above `limit` means the distance is too, and a result below it is
/// [`sq_dist`]'s, bit for bit (same operations in the same order).
pub(crate) fn sq_dist_until(a: &[f32], b: &[f32], limit: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (k, (x, y)) in ca.chunks_exact(8).zip(cb.chunks_exact(8)).enumerate() {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
        if k % 8 == 7 {
            let partial = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
            if partial >= limit {
                return partial;
            }
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// A seed for one class, derived from the user's seed and the label with
/// SplitMix64's finaliser, so classes get unrelated random streams while the
/// whole run still depends on one `u64`.
pub(crate) fn class_seed(seed: u64, label: u32) -> u64 {
    let mut z = seed ^ (u64::from(label).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `clusters * per` rows in `dim` dimensions: cluster `c` is centred on
    /// `10 * e_c` (so centres are `10 * sqrt(2)` apart and in different
    /// directions) with uniform noise of half-width `spread`. Row `i` belongs
    /// to cluster `i / per`.
    pub(crate) fn blobs(clusters: usize, per: usize, dim: usize, spread: f32, seed: u64) -> Vec<f32> {
        assert!(clusters <= dim, "one axis per cluster");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(clusters * per * dim);
        for c in 0..clusters {
            for _ in 0..per {
                for d in 0..dim {
                    let centre = if d == c { 10.0 } else { 0.0 };
                    out.push(centre + rng.random_range(-spread..spread));
                }
            }
        }
        out
    }

    #[test]
    fn embeddings_reject_empty_ragged_and_nan_input() {
        assert!(matches!(Embeddings::new(&[], 4), Err(EmbeddingError::Empty { .. })));
        assert!(matches!(Embeddings::new(&[1.0], 0), Err(EmbeddingError::Empty { .. })));
        assert!(matches!(Embeddings::new(&[1.0; 5], 2), Err(EmbeddingError::Ragged { .. })));
        assert_eq!(
            Embeddings::new(&[1.0, 2.0, 3.0, f32::NAN], 2).unwrap_err(),
            EmbeddingError::NonFinite { row: 1, col: 1 }
        );
    }

    #[test]
    fn normalized_rows_have_unit_norm_and_zero_rows_stay_zero() {
        let data = [3.0, 4.0, 0.0, 0.0];
        let e = Embeddings::new(&data, 2).unwrap();
        assert_eq!(e.normalized(), vec![0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn sq_dist_until_is_sq_dist_below_its_limit_and_at_least_the_limit_above() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for dim in [7, 64, 130, 384] {
            for _ in 0..200 {
                let a: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let full = sq_dist(&a, &b);
                let limit = full * rng.random_range(0.0..2.0f32);
                let until = sq_dist_until(&a, &b, limit);
                if until < limit {
                    assert_eq!(until.to_bits(), full.to_bits(), "dim {dim}");
                } else {
                    assert!(full >= limit, "dim {dim}: gave up at {until} but the distance {full} is below {limit}");
                }
                assert_eq!(sq_dist_until(&a, &b, f32::INFINITY).to_bits(), full.to_bits());
            }
        }
    }

    #[test]
    fn dot_and_sq_dist_match_the_naive_sums() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 3.0 - i as f32).collect();
        let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let naive_sq: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - naive_dot).abs() < 1e-3);
        assert!((sq_dist(&a, &b) - naive_sq).abs() < 1e-3);
    }
}
