//! `relu(a + b)`, the merge at the end of every residual block (He et al.
//! 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385,
//! eq. 1 followed by the second nonlinearity of figure 2), as one custom op.
//!
//! # Performance
//! With candle ops this is an add and a relu forward, and backward a
//! comparison, a cast, a multiply and two gradient accumulations, each a
//! single-threaded pass over the activation. Here it is one parallel pass
//! each way, and both inputs receive the same gradient tensor.

use super::cpu::{f32_data, storage_f32};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task: 64 KB, large enough that rayon's per-task
/// cost (about a microsecond) is noise.
const CHUNK: usize = 1 << 14;

/// `max(a + b, 0)` elementwise for two tensors of the same shape,
/// differentiable in both.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// The op behind [`add_relu`].
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "sieve-add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!("add_relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let (a, b) = (storage_f32(s1, l1, "add_relu lhs")?, storage_f32(s2, l2, "add_relu rhs")?);
        let mut y = vec![0f32; a.len()];
        y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(y, (a, b))| {
            for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
                *y = (a + b).max(0.0);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let g = {
            let (yd, dyd) = (f32_data(y, "add_relu output")?, f32_data(&dy, "add_relu gradient")?);
            let (y, dy) = (yd.get(), dyd.get());
            let mut g = vec![0f32; y.len()];
            g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK))).for_each(|(g, (y, dy))| {
                for ((g, y), dy) in g.iter_mut().zip(y).zip(dy) {
                    *g = if *y > 0.0 { *dy } else { 0.0 };
                }
            });
            g
        };
        let g = Tensor::from_vec(g, y.shape(), y.device())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random};
    use candle_core::Var;

    #[test]
    fn value_and_gradients_match_candle() -> Result<()> {
        // More than one CHUNK, and not a multiple of it.
        let shape = [3, 11, 13, 40];
        let a = Var::from_tensor(&random(&shape, 1)?)?;
        let b = Var::from_tensor(&random(&shape, 2)?)?;
        let r = random(&shape, 3)?;
        let y = add_relu(&a, &b)?;
        let want = (a.as_tensor() + b.as_tensor())?.relu()?;
        assert_close(&y, &want, 0.0, "value")?;
        let ours = (y * &r)?.sum_all()?.backward()?;
        let theirs = (want * &r)?.sum_all()?.backward()?;
        for v in [&a, &b] {
            assert_close(ours.get(v).unwrap(), theirs.get(v).unwrap(), 0.0, "gradient")?;
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_an_error() -> Result<()> {
        assert!(add_relu(&random(&[2, 3], 0)?, &random(&[3, 2], 1)?).is_err());
        Ok(())
    }
}
