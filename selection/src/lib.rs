//! Selection algorithms and score math, with no Arrow and no DataFusion.
//!
//! - [`scores`]: from one example's logits (and label) to its uncertainty and
//!   difficulty scores.
//!
//! The algorithms over embeddings: the proxy's penultimate features or
//! sentence embeddings, given as a row-major `&[f32]` of `n * dim` values.
//!
//! - [`kmeans`]: spherical k-means (cosine geometry), k-means++ seeding.
//! - [`prototype`]: the self-supervised prototype score of Sorscher et al.
//!   2022 (arXiv:2206.14486) and the `--order auto` rule.
//! - [`kcenter`]: the greedy k-center core-set of Sener & Savarese 2018
//!   (arXiv:1708.00489), as used by Selection via Proxy.
//! - [`semdedup`]: SemDeDup (Abbas et al. 2023, arXiv:2303.09540).
//! - [`nearest`]: each row's most similar row of another set (semantic leaks).
//! - [`schedule`]: Data Step / Data Increment / Data Cut schedules as data.
//!
//! Everything here is pure (no Arrow), deterministic (same input and seed
//! give bit-identical output, whatever the rayon thread count: every
//! parallel loop writes per-row results or reduces with a total order), and
//! linear in `n` in memory: nothing allocates an `n x n` matrix.

#![deny(missing_docs)]

pub mod embeddings;
pub mod kcenter;
pub mod kmeans;
mod matmul;
pub mod nearest;
pub mod prototype;
pub mod schedule;
pub mod scores;
pub mod semdedup;

pub use embeddings::{EmbeddingError, Embeddings};
