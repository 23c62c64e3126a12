//! The hashed embedding table of the fastText classifier: `rows x dim`
//! floats, of which training touches a small part (SST-2 touches about 95k
//! of the default 2^21 rows), so it is made, initialised and saved for the
//! rows used only.
//!
//! * **Made zeroed, lazily.** The table is one `alloc_zeroed` block, whose
//!   pages the kernel maps on first write: a 256 MiB table costs nothing
//!   until rows are written, where filling it with random values took
//!   longer than an epoch of SST-2.
//! * **Initialised on first use.** A row takes its initial value (uniform in
//!   `(-1/dim, 1/dim)`, as fastText's) the first time a training step uses
//!   it, from a SplitMix64 stream seeded by the table's seed and the row, so
//!   the values do not depend on the order rows are first used in.
//! * **Zero where never used.** A row no training example used stays zero:
//!   its feature carries nothing learned, where fastText's keeps its random
//!   initial value and adds that noise to every text that has the feature.
//! * **Saved sparse.** [`HashedTable::used`] lists the rows used, which
//!   [`HashedTable::from_rows`] puts back: SST-2's model file is 12 MB, not
//!   256 MiB.

/// A `rows x dim` table of f32 whose rows are initialised on first use.
#[derive(Clone, Debug)]
pub struct HashedTable {
    rows: usize,
    dim: usize,
    seed: u64,
    /// `rows x dim`, row-major; zero where a row was never used.
    values: Vec<f32>,
    /// One bit per row: set once the row is initialised.
    used: Vec<u64>,
}

/// Why a table cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocError {
    /// Bytes asked for.
    pub bytes: usize,
}

/// A zeroed `len`-float vector from the allocator's zeroed memory (pages
/// mapped on first write), or `None` when it cannot be had.
fn zeroed(len: usize) -> Option<Vec<f32>> {
    let layout = std::alloc::Layout::array::<f32>(len).ok()?;
    if layout.size() == 0 {
        return Some(Vec::new());
    }
    // SAFETY: the layout has a non-zero size; a non-null result is `len`
    // zeroed (so valid) f32s allocated by the global allocator with the
    // layout `Vec<f32>` uses for capacity `len`, so the Vec may own it.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if ptr.is_null() {
            return None;
        }
        huge_pages(ptr.cast(), layout.size());
        Some(Vec::from_raw_parts(ptr, len, len))
    }
}

