//! Runs a convolution over a batch image by image, forward and backward,
//! with the fastest per-image kernel: the AVX-512 tiles of
//! [`super::conv2d_avx512`] where they apply, im2col + `gemm` (Chellapilla et
//! al. 2006, see [`super::im2col`]) otherwise.
//!
//! ```text
//! forward   y_i [P, c_out] = cols(x_i) [P, K] x w [K, c_out]
//! weight    dw  [K, c_out] = sum_i cols(x_i)^T [K, P] x dy_i [P, c_out]
//! input     dx_i           = col2im(dy_i [P, c_out] x w^T [c_out, K])
//! ```
//!
//! Both the plain convolution op and the fused conv + batch-norm op drive
//! their convolutions through here; the latter computes each image's output
//! gradient on the fly ([`OutGrad::Fill`]) so it never exists for the whole
//! batch.
//!
//! # Performance
//! Images are spread over rayon's pool, and every per-image product is
//! single-threaded on data that stays in the 2 MB L2 (a 32x32x16 image is
//! 64 KB; its im2col matrix 590 KB). The weight gradient is summed per fixed
//! chunk of [`IMAGES_PER_CHUNK`] images and the chunks are added in order,
//! so the result is bit-identical whatever the thread count.

use super::conv2d_avx512 as avx512;
use super::cpu::with_scratch;
use super::im2col::{col2im, im2col, ConvGeom};
use super::matmul::{gemm, Mat};
use rayon::prelude::*;

/// Images per weight-gradient partial sum: 16 chunks for a batch of 128,
/// enough to balance 2-8 threads; each chunk's `[K, c_out]` partial is at
/// most 147 KB.
pub const IMAGES_PER_CHUNK: usize = 8;

/// The per-image product kernels, chosen per product like candle's
/// `Conv2dImpl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv2dKernel {
    /// im2col into a thread-local buffer, then `gemm`; any shape, any CPU.
    Im2colGemm,
    /// The AVX-512 register tiles: x86-64 with AVX-512F and a multiple of 16
    /// output channels.
    Avx512,
}

impl Conv2dKernel {
    /// The fastest kernel for a product with `c_out` output channels on this
    /// CPU.
    pub fn best(c_out: usize) -> Self {
        if avx512::available(c_out) {
            Self::Avx512
        } else {
            Self::Im2colGemm
        }
    }
}

/// A convolution's forward pass, prepared once per call and run per image.
pub(crate) struct ConvForward<'a> {
    g: &'a ConvGeom,
    w: &'a [f32],
    kernel: Conv2dKernel,
    /// Kernel taps of the AVX-512 path (empty for im2col).
    taps: Vec<(usize, usize)>,
}

impl<'a> ConvForward<'a> {
    /// Prepares `g` with HWIO weights `w`, on `kernel`.
    pub(crate) fn new(g: &'a ConvGeom, w: &'a [f32], kernel: Conv2dKernel) -> Self {
        let taps = match kernel {
            Conv2dKernel::Avx512 => avx512::kernel_taps(g),
            Conv2dKernel::Im2colGemm => Vec::new(),
        };
        Self { g, w, kernel, taps }
    }

