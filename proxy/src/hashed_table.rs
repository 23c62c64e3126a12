//! The hashed embedding table of the fastText classifier: `rows x dim`
//! floats, of which training uses a small part (SST-2 uses about 95k of the
//! default 2^21 rows), so only the rows used are held, initialised and saved.
//!
//! * **Held compactly.** An index of one `u32` per row (8 MiB at 2^21) says
//!   where a used row's values are in a packed block; slot 0 is a row of
//!   zeros that every unused row points at. SST-2's model is then 8 + 12 MB,
//!   which the CPU's caches mostly hold, where a dense 256 MiB table made
//!   nearly every row read a cache and TLB miss: an epoch took 0.11 s dense
//!   (0.087 s on 2 MiB pages, whose first faults stalled 0.1-0.4 s when the
//!   kernel had to compact memory for them) and takes 0.075 s packed; the
//!   whole `sieve train` on SST-2 peaks at 100 MB, not 342.
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
    dim: usize,
    seed: u64,
    /// Per row, its slot in `values`; 0 (the zero row) while unused.
    slot: Vec<u32>,
    /// `slots x dim`, row-major; slot 0 is all zeros.
    values: Vec<f32>,
}

/// Why a table cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocError {
    /// Bytes asked for.
    pub bytes: usize,
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
        let mut slot = Vec::new();
        slot.try_reserve_exact(rows).map_err(|_| AllocError { bytes: rows.saturating_mul(4) })?;
        slot.resize(rows, 0);
        Ok(Self { dim, seed, slot, values: vec![0.0; dim] })
    }

    /// A table of `rows` rows holding `values` (`ids.len() x dim`) at the
    /// rows `ids`, every other row zero, as [`HashedTable::used`] lists them.
    /// `None` when an id is out of range or repeated, or the lengths disagree.
    pub fn from_rows(rows: usize, dim: usize, ids: &[u32], values: &[f32]) -> Option<Result<Self, AllocError>> {
        if values.len() != ids.len() * dim || ids.iter().any(|&id| id as usize >= rows) {
            return None;
        }
        let mut table = match Self::new(rows, dim, 0) {
            Ok(table) => table,
            Err(e) => return Some(Err(e)),
        };
        for (&id, row) in ids.iter().zip(values.chunks_exact(dim.max(1))) {
            if table.slot[id as usize] != 0 {
                return None;
            }
            table.push(id).copy_from_slice(row);
        }
        Some(Ok(table))
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.slot.len()
    }

    /// Row `id` as it is now (zero when never used).
    pub fn row(&self, id: u32) -> &[f32] {
        let slot = self.slot[id as usize] as usize;
        &self.values[slot * self.dim..][..self.dim]
    }

    /// Row `id`, given its initial value first if it has never been used.
    pub fn row_mut(&mut self, id: u32) -> &mut [f32] {
        self.init(id);
        let slot = self.slot[id as usize] as usize;
        &mut self.values[slot * self.dim..][..self.dim]
    }

    /// A new slot for the unused row `id`, zeroed.
    fn push(&mut self, id: u32) -> &mut [f32] {
        let slot = self.values.len() / self.dim;
        // A slot past u32 would need 2^32 rows of `dim` floats in memory.
        self.slot[id as usize] = u32::try_from(slot).unwrap_or(u32::MAX);
        self.values.resize(self.values.len() + self.dim, 0.0);
        &mut self.values[slot * self.dim..][..self.dim]
    }

    /// Gives row `id` its initial value if it has never been used: uniform
    /// in `(-1/dim, 1/dim)` from the SplitMix64 stream of (seed, row).
    pub fn init(&mut self, id: u32) {
        if self.slot[id as usize] != 0 {
            return;
        }
        let scale = 1.0 / self.dim as f32;
        let mut state = self.seed ^ u64::from(id).wrapping_mul(0xD1B5_4A32_D192_ED03);
        for v in self.push(id) {
            // The top 24 bits as a float in [0, 1), then onto (-scale, scale).
            let unit = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
            *v = (2.0 * unit - 1.0) * scale;
        }
    }

    /// The rows used so far, ascending, and their values (`ids x dim`).
    pub fn used(&self) -> (Vec<u32>, Vec<f32>) {
        let ids: Vec<u32> = (0..self.slot.len() as u32).filter(|&id| self.slot[id as usize] != 0).collect();
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
        assert!(a.row(4).iter().all(|&v| v == 0.0), "other rows stay zero");
        let first = a.row(3).to_vec();
        a.row_mut(3)[0] += 1.0;
        a.init(3);
        assert_eq!(a.row(3)[0], first[0] + 1.0, "a used row is never initialised again");
        assert!(a.row(4).iter().all(|&v| v == 0.0), "writing a row leaves the zero row zero");
        let mut c = HashedTable::new(100, 4, 8).unwrap();
        c.init(3);
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
        assert!(HashedTable::from_rows(1000, 3, &[5, 5], &[0.0; 6]).is_none(), "a repeated id");
    }

    #[test]
    fn a_table_too_big_for_memory_is_an_error() {
        assert!(HashedTable::new(usize::MAX / 2, 4, 0).is_err());
    }
}