/// Asks Linux to back `len` bytes at `ptr` with 2 MiB pages (transparent
/// huge pages, where the kernel offers them on request). Training reads
/// rows scattered over the whole table, and with 4 KiB pages nearly every
/// row is a TLB miss: an SST-2 epoch at 2^21 rows took 0.11 s with them and
/// 0.087 s with huge pages (RSS 284 MB against 342 MB: a touched 2 MiB page
/// is all resident). Advice only: nothing changes where it is refused.
fn huge_pages(ptr: *mut libc::c_void, len: usize) {
    #[cfg(target_os = "linux")]
    {
        // madvise wants a page-aligned start: advise the whole 2 MiB pages inside.
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside the allocation; MADV_HUGEPAGE
            // changes how it is backed, never its contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// SplitMix64 (Steele, Lea and Flood 2014), the generator of row values.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl HashedTable {
    /// A table of `rows` rows of width `dim`, none used yet; `seed` decides
    /// every row's initial value.
    pub fn new(rows: usize, dim: usize, seed: u64) -> Result<Self, AllocError> {
        let len = rows.checked_mul(dim).ok_or(AllocError { bytes: usize::MAX })?;
        let values = zeroed(len).ok_or(AllocError { bytes: len.saturating_mul(4) })?;
        Ok(Self { rows, dim, seed, values, used: vec![0; rows.div_ceil(64)] })
    }

    /// A table of `rows` rows holding `values` (`ids.len() x dim`) at the
    /// rows `ids`, every other row zero, as [`HashedTable::used`] lists them.
    /// `None` when an id is out of range or the lengths disagree.
    pub fn from_rows(rows: usize, dim: usize, ids: &[u32], values: &[f32]) -> Option<Result<Self, AllocError>> {
        if values.len() != ids.len() * dim || ids.iter().any(|&id| id as usize >= rows) {
            return None;
        }
        Some(Self::new(rows, dim, 0).map(|mut table| {
            for (&id, row) in ids.iter().zip(values.chunks_exact(dim.max(1))) {
                table.mark(id);
                table.values[id as usize * dim..][..dim].copy_from_slice(row);
            }
            table
        }))
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn is_used(&self, id: u32) -> bool {
        self.used[id as usize / 64] >> (id % 64) & 1 == 1
    }

    fn mark(&mut self, id: u32) {
        self.used[id as usize / 64] |= 1 << (id % 64);
    }

    /// Row `id` as it is now (zero when never used).
    pub fn row(&self, id: u32) -> &[f32] {
        &self.values[id as usize * self.dim..][..self.dim]
    }

    /// Row `id`, given its initial value first if it has never been used.
    pub fn row_mut(&mut self, id: u32) -> &mut [f32] {
        self.init(id);
        &mut self.values[id as usize * self.dim..][..self.dim]
    }

    /// Gives row `id` its initial value if it has never been used: uniform
    /// in `(-1/dim, 1/dim)` from the SplitMix64 stream of (seed, row).
    pub fn init(&mut self, id: u32) {
        if self.is_used(id) {
            return;
        }
        self.mark(id);
        let scale = 1.0 / self.dim as f32;
        let mut state = self.seed ^ u64::from(id).wrapping_mul(0xD1B5_4A32_D192_ED03);
        for v in &mut self.values[id as usize * self.dim..][..self.dim] {
            // The top 24 bits as a float in [0, 1), then onto (-scale, scale).
            let unit = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
            *v = (2.0 * unit - 1.0) * scale;
        }
    }

    /// The rows used so far, ascending, and their values (`ids x dim`).
    pub fn used(&self) -> (Vec<u32>, Vec<f32>) {
        let ids: Vec<u32> = (0..self.rows() as u32).filter(|&id| self.is_used(id)).collect();
        let values = ids.iter().flat_map(|&id| self.row(id).iter().copied()).collect();
        (ids, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_their_seeded_value_on_first_use_whatever_the_order() {
        let mut a = HashedTable::new(100, 4, 7).unwrap();
        let mut b = HashedTable::new(100, 4, 7).unwrap();
        assert!(a.row(3).iter().all(|&v| v == 0.0), "unused rows are zero");
        a.init(3);
        a.init(50);
        b.init(50);
        b.init(3);
        assert_eq!(a.row(3), b.row(3));
        assert_eq!(a.row(50), b.row(50));
        assert!(a.row(3).iter().all(|&v| v.abs() < 0.25) && a.row(3) != a.row(50));
        let first = a.row(3).to_vec();
        a.row_mut(3)[0] += 1.0;
        a.init(3);
        assert_eq!(a.row(3)[0], first[0] + 1.0, "a used row is never initialised again");
        let c = {
            let mut c = HashedTable::new(100, 4, 8).unwrap();
            c.init(3);
            c
        };
        assert_ne!(c.row(3), b.row(3), "another seed, other values");
    }

    #[test]
    fn the_used_rows_round_trip() {
        let mut t = HashedTable::new(1000, 3, 1).unwrap();
        for id in [999, 0, 17] {
            t.init(id);
        }
        let (ids, values) = t.used();
        assert_eq!(ids, [0, 17, 999]);
        let back = HashedTable::from_rows(1000, 3, &ids, &values).unwrap().unwrap();
        for id in 0..1000 {
            assert_eq!(back.row(id), t.row(id));
        }
        assert_eq!(back.used(), (ids.clone(), values.clone()));
        assert!(HashedTable::from_rows(10, 3, &ids, &values).is_none(), "an id past the end");
        assert!(HashedTable::from_rows(1000, 3, &ids, &values[1..]).is_none(), "a short value list");
    }

    #[test]
    fn a_table_too_big_for_memory_is_an_error() {
        assert!(HashedTable::new(usize::MAX / 2, 4, 0).is_err());
    }
}
