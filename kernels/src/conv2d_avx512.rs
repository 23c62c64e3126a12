//! Direct (implicit-GEMM) convolution with AVX-512 register tiles, the fast
//! path of [`super::conv_driver`] when the CPU has AVX-512F and the output
//! channels are a multiple of 16. The portable im2col + `gemm` path is the
//! fallback, and the tests check the two against each other.
//!
//! The scheme is the "direct convolution" of Georganas et al. 2018,
//! "Anatomy of High-Performance Deep Learning Convolutions on SIMD
//! Architectures" (arXiv:1808.05567): with channels last, 16 output channels
//! of one pixel are one zmm register, so a tile of `MR` pixels x `NV`
//! registers accumulates `sum over taps and input channels of
//! broadcast(x) * w-row` without building the im2col matrix. The input is
//! read straight from a zero-padded copy of the image (64 KB for 32x32x16,
//! against 590 KB of im2col), and the weight rows come from L1.
//!
//! The same tile computes all three products of training:
//!
//! ```text
//! forward   rows = MR output pixels of one row, taps = ksize^2 kernel offsets,
//!           steps = c_in channels:          y[p, :] += x[p + tap, c] w[tap, c, :]
//! weight    rows = MR input channels, taps = output rows, steps = pixels
//!           along the row:                  dw[tap, c, :] += x[p + tap, c] dy[p, :]
//! input     (stride 1) the forward of dy padded by ksize-1-padding with the
//!           kernel rotated 180 degrees and its channel axes swapped
//! ```
//!
//! # Performance
//! Zen 5 issues two 512-bit FMAs per cycle with 4-cycle latency, so a tile
//! needs at least 8 independent accumulators; tiles hold 15-16 (`MR x NV` =
//! 16x1, 8x2, 5x3, 4x4), leaving registers for the NV weight vectors. Each
//! step is NV loads and MR broadcasts for MR x NV FMAs. Measured on ResNet-20
//! layers, one core: about 100 GMAC/s (200 GFLOP/s) for each of the three
//! products, against 60-65 for the AVX2 `gemm` crate on a 1024^3 product.

use super::im2col::ConvGeom;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per register.
const LANES: usize = 16;
/// Registers per tile row at most: 64 output channels.
const MAX_NV: usize = 4;

/// True when this CPU and a layer with `c_out` output channels can use the
/// AVX-512 kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) fn available(c_out: usize) -> bool {
    c_out.is_multiple_of(LANES) && is_x86_feature_detected!("avx512f")
}

/// Off x86-64 the kernels do not exist.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn available(_c_out: usize) -> bool {
    false
}

/// The sum a tile computes, for tile row `r` and register `v`:
/// `sum over (a_off, b_off) in taps, c < steps of
///  a[a_off + r * a_rs + c * a_cs] * b[b_off + c * b_cs + 16 v ..][..16]`,
/// where one of `a_rs`, `a_cs` is 1 (see [`ROWS_ARE_PIXELS`]).
#[derive(Clone, Copy)]
struct Products<'t> {
    a: *const f32,
    /// The stride between tile rows that are pixels.
    a_rs: usize,
    /// The stride between steps that are pixels.
    a_cs: usize,
    b: *const f32,
    b_cs: usize,
    taps: &'t [(usize, usize)],
    steps: usize,
}

/// The two layouts of the broadcast operand, a const generic of the tiles so
/// that the unit stride is known at compile time: with both strides read at
/// run time the address arithmetic of 16 rows no longer fits the registers
/// and the forward pass took twice as long (6.0 vs 3.0 ms per 32x32x16
/// layer, batch 128, one core).
/// `true`: rows are pixels `a_rs` apart and steps are channels (forward).
/// `false`: rows are channels and steps are pixels `a_cs` apart (weight
/// gradient).
const ROWS_ARE_PIXELS: bool = true;

/// Where a tile's result goes.
#[derive(Clone, Copy)]
enum Epilogue {
    /// `out = relu?(acc + bias)`; `bias` points at the tile's first channel.
    Store { bias: Option<*const f32>, relu: bool },
    /// `out += acc`.
    Accumulate,
}