    /// `y = relu?(conv(x) + bias)` for one image; uses this thread's scratch.
    pub(crate) fn image(&self, x: &[f32], bias: Option<&[f32]>, relu: bool, y: &mut [f32]) {
        let g = self.g;
        if self.kernel == Conv2dKernel::Avx512 {
            with_scratch(avx512::scratch_len(g), |buf| {
                avx512::forward_image(g, &self.taps, x, self.w, bias, relu, y, buf)
            });
            return;
        }
        let (p, k) = (g.out_pixels(), g.patch_len());
        let w = Mat::row_major(self.w, k, g.c_out);
        if g.is_pointwise() {
            gemm(y, Mat::row_major(x, p, k), w, false);
        } else {
            with_scratch(p * k, |cols| {
                im2col(g, x, cols);
                gemm(y, Mat::row_major(cols, p, k), w, false);
            });
        }
        if let Some(b) = bias {
            for px in y.chunks_exact_mut(g.c_out) {
                px.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        if relu {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }

    /// The whole batch `x` (`[n, h, w, c_in]`), in parallel over images.
    pub(crate) fn batch(&self, x: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
        let g = self.g;
        let mut y = vec![0f32; g.n * g.out_len()];
        y.par_chunks_mut(g.out_len()).zip(x.par_chunks(g.in_len())).for_each(|(y, x)| self.image(x, bias, relu, y));
        y
    }
}

/// Where the backward pass finds each image's output gradient.
#[derive(Clone, Copy)]
pub(crate) enum OutGrad<'a> {
    /// The whole batch's, `[n, h_out, w_out, c_out]`.
    Given(&'a [f32]),
    /// Computed per image: `f(i, buf)` writes image `i`'s into `buf`.
    Fill(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

/// The transposed convolution of the AVX-512 input gradient: its geometry,
/// its weights and its taps.
type Transposed = (ConvGeom, Vec<f32>, Vec<(usize, usize)>);

/// A convolution's backward pass: the weight gradient always, the input
/// gradient when asked.
pub(crate) struct ConvBackward<'a> {
    g: &'a ConvGeom,
    w: &'a [f32],
    need_dx: bool,
    /// Row taps of the AVX-512 weight gradient, if it applies.
    row_taps: Option<Vec<(usize, usize)>>,
    /// Geometry, weights and taps of the transposed convolution that gives
    /// the input gradient on the AVX-512 path (stride 1 only).
    transposed: Option<Transposed>,
    /// Scratch floats for padded images.
    pad_len: usize,
}

impl<'a> ConvBackward<'a> {
    /// Prepares the backward of `g` with weights `w`; the input gradient is
    /// computed only if `need_dx` (not for the network's input images).
    pub(crate) fn new(g: &'a ConvGeom, w: &'a [f32], need_dx: bool) -> Self {
        let row_taps = (Conv2dKernel::best(g.c_out) == Conv2dKernel::Avx512).then(|| avx512::row_taps(g));
        let transposed = if need_dx && Conv2dKernel::best(g.c_in) == Conv2dKernel::Avx512 {
            avx512::transposed(g, w).map(|(gt, wt)| {
                let taps = avx512::kernel_taps(&gt);
                (gt, wt, taps)
            })
        } else {
            None
        };
        let pad_len = match &transposed {
            Some((gt, ..)) => avx512::scratch_len(g).max(avx512::scratch_len(gt)),
            None => avx512::scratch_len(g),
        };
        Self { g, w, need_dx, row_taps, transposed, pad_len }
    }

    /// The portable path only, to test the AVX-512 one against.
    #[cfg(test)]
    pub(crate) fn portable(mut self) -> Self {
        self.row_taps = None;
        self.transposed = None;
        self
    }

    /// Returns `(dx, dw)` for input batch `x`; `dx` is None unless `need_dx`.
    /// Each chunk of images runs on one thread, with its images' data read
    /// once and used while in cache.
    pub(crate) fn run(&self, x: &[f32], dy: OutGrad) -> (Option<Vec<f32>>, Vec<f32>) {
        let g = self.g;
        let (p, k) = (g.out_pixels(), g.patch_len());
        let mut dx = vec![0f32; if self.need_dx { g.n * g.in_len() } else { 0 }];
        let dx_chunks: Vec<&mut [f32]> = if self.need_dx {
            dx.chunks_mut(IMAGES_PER_CHUNK * g.in_len()).collect()
        } else {
            (0..g.n.div_ceil(IMAGES_PER_CHUNK)).map(|_| Default::default()).collect()
        };
        let partials: Vec<Vec<f32>> = dx_chunks
            .into_par_iter()
            .enumerate()
            .map(|(chunk, dx)| {
                let mut dw = vec![0f32; k * g.c_out];
                with_scratch(self.pad_len + 2 * p * k + g.out_len(), |buf| {
                    let (pad, buf) = buf.split_at_mut(self.pad_len);
                    let (cols, buf) = buf.split_at_mut(p * k);
                    let (dcols, dy_buf) = buf.split_at_mut(p * k);
                    let first = chunk * IMAGES_PER_CHUNK;
                    for i in first..(first + IMAGES_PER_CHUNK).min(g.n) {
                        let x = &x[i * g.in_len()..(i + 1) * g.in_len()];
                        let dy: &[f32] = match dy {
                            OutGrad::Given(dy) => &dy[i * g.out_len()..(i + 1) * g.out_len()],
                            OutGrad::Fill(f) => {
                                f(i, dy_buf);
                                dy_buf
                            }
                        };
                        let dx = self.need_dx.then(|| &mut dx[(i - first) * g.in_len()..(i - first + 1) * g.in_len()]);
                        self.image(x, dy, &mut dw, dx, pad, cols, dcols);
                    }
                });
                dw
            })
            .collect();
        let mut dw = vec![0f32; k * g.c_out];
        for part in &partials {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        (self.need_dx.then_some(dx), dw)
    }

    /// One image: `dw += cols(x)^T dy` and, if given, `dx = input gradient`.
    #[allow(clippy::too_many_arguments)]
    fn image(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        dx: Option<&mut [f32]>,
        pad: &mut [f32],
        cols: &mut [f32],
        dcols: &mut [f32],
    ) {
        let g = self.g;
        let (p, k) = (g.out_pixels(), g.patch_len());
        let dy_mat = Mat::row_major(dy, p, g.c_out);
        match &self.row_taps {
            Some(taps) => avx512::weight_grad_image(g, taps, x, dy, dw, pad),
            None => {
                let cols = if g.is_pointwise() {
                    Mat::row_major(x, p, k)
                } else {
                    im2col(g, x, cols);
                    Mat::row_major(cols, p, k)
                };
                gemm(dw, cols.t(), dy_mat, true);
            }
        }
        let Some(dx) = dx else { return };
        let w = Mat::row_major(self.w, k, g.c_out);
        match &self.transposed {
            Some((gt, wt, taps)) => avx512::forward_image(gt, taps, dy, wt, None, false, dx, pad),
            None if g.is_pointwise() => gemm(dx, dy_mat, w.t(), false),
            None => {
                gemm(dcols, dy_mat, w.t(), false);
                col2im(g, dcols, dx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// `max |a - b| <= 1e-5 max(1, max |b|)`: f32 sums of at most 720
    /// products in two different orders.
    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(a.len() == b.len() && err <= 1e-5 * scale, "{what}: error {err}, scale {scale}");
    }

    /// (n, h, w, c_in, c_out, ksize, stride, padding).
    type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

    /// (n, h, w, c_in, c_out, ksize, stride, padding): the ResNet's layers
    /// and shapes that leave tile remainders (7 pixels, 48 and 80 channels).
    const SHAPES: [Shape; 6] = [
        (3, 8, 6, 16, 16, 3, 1, 1),
        (2, 8, 8, 16, 32, 3, 2, 1),
        (2, 8, 8, 16, 32, 1, 2, 0),
        (3, 5, 7, 16, 48, 3, 1, 1),
        (2, 6, 3, 32, 80, 3, 1, 1),
        (9, 4, 4, 3, 16, 3, 1, 1),
    ];

    /// The convolution by its definition (NHWC input, HWIO weights), and
    /// the gradients of `sum(y * dy)` before bias and ReLU: `(y, dx, dw)`.
    fn direct(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut y, mut dx, mut dw) = (vec![0f32; g.n * g.out_len()], vec![0f32; x.len()], vec![0f32; w.len()]);
        for n in 0..g.n {
            for (oh, ow) in (0..g.h_out).flat_map(|oh| (0..g.w_out).map(move |ow| (oh, ow))) {
                let out = ((n * g.h_out + oh) * g.w_out + ow) * g.c_out;
                for co in 0..g.c_out {
                    let mut acc = b[co] as f64;
                    for (kh, kw) in (0..g.ksize).flat_map(|kh| (0..g.ksize).map(move |kw| (kh, kw))) {
                        let (ih, iw) = (
                            (oh * g.stride + kh) as isize - g.padding as isize,
                            (ow * g.stride + kw) as isize - g.padding as isize,
                        );
                        if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                            continue;
                        }
                        let input = ((n * g.h + ih as usize) * g.w + iw as usize) * g.c_in;
                        for ci in 0..g.c_in {
                            let wi = ((kh * g.ksize + kw) * g.c_in + ci) * g.c_out + co;
                            acc += (x[input + ci] * w[wi]) as f64;
                            dw[wi] += x[input + ci] * dy[out + co];
                            dx[input + ci] += w[wi] * dy[out + co];
                        }
                    }
                    y[out + co] = (acc as f32).max(0.0);
                }
            }
        }
        (y, dx, dw)
    }

    /// The kernels this CPU runs ([`Conv2dKernel::best`], and the backward
    /// pass as it picks them: the AVX-512 tiles where the CPU has them, else
    /// im2col + gemm) and the portable path, both against the convolution by
    /// its definition on every shape above.
    #[test]
    fn the_kernels_this_cpu_runs_match_the_definition() {
        for (i, &(n, h, w, ci, co, k, s, p)) in SHAPES.iter().enumerate() {
            let g = ConvGeom::new(&[n, h, w, ci], &[k, k, ci, co], s, p).unwrap();
            let seed = 4 * i as u64;
            let (x, wt) = (random(g.n * g.in_len(), seed), random(g.patch_len() * co, seed + 1));
            let (b, dy) = (random(co, seed + 2), random(g.n * g.out_len(), seed + 3));
            let (y, dx, dw) = direct(&g, &x, &wt, &b, &dy);
            let kernel = Conv2dKernel::best(co);
            eprintln!("{:?}: forward with {kernel:?}", SHAPES[i]);
            let what = |part: &str| format!("{part} {:?} {kernel:?}", SHAPES[i]);
            assert_close(&ConvForward::new(&g, &wt, kernel).batch(&x, Some(&b), true), &y, &what("forward"));
            let portable = ConvForward::new(&g, &wt, Conv2dKernel::Im2colGemm).batch(&x, Some(&b), true);
            assert_close(&portable, &y, &what("portable forward"));
            for backward in [ConvBackward::new(&g, &wt, true), ConvBackward::new(&g, &wt, true).portable()] {
                let (dx_k, dw_k) = backward.run(&x, OutGrad::Given(&dy));
                assert_close(&dw_k, &dw, &what("dw"));
                assert_close(&dx_k.unwrap(), &dx, &what("dx"));
            }
        }
    }

    #[test]
    fn weight_gradient_is_bit_identical_across_thread_counts() {
        let g = ConvGeom::new(&[20, 8, 8, 16], &[3, 3, 16, 16], 1, 1).unwrap();
        let (x, w, dy) = (random(g.n * g.in_len(), 12), random(g.patch_len() * 16, 13), random(g.n * g.out_len(), 14));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| ConvBackward::new(&g, &w, false).run(&x, OutGrad::Given(&dy)).1)
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn filled_output_gradients_equal_given_ones() {
        let g = ConvGeom::new(&[5, 6, 6, 16], &[3, 3, 16, 16], 1, 1).unwrap();
        let (x, w, dy) = (random(g.n * g.in_len(), 1), random(g.patch_len() * 16, 2), random(g.n * g.out_len(), 3));
        let fill = |i: usize, buf: &mut [f32]| buf.copy_from_slice(&dy[i * g.out_len()..(i + 1) * g.out_len()]);
        let backward = ConvBackward::new(&g, &w, true);
        assert_eq!(backward.run(&x, OutGrad::Given(&dy)), backward.run(&x, OutGrad::Fill(&fill)));
    }
}
