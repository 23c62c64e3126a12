//! MinHash signatures of word shingles (Broder 1997, "On the resemblance
//! and containment of documents").
//!
//! A text is normalised as the fastText proxy tokenizes it (split on
//! whitespace, lowercased), cut into shingles of `shingle` consecutive words
//! (a text shorter than that is one shingle of all its words), and each
//! shingle is hashed to 64 bits (xxh3 of its words joined by one space).
//! Permutation `i` maps a shingle hash `x` to `(a_i x + b_i) mod (2^61 - 1)`,
//! keeps the low 32 bits (as datasketch does), and the signature holds each
//! permutation's minimum over the text's shingles. `a_i` and `b_i` come from
//! a ChaCha8 generator seeded with the hasher's seed.
//!
//! The fraction of equal positions of two signatures estimates the Jaccard
//! similarity of their shingle sets, with standard error
//! `sqrt(J (1 - J) / num_perm)` (0.035 at J = 0.8 and 128 permutations).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_64;

/// Permutations of a signature by default (datasketch's default too).
pub const DEFAULT_PERMUTATIONS: usize = 128;

/// Words per shingle by default.
pub const DEFAULT_SHINGLE: usize = 3;

/// The seed of the permutations by default.
pub const DEFAULT_SEED: u64 = 1;

/// The Mersenne prime `2^61 - 1` the permutations work modulo.
const PRIME: u64 = (1 << 61) - 1;

/// A family of `num_perm` seeded permutations: computes signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    shingle: usize,
}

impl MinHasher {
    /// `num_perm` permutations drawn from `seed`, over shingles of `shingle`
    /// words (both at least 1).
    pub fn new(num_perm: usize, shingle: usize, seed: u64) -> Self {
        assert!(num_perm > 0 && shingle > 0, "a MinHash needs permutations and shingles of at least a word");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (a, b) = (0..num_perm).map(|_| (rng.random_range(1..PRIME), rng.random_range(0..PRIME))).unzip();
        Self { a, b, shingle }
    }

    /// Permutations (the signature's length).
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// The signature of `text`, into `out` (`num_perm` values); `false`, and
    /// `out` untouched, when the text has no words.
    pub fn signature_into(&self, text: &str, out: &mut [u32]) -> bool {
        assert_eq!(out.len(), self.num_perm(), "one value per permutation");
        let mut any = false;
        out.fill(u32::MAX);
        for_each_shingle(text, self.shingle, |hash| {
            any = true;
            for ((o, &a), &b) in out.iter_mut().zip(&self.a).zip(&self.b) {
                *o = (*o).min(permute(a, b, hash));
            }
        });
        any
    }

    /// The signature of `text`; `None` when it has no words.
    pub fn signature(&self, text: &str) -> Option<Vec<u32>> {
        let mut out = vec![0; self.num_perm()];
        self.signature_into(text, &mut out).then_some(out)
    }
}

/// `(a x + b) mod (2^61 - 1)`, low 32 bits.
fn permute(a: u64, b: u64, x: u64) -> u32 {
    let y = a as u128 * x as u128 + b as u128;
    // y < 2^126: two folds of the Mersenne reduction bring it below 2^62,
    // a last subtraction below the prime.
    let y = (y & PRIME as u128) + (y >> 61);
    let mut y = ((y & PRIME as u128) + (y >> 61)) as u64;
    if y >= PRIME {
        y -= PRIME;
    }
    y as u32
}

/// Calls `f` with the hash of each shingle of `text`: every run of
/// `shingle` consecutive lowercased words, joined by one space; a text of
/// fewer words gives one shingle of them all, a text of none gives none.
pub fn for_each_shingle(text: &str, shingle: usize, mut f: impl FnMut(u64)) {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return;
    }
    let mut joined = String::new();
    for window in words.windows(shingle.min(words.len())) {
        joined.clear();
        for (i, w) in window.iter().enumerate() {
            if i > 0 {
                joined.push(' ');
            }
            joined.push_str(w);
        }
        f(xxh3_64(joined.as_bytes()));
    }
}

/// The Jaccard similarity two signatures estimate: the fraction of
/// positions where they agree.
pub fn jaccard(a: &[u32], b: &[u32]) -> f32 {
    assert_eq!(a.len(), b.len(), "signatures of one hasher");
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f32 / a.len() as f32
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn shingles(text: &str, n: usize) -> HashSet<u64> {
        let mut out = HashSet::new();
        for_each_shingle(text, n, |h| {
            out.insert(h);
        });
        out
    }

    #[test]
    fn shingles_are_lowercased_word_runs() {
        assert_eq!(shingles("The  cat\tsat on", 3).len(), 2);
        assert_eq!(shingles("the cat sat on", 3), shingles("THE CAT SAT ON", 3));
        assert_eq!(shingles("two words", 3).len(), 1, "a short text is one shingle");
        assert!(shingles(" \n ", 3).is_empty());
        let mut one = 0;
        for_each_shingle("a b", 3, |h| one = h);
        assert_eq!(one, xxh3_64(b"a b"));
    }

    #[test]
    fn the_reduction_is_the_remainder() {
        for &(a, b, x) in &[(PRIME - 1, PRIME - 1, u64::MAX), (1, 0, PRIME), (12345, 678, 1 << 63), (3, 5, 7)] {
            let want = ((a as u128 * x as u128 + b as u128) % PRIME as u128) as u64 as u32;
            assert_eq!(permute(a, b, x), want, "{a} {b} {x}");
        }
    }

    #[test]
    fn signatures_estimate_the_jaccard_similarity() {
        let hasher = MinHasher::new(DEFAULT_PERMUTATIONS, 1, DEFAULT_SEED);
        // Word sets of 100 and 100 words sharing 60: Jaccard 60 / 140.
        let a: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let b: Vec<String> = (40..140).map(|i| format!("w{i}")).collect();
        let (sa, sb) = (hasher.signature(&a.join(" ")).unwrap(), hasher.signature(&b.join(" ")).unwrap());
        let truth = 60.0 / 140.0;
        let se = (truth * (1.0 - truth) / 128.0f32).sqrt();
        assert!((jaccard(&sa, &sb) - truth).abs() < 3.0 * se, "{} vs {truth}", jaccard(&sa, &sb));
        assert_eq!(jaccard(&sa, &sa), 1.0);
        assert_eq!(hasher.signature(&a.join("  ")), Some(sa), "whitespace runs are one separator");
        assert_eq!(hasher.signature(""), None);
    }

    #[test]
    fn the_seed_decides_the_permutations() {
        let text = "a film that is not dull";
        assert_eq!(MinHasher::new(16, 3, 7).signature(text), MinHasher::new(16, 3, 7).signature(text));
        assert_ne!(MinHasher::new(16, 3, 7).signature(text), MinHasher::new(16, 3, 8).signature(text));
    }
}
