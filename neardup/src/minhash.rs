//! MinHash signatures of word shingles (Broder 1997, "On the resemblance
//! and containment of documents"), bit for bit as datasketch 2.0's
//! `MinHash` computes them by default (its `affine32` scheme), so that a
//! signature sieve writes equals the one datasketch gives for the same
//! shingles and seed.
//!
//! A text is normalised as the fastText proxy tokenizes it (split on
//! whitespace, lowercased) and cut into shingles of `shingle` consecutive
//! words joined by one space (a text shorter than that is one shingle of all
//! its words). Each shingle's UTF-8 bytes are hashed to 32 bits (the first
//! four bytes of their SHA-1, little-endian: datasketch's `sha1_hash32`),
//! pre-mixed by MurmurHash3's finalizer, and permutation `i` maps the mixed
//! hash `h` to `a_i h + b_i mod 2^32`, with odd `a_i` (a bijection, so the
//! permutation adds no collisions). The signature holds each permutation's
//! minimum over the text's shingles. `a` and `b` are drawn as NumPy's
//! `RandomState(seed)` draws them: a Mersenne Twister seeded with `seed`,
//! first every `a_i = 2 (x & (2^31 - 1)) + 1`, then every `b_i = x`.
//!
//! The fraction of equal positions of two signatures estimates the Jaccard
//! similarity of their shingle sets, with standard error
//! `sqrt(J (1 - J) / num_perm)` (0.035 at J = 0.8 and 128 permutations).

use rand_mt::Mt;
use sha1::{Digest, Sha1};

/// Permutations of a signature by default (datasketch's default too).
pub const DEFAULT_PERMUTATIONS: usize = 128;

/// Words per shingle by default.
pub const DEFAULT_SHINGLE: usize = 3;

/// The seed of the permutations by default (datasketch's default too).
pub const DEFAULT_SEED: u32 = 1;

/// A family of `num_perm` seeded permutations: computes signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinHasher {
    a: Vec<u32>,
    b: Vec<u32>,
    shingle: usize,
}

impl MinHasher {
    /// `num_perm` permutations drawn from `seed`, over shingles of `shingle`
    /// words (both at least 1).
    pub fn new(num_perm: usize, shingle: usize, seed: u32) -> Self {
        assert!(num_perm > 0 && shingle > 0, "a MinHash needs permutations and shingles of at least a word");
        let mut twister = Mt::new(seed);
        let a = (0..num_perm).map(|_| (twister.next_u32() & 0x7fff_ffff) * 2 + 1).collect();
        let b = (0..num_perm).map(|_| twister.next_u32()).collect();
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
            let h = fmix32(hash);
            for ((o, &a), &b) in out.iter_mut().zip(&self.a).zip(&self.b) {
                *o = (*o).min(a.wrapping_mul(h).wrapping_add(b));
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

/// MurmurHash3's 32-bit finalizer: an avalanching bijection.
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The first four bytes of the SHA-1 of `bytes`, little-endian.
fn sha1_hash32(bytes: &[u8]) -> u32 {
    let digest = Sha1::digest(bytes);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Calls `f` with the hash of each shingle of `text`: every run of
/// `shingle` consecutive lowercased words, joined by one space; a text of
/// fewer words gives one shingle of them all, a text of none gives none.
pub fn for_each_shingle(text: &str, shingle: usize, mut f: impl FnMut(u32)) {
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
        f(sha1_hash32(joined.as_bytes()));
    }
}

/// The Jaccard similarity two signatures estimate: the fraction of
/// positions where they agree.
pub fn jaccard<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "signatures of one hasher");
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn shingles(text: &str, n: usize) -> HashSet<u32> {
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
        assert_eq!(one, sha1_hash32(b"a b"));
        // datasketch.hashfunc.sha1_hash32(b"a film that")
        assert_eq!(sha1_hash32(b"a film that"), 2522163920);
    }

    #[test]
    fn permutations_and_signatures_are_datasketchs() {
        // datasketch 2.0: MinHash(num_perm=128).permutations, and its
        // hashvalues after update_batch of the four shingles below.
        let hasher = MinHasher::new(DEFAULT_PERMUTATIONS, DEFAULT_SHINGLE, DEFAULT_SEED);
        assert_eq!(hasher.a[..3], [3582191691, 4270784983, 1892572953]);
        assert_eq!(hasher.b[..3], [214548472, 3287733501, 2301657549]);
        assert_eq!((hasher.a[127], hasher.b[127]), (348755713, 1195370327));
        assert_eq!(MinHasher::new(16, 3, 7).a[..2], [655483231, 1952827785]);
        let signature = hasher.signature("A film that  is NOT dull").unwrap();
        assert_eq!(signature[..6], [788266793, 2382523622, 56708915, 695074485, 1714113345, 1009917908]);
        assert_eq!(signature[127], 1563145389);
    }

    #[test]
    fn signatures_estimate_the_jaccard_similarity() {
        let hasher = MinHasher::new(DEFAULT_PERMUTATIONS, 1, DEFAULT_SEED);
        // Word sets of 100 and 100 words sharing 60: Jaccard 60 / 140.
        let a: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let b: Vec<String> = (40..140).map(|i| format!("w{i}")).collect();
        let (sa, sb) = (hasher.signature(&a.join(" ")).unwrap(), hasher.signature(&b.join(" ")).unwrap());
        let truth = 60.0 / 140.0;
        let se = (truth * (1.0 - truth) / 128.0f64).sqrt();
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
