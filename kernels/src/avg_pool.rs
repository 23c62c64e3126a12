//! Global average pooling of NHWC activations to `[n, c]`, the layer
//! between the last residual stage and the linear head (He et al. 2016,
//! "Deep Residual Learning for Image Recognition", arXiv:1512.03385,
//! section 4.2), as a candle custom op with its backward.
//!
//! # Performance
//! candle's `mean((1, 2))` reduces over non-trailing axes with a generic
//! strided loop on one thread: 2.9 ms for ResNet-20's last stage at batch
//! 128, and its backward adds a broadcast and a strided copy. Here each image
//! is one contiguous sweep, in parallel: about 0.1 ms each way.

use super::cpu::storage_f32;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Means over the spatial axes of NHWC `x` (`[n, h, w, c]`): `[n, c]`.
/// Differentiable.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GlobalAvgPool)
}

/// `(n, h * w, c)` of an NHWC shape.
fn dims(d: &[usize]) -> Result<(usize, usize, usize)> {
    match *d {
        [n, h, w, c] if h * w > 0 && c > 0 => Ok((n, h * w, c)),
        _ => bail!("global_avg_pool: expected NHWC with non-empty h, w, c, got {d:?}"),
    }
}

/// The op behind [`global_avg_pool`].
struct GlobalAvgPool;

impl CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "sieve-global-avg-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, hw, c) = dims(l.dims())?;
        let x = storage_f32(s, l, "global_avg_pool input")?;
        let mut y = vec![0f32; n * c];
        y.par_chunks_mut(c).zip(x.par_chunks(hw * c)).for_each(|(y, x)| {
            for px in x.chunks_exact(c) {
                y.iter_mut().zip(px).for_each(|(s, v)| *s += v);
            }
            y.iter_mut().for_each(|s| *s /= hw as f32);
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (n, hw, c) = dims(x.dims())?;
        let dy = (dy.contiguous()? / hw as f64)?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; n * hw * c];
        dx.par_chunks_mut(hw * c).zip(dy.par_chunks(c)).for_each(|(dx, dy)| {
            dx.chunks_exact_mut(c).for_each(|px| px.copy_from_slice(dy));
        });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random};
    use candle_core::Var;

    #[test]
    fn value_and_gradient_match_candle_mean() -> Result<()> {
        let x = Var::from_tensor(&random(&[3, 5, 4, 16], 1)?)?;
        let r = random(&[3, 16], 2)?;
        let (ours, theirs) = (global_avg_pool(&x)?, x.mean((1, 2))?);
        // Sums of 20 values in a different order: relative 1e-6.
        assert_close(&ours, &theirs, 1e-6, "value")?;
        let (g1, g2) = ((ours * &r)?.sum_all()?.backward()?, (theirs * &r)?.sum_all()?.backward()?);
        assert_close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-6, "gradient")
    }

    #[test]
    fn non_nhwc_input_is_an_error() -> Result<()> {
        assert!(global_avg_pool(&random(&[3, 16], 0)?).is_err());
        assert!(global_avg_pool(&random(&[3, 0, 2, 16], 0)?).is_err());
        Ok(())
    }
}
