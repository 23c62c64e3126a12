//! k-center per class, sieve's working-set loop against the textbook loop
//! (every row lowered against each pick, in parallel: what sieve shipped
//! before), in one process on the same embeddings; checks that the picks
//! are identical. `benches/kcenter.py` runs it (`make bench`).
//!
//! Usage: `kcenter_speed EMBEDDINGS.f32 DIM LABELS.u32 KEEP` (little-endian
//! `n x DIM` floats and `n` labels).

use rayon::prelude::*;
use sieve_selection::embeddings::sq_dist;
use sieve_selection::kcenter::k_center_greedy_per_class;
use sieve_selection::Embeddings;

fn read<T>(path: &str, from: fn([u8; 4]) -> T) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes.chunks_exact(4).map(|c| from(c.try_into().expect("4 bytes"))).collect()
}

/// Rows per rayon task, as the shipped loop had it.
const CHUNK: usize = 1024;

/// The textbook loop on one class's rows (`data`, contiguous), from
/// `first`: `budget` picks, as sieve shipped it.
fn textbook(data: &[f32], dim: usize, first: usize, budget: usize) -> Vec<usize> {
    let n = data.len() / dim;
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let mut min_dist = vec![f32::INFINITY; n];
    let mut picks = vec![first];
    while picks.len() < budget {
        let pick = *picks.last().expect("a pick");
        min_dist[pick] = -1.0;
        let best = min_dist
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut best: Option<(f32, usize)> = None;
                for (j, d) in chunk.iter_mut().enumerate() {
                    if *d >= 0.0 {
                        *d = d.min(sq_dist(row(c * CHUNK + j), row(pick)));
                        if best.is_none_or(|(bd, _)| *d > bd) {
                            best = Some((*d, c * CHUNK + j));
                        }
                    }
                }
                best
            })
            .reduce(
                || None,
                |a, b| match (a, b) {
                    (Some(x), Some(y)) => Some(if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) { y } else { x }),
                    (x, None) => x,
                    (None, y) => y,
                },
            );
        let Some((_, next)) = best else { break };
        picks.push(next);
    }
    picks
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, data, dim, labels, keep] = &args[..] else {
        panic!("usage: kcenter_speed EMBEDDINGS.f32 DIM LABELS.u32 KEEP");
    };
    let (dim, keep): (usize, f64) = (dim.parse().expect("DIM"), keep.parse().expect("KEEP"));
    let data = read(data, f32::from_le_bytes);
    let labels = read(labels, u32::from_le_bytes);
    let emb = Embeddings::new(&data, dim).expect("finite embeddings");
    let start = std::time::Instant::now();
    let ours = k_center_greedy_per_class(&emb, &labels, keep, &[], 0).expect("k-center");
    let ours_s = start.elapsed().as_secs_f64();
    eprintln!("sieve: {ours_s:.3} s; the textbook loop next");
    // The textbook loop per class, from the class's first pick above.
    let start = std::time::Instant::now();
    let mut theirs = Vec::new();
    let mut label_values: Vec<u32> = labels.clone();
    label_values.sort_unstable();
    label_values.dedup();
    for label in label_values {
        let members: Vec<usize> = (0..emb.n()).filter(|&i| labels[i] == label).collect();
        let data: Vec<f32> = members.iter().flat_map(|&i| emb.row(i)).copied().collect();
        let first = ours.iter().find(|&&i| labels[i] == label).expect("a pick per class");
        let budget = (keep * members.len() as f64).round() as usize;
        let local = members.binary_search(first).expect("a member");
        theirs.extend(textbook(&data, dim, local, budget).into_iter().map(|j| members[j]));
    }
    let theirs_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"rows\": {}, \"dim\": {dim}, \"picks\": {}, \"sieve_s\": {ours_s:.3}, \"textbook_s\": {theirs_s:.3}, \"identical\": {}}}",
        emb.n(),
        ours.len(),
        ours == theirs
    );
}
