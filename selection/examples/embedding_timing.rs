//! Wall-clock seconds of each `sieve_selection` algorithm on uniform
//! random embeddings of CIFAR-10 size (50,000 x 64, k = 10 classes) and
//! SST-2 size (67,349 x 32, k = 2 classes). One run each, no warm-up: these
//! are order-of-magnitude figures, not a benchmark.
//!
//! k-center picks 10% of the rows; SemDeDup clusters into 100 clusters
//! (about `n / 100` rows each, so `n^2 / 100` comparisons in the worst case)
//! with `eps = 0.05`.
//!
//! ## Usage
//!
//! ```text
//! cargo run --release -p sieve-selection --example embedding_timing
//! ```
//!
//! prints one line per dataset and algorithm, for example
//! `cifar10 50000x64 kcenter(5000) 2.48 s` (2-core machine, about 17 s in all).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sieve_selection::kcenter::k_center_greedy;
use sieve_selection::kmeans::{spherical_kmeans, KMeansConfig};
use sieve_selection::prototype::prototype_scores;
use sieve_selection::schedule::{assign_stages, Ranking};
use sieve_selection::semdedup::{semdedup, SemDedupConfig};
use sieve_selection::Embeddings;

/// Runs `f`, prints its time under `label`, returns its value.
fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    println!("{label} {:.2} s", t.elapsed().as_secs_f64());
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, n, dim, classes) in [("cifar10", 50_000, 64, 10), ("sst2", 67_349, 32, 2)] {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let data: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let emb = Embeddings::new(&data, dim)?;
        let tag = format!("{name} {n}x{dim}");
        timed(&format!("{tag} kmeans(k={classes})"), || spherical_kmeans(&emb, &KMeansConfig::new(classes, 0)))?;
        let p =
            timed(&format!("{tag} prototype(k={classes})"), || prototype_scores(&emb, &KMeansConfig::new(classes, 0)))?;
        let budget = n / 10;
        timed(&format!("{tag} kcenter({budget})"), || k_center_greedy(&emb, budget, &[], 0))?;
        let cfg = SemDedupConfig { eps: 0.05, kmeans: KMeansConfig::new(100, 0) };
        timed(&format!("{tag} semdedup(k=100)"), || semdedup(&emb, &cfg))?;
        let schedule = "increment:0.2,0.2,5".parse()?;
        timed(&format!("{tag} schedule"), || assign_stages(Ranking::EasyFirst(&p.prototype), &schedule));
    }
    Ok(())
}
