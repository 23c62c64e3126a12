//! Training-mode batch normalisation over the last (channel) axis, with an
//! optional fused ReLU, as one candle custom op with its backward: Ioffe and
//! Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by
//! Reducing Internal Covariate Shift" (arXiv:1502.03167). The formulas are in
//! [`super::batch_stats`].
//!
//! # Performance
//! Composing this from candle ops takes about ten passes each way over the
//! activation; here it is two rayon-parallel passes each way, and the ReLU
//! costs nothing extra. The statistics of the forward pass are kept for the
//! backward rather than recomputed. Chunks of [`REDUCE_ROWS`] rows (64 KB at
//! 16 channels) stay in L2 between the two passes over each.

use super::batch_stats::{grad_sums, merge_sums, InputGrad, Moments, Stats};
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
    let op = BatchNormTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some(s) = stats.get() else {
        bail!("batch_norm_train: the forward pass kept no statistics")
    };
    let (mean, var) = s.tensors(x.device())?;
    Ok((y, mean, var))
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
        let parts: Vec<Moments> = x
            .par_chunks(chunk)
            .map(|x| Moments::of_rows(x, c))
            .collect();
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
        let (xd, gd) = (
            f32_data(x, "batch_norm_train input")?,
            f32_data(gamma, "batch_norm_train gamma")?,
        );
        let (yd, dyd) = (
            f32_data(y, "batch_norm_train output")?,
            f32_data(&dy, "batch_norm_train gradient")?,
        );
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
            .zip(
                dys.par_chunks(chunk)
                    .zip(ys.par_chunks(chunk))
                    .zip(xs.par_chunks(chunk)),
            )
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
    use candle_core::{Var, D};

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
