//! The one switch between the custom kernels of this module and candle's own
//! ops, for every operation the ResNet proxy performs, so that the same
//! network code runs on either (the benchmark's "custom ops vs candle ops").
//!
//! The custom path keeps activations NHWC and fuses each training unit
//! (conv, batch norm, residual add, ReLU) into [`super::conv_bn`]; the candle
//! path keeps activations NCHW, as candle's `conv2d` wants, and builds batch
//! norm from elementwise ops, the way a candle model would be written. The
//! portable path is the candle path with convolution gradients computed by
//! forward convolutions ([`super::conv_grad`]): what runs on a GPU.

use super::add_relu::add_relu;
use super::avg_pool::global_avg_pool;
use super::conv2d;
use super::conv_bn::{conv_bn_train, ConvBnConfig};
use super::conv_grad;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which kernels run the network: the custom ops of [this crate](crate) on
/// NHWC activations, or candle's own ops on NCHW activations (the baseline
/// the benchmark compares against). Parameters are shared and identical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvImpl {
    /// The custom ops: AVX-512 or im2col + gemm convolutions, each fused
    /// with its batch norm, residual add and ReLU in training.
    #[default]
    Fast,
    /// `Tensor::conv2d` and batch norm from elementwise candle ops.
    Candle,
    /// As `Candle`, but differentiating each convolution with forward
    /// convolutions instead of candle's transposed convolution, whose CUDA
    /// kernel is direct and slow: the kernels of every non-CPU device.
    Portable,
}

impl ConvImpl {
    /// The NHWC network input in this implementation's layout.
    pub fn input(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Fast => Ok(x.clone()),
            Self::Candle | Self::Portable => x.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// A per-channel `[c]` vector shaped to broadcast against activations.
    pub fn per_channel(self, v: &Tensor) -> Result<Tensor> {
        match self {
            Self::Fast => Ok(v.clone()),
            Self::Candle | Self::Portable => v.reshape((1, (), 1, 1)),
        }
    }

    /// A convolution with HWIO weights `w`, no bias.
    pub fn conv(self, x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
        match self {
            Self::Fast => conv2d::conv2d(x, w, stride, padding),
            Self::Candle => x.conv2d(&oihw(w)?, padding, stride, 1, 1),
            Self::Portable => conv_grad::conv2d(x, &oihw(w)?, stride, padding),
        }
    }

    /// `relu?(conv(x, w) + b)`, the inference unit of a folded network.
    pub fn conv_bias(
        self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        padding: usize,
        relu: bool,
    ) -> Result<Tensor> {
        match self {
            Self::Fast => conv2d::conv2d_bias(x, w, b, stride, padding, relu),
            Self::Candle | Self::Portable => {
                let y = self.conv(x, w, stride, padding)?.broadcast_add(&self.per_channel(b)?)?;
                if relu {
                    y.relu()
                } else {
                    Ok(y)
                }
            }
        }
    }

    /// A training unit: `(relu?(bn(conv(x)) + residual?), batch mean, biased
    /// batch var)`, fused into one op on the fast path.
    pub fn train_unit(
        self,
        x: &Tensor,
        w: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        residual: Option<&Tensor>,
        cfg: &ConvBnConfig,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Self::Fast => conv_bn_train(x, w, gamma, beta, residual, cfg),
            Self::Candle | Self::Portable => {
                let z = self.conv(x, w, cfg.stride, cfg.padding)?;
                let mean = z.mean_keepdim((0, 2, 3))?;
                let centered = z.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
                let y = centered
                    .broadcast_div(&(&var + cfg.eps)?.sqrt()?)?
                    .broadcast_mul(&self.per_channel(gamma)?)?
                    .broadcast_add(&self.per_channel(beta)?)?;
                let y = self.merge(y, residual, cfg.relu)?;
                Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
            }
        }
    }

    /// `relu?(y + residual?)`.
    pub fn merge(self, y: Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        match (residual, relu, self) {
            (Some(r), true, Self::Fast) => add_relu(&y, r),
            (Some(r), true, Self::Candle | Self::Portable) => (y + r)?.relu(),
            (Some(r), false, _) => y + r,
            (None, true, _) => y.relu(),
            (None, false, _) => Ok(y),
        }
    }

    /// `[n, c]` means over the spatial axes.
    pub fn global_avg_pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Fast => global_avg_pool(x),
            Self::Candle | Self::Portable => x.mean((2, 3)),
        }
    }
}

/// HWIO weights as the OIHW kernel candle's `conv2d` takes.
fn oihw(w: &Tensor) -> Result<Tensor> {
    w.permute((3, 2, 0, 1))?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random};

    /// Both implementations of a training unit agree on values and moments
    /// (relative 1e-4; gradients are compared network-wide in the ResNet's
    /// tests).
    #[test]
    fn train_units_agree() -> Result<()> {
        let x = random(&[3, 6, 6, 16], 1)?;
        let (w, gamma, beta) = (random(&[3, 3, 16, 32], 2)?, random(&[32], 3)?, random(&[32], 4)?);
        let cfg = ConvBnConfig { stride: 2, padding: 1, eps: 1e-5, relu: true };
        let fast = ConvImpl::Fast.train_unit(&x, &w, &gamma, &beta, None, &cfg)?;
        let nchw = ConvImpl::Candle.input(&x)?;
        let slow = ConvImpl::Candle.train_unit(&nchw, &w, &gamma, &beta, None, &cfg)?;
        assert_close(&fast.0, &slow.0.permute((0, 2, 3, 1))?, 1e-4, "y")?;
        assert_close(&fast.1, &slow.1, 1e-4, "mean")?;
        assert_close(&fast.2, &slow.2, 1e-4, "var")
    }
}
