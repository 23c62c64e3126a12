//! A safe wrapper around `gemm::gemm` (the crate candle's own matmul uses):
//! [`gemm`] for the small per-image products of the convolution kernels, and
//! [`gemm_on`] for products large enough to split across threads (the text
//! encoder's linear layers).
//!
//! The convolution kernels parallelise over images or row blocks themselves,
//! so [`gemm`] runs with `Parallelism::None`: a ResNet-20 product is at most
//! 1024 x 144 x 16, far too small to split across threads again.

pub use gemm::Parallelism;

/// A read-only strided view of a matrix: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix stored in the first `rows * cols`
    /// floats of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without moving any data.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// True when every element lies inside `data`, the condition under which
    /// handing the pointer to `gemm` is sound.
    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = lhs x rhs`, or `dst += lhs x rhs` when `accumulate`, with `dst`
/// row-major `[lhs.rows, rhs.cols]`, on the calling thread.
///
/// # Panics
/// On mismatched shapes or views that exceed their slices; callers derive all
/// of them from one validated convolution geometry, so this is an internal bug.
pub(crate) fn gemm(dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool) {
    gemm_on(dst, lhs, rhs, accumulate, Parallelism::None)
}

/// [`gemm`] with the threads `parallelism` names (`Parallelism::Rayon(n)`
/// splits the product over `n` threads of rayon's pool).
///
/// # Panics
/// On mismatched shapes or views that exceed their slices (the caller's bug).
pub fn gemm_on(dst: &mut [f32], lhs: Mat, rhs: Mat, accumulate: bool, parallelism: Parallelism) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() >= m * n && lhs.in_bounds() && rhs.in_bounds());
    // SAFETY: the assert above keeps every element gemm touches inside the
    // three slices, and `dst` is borrowed mutably so it cannot alias them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop, the reference for the wrapper's strides.
    fn naive(lhs: Mat, rhs: Mat) -> Vec<f32> {
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out[i * rhs.cols + j] =
                    (0..lhs.cols).map(|p| lhs.data[i * lhs.rs + p * lhs.cs] * rhs.data[p * rhs.rs + j * rhs.cs]).sum();
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_for_plain_and_transposed_views() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..35).map(|i| (i as f32 * 0.91).cos()).collect();
        // (5 x 7) x (7 x 5), then (7 x 5)^T x (7 x 5) to exercise the transpose.
        let cases = [
            (Mat::row_major(&a, 5, 7), Mat::row_major(&b, 7, 5)),
            (Mat::row_major(&a, 7, 5).t(), Mat::row_major(&b, 7, 5)),
            (Mat::row_major(&a, 5, 7), Mat::row_major(&b, 5, 7).t()),
        ];
        for (lhs, rhs) in cases {
            let want = naive(lhs, rhs);
            let mut got = vec![1.0; want.len()];
            gemm(&mut got, lhs, rhs, false);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            gemm(&mut got, lhs, rhs, true);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-5, "accumulate: {g} vs {}", 2.0 * w);
            }
        }
    }
}
