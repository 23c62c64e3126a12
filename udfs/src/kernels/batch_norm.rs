//! Training-mode batch normalisation over the last (channel) axis, with an
//! optional fused ReLU, as one candle custom op with its backward, and the
//! per-chunk math that the fused conv + batch-norm op of
//! [`super::conv_bn`] shares.
//!
//! Ioffe and Szegedy 2015, "Batch Normalization: Accelerating Deep Network
//! Training by Reducing Internal Covariate Shift" (arXiv:1502.03167),
//! algorithm 1 and the gradients of section 3, written per channel `c` over
//! the `M = n * h * w` rows of an NHWC tensor:
//!
//! ```text
//! forward   mean, var = batch moments of x (biased)                    pass 1
//!           y = relu?(gamma (x - mean) / sqrt(var + eps) + beta)        pass 2
//! backward  g = dy * [y > 0] (with relu), xhat = (x - mean) / sqrt(var + eps)
//!           dbeta = sum g,  dgamma = sum g xhat                         pass 1
//!           dx = gamma / sqrt(var + eps) (g - dbeta / M - xhat dgamma / M)   pass 2
//! ```
//!
//! # Performance
//! Composing this from candle ops takes about ten passes each way over the
//! activation; here it is two rayon-parallel passes each way, and the ReLU
//! costs nothing extra. The statistics of the forward pass are kept for the
//! backward rather than recomputed.
//!
//! # Notes
//! Moments are computed per fixed chunk of [`REDUCE_ROWS`] rows (two passes
//! over the chunk while it is in cache) and merged in order with the
//! pairwise update of Chan, Golub and LeVeque 1979, "Updating Formulae and a
//! Pairwise Algorithm for Computing Sample Variances", in f64. So a large
//! mean does not cancel the variance, and results are bit-identical whatever
//! the thread count.

