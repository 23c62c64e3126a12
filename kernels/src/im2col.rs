//! The geometry of a 2-D convolution over NHWC images, and the im2col /
//! col2im pair that turns it into one matrix product per image.
//!
//! im2col follows Chellapilla, Puri and Simard 2006, "High Performance
//! Convolutional Neural Networks for Document Processing"
//! (<https://hal.inria.fr/inria-00112631>): row `p` of the column matrix holds
//! the `ksize x ksize x c_in` input patch under output pixel `p`, so that
//! `out[P, c_out] = cols[P, K] x w[K, c_out]` with `K = ksize * ksize * c_in`.
//! With NHWC activations and HWIO weights, each kernel row of a patch is one
//! contiguous run of `ksize * c_in` floats in both the image and the column
//! matrix, so im2col is a handful of `memcpy`s per output pixel.

use candle_core::{bail, Result};

/// Shapes of one convolution: input `[n, h, w, c_in]`, weight
/// `[ksize, ksize, c_in, c_out]`, output `[n, h_out, w_out, c_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width (square kernels only).
    pub ksize: usize,
    /// Step between neighbouring output pixels, in input pixels.
    pub stride: usize,
    /// Zero rows/columns added on every side of the input.
    pub padding: usize,
    /// Output height, `(h + 2 padding - ksize) / stride + 1`.
    pub h_out: usize,
    /// Output width, `(w + 2 padding - ksize) / stride + 1`.
    pub w_out: usize,
}

impl ConvGeom {
    /// Checks an NHWC input shape against an HWIO weight shape and derives the
    /// output size; every mismatch is an error, never a panic.
    pub fn new(x_dims: &[usize], w_dims: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let &[n, h, w, c_in] = x_dims else { bail!("conv2d: input must be NHWC [n, h, w, c_in], got {x_dims:?}") };
        let &[kh, kw, wc_in, c_out] = w_dims else {
            bail!("conv2d: weight must be HWIO [ksize, ksize, c_in, c_out], got {w_dims:?}")
        };
        if h == 0 || w == 0 || c_in == 0 || c_out == 0 {
            bail!("conv2d: empty image or channel dimension: input {x_dims:?}, weight {w_dims:?}")
        }
        if kh != kw || kh == 0 {
            bail!("conv2d: only square, non-empty kernels are supported, got {kh}x{kw}")
        }
        if wc_in != c_in {
            bail!("conv2d: input has {c_in} channels but the weight expects {wc_in}")
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1")
        }
        if h + 2 * padding < kh || w + 2 * padding < kh {
            bail!("conv2d: kernel {kh} larger than the padded input {h}x{w} (padding {padding})")
        }
        Ok(Self {
            n,
            h,
            w,
            c_in,
            c_out,
            ksize: kh,
            stride,
            padding,
            h_out: (h + 2 * padding - kh) / stride + 1,
            w_out: (w + 2 * padding - kh) / stride + 1,
        })
    }

    /// `K`, the length of one patch: `ksize * ksize * c_in`.
    pub fn patch_len(&self) -> usize {
        self.ksize * self.ksize * self.c_in
    }

    /// `P`, output pixels per image.
    pub fn out_pixels(&self) -> usize {
        self.h_out * self.w_out
    }

    /// Floats per input image.
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.c_in
    }

    /// Floats per output image.
    pub fn out_len(&self) -> usize {
        self.out_pixels() * self.c_out
    }

    /// True when the column matrix would be the image itself (1x1, stride 1,
    /// no padding), so im2col can be skipped.
    pub fn is_pointwise(&self) -> bool {
        self.ksize == 1 && self.stride == 1 && self.padding == 0
    }

    /// For output row `oh` and kernel row `kh`: the input row, if inside the image.
    fn in_row(&self, oh: usize, kh: usize) -> Option<usize> {
        (oh * self.stride + kh).checked_sub(self.padding).filter(|&ih| ih < self.h)
    }

    /// For output column `ow`: the kernel columns `kw0..kw1` that land inside
    /// the image and the input column under `kw0`, or `kw0 == kw1` (and input
    /// column 0) when the whole kernel row falls in the padding.
    fn in_cols(&self, ow: usize) -> (usize, usize, usize) {
        let left = ow * self.stride;
        let kw0 = self.padding.saturating_sub(left).min(self.ksize);
        let kw1 = (self.w + self.padding).saturating_sub(left).min(self.ksize);
        if kw1 <= kw0 {
            return (kw0, kw0, 0);
        }
        (kw0, kw1, left + kw0 - self.padding)
    }
}

