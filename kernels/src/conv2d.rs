//! Fast 2-D convolution for NHWC activations and HWIO weights, as candle
//! custom ops: [`conv2d`] (differentiable in input and weight) and
//! [`conv2d_bias`] (inference, with a bias and an optional fused ReLU, for
//! batch norm folded into the weights).
//!
//! The arithmetic lives in [`super::conv_driver`] (per-image products,
//! AVX-512 tiles or im2col + gemm); this file adapts it to candle's
//! `CustomOp2`/`CustomOp3` interface and checks it against candle's own
//! `Tensor::conv2d` and its autograd.
//!
//! # Performance
//! candle 0.11 computes the input gradient with a naive conv_transpose2d
//! loop: a ResNet-20 backward step of 128 images takes 3.5 s on 2 cores.
//! Here a 32x32, 16-to-16-channel 3x3 layer at batch 128 (302M
//! multiply-adds each way) takes 3.1 ms forward, 3.0 ms for the weight
//! gradient and 4.1 ms for the input gradient on one Zen 5 core with
//! AVX-512, about 200 GFLOP/s.

use super::conv_driver::{Conv2dKernel, ConvBackward, ConvForward, OutGrad};
use super::cpu::{f32_data, storage_f32};
use super::im2col::ConvGeom;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Convolves NHWC `x` (`[n, h, w, c_in]`) with HWIO `w`
/// (`[ksize, ksize, c_in, c_out]`), returning `[n, h_out, w_out, c_out]`.
/// Differentiable in both arguments through candle's autograd.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Conv2d { stride, padding })
}

/// `relu?(conv2d(x, w) + b)` with `b` of shape `[c_out]`, for inference with
/// batch norm folded into `w` and `b`. Not differentiable.
pub fn conv2d_bias(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize, relu: bool) -> Result<Tensor> {
    let op = Conv2dBias { stride, padding, relu };
    x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &op)
}

/// The differentiable convolution behind [`conv2d`].
struct Conv2d {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "sieve-conv2d"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let x = storage_f32(xs, xl, "conv2d input")?;
        let w = storage_f32(ws, wl, "conv2d weight")?;
        let y = ConvForward::new(&g, w, Conv2dKernel::best(g.c_out)).batch(x, None, false);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.h_out, g.w_out, g.c_out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let dy = dy.contiguous()?;
        let (dx, dw) = {
            let (xd, wd) = (f32_data(x, "conv2d input")?, f32_data(w, "conv2d weight")?);
            let dyd = f32_data(&dy, "conv2d output gradient")?;
            // An input that is neither a variable nor computed from one (the
            // images) needs no gradient: skipping it saves a third of the stem.
            ConvBackward::new(&g, wd.get(), x.track_op()).run(xd.get(), OutGrad::Given(dyd.get()))
        };
        let dx = dx.map(|dx| Tensor::from_vec(dx, x.shape(), x.device())).transpose()?;
        Ok((dx, Some(Tensor::from_vec(dw, w.shape(), w.device())?)))
    }
}

/// The inference convolution behind [`conv2d_bias`].
struct Conv2dBias {
    stride: usize,
    padding: usize,
    relu: bool,
}

