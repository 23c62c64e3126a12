//! The payloads (encoded image bytes or text) of the few rows the grids
//! show, fetched in one pass over the input that reads only the input column
//! of the row groups holding them.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use sieve_schemas::InputKind;

use crate::error::Result;
use crate::examples::Payloads;
use crate::input::{Chunk, InputFiles};
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
    fetch_from(&dataset.train, dataset.kind, &dataset.input_column, positions)
}

/// The payload of each of `positions` in `input`'s `column` of `kind`.
pub fn fetch_from(
    input: &InputFiles,
    kind: InputKind,
    column: &str,
    positions: &BTreeSet<u64>,
) -> Result<HashMap<u64, Vec<u8>>> {
    let mut out = HashMap::with_capacity(positions.len());
    let columns = [column.to_string()];
    let files = input.files.iter().map(|f| (f.first_pos, f.row_groups.as_slice()));
    input.for_each_batch(&chunks_holding(files, positions), Some(&columns), |batch| {
        let payloads = Payloads::new(kind, batch.column(0))?;
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

/// The positions of the rows of `input` whose `id_column` (as text) is one
/// of `ids`; without an id column a row's id is its position. One pass over
/// the id column.
pub fn positions_of(
    input: &InputFiles,
    id_column: Option<&str>,
    ids: &BTreeSet<String>,
) -> Result<HashMap<String, u64>> {
    let Some(column) = id_column.filter(|c| input.schema.index_of(c).is_ok()) else {
        return Ok(ids.iter().filter_map(|id| Some((id.clone(), id.parse().ok()?))).collect());
    };
    let mut out = HashMap::with_capacity(ids.len());
    input.for_each_batch(&input.chunks(), Some(&[column.to_string()]), |batch| {
        let text = cast(batch.column(0), &DataType::Utf8)?;
        let (text, pos) = (text.as_string::<i32>(), batch.column(1).as_primitive::<Int64Type>());
        for i in (0..batch.num_rows()).filter(|&i| text.is_valid(i) && ids.contains(text.value(i))) {
            out.entry(text.value(i).to_string()).or_insert(pos.value(i) as u64);
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
