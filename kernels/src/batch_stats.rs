//! The per-channel math of training batch norm on chunks of NHWC rows,
//! shared by [`super::batch_norm`] and the fused [`super::conv_bn`]: batch
//! moments, the forward affine map, and the two backward passes.
//!
//! Ioffe and Szegedy 2015, "Batch Normalization: Accelerating Deep Network
//! Training by Reducing Internal Covariate Shift" (arXiv:1502.03167),
//! algorithm 1 and the gradients of section 3, per channel over `M` rows:
//!
//! ```text
//! forward   mean, var = batch moments of x (biased)                    Moments
//!           y = relu?(gamma (x - mean) / sqrt(var + eps) + beta (+ r))  Affine
//! backward  g = dy * [y > 0] (with relu), xhat = (x - mean) / sqrt(var + eps)
//!           dbeta = sum g,  dgamma = sum g xhat                         grad_sums
//!           dx = gamma / sqrt(var + eps) (g - dbeta / M - xhat dgamma / M)   InputGrad
//! ```
//!
//! # Notes
//! Callers reduce over fixed chunks of rows (never one chunk per thread) and
//! merge the chunks in order, in f64, so results are bit-identical whatever
//! the thread count. Moments are two passes over each chunk while it is in
//! cache, merged with the pairwise update of Chan, Golub and LeVeque 1979,
//! "Updating Formulae and a Pairwise Algorithm for Computing Sample
//! Variances", so a large mean does not cancel the variance.

use candle_core::{Device, Result, Tensor};

/// Count, per-channel mean and per-channel sum of squared deviations of some
/// rows, in f64 so that merging many chunks loses nothing.
#[derive(Clone, Debug)]
pub(crate) struct Moments {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    /// The moments of `rows` (`[r, c]`), two passes while it is in cache.
    pub(crate) fn of_rows(rows: &[f32], c: usize) -> Self {
        let count = rows.len() / c;
        let mut sum = vec![0f32; c];
        for row in rows.chunks_exact(c) {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        let mean: Vec<f32> = sum.iter().map(|s| s / count.max(1) as f32).collect();
        let mut m2 = vec![0f32; c];
        for row in rows.chunks_exact(c) {
            for ((m2, v), mean) in m2.iter_mut().zip(row).zip(&mean) {
                let d = v - mean;
                *m2 += d * d;
            }
        }
        let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
        Self { count, mean: f64s(mean), m2: f64s(m2) }
    }

    /// Adds `other`'s rows (Chan et al.'s pairwise update).
    pub(crate) fn merge(&mut self, other: &Self) {
        let n = self.count + other.count;
        if other.count == 0 {
            return;
        }
        let (wa, wb) = (self.count as f64 / n as f64, other.count as f64 / n as f64);
        for ((mean, m2), (om, om2)) in self.mean.iter_mut().zip(&mut self.m2).zip(other.mean.iter().zip(&other.m2)) {
            let delta = om - *mean;
            *m2 += om2 + delta * delta * self.count as f64 * wb;
            *mean = *mean * wa + om * wb;
        }
        self.count = n;
    }

    /// Merges chunk moments in their order.
    pub(crate) fn merge_all(parts: &[Self]) -> Option<Self> {
        let (first, rest) = parts.split_first()?;
        let mut total = first.clone();
        rest.iter().for_each(|p| total.merge(p));
        Some(total)
    }
}

/// Per-channel batch statistics, computed once in the forward pass.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Rows normalised.
    pub(crate) count: usize,
    pub(crate) mean: Vec<f32>,
    /// Biased variance.
    pub(crate) var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub(crate) inv_std: Vec<f32>,
}

impl Stats {
    pub(crate) fn new(m: &Moments, eps: f64) -> Self {
        let var: Vec<f64> = m.m2.iter().map(|m2| m2 / m.count as f64).collect();
        Self {
            count: m.count,
            mean: m.mean.iter().map(|&v| v as f32).collect(),
            var: var.iter().map(|&v| v as f32).collect(),
            inv_std: var.iter().map(|v| (1.0 / (v + eps).sqrt()) as f32).collect(),
        }
    }

