//! Fast CPU kernels written as candle custom ops.

pub mod add_relu;
pub mod batch_norm;
pub mod conv2d;
mod conv2d_avx512;
pub mod conv_bn;
pub mod conv_driver;
mod cpu;
pub mod im2col;
pub mod malloc;
mod matmul;
