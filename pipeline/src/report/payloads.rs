//! The payloads (encoded image bytes or text) of the few rows the grids
//! show, fetched in one pass over the input that reads only the input column
//! of the row groups holding them.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;

use crate::error::Result;
use crate::examples::Payloads;
use crate::input::Chunk;
use crate::plan::DatasetPlan;

/// The row groups that hold any of `positions`, in input order, given each
/// file's first position and row group sizes.
fn chunks_holding<'a>(files: impl Iterator<Item = (u64, &'a [u64])>, positions: &BTreeSet<u64>) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (file, (first_pos, row_groups)) in files.enumerate() {
        let mut start = first_pos;
        for (row_group, &rows) in row_groups.iter().enumerate() {
            if positions.range(start..start + rows).next().is_some() {
                out.push(Chunk { file, row_group });
            }
            start += rows;
        }
    }
    out
}

/// The payload of each of `positions` in `dataset`'s training input (rows
/// whose payload is null are absent from the map).
pub fn fetch(dataset: &DatasetPlan, positions: &BTreeSet<u64>) -> Result<HashMap<u64, Vec<u8>>> {
    let input = &dataset.train;
    let mut out = HashMap::with_capacity(positions.len());
    let columns = [dataset.input_column.clone()];
    let files = input.files.iter().map(|f| (f.first_pos, f.row_groups.as_slice()));
    input.for_each_batch(&chunks_holding(files, positions), Some(&columns), |batch| {
        let payloads = Payloads::new(dataset.kind, batch.column(0))?;
        let pos = batch.column(1).as_primitive::<Int64Type>();
        for (i, p) in pos.values().iter().enumerate() {
            let p = *p as u64;
            if let Some(bytes) = positions.contains(&p).then(|| payloads.get(i)).flatten() {
                out.insert(p, bytes.to_vec());
            }
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_row_groups_holding_a_wanted_row_are_read() {
        let files: [(u64, &[u64]); 2] = [(0, &[10, 10]), (20, &[5, 5, 5])];
        let wanted: BTreeSet<u64> = [3, 9, 26, 34].into_iter().collect();
        assert_eq!(
            chunks_holding(files.into_iter(), &wanted),
            vec![Chunk { file: 0, row_group: 0 }, Chunk { file: 1, row_group: 1 }, Chunk { file: 1, row_group: 2 }]
        );
    }
}