    /// `(mean, var)` as `[c]` tensors.
    pub(crate) fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let c = self.mean.len();
        Ok((Tensor::from_slice(&self.mean, c, device)?, Tensor::from_slice(&self.var, c, device)?))
    }

    /// The per-channel `y = x * scale + offset` of the forward pass.
    pub(crate) fn affine(&self, gamma: &[f32], beta: &[f32]) -> Affine {
        let scale: Vec<f32> = gamma.iter().zip(&self.inv_std).map(|(g, s)| g * s).collect();
        let offset = beta.iter().zip(&self.mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        Affine { scale, offset }
    }
}

/// The normalisation as a per-channel affine map.
pub(crate) struct Affine {
    scale: Vec<f32>,
    offset: Vec<f32>,
}

impl Affine {
    /// `y = relu?(x * scale + offset + residual?)` over rows of `x`.
    pub(crate) fn apply(&self, x: &[f32], residual: Option<&[f32]>, relu: bool, y: &mut [f32]) {
        let c = self.scale.len();
        let lo = if relu { 0.0 } else { f32::NEG_INFINITY };
        match residual {
            Some(r) => {
                for ((y, x), r) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(r.chunks_exact(c)) {
                    for ((((y, x), r), s), o) in y.iter_mut().zip(x).zip(r).zip(&self.scale).zip(&self.offset) {
                        *y = (x * s + o + r).max(lo);
                    }
                }
            }
            None => {
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((y, x), s), o) in y.iter_mut().zip(x).zip(&self.scale).zip(&self.offset) {
                        *y = (x * s + o).max(lo);
                    }
                }
            }
        }
    }
}

