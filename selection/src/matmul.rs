//! Matrix products through the `gemm` crate (the one candle's CPU matmul
//! uses), for screening many row pairs at once.

/// `dst = a · bᵀ` for row-major `a` (`m x dim`) and `b` (`n x dim`): `dst`
/// holds `m x n` values, row-major, `dst[i * n + j] = a_i · b_j`. One
/// thread: callers parallelise over blocks themselves.
///
/// # Panics
/// When `dim` is 0, `a` or `b` does not split into rows of `dim`, or `dst`
/// holds fewer than `m * n` values: every caller sizes them from one
/// validated [`crate::Embeddings`], so this is an internal bug.
pub(crate) fn times_transpose(dst: &mut [f32], a: &[f32], b: &[f32], dim: usize) {
    assert!(dim > 0 && a.len().is_multiple_of(dim) && b.len().is_multiple_of(dim));
    let (m, n) = (a.len() / dim, b.len() / dim);
    assert!(dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: `a` is read as m x dim with row stride dim, `b` as the
    // transpose of n x dim (column stride dim), `dst` as m x n with row
    // stride n: the asserts above keep every access inside the slices, and
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_the_dot_products_of_the_rows() {
        let dim = 19;
        let a: Vec<f32> = (0..5 * dim).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..7 * dim).map(|i| ((i * 13) % 7) as f32 * 0.5).collect();
        let mut dst = vec![f32::NAN; 5 * 7];
        times_transpose(&mut dst, &a, &b, dim);
        for i in 0..5 {
            for j in 0..7 {
                let exact: f32 = (0..dim).map(|p| a[i * dim + p] * b[j * dim + p]).sum();
                assert_eq!(dst[i * 7 + j], exact, "({i}, {j}): small integers and halves multiply exactly");
            }
        }
    }
}
