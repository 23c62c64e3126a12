//! sieve-kernels: the convolution kernels of the image proxy, on candle alone.
//!
//! Fast CPU kernels written as candle custom ops: 2-D convolution (AVX-512
//! register tiles, or im2col + gemm), the fused conv + batch-norm +
//! residual + ReLU training unit (batch statistics in `batch_stats`), residual add + ReLU and
//! global average pooling, with [`conv_impl::ConvImpl`] switching the ResNet
//! between them and candle's own ops; and [`conv_grad`], the convolution
//! whose gradients are forward convolutions, for GPUs. [`matmul`] is the
//! safe `gemm` wrapper they use, shared with the text encoder.

#![deny(missing_docs)]

pub mod add_relu;
pub mod avg_pool;
mod batch_stats;
pub mod conv2d;
mod conv2d_avx512;
pub mod conv_bn;
pub mod conv_driver;
pub mod conv_grad;
pub mod conv_impl;
mod cpu;
pub mod im2col;
pub mod malloc;
pub mod matmul;