/// The gradient reaching the affine output: ReLU passes `dy` where `y > 0`.
#[inline]
fn masked(dy: f32, y: f32, relu: bool) -> f32 {
    if relu && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// Pass 1 of the backward over some rows: per-channel `sum g` and
/// `sum g (x - mean)`, with `g = dy * [y > 0]` under `relu` and `dy`
/// otherwise; `g` is also written to `g_out` when given.
pub(crate) fn grad_sums(
    dy: &[f32],
    y: &[f32],
    x: &[f32],
    mean: &[f32],
    relu: bool,
    mut g_out: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let c = mean.len();
    let (mut sg, mut sgx) = (vec![0f32; c], vec![0f32; c]);
    let rows = dy.chunks_exact(c).zip(y.chunks_exact(c)).zip(x.chunks_exact(c));
    for (r, ((dy, y), x)) in rows.enumerate() {
        let acc = sg.iter_mut().zip(sgx.iter_mut()).zip(dy).zip(y).zip(x).zip(mean);
        for (((((s, sx), &dy), &y), x), m) in acc {
            let g = masked(dy, y, relu);
            *s += g;
            *sx += g * (x - m);
        }
        if let Some(out) = g_out.as_deref_mut() {
            for ((o, &dy), &y) in out[r * c..(r + 1) * c].iter_mut().zip(dy).zip(y) {
                *o = masked(dy, y, relu);
            }
        }
    }
    (sg, sgx)
}

/// Adds per-chunk f32 sums in f64, in chunk order.
pub(crate) fn merge_sums(parts: &[(Vec<f32>, Vec<f32>)], c: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (vec![0f64; c], vec![0f64; c]);
    for (pa, pb) in parts {
        a.iter_mut().zip(pa).for_each(|(s, v)| *s += f64::from(*v));
        b.iter_mut().zip(pb).for_each(|(s, v)| *s += f64::from(*v));
    }
    (a, b)
}

/// Pass 2 of the backward: `dx = k_g g + k_d (x - mean) + k_0` per channel,
/// the formula of the module doc with its per-channel factors taken out;
/// also holds the parameter gradients.
pub(crate) struct InputGrad {
    k_g: Vec<f32>,
    k_d: Vec<f32>,
    k_0: Vec<f32>,
    mean: Vec<f32>,
    /// `sum g xhat`.
    pub(crate) dgamma: Vec<f32>,
    /// `sum g`.
    pub(crate) dbeta: Vec<f32>,
}

impl InputGrad {
    /// From the statistics, gamma and the merged pass-1 sums.
    pub(crate) fn new(st: &Stats, gamma: &[f32], sum_g: &[f64], sum_gx: &[f64]) -> Self {
        let m = st.count as f32;
        let dgamma: Vec<f32> = sum_gx.iter().zip(&st.inv_std).map(|(s, i)| (s * f64::from(*i)) as f32).collect();
        let dbeta: Vec<f32> = sum_g.iter().map(|&v| v as f32).collect();
        let k_g: Vec<f32> = gamma.iter().zip(&st.inv_std).map(|(g, i)| g * i).collect();
        let k_d = k_g.iter().zip(&st.inv_std).zip(&dgamma).map(|((k, i), dg)| -k * i * dg / m).collect();
        let k_0 = k_g.iter().zip(&dbeta).map(|(k, db)| -k * db / m).collect();
        Self { k_g, k_d, k_0, mean: st.mean.clone(), dgamma, dbeta }
    }

    /// `dx` over rows, with `g` from `dy`, `y` and `relu` as in [`grad_sums`].
    pub(crate) fn apply(&self, dy: &[f32], y: &[f32], x: &[f32], relu: bool, dx: &mut [f32]) {
        let c = self.mean.len();
        let rows = dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(y.chunks_exact(c)).zip(x.chunks_exact(c));
        for (((dx, dy), y), x) in rows {
            let per_channel = self.k_g.iter().zip(&self.k_d).zip(&self.k_0).zip(&self.mean);
            for ((((dx, &dy), &y), x), (((kg, kd), k0), m)) in dx.iter_mut().zip(dy).zip(y).zip(x).zip(per_channel) {
                *dx = kg * masked(dy, y, relu) + kd * (x - m) + k0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-channel mean and biased variance straight from the definition,
    /// in f64.
    fn direct(rows: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
        let n = (rows.len() / c) as f64;
        let mean: Vec<f64> =
            (0..c).map(|ch| rows.iter().skip(ch).step_by(c).map(|&v| f64::from(v)).sum::<f64>() / n).collect();
        let var = (0..c)
            .map(|ch| rows.iter().skip(ch).step_by(c).map(|&v| (f64::from(v) - mean[ch]).powi(2)).sum::<f64>() / n)
            .collect();
        (mean, var)
    }

    /// Merging chunks of 7, 100 and 1 rows (any split) gives the moments of
    /// the whole, to f32 rounding of the chunk sums.
    #[test]
    fn merged_chunk_moments_equal_the_whole() {
        let c = 3;
        let rows: Vec<f32> = (0..108 * c).map(|i| ((i * 37 % 101) as f32 * 0.1).sin() * 4.0 + 2.0).collect();
        let parts: Vec<Moments> =
            [0..7, 7..107, 107..108].map(|r| Moments::of_rows(&rows[r.start * c..r.end * c], c)).to_vec();
        let stats = Stats::new(&Moments::merge_all(&parts).unwrap(), 0.0);
        let (mean, var) = direct(&rows, c);
        for ch in 0..c {
            assert!((f64::from(stats.mean[ch]) - mean[ch]).abs() < 1e-5, "mean {ch}");
            assert!((f64::from(stats.var[ch]) / var[ch] - 1.0).abs() < 1e-5, "var {ch}");
        }
        assert_eq!(stats.count, 108);
    }

    /// With mean 1000 and std 0.01, E[x^2] - E[x]^2 in f32 would lose every
    /// digit of the variance; two-pass chunk moments merged in f64 keep it
    /// (the data's own f32 rounding, 6e-5, bounds the agreement).
    #[test]
    fn variance_survives_a_large_mean() {
        let rows: Vec<f32> = (0..4000).map(|i| 1000.0 + 0.01 * ((i as f32) * 0.77).sin()).collect();
        let parts: Vec<Moments> = rows.chunks(1024).map(|r| Moments::of_rows(r, 1)).collect();
        let got = Stats::new(&Moments::merge_all(&parts).unwrap(), 0.0).var[0];
        let want = direct(&rows, 1).1[0];
        assert!((f64::from(got) / want - 1.0).abs() < 1e-3, "{got} vs {want}");
    }

    #[test]
    fn nothing_to_merge_is_none() {
        assert!(Moments::merge_all(&[]).is_none());
    }
}