/// One register tile: `MR x NV` accumulators for [`Products`], written to
/// `out + r * out_rs + 16 v` by `epilogue`.
///
/// # Safety
/// AVX-512F must be present, and every index of [`Products`] and of the
/// output must be in bounds of the allocations behind the pointers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const MR: usize, const NV: usize, const PIXEL_ROWS: bool>(
    p: Products,
    out: *mut f32,
    out_rs: usize,
    epilogue: Epilogue,
) {
    let (a_rs, a_cs) = if PIXEL_ROWS { (p.a_rs, 1) } else { (1, p.a_cs) };
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if let Epilogue::Accumulate = epilogue {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, acc) in row.iter_mut().enumerate() {
                *acc = _mm512_loadu_ps(out.add(r * out_rs + v * LANES));
            }
        }
    }
    for &(a_off, b_off) in p.taps {
        let (a, b) = (p.a.add(a_off), p.b.add(b_off));
        for c in 0..p.steps {
            // Plain loops rather than closures, which would not inherit
            // this function's target feature and so not inline the intrinsics.
            let mut w = [_mm512_setzero_ps(); NV];
            for (v, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_ps(b.add(c * p.b_cs + v * LANES));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * a_rs + c * a_cs));
                for (acc, w) in row.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(x, *w, *acc);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, &acc) in row.iter().enumerate() {
            let y = match epilogue {
                Epilogue::Accumulate => acc,
                Epilogue::Store { bias, relu } => {
                    let y = match bias {
                        Some(b) => _mm512_add_ps(acc, _mm512_loadu_ps(b.add(v * LANES))),
                        None => acc,
                    };
                    if relu {
                        _mm512_max_ps(y, _mm512_setzero_ps())
                    } else {
                        y
                    }
                }
            };
            _mm512_storeu_ps(out.add(r * out_rs + v * LANES), y);
        }
    }
}

/// `rows` tile rows for one block of `NV` registers: tiles of `MR` rows, then
/// 8, 4, 2, 1 for the remainder.
///
/// # Safety
/// As for [`tile`], for every row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strip<const MR: usize, const NV: usize, const PIXEL_ROWS: bool>(
    rows: usize,
    p: Products,
    out: *mut f32,
    out_rs: usize,
    epilogue: Epilogue,
) {
    let a_rs = if PIXEL_ROWS { p.a_rs } else { 1 };
    let mut r = 0;
    macro_rules! tiles {
        ($mr:expr) => {
            while rows - r >= $mr {
                let p = Products { a: p.a.add(r * a_rs), ..p };
                tile::<$mr, NV, PIXEL_ROWS>(p, out.add(r * out_rs), out_rs, epilogue);
                r += $mr;
            }
        };
    }
    tiles!(MR);
    tiles!(8);
    tiles!(4);
    tiles!(2);
    tiles!(1);
}

/// Runs [`strip`] over the output channels `0..c_out` in blocks of at most
/// 64, picking the tile height for each block's width.
///
/// # Safety
/// As for [`tile`]; `c_out` must be a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strips<const PIXEL_ROWS: bool>(
    c_out: usize,
    rows: usize,
    p: Products,
    out: *mut f32,
    out_rs: usize,
    epilogue: Epilogue,
) {
    for cb in (0..c_out).step_by(MAX_NV * LANES) {
        let (p, out) = (Products { b: p.b.add(cb), ..p }, out.add(cb));
        let epilogue = match epilogue {
            Epilogue::Store { bias, relu } => Epilogue::Store { bias: bias.map(|b| b.add(cb)), relu },
            e => e,
        };
        match ((c_out - cb) / LANES).min(MAX_NV) {
            1 => strip::<16, 1, PIXEL_ROWS>(rows, p, out, out_rs, epilogue),
            2 => strip::<8, 2, PIXEL_ROWS>(rows, p, out, out_rs, epilogue),
            3 => strip::<5, 3, PIXEL_ROWS>(rows, p, out, out_rs, epilogue),
            _ => strip::<4, 4, PIXEL_ROWS>(rows, p, out, out_rs, epilogue),
        }
    }
}

/// Off x86-64 [`available`] is false and the drivers below assert it, so
/// this is never reached.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn strips<const PIXEL_ROWS: bool>(_: usize, _: usize, _: Products, _: *mut f32, _: usize, _: Epilogue) {
    unreachable!("AVX-512 kernels called off x86-64")
}

/// Floats of scratch that [`forward_image`] and [`weight_grad_image`] need
/// for geometry `g`: the zero-padded image.
pub(crate) fn scratch_len(g: &ConvGeom) -> usize {
    (g.h + 2 * g.padding) * (g.w + 2 * g.padding) * g.c_in
}

/// The image `x` (`[h, w, c_in]`) surrounded by `padding` zeros, in `buf`;
/// `x` itself when there is no padding.
fn padded<'a>(g: &ConvGeom, x: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
    if g.padding == 0 {
        return x;
    }
    let (p, c) = (g.padding, g.c_in);
    let row = (g.w + 2 * p) * c;
    let buf = &mut buf[..scratch_len(g)];
    buf[..p * row].fill(0.0);
    buf[(p + g.h) * row..].fill(0.0);
    for (src, dst) in x.chunks_exact(g.w * c).zip(buf[p * row..].chunks_exact_mut(row)) {
        dst[..p * c].fill(0.0);
        dst[p * c..(p + g.w) * c].copy_from_slice(src);
        dst[(p + g.w) * c..].fill(0.0);
    }
    buf
}

/// The `ksize^2` (padded-image offset, weight offset) pairs of the forward pass.
pub(crate) fn kernel_taps(g: &ConvGeom) -> Vec<(usize, usize)> {
    let (k, c) = (g.ksize, g.c_in);
    let row = (g.w + 2 * g.padding) * c;
    (0..k * k).map(|t| ((t / k) * row + (t % k) * c, t * c * g.c_out)).collect()
}

