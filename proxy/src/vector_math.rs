//! The elementwise and per-row kernels of the BERT forward pass
//! ([`crate::bert`]): GELU, softmax, layer norm, `y += a x`. They are plain
//! loops over slices that the compiler vectorises, `#[inline(always)]` so
//! that they are compiled into the kernels that call them, which
//! [`multiversion`] compiles for the widest vector unit the CPU has, chosen
//! at run time (AVX-512, or AVX2 with FMA, on x86-64; the baseline
//! elsewhere).
//!
//! The transcendental functions are branch-free polynomials so that they
//! vectorise too: libm's scalar `erff` and `expf`, which candle's exact GELU
//! and softmax call one element at a time, took a quarter of the encoder's
//! time. [`exp`] is Cephes' `expf` (relative error about 2e-7 on `[-87, 88]`);
//! [`gelu`] uses the complementary error function of Numerical Recipes'
//! `erfcc` (a Chebyshev fit, relative error below 1.2e-7 for every `x`).

use multiversion::multiversion;

/// Accumulators of a reduction: one AVX-512 register of `f32`. Summing into
/// independent lanes (not one running total) is what lets the compiler
/// vectorise a floating-point sum.
pub(crate) const LANES: usize = 16;

/// `1.5 * 2^23`: adding it to a float below `2^22` in magnitude rounds the
/// float to the nearest integer, left in the low bits of the sum.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x`, without branches (Cephes' `expf`): `x = n ln 2 + r` with `|r| <=
/// ln 2 / 2`, a degree-7 polynomial for `e^r`, and `2^n` built from its bits.
/// `x` is clamped to `[-87.3, 88.3]`, so the result is at least about 1e-38
/// (never subnormal or zero) and at most about 2e38 (never infinite).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let shifted = x.mul_add(std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    // ln 2 in two parts, so that n * ln 2 is exact to f32's precision.
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let p = horner(r, [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5]);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    // The low bits of `shifted` hold n (two's complement, -126 <= n <= 127).
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    e_r * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// The polynomial `c[0] x^(N-1) + ... + c[N-1]`, by Horner's rule with
/// fused multiply-adds. `f32::mul_add` is one instruction in the kernels
/// compiled for AVX2 or AVX-512 (both have FMA) and on aarch64; only the
/// baseline x86-64 build, for CPUs without FMA, calls libm's `fmaf`.
#[inline(always)]
fn horner<const N: usize>(x: f32, c: [f32; N]) -> f32 {
    c[1..].iter().fold(c[0], |p, &c| p.mul_add(x, c))
}

/// BERT's exact GELU, `x/2 (1 + erf(x / sqrt 2))`, computed as
/// `x/2 erfc(-x / sqrt 2)`, with `erfc` from Numerical Recipes' `erfcc` so
/// that large negative `x` keeps its relative precision.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / z.mul_add(0.5, 1.0);
    let p = horner(
        t,
        [
            0.170_872_77,
            -0.822_152_23,
            1.488_515_9,
            -1.135_204,
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_7,
            -1.265_512_2,
        ],
    );
    // erfc(|x| / sqrt 2); erfc(-v) = 2 - erfc(v).
    let erfc = t * exp((-z).mul_add(z, p));
    let erfc_of_minus = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * erfc_of_minus
}

/// [`gelu`] of every element, in place.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn gelu_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = gelu(*x);
    }
}

/// `lanes` folded into one value by `op` as a tree (halves, quarters, ...),
/// which the compiler turns into a few shuffles of one register: a fold in
/// order would be 15 dependent scalar operations, since it may not
/// reorder floating-point arithmetic.
#[inline(always)]
fn reduce(mut lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            lanes[l] = op(lanes[l], lanes[l + half]);
        }
        half /= 2;
    }
    lanes[0]
}

/// `step` folded over `xs` from `init` in [`LANES`] independent lanes (so
/// that it vectorises), the lanes and the tail then joined by `join`.
#[inline(always)]
fn fold_lanes(xs: &[f32], init: f32, step: impl Fn(f32, f32) -> f32, join: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let blocks = xs.chunks_exact(LANES);
    let tail = blocks.remainder().iter().fold(init, |acc, &x| step(acc, x));
    for x in blocks {
        for l in 0..LANES {
            lanes[l] = step(lanes[l], x[l]);
        }
    }
    join(reduce(lanes, &join), tail)
}

