//! Near-duplicate hashing, with no Arrow and no DataFusion.
//!
//! - [`minhash`]: MinHash signatures of a text's word shingles (Broder 1997),
//!   and the Jaccard similarity they estimate.
//! - [`lsh`]: LSH banding of a signature into `bands x rows` (the parameters
//!   chosen from a Jaccard threshold as datasketch chooses them) and the
//!   band keys that make candidate pairs.
//! - [`phash`]: perceptual image hashes (`phash`, `dhash`) as the imagehash
//!   library defines them, over Pillow-exact grayscale conversion and
//!   Lanczos resizing, and the Hamming bands of a multi-index search.
//! - [`components`]: union-find over verified pairs: each component's
//!   representative is its first row.
//!
//! Everything is deterministic: the same input and seed give the same bits
//! on every machine.

#![deny(missing_docs)]

pub mod components;
pub mod lsh;
pub mod minhash;
pub mod phash;