/// Fills `cols` (`[P, K]`, row-major) with the zero-padded patches of one
/// NHWC image `x` (`[h, w, c_in]`).
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (k, c) = (g.ksize, g.c_in);
    let row_len = k * c;
    for (p, patch) in cols.chunks_exact_mut(g.patch_len()).take(g.out_pixels()).enumerate() {
        let (oh, ow) = (p / g.w_out, p % g.w_out);
        let (kw0, kw1, iw0) = g.in_cols(ow);
        for (kh, dst) in patch.chunks_exact_mut(row_len).enumerate() {
            let Some(ih) = g.in_row(oh, kh) else {
                dst.fill(0.0);
                continue;
            };
            dst[..kw0 * c].fill(0.0);
            let src = (ih * g.w + iw0) * c;
            dst[kw0 * c..kw1 * c].copy_from_slice(&x[src..src + (kw1 - kw0) * c]);
            dst[kw1 * c..].fill(0.0);
        }
    }
}

/// The adjoint of [`im2col`]: adds every patch row of `cols` back onto the
/// image positions it was read from. `dx` (`[h, w, c_in]`) is overwritten.
pub fn col2im(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    let (k, c) = (g.ksize, g.c_in);
    let row_len = k * c;
    dx.fill(0.0);
    for (p, patch) in cols.chunks_exact(g.patch_len()).take(g.out_pixels()).enumerate() {
        let (oh, ow) = (p / g.w_out, p % g.w_out);
        let (kw0, kw1, iw0) = g.in_cols(ow);
        for (kh, src) in patch.chunks_exact(row_len).enumerate() {
            let Some(ih) = g.in_row(oh, kh) else { continue };
            let dst = (ih * g.w + iw0) * c;
            let dst = &mut dx[dst..dst + (kw1 - kw0) * c];
            for (d, s) in dst.iter_mut().zip(&src[kw0 * c..kw1 * c]) {
                *d += s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x[i]` of a deterministic, non-repeating test signal.
    fn signal(len: usize, phase: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.731 + phase).sin()).collect()
    }

    /// im2col written straight from the definition, one element at a time.
    fn naive_im2col(g: &ConvGeom, x: &[f32]) -> Vec<f32> {
        let mut cols = Vec::with_capacity(g.out_pixels() * g.patch_len());
        for oh in 0..g.h_out {
            for ow in 0..g.w_out {
                for kh in 0..g.ksize {
                    for kw in 0..g.ksize {
                        for ci in 0..g.c_in {
                            let ih = (oh * g.stride + kh) as isize - g.padding as isize;
                            let iw = (ow * g.stride + kw) as isize - g.padding as isize;
                            let inside = (0..g.h as isize).contains(&ih) && (0..g.w as isize).contains(&iw);
                            cols.push(if inside { x[(ih as usize * g.w + iw as usize) * g.c_in + ci] } else { 0.0 });
                        }
                    }
                }
            }
        }
        cols
    }

    /// (h, w, c_in, ksize, stride, padding), covering odd sizes, kernels
    /// wider than the padding, padding wider than the kernel, stride 2 and 3,
    /// and the 1x1 shortcut.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 7] = [
        (5, 7, 3, 3, 1, 1),
        (6, 5, 2, 3, 2, 1),
        (7, 6, 4, 3, 2, 0),
        (4, 4, 3, 1, 2, 0),
        (3, 5, 2, 5, 1, 2),
        (8, 3, 1, 3, 3, 2),
        (3, 4, 2, 1, 2, 2),
    ];

    #[test]
    fn im2col_matches_the_definition() {
        for (h, w, c, k, s, p) in SHAPES {
            let g = ConvGeom::new(&[1, h, w, c], &[k, k, c, 2], s, p).unwrap();
            let x = signal(g.in_len(), 0.3);
            let mut cols = vec![f32::NAN; g.out_pixels() * g.patch_len()];
            im2col(&g, &x, &mut cols);
            assert_eq!(cols, naive_im2col(&g, &x), "shape {:?}", (h, w, c, k, s, p));
        }
    }

    /// col2im is correct exactly when <im2col(x), c> = <x, col2im(c)> for all x, c.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (h, w, c, k, s, p) in SHAPES {
            let g = ConvGeom::new(&[1, h, w, c], &[k, k, c, 2], s, p).unwrap();
            let x = signal(g.in_len(), 0.1);
            let dcols = signal(g.out_pixels() * g.patch_len(), 1.7);
            let mut cols = vec![0.0; dcols.len()];
            im2col(&g, &x, &mut cols);
            let mut dx = vec![f32::NAN; x.len()];
            col2im(&g, &dcols, &mut dx);
            let lhs: f64 = cols.iter().zip(&dcols).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(ConvGeom::new(&[1, 4, 4], &[3, 3, 4, 8], 1, 1).is_err());
        assert!(ConvGeom::new(&[1, 4, 4, 3], &[3, 3, 4, 8], 1, 1).is_err());
        assert!(ConvGeom::new(&[1, 4, 4, 3], &[3, 2, 3, 8], 1, 1).is_err());
        assert!(ConvGeom::new(&[1, 4, 4, 3], &[3, 3, 3, 8], 0, 1).is_err());
        assert!(ConvGeom::new(&[1, 1, 1, 3], &[5, 5, 3, 8], 1, 1).is_err());
        assert!(ConvGeom::new(&[1, 0, 4, 3], &[1, 1, 3, 8], 1, 1).is_err());
    }
}
