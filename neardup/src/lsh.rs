//! LSH banding of MinHash signatures (Indyk & Motwani 1998; Leskovec,
//! Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3).
//!
//! A signature of `num_perm` values is cut into `bands` bands of `rows`
//! values; two rows are a candidate pair when some band is equal in both.
//! A pair of Jaccard similarity `s` becomes a candidate with probability
//! `1 - (1 - s^rows)^bands`, an S-curve whose step sits near the threshold.
//! [`Banding::for_threshold`] picks `bands` and `rows` as datasketch's
//! `MinHashLSH` does: the pair with `bands * rows <= num_perm` minimising
//! the mean of the false-positive area (the curve below the threshold) and
//! the false-negative area (one minus the curve above it).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// How a signature is cut into bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banding {
    /// Bands compared.
    pub bands: usize,
    /// Signature values per band.
    pub rows: usize,
}

impl Banding {
    /// The banding datasketch's `MinHashLSH(threshold, num_perm)` uses:
    /// false positives and negatives weighed equally.
    pub fn for_threshold(threshold: f64, num_perm: usize) -> Self {
        let mut best = (f64::INFINITY, Banding { bands: 1, rows: 1 });
        for bands in 1..=num_perm {
            for rows in 1..=num_perm / bands {
                let curve = |s: f64| 1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32);
                let false_positive = integrate(curve, 0.0, threshold);
                let false_negative = integrate(|s| 1.0 - curve(s), threshold, 1.0);
                let error = 0.5 * false_positive + 0.5 * false_negative;
                if error < best.0 {
                    best = (error, Banding { bands, rows });
                }
            }
        }
        best.1
    }

    /// The probability that a pair of Jaccard similarity `s` shares a band.
    pub fn candidate_probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// One key per band of `signature`: a hash of the band's values seeded
    /// with its index, so equal values in different bands never collide.
    pub fn keys<'a>(&self, signature: &'a [u32]) -> impl Iterator<Item = u64> + 'a {
        assert!(self.bands * self.rows <= signature.len(), "the bands fit in the signature");
        let rows = self.rows;
        (0..self.bands).map(move |band| {
            let values = &signature[band * rows..(band + 1) * rows];
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            xxh3_64_with_seed(&bytes, band as u64)
        })
    }
}

/// The integral of `f` over `[a, b]` by Simpson's rule on 1,000 intervals:
/// the curves here are polynomials of degree at most 128, smooth enough
/// that this agrees with an adaptive quadrature to 1e-9.
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const N: usize = 1000;
    let h = (b - a) / N as f64;
    let inner: f64 = (1..N).map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
    (f(a) + f(b) + inner) * h / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simpson_integrates_polynomials() {
        assert!((integrate(|x| x.powi(13), 0.0, 0.8) - 0.8f64.powi(14) / 14.0).abs() < 1e-12);
    }

    /// The values datasketch 2.0's `MinHashLSH(threshold, num_perm)` gives
    /// (its `b` and `r`), printed by `benches/near_dup.py --banding`.
    #[test]
    fn the_banding_is_datasketchs() {
        for (threshold, num_perm, bands, rows) in
            [(0.8, 128, 9, 13), (0.5, 128, 25, 5), (0.9, 256, 9, 28), (0.7, 64, 8, 8)]
        {
            assert_eq!(Banding::for_threshold(threshold, num_perm), Banding { bands, rows }, "{threshold} {num_perm}");
        }
    }

    #[test]
    fn the_curve_steps_at_the_threshold() {
        let b = Banding::for_threshold(0.8, 128);
        assert!(b.candidate_probability(0.95) > 0.99 && b.candidate_probability(0.9) > 0.9);
        assert!(b.candidate_probability(0.5) < 0.01);
    }

    #[test]
    fn equal_bands_share_keys_and_bands_never_mix() {
        let b = Banding { bands: 2, rows: 2 };
        let x: Vec<u64> = b.keys(&[1, 2, 1, 2]).collect();
        assert_ne!(x[0], x[1], "the same values in another band");
        let y: Vec<u64> = b.keys(&[1, 2, 9, 9]).collect();
        assert_eq!(x[0], y[0]);
        assert_ne!(x[1], y[1]);
    }
}