/// The (padded-image offset, output-gradient offset) of the first pixel of
/// every output row, the taps of the weight gradient (its steps run along
/// the row).
pub(crate) fn row_taps(g: &ConvGeom) -> Vec<(usize, usize)> {
    let row = (g.w + 2 * g.padding) * g.c_in;
    (0..g.h_out).map(|oh| (oh * g.stride * row, oh * g.w_out * g.c_out)).collect()
}

/// `y = relu?(conv(x, w) + bias)` for one image: `x` `[h, w, c_in]`, `w` HWIO,
/// `y` `[h_out, w_out, c_out]`, `taps` from [`kernel_taps`], `buf` at least
/// [`scratch_len`] floats.
///
/// # Panics
/// If [`available`] is false for `g.c_out` or a slice is shorter than `g`
/// implies; callers check both.
#[allow(clippy::too_many_arguments, reason = "a kernel's operands and geometry, passed as slices in its hot loop")]
pub(crate) fn forward_image(
    g: &ConvGeom,
    taps: &[(usize, usize)],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
    buf: &mut [f32],
) {
    assert!(available(g.c_out) && x.len() >= g.in_len() && w.len() >= g.patch_len() * g.c_out);
    assert!(y.len() >= g.out_len() && bias.is_none_or(|b| b.len() >= g.c_out));
    assert!(taps.len() == g.ksize * g.ksize);
    let xp = padded(g, x, buf);
    let row = (g.w + 2 * g.padding) * g.c_in;
    for oh in 0..g.h_out {
        // SAFETY: the asserts above bound every tile: the last tap of the
        // last pixel reads padded row oh * stride + ksize - 1 < h + 2 padding,
        // and weight and output offsets stay inside w and y.
        unsafe {
            let products = Products {
                a: xp.as_ptr().add(oh * g.stride * row),
                a_rs: g.stride * g.c_in,
                a_cs: 1,
                b: w.as_ptr(),
                b_cs: g.c_out,
                taps,
                steps: g.c_in,
            };
            let out = y.as_mut_ptr().add(oh * g.w_out * g.c_out);
            let bias = bias.map(<[f32]>::as_ptr);
            strips::<ROWS_ARE_PIXELS>(g.c_out, g.w_out, products, out, g.c_out, Epilogue::Store { bias, relu })
        }
    }
}

/// `dw += cols(x)^T dy` for one image: `dw` HWIO, `taps` from
/// [`row_taps`], `buf` at least [`scratch_len`] floats.
///
/// # Panics
/// As for [`forward_image`].
pub(crate) fn weight_grad_image(
    g: &ConvGeom,
    taps: &[(usize, usize)],
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    buf: &mut [f32],
) {
    assert!(available(g.c_out) && x.len() >= g.in_len() && dy.len() >= g.out_len());
    assert!(dw.len() >= g.patch_len() * g.c_out && taps.len() == g.h_out);
    let xp = padded(g, x, buf);
    let row = (g.w + 2 * g.padding) * g.c_in;
    for t in 0..g.ksize * g.ksize {
        let (kh, kw) = (t / g.ksize, t % g.ksize);
        // SAFETY: as in forward_image: tile rows are the c_in channels of one
        // kernel tap, steps walk the pixels of one output row in x (stride
        // pixels apart) and in dy.
        unsafe {
            let products = Products {
                a: xp.as_ptr().add(kh * row + kw * g.c_in),
                a_rs: 1,
                a_cs: g.stride * g.c_in,
                b: dy.as_ptr(),
                b_cs: g.c_out,
                taps,
                steps: g.w_out,
            };
            let out = dw.as_mut_ptr().add(t * g.c_in * g.c_out);
            strips::<{ !ROWS_ARE_PIXELS }>(g.c_out, g.c_in, products, out, g.c_out, Epilogue::Accumulate)
        }
    }
}

/// The geometry and weights whose forward pass is the input gradient of a
/// stride-1 convolution: `dy` padded by `ksize - 1 - padding`, convolved with
/// `w_t[kh, kw, o, i] = w[k-1-kh, k-1-kw, i, o]`. None unless stride is 1 and
/// `padding < ksize` (so the transposed padding is not negative).
pub(crate) fn transposed(g: &ConvGeom, w: &[f32]) -> Option<(ConvGeom, Vec<f32>)> {
    if g.stride != 1 || g.padding >= g.ksize {
        return None;
    }
    let (k, ci, co) = (g.ksize, g.c_in, g.c_out);
    let mut w_t = vec![0f32; w.len()];
    for t in 0..k * k {
        let src = (k * k - 1 - t) * ci * co;
        for i in 0..ci {
            for o in 0..co {
                w_t[t * co * ci + o * ci + i] = w[src + i * co + o];
            }
        }
    }
    let gt = ConvGeom {
        h: g.h_out,
        w: g.w_out,
        c_in: co,
        c_out: ci,
        padding: k - 1 - g.padding,
        h_out: g.h,
        w_out: g.w,
        ..*g
    };
    Some((gt, w_t))
}