/// The sum of `xs`.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    fold_lanes(xs, 0.0, |acc, x| acc + x, |a, b| a + b)
}

/// The largest of `xs` (NaN-blind: a NaN is skipped or kept depending on
/// its lane), `-inf` for none.
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if a > b { a } else { b };
    fold_lanes(xs, f32::NEG_INFINITY, larger, larger)
}

/// `y += a x` over the common length, whole vectors first.
#[inline(always)]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    let mut y_blocks = y.chunks_exact_mut(LANES);
    let mut x_blocks = x.chunks_exact(LANES);
    for (y, x) in (&mut y_blocks).zip(&mut x_blocks) {
        for l in 0..LANES {
            y[l] = a.mul_add(x[l], y[l]);
        }
    }
    for (y, x) in y_blocks.into_remainder().iter_mut().zip(x_blocks.remainder()) {
        *y = a.mul_add(*x, *y);
    }
}

/// The softmax of `xs[..len]`, `e^(x - max) / sum`, in place, with the
/// rest of `xs` (masked positions) set to 0.
#[inline(always)]
pub(crate) fn softmax_of_prefix(xs: &mut [f32], len: usize) {
    let max = max(&xs[..len]);
    for x in xs.iter_mut() {
        *x = exp(*x - max);
    }
    xs[len..].fill(0.0);
    let scale = 1.0 / sum(xs);
    for x in xs.iter_mut() {
        *x *= scale;
    }
}

/// `row` normalised to zero mean and unit variance (the biased variance,
/// plus `eps`), then scaled by `gamma` and shifted by `beta`: BERT's
/// `LayerNorm` over the hidden dimension.
#[inline(always)]
pub(crate) fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let variance = fold_lanes(row, 0.0, |acc, x| (x - mean).mul_add(x - mean, acc), |a, b| a + b) / n;
    let scale = 1.0 / (variance + eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = ((*x - mean) * scale).mul_add(*g, *b);
    }
}

/// [`layer_norm`] of every `gamma.len()`-wide row of `rows`.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
pub(crate) fn layer_norm_rows(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in rows.chunks_exact_mut(gamma.len()) {
        layer_norm(row, gamma, beta, eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Points spread over `[lo, hi]`, both ends included.
    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect()
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_f64() {
        for x in grid(-87.0, 88.3, 200_001) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
        }
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn gelu_matches_candles_exact_gelu_in_f64() {
        // In f32, `1 + erf` cancels to 0 below x = -5.9, where GELU is still
        // -1e-8: the reference is computed in f64.
        let xs = grid(-12.0, 12.0, 100_001);
        let wide: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let want = Tensor::new(&wide[..], &Device::Cpu).unwrap().gelu_erf().unwrap().to_vec1::<f64>().unwrap();
        let mut got = xs.clone();
        gelu_in_place(&mut got);
        for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
            // Relative to the value, and absolute near GELU's zero crossing at 0.
            let (g, w) = (*g as f64, *w);
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-2), "gelu({x}) = {g}, want {w}");
        }
    }

    #[test]
    fn row_kernels_match_their_definitions() {
        let a: Vec<f32> = (0..41).map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5).collect();
        let b: Vec<f32> = (0..41).map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0).collect();
        assert!((sum(&a) - a.iter().sum::<f32>()).abs() < 1e-4);

        let mut soft = a.clone();
        softmax_of_prefix(&mut soft, 30);
        let total: f32 = a[..30].iter().map(|x| x.exp()).sum();
        for (s, x) in soft.iter().zip(&a).take(30) {
            assert!((s - x.exp() / total).abs() < 1e-6);
        }
        assert!(soft[30..].iter().all(|&s| s == 0.0));

        let (gamma, beta): (Vec<f32>, Vec<f32>) = (0..41).map(|i| (1.0 + i as f32 * 0.1, i as f32 * -0.05)).unzip();
        let mut row = a.clone();
        layer_norm_rows(&mut row, &gamma, &beta, 1e-12);
        let mean = a.iter().sum::<f32>() / 41.0;
        let sd = (a.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 41.0).sqrt();
        for i in 0..41 {
            assert!((row[i] - ((a[i] - mean) / sd * gamma[i] + beta[i])).abs() < 1e-5);
        }

        let mut y = b.clone();
        axpy(&mut y, 0.5, &a);
        for i in 0..41 {
            assert_eq!(y[i], b[i] + 0.5 * a[i]);
        }
    }
}