impl CustomOp3 for Conv2dBias {
    fn name(&self) -> &'static str {
        "sieve-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        if bl.dims() != [g.c_out] {
            bail!("conv2d_bias: bias must be [{}], got {:?}", g.c_out, bl.dims())
        }
        let x = storage_f32(xs, xl, "conv2d input")?;
        let w = storage_f32(ws, wl, "conv2d weight")?;
        let b = storage_f32(bs, bl, "conv2d bias")?;
        let y = ConvForward::new(&g, w, Conv2dKernel::best(g.c_out)).batch(x, Some(b), self.relu);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.h_out, g.w_out, g.c_out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random};
    use candle_core::Var;

    /// candle's own convolution on the same data: NHWC -> NCHW, HWIO -> OIHW
    /// and back. Differentiable, so it is also the gradient reference.
    fn reference(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
        let x = x.permute((0, 3, 1, 2))?;
        let w = w.permute((3, 2, 0, 1))?;
        x.conv2d(&w, padding, stride, 1, 1)?.permute((0, 2, 3, 1))
    }

    /// (n, h, w, c_in, c_out, ksize, stride, padding).
    type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

    /// (n, h, w, c_in, c_out, ksize, stride, padding): every combination the
    /// ResNet uses (3x3 same, 3x3 stride 2, 1x1 stride 2 shortcut) plus
    /// non-square images, batch 1, unpadded and pointwise kernels, and for
    /// the AVX-512 tiles widths that leave remainders (7 pixels, 48 and 80
    /// channels). Where stride 2 drops pixels, height and width drop the
    /// same number: candle's conv2d backward (the gradient reference) pads
    /// both axes by the height's remainder.
    const SHAPES: [Shape; 9] = [
        (1, 8, 6, 3, 16, 3, 1, 1),
        (5, 7, 9, 16, 8, 3, 2, 1),
        (2, 6, 4, 32, 16, 1, 2, 0),
        (5, 5, 8, 16, 32, 1, 1, 0),
        (1, 9, 7, 3, 4, 3, 1, 0),
        (2, 8, 8, 32, 32, 3, 2, 0),
        (9, 4, 6, 16, 16, 3, 1, 1),
        (3, 5, 7, 16, 48, 3, 1, 1),
        (2, 6, 3, 32, 80, 3, 1, 1),
    ];

    /// Relative tolerance (see `assert_close`): f32 sums of at most 288
    /// products, computed in a different order from candle's.
    const TOL: f32 = 1e-5;

    #[test]
    fn forward_matches_candle() -> Result<()> {
        for (i, &(n, h, w, ci, co, k, s, p)) in SHAPES.iter().enumerate() {
            let x = random(&[n, h, w, ci], 2 * i as u64)?;
            let wt = random(&[k, k, ci, co], 2 * i as u64 + 1)?;
            let what = format!("forward {:?}", SHAPES[i]);
            assert_close(&conv2d(&x, &wt, s, p)?, &reference(&x, &wt, s, p)?, TOL, &what)?;
        }
        Ok(())
    }

    #[test]
    fn gradients_match_candle_autograd() -> Result<()> {
        for (i, &(n, h, w, ci, co, k, s, p)) in SHAPES.iter().enumerate() {
            let x = Var::from_tensor(&random(&[n, h, w, ci], 3 * i as u64)?)?;
            let wt = Var::from_tensor(&random(&[k, k, ci, co], 3 * i as u64 + 1)?)?;
            // A random linear loss makes dy random rather than all ones.
            let r = random(&[n, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1, co], 3 * i as u64 + 2)?;
            let ours = (conv2d(&x, &wt, s, p)? * &r)?.sum_all()?.backward()?;
            let theirs = (reference(&x, &wt, s, p)? * &r)?.sum_all()?.backward()?;
            for (var, name) in [(&x, "dx"), (&wt, "dw")] {
                let (a, b) = (ours.get(var).unwrap(), theirs.get(var).unwrap());
                assert_close(a, b, TOL, &format!("{name} {:?}", SHAPES[i]))?;
            }
        }
        Ok(())
    }

    #[test]
    fn input_gradient_is_skipped_for_constant_inputs() -> Result<()> {
        let x = random(&[2, 5, 5, 3], 7)?;
        let wt = Var::from_tensor(&random(&[3, 3, 3, 4], 8)?)?;
        let grads = conv2d(&x, &wt, 1, 1)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none() && grads.get(&wt).is_some());
        Ok(())
    }

    #[test]
    fn bias_and_relu_are_fused_correctly() -> Result<()> {
        let (x, wt, b) = (random(&[3, 6, 7, 16], 9)?, random(&[3, 3, 16, 8], 10)?, random(&[8], 11)?);
        let want = reference(&x, &wt, 2, 1)?.broadcast_add(&b)?;
        assert_close(&conv2d_bias(&x, &wt, &b, 2, 1, false)?, &want, TOL, "bias")?;
        assert_close(&conv2d_bias(&x, &wt, &b, 2, 1, true)?, &want.relu()?, TOL, "bias + relu")?;
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() -> Result<()> {
        let x = random(&[1, 4, 4, 3], 0)?;
        assert!(conv2d(&x, &random(&[3, 3, 4, 8], 1)?, 1, 1).is_err());
        assert!(conv2d(&x.to_dtype(candle_core::DType::F64)?, &random(&[3, 3, 3, 8], 1)?, 1, 1).is_err());
        assert!(conv2d_bias(&x, &random(&[3, 3, 3, 8], 1)?, &random(&[4], 2)?, 1, 1, false).is_err());
        Ok(())
    }
}