use super::cpu::{f32_data, storage_f32, REDUCE_ROWS};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Normalises `x` (`[..., c]`, channels last) with its own batch statistics:
/// returns `(y, mean, var)`, where `y` has the shape of `x` and `mean`, `var`
/// (biased, the one used to normalise) are `[c]`. `y` is differentiable in
/// `x`, `gamma` and `beta` (each `[c]`); with `relu`, `y = max(0, bn(x))`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let stats = Arc::new(OnceLock::new());
    let op = BatchNormTrain { eps, relu, stats: stats.clone() };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some(s) = stats.get() else {
        bail!("batch_norm_train: the forward pass kept no statistics")
    };
    let (mean, var) = s.tensors(x.device())?;
    Ok((y, mean, var))
}

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
    pub(crate) fn tensors(&self, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
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

/// Checks that `gamma` and `beta` are `[c]` for the last axis of `x`;
/// returns `c`.
fn channels(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<usize> {
    let Some(&c) = x.last() else {
        bail!("batch_norm_train: input is a scalar")
    };
    if c == 0 || gamma != [c] || beta != [c] {
        bail!("batch_norm_train: gamma {gamma:?} and beta {beta:?} must be [{c}] for input {x:?}")
    }
    Ok(c)
}

/// The op behind [`batch_norm_train`]; `stats` is shared with the caller,
/// which reads the moments, and with `bwd`, which reuses them.
struct BatchNormTrain {
    eps: f64,
    relu: bool,
    stats: Arc<OnceLock<Stats>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "sieve-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = channels(xl.dims(), gl.dims(), bl.dims())?;
        let x = storage_f32(xs, xl, "batch_norm_train input")?;
        let gamma = storage_f32(gs, gl, "batch_norm_train gamma")?;
        let beta = storage_f32(bs, bl, "batch_norm_train beta")?;
        let chunk = REDUCE_ROWS * c;
        let parts: Vec<Moments> = x.par_chunks(chunk).map(|x| Moments::of_rows(x, c)).collect();
        let Some(moments) = Moments::merge_all(&parts) else {
            bail!("batch_norm_train: empty batch {:?}", xl.dims())
        };
        let stats = Stats::new(&moments, self.eps);
        let affine = stats.affine(gamma, beta);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| affine.apply(x, None, self.relu, y));
        if self.stats.set(stats).is_err() {
            bail!("batch_norm_train: an op instance ran its forward pass twice")
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = channels(x.dims(), gamma.dims(), beta.dims())?;
        let Some(st) = self.stats.get() else {
            bail!("batch_norm_train: backward before forward")
        };
        let dy = dy.contiguous()?;
        let (xd, gd) = (f32_data(x, "batch_norm_train input")?, f32_data(gamma, "batch_norm_train gamma")?);
        let (yd, dyd) = (f32_data(y, "batch_norm_train output")?, f32_data(&dy, "batch_norm_train gradient")?);
        let (xs, ys, dys) = (xd.get(), yd.get(), dyd.get());
        let chunk = REDUCE_ROWS * c;
        let parts: Vec<(Vec<f32>, Vec<f32>)> = dys
            .par_chunks(chunk)
            .zip(ys.par_chunks(chunk))
            .zip(xs.par_chunks(chunk))
            .map(|((dy, y), x)| grad_sums(dy, y, x, &st.mean, self.relu, None))
            .collect();
        let (sum_g, sum_gx) = merge_sums(&parts, c);
        let ig = InputGrad::new(st, gd.get(), &sum_g, &sum_gx);
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(chunk)
            .zip(dys.par_chunks(chunk).zip(ys.par_chunks(chunk)).zip(xs.par_chunks(chunk)))
            .for_each(|(dx, ((dy, y), x))| ig.apply(dy, y, x, self.relu, dx));
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_slice(&ig.dgamma, c, x.device())?),
            Some(Tensor::from_slice(&ig.dbeta, c, x.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::test_util::{assert_close, random};
    use super::*;
    use candle_core::{Device, Var, D};

    const EPS: f64 = 1e-5;

    /// Relative tolerance (see `assert_close`). The backward subtracts the
    /// batch means of g and g xhat from g, so it loses a few more bits than
    /// the forward.
    const TOL: f32 = 1e-4;

    /// Batch norm written with candle ops over `[rows, c]`, the reference
    /// for values and, through candle's autograd, for gradients.
    fn reference(
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = x.dim(D::Minus1)?;
        let flat = x.reshape(((), c))?;
        let mean = flat.mean_keepdim(0)?;
        let centered = flat.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(0)?;
        let y = centered
            .broadcast_div(&(&var + EPS)?.sqrt()?)?
            .broadcast_mul(gamma)?
            .broadcast_add(beta)?;
        let y = if relu { y.relu()? } else { y };
        Ok((y.reshape(x.shape())?, mean.squeeze(0)?, var.squeeze(0)?))
    }

    /// NHWC activations of the three ResNet widths, a batch of one and a
    /// plain `[n, c]` matrix; more rows than [`REDUCE_ROWS`] in the first.
    const SHAPES: [&[usize]; 4] = [&[5, 16, 16, 16], &[1, 3, 5, 32], &[4, 2, 3, 64], &[7, 3]];

    #[test]
    fn forward_and_moments_match_candle() -> Result<()> {
        for (i, &shape) in SHAPES.iter().enumerate() {
            let c = shape[shape.len() - 1];
            let x = (random(shape, 10 * i as u64)? * 3.0)?;
            let (gamma, beta) = (
                random(&[c], 10 * i as u64 + 1)?,
                random(&[c], 10 * i as u64 + 2)?,
            );
            for relu in [false, true] {
                let got = batch_norm_train(&x, &gamma, &beta, EPS, relu)?;
                let want = reference(&x, &gamma, &beta, relu)?;
                let what = format!("{shape:?} relu={relu}");
                assert_close(&got.0, &want.0, TOL, &format!("y {what}"))?;
                assert_close(&got.1, &want.1, TOL, &format!("mean {what}"))?;
                assert_close(&got.2, &want.2, TOL, &format!("var {what}"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_match_candle_autograd() -> Result<()> {
        for (i, &shape) in SHAPES.iter().enumerate() {
            let c = shape[shape.len() - 1];
            let x = Var::from_tensor(&random(shape, 10 * i as u64 + 3)?)?;
            let gamma = Var::from_tensor(&random(&[c], 10 * i as u64 + 4)?)?;
            let beta = Var::from_tensor(&random(&[c], 10 * i as u64 + 5)?)?;
            let r = random(shape, 10 * i as u64 + 6)?;
            for relu in [false, true] {
                let ours = (batch_norm_train(&x, &gamma, &beta, EPS, relu)?.0 * &r)?
                    .sum_all()?
                    .backward()?;
                let theirs = (reference(&x, &gamma, &beta, relu)?.0 * &r)?
                    .sum_all()?
                    .backward()?;
                for (var, name) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta")] {
                    let what = format!("{name} {shape:?} relu={relu}");
                    assert_close(ours.get(var).unwrap(), theirs.get(var).unwrap(), TOL, &what)?;
                }
            }
        }
        Ok(())
    }

    /// With mean 1000 and std 0.01, E[x^2] - E[x]^2 in f32 would lose every
    /// digit of the variance; two-pass chunk moments merged in f64 keep it.
    #[test]
    fn variance_survives_a_large_mean() -> Result<()> {
        let noise = random(&[4000, 2], 20)?;
        let x = ((&noise * 0.01)? + 1000.0)?;
        let (_, _, var) = batch_norm_train(
            &x,
            &Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?,
            &Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu)?,
            EPS,
            false,
        )?;
        // The noise's own variance, in f64; var is 1e-4 times it.
        let noise = noise.to_dtype(candle_core::DType::F64)?;
        let centered = noise.broadcast_sub(&noise.mean_keepdim(0)?)?;
        let want = centered.sqr()?.mean(0)?.to_dtype(candle_core::DType::F32)?;
        assert_close(&(var * 1e4)?, &want, 1e-3, "variance")
    }

    #[test]
    fn results_are_bit_identical_across_thread_counts() -> Result<()> {
        let x = Var::from_tensor(&random(&[6, 16, 16, 16], 30)?)?;
        let (gamma, beta) = (
            Var::from_tensor(&random(&[16], 31)?)?,
            Var::from_tensor(&random(&[16], 32)?)?,
        );
        let run = |threads: usize| -> Result<Vec<Vec<f32>>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(candle_core::Error::wrap)?;
            pool.install(|| {
                let (y, mean, var) = batch_norm_train(&x, &gamma, &beta, EPS, true)?;
                let grads = y.sum_all()?.backward()?;
                let dx = grads.get(&x).unwrap().flatten_all()?.to_vec1()?;
                Ok(vec![
                    y.flatten_all()?.to_vec1()?,
                    mean.to_vec1()?,
                    var.to_vec1()?,
                    dx,
                ])
            })
        };
        assert_eq!(run(1)?, run(3)?);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let x = random(&[2, 3, 4], 0)?;
        assert!(batch_norm_train(&x, &random(&[3], 1)?, &random(&[4], 2)?, EPS, false).is_err());
        assert!(batch_norm_train(&x, &random(&[4, 1], 1)?, &random(&[4], 2)?, EPS, false).is_err());
        assert!(batch_norm_train(
            &random(&[0, 4], 0)?,
            &random(&[4], 1)?,
            &random(&[4], 2)?,
            EPS,
            false
        )
        .is_err());
        Ok(())
    }
}
