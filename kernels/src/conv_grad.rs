//! A 2-D convolution for devices without sieve's CPU kernels (CUDA), whose
//! backward pass is built from forward convolutions.
//!
//! candle differentiates `conv2d` with `conv_transpose2d` for the input
//! gradient, which on CUDA is a direct kernel (one thread per input element,
//! looping over every output channel and tap: no tiling, no tensor cores),
//! while its forward `conv2d` is im2col + a cuBLAS GEMM. This module computes
//! the same gradients with forward convolutions only:
//!
//! - input gradient: the output gradient, dilated by the stride (zeros
//!   between its elements) and padded by `k - 1 - p` (plus the rows a strided
//!   convolution dropped), convolved with the kernel flipped in space and
//!   transposed in channels (`[c_in, c_out, k, k]`);
//! - weight gradient: candle's own formula, the input with batch and channels
//!   swapped convolved with the output gradient, dilation = stride.
//!
//! Autograd reaches this backward through an identity [`CustomOp3`] on
//! `(y, x, w)`, where `y` is the convolution of the detached `x` and `w`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// `conv2d(x, w)` (NCHW input, OIHW kernel, square `stride` and `padding`)
/// whose gradients are forward convolutions (see the module doc). Without
/// gradients to track it is exactly candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let y = x.detach().conv2d(&w.detach(), padding, stride, 1, 1)?;
    if !(x.track_op() || w.track_op()) {
        return Ok(y);
    }
    y.contiguous()?.apply_op3_arc(x, w, std::sync::Arc::new(Box::new(ConvGrad { stride, padding })))
}

/// The identity on `y` that differentiates as a convolution of `x` and `w`.
struct ConvGrad {
    stride: usize,
    padding: usize,
}

impl CustomOp3 for ConvGrad {
    fn name(&self) -> &'static str {
        "conv2d-with-conv-gradients"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        layout: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // CpuStorage::try_clone copies the whole buffer, whatever the layout.
        if !layout.is_contiguous() || layout.start_offset() != 0 {
            bail!("{}: the convolution output must be contiguous from offset 0", self.name())
        }
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        layout: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((y.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_x = input_grad(grad, w, x.dims4()?, self.stride, self.padding)?;
        let grad_w = weight_grad(grad, x, w.dims4()?, self.stride, self.padding)?;
        Ok((None, Some(grad_x), Some(grad_w)))
    }
}

/// Inserts `stride - 1` zeros between the elements of `g`'s last two axes.
fn dilate(g: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(g.clone());
    }
    let (n, c, h, w) = g.dims4()?;
    let zeros_w = Tensor::zeros((n, c, h, w, stride - 1), g.dtype(), g.device())?;
    let g = Tensor::cat(&[&g.unsqueeze(4)?, &zeros_w], 4)?.reshape((n, c, h, w * stride))?;
    let zeros_h = Tensor::zeros((n, c, h, stride - 1, w * stride), g.dtype(), g.device())?;
    let g = Tensor::cat(&[&g.unsqueeze(3)?, &zeros_h], 3)?.reshape((n, c, h * stride, w * stride))?;
    g.narrow(2, 0, (h - 1) * stride + 1)?.narrow(3, 0, (w - 1) * stride + 1)
}

/// `d loss / d x` for `x` of shape `x_dims`, as a stride-1 convolution.
fn input_grad(
    grad: &Tensor,
    w: &Tensor,
    x_dims: (usize, usize, usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, h, wd) = x_dims;
    let (_, _, kh, kw) = w.dims4()?;
    if padding >= kh || padding >= kw {
        bail!("conv2d gradients: padding {padding} must be below the kernel size {kh}x{kw}")
    }
    let g = dilate(grad, stride)?;
    // Rows (columns) of x past the last window a strided convolution reached
    // get zero gradient: pad them on the far side.
    let far = |size: usize, k: usize| (size + 2 * padding - k) % stride;
    let g = g.pad_with_zeros(2, kh - 1 - padding, kh - 1 - padding + far(h, kh))?.pad_with_zeros(
        3,
        kw - 1 - padding,
        kw - 1 - padding + far(wd, kw),
    )?;
    let w_t = w.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
    g.conv2d(&w_t, 0, 1, 1, 1)
}

/// `d loss / d w` for an OIHW kernel of shape `w_dims` (candle's formula).
fn weight_grad(
    grad: &Tensor,
    x: &Tensor,
    w_dims: (usize, usize, usize, usize),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (_, _, kh, kw) = w_dims;
    let g = x.transpose(0, 1)?.conv2d(&grad.transpose(0, 1)?, padding, 1, stride, 1)?.transpose(0, 1)?;
    // A strided convolution can leave a tap row past the kernel: drop it.
    g.narrow(2, 0, kh)?.narrow(3, 0, kw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random};
    use candle_core::Var;

    /// Against candle's own `conv2d` autograd (transposed convolutions) on
    /// the CPU: same output, same input and weight gradients, for the
    /// ResNet's shapes (3x3 stride 1 and 2, 1x1 stride-2 shortcuts) and odd
    /// sizes where a strided convolution drops the last row.
    #[test]
    fn gradients_equal_candles_transposed_convolutions() -> Result<()> {
        for (i, &(size, ksize, stride, padding)) in
            [(8, 3, 1, 1), (8, 3, 2, 1), (9, 3, 2, 1), (8, 1, 2, 0), (7, 1, 2, 0), (6, 3, 1, 0)].iter().enumerate()
        {
            let seed = 10 * i as u64;
            let x = Var::from_tensor(&random(&[2, 5, size, size], seed)?)?;
            let w = Var::from_tensor(&random(&[4, 5, ksize, ksize], seed + 1)?)?;
            let y = conv2d(&x, &w, stride, padding)?;
            let reference = x.conv2d(&w, padding, stride, 1, 1)?;
            assert_close(&y, &reference, 1e-5, "output")?;
            // A loss that weighs every output element differently.
            let weights = random(reference.dims(), seed + 2)?;
            let grads = (&y * &weights)?.sum_all()?.backward()?;
            let expected = (&reference * &weights)?.sum_all()?.backward()?;
            let what = format!("size {size} k {ksize} stride {stride} pad {padding}");
            assert_close(grads.get(&x).unwrap(), expected.get(&x).unwrap(), 1e-4, &format!("dx, {what}"))?;
            assert_close(grads.get(&w).unwrap(), expected.get(&w).unwrap(), 1e-4, &format!("dw, {what}"))?;
        }
        Ok(())
    }

    #[test]
    fn untracked_inputs_are_a_plain_convolution() -> Result<()> {
        let (x, w) = (random(&[1, 2, 5, 5], 1)?, random(&[3, 2, 3, 3], 2)?);
        let y = conv2d(&x, &w, 2, 1)?;
        assert!(!y.track_op());
        assert_close(&y, &x.conv2d(&w, 1, 2, 1, 1)?, 1e-6, "output")
    }
}
