//! What every kernel here needs from candle's CPU backend: borrowing a tensor's
//! f32 data without a copy, per-thread scratch space, and the fixed chunking
//! that keeps reductions deterministic.
//!
//! Custom ops get `(&CpuStorage, &Layout)` in `cpu_fwd` but plain `Tensor`s in
//! `bwd`; both end up as a contiguous `&[f32]` here. Copying instead
//! (`to_vec1`) would cost one extra pass over every activation gradient, about
//! 3 ms per 8 MB tensor on this 2-core machine, tens of ms per ResNet-20 step.

use candle_core::{bail, CpuStorage, Layout, Result, Storage, StorageRef, Tensor};
use std::cell::RefCell;

/// The f32 data of a contiguous storage, or an error naming `what`.
pub(crate) fn storage_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: expected a contiguous tensor, got strides {:?}", l.stride()),
    }
}

/// A read lock on a contiguous f32 CPU tensor's data, for custom-op `bwd`s,
/// which receive tensors rather than storages.
pub(crate) struct F32Data<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl F32Data<'_> {
    /// The tensor's elements in row-major order.
    pub(crate) fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => unreachable!("checked by f32_data"),
        }
    }
}

/// Locks the data of `t`, which must be a contiguous f32 CPU tensor; `what`
/// names it in the error otherwise.
pub(crate) fn f32_data<'a>(t: &'a Tensor, what: &str) -> Result<F32Data<'a>> {
    let (guard, layout) = t.storage_and_layout();
    let Storage::Cpu(s) = &*guard else { bail!("{what}: only the CPU backend is implemented") };
    // Checks the dtype and the contiguity, the two facts `get` relies on.
    let len = storage_f32(s, layout, what)?.len();
    let start = layout.start_offset();
    let end = start + len;
    Ok(F32Data { guard, start, end })
}

thread_local! {
    /// Grows to the largest request and is never freed: a ResNet-20 im2col
    /// buffer is 590 KB, and allocating it per image would cost a page fault
    /// per 4 KB, about as long as the convolution itself.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` floats
/// (contents unspecified). `f` must not call `with_scratch` again.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Fixtures shared by the kernel tests.

    use candle_core::{Device, Result, Tensor};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A tensor of uniform(-1, 1) values, reproducible from `seed`.
    pub(crate) fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    /// Asserts `max |got - want| <= tol * max(1, max |want|)`: a relative
    /// tolerance on the tensor's scale, so sums of many terms and near-zero
    /// entries are judged alike.
    pub(crate) fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) -> Result<()> {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
        let got = got.flatten_all()?.to_vec1::<f32>()?;
        let want = want.flatten_all()?.to_vec1::<f32>()?;
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(err <= tol * scale, "{what}: max error {err} > {tol} x scale {scale}");
        Ok(())
    }
}
