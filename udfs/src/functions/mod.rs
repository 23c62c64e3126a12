//! The SQL functions sieve registers, one file each.

pub mod band_keys;
pub mod content_hash;
pub mod image_hash;
pub mod minhash;
pub mod proxy_embedding;
pub mod proxy_scores;
pub mod seeded_random;
pub mod text_embedding;
