//! Perceptual image hashes as the imagehash library (4.3) defines them, so
//! that a hash computed here equals the one a Python user gets:
//!
//! - [`phash`]: the image in 8-bit grayscale, resized to 32x32 with
//!   Lanczos, a 2-D DCT-II, its top-left 8x8 block, and one bit per
//!   coefficient: greater than the block's median.
//! - [`dhash`]: grayscale resized to 9x8, one bit per horizontal neighbour
//!   pair: the left pixel darker than the right.
//!
//! Bits are packed as imagehash prints them: the first coefficient (row
//! major) is the most significant bit. Grayscale and resizing follow
//! Pillow's integer arithmetic (ITU-R 601-2 luma in 16-bit fixed point;
//! separable Lanczos-3 with 22-bit fixed-point weights, the passes in
//! Pillow's order, rounding half up and clamping), which is what makes the bits
//! equal, not only close. Near-duplicates are hashes within a Hamming
//! distance; [`hamming_bands`] cuts a hash for the multi-index search that
//! finds them (Norouzi et al. 2012): two hashes within `d` bits agree on at
//! least one of `d + 1` bands.

/// A grayscale image: `width x height` bytes, row major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gray {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` luma values.
    pub pixels: Vec<u8>,
}

impl Gray {
    /// Pillow's `convert("L")` of 8-bit RGB pixels (`width * height * 3`
    /// bytes): `(19595 R + 38470 G + 7471 B + 2^15) >> 16`.
    pub fn from_rgb(width: usize, height: usize, rgb: &[u8]) -> Self {
        assert_eq!(rgb.len(), width * height * 3, "three bytes a pixel");
        let pixels = rgb
            .chunks_exact(3)
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect();
        Self { width, height, pixels }
    }

    /// Pillow's `resize((width, height), LANCZOS)`; the image itself when
    /// the size is already that (Pillow returns a copy then).
    pub fn resize(&self, width: usize, height: usize) -> Gray {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        // Pillow 13 (measured against its wheels) runs the vertical pass
        // first when the width grows and the height shrinks, and the
        // horizontal one first when both shrink by similar factors; the
        // 8-bit rounding in between makes the order matter. When the height
        // shrinks much more than the width, Pillow also goes vertical
        // first, by a rule this does not follow: there a pixel can differ
        // by one (phash then differs from imagehash's on about 1% of such
        // images, by at most 2 bits). Images already 32x32 (CIFAR-10) need
        // no resizing and hash exactly.
        if width > self.width && height < self.height {
            self.resize_rows(height).resize_columns(width)
        } else {
            self.resize_columns(width).resize_rows(height)
        }
    }

    /// The horizontal pass: every row resampled to `width` columns.
    fn resize_columns(&self, width: usize) -> Gray {
        if width == self.width {
            return self.clone();
        }
        let weights = Weights::new(self.width, width);
        let mut pixels = vec![0; width * self.height];
        for y in 0..self.height {
            let row = &self.pixels[y * self.width..(y + 1) * self.width];
            for x in 0..width {
                pixels[y * width + x] = weights.apply(x, |i| row[i]);
            }
        }
        Gray { width, height: self.height, pixels }
    }

    /// The vertical pass: every column resampled to `height` rows.
    fn resize_rows(&self, height: usize) -> Gray {
        if height == self.height {
            return self.clone();
        }
        let weights = Weights::new(self.height, height);
        let mut pixels = vec![0; self.width * height];
        for y in 0..height {
            for x in 0..self.width {
                pixels[y * self.width + x] = weights.apply(y, |i| self.pixels[i * self.width + x]);
            }
        }
        Gray { width: self.width, height, pixels }
    }
}

/// Bits of Pillow's fixed-point resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Lanczos-3 resampling weights from `input` samples to `output`, in
/// Pillow's fixed point: for each output sample, the first input sample
/// and the weights from there.
struct Weights {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

impl Weights {
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f64 / output as f64;
        let filter_scale = scale.max(1.0);
        let support = 3.0 * filter_scale;
        // Pillow multiplies by the reciprocal; dividing rounds differently.
        let inverse = 1.0 / filter_scale;
        let (mut first, mut weights) = (Vec::with_capacity(output), Vec::with_capacity(output));
        for o in 0..output {
            let center = (o as f64 + 0.5) * scale;
            // Pillow truncates toward zero (`(int)`), which `as` does.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let raw: Vec<f64> = (lo..hi).map(|i| lanczos((i as f64 - center + 0.5) * inverse)).collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w } * (1u64 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (w - 0.5) as i32
                    } else {
                        (w + 0.5) as i32
                    }
                })
                .collect();
            first.push(lo);
            weights.push(fixed);
        }
        Self { first, weights }
    }

    /// Output sample `o` from the input samples `sample(i)`.
    fn apply(&self, o: usize, sample: impl Fn(usize) -> u8) -> u8 {
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (k, &w) in self.weights[o].iter().enumerate() {
            acc += sample(self.first[o] + k) as i64 * w as i64;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// `sinc(x) sinc(x / 3)` on `[-3, 3)`, as Pillow's Lanczos filter.
fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| if x == 0.0 { 1.0 } else { (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI) };
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// imagehash's `phash(image)` (hash size 8, high-frequency factor 4).
pub fn phash(image: &Gray) -> u64 {
    const SIDE: usize = 32;
    const LOW: usize = 8;
    let small = image.resize(SIDE, SIDE);
    // The 2-D DCT-II separates: along columns, then along rows, keeping only
    // the first LOW coefficients of each (the ones the hash reads).
    let cos: Vec<f64> = (0..LOW * SIDE)
        .map(|kn| {
            let (k, n) = (kn / SIDE, kn % SIDE);
            2.0 * (std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2 * SIDE) as f64).cos()
        })
        .collect();
    let mut columns = [[0f64; SIDE]; LOW];
    for (k, column) in columns.iter_mut().enumerate() {
        for (x, c) in column.iter_mut().enumerate() {
            *c = (0..SIDE).map(|y| small.pixels[y * SIDE + x] as f64 * cos[k * SIDE + y]).sum();
        }
    }
    let mut block = [0f64; LOW * LOW];
    for k in 0..LOW {
        for j in 0..LOW {
            block[k * LOW + j] = (0..SIDE).map(|x| columns[k][x] * cos[j * SIDE + x]).sum();
        }
    }
    let mut sorted = block;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[LOW * LOW / 2 - 1] + sorted[LOW * LOW / 2]) / 2.0;
    pack(block.iter().map(|&c| c > median))
}

/// imagehash's `dhash(image)` (hash size 8).
pub fn dhash(image: &Gray) -> u64 {
    let small = image.resize(9, 8);
    pack((0..8).flat_map(|y| {
        let row = &small.pixels[y * 9..(y + 1) * 9];
        (0..8).map(move |x| row[x + 1] > row[x])
    }))
}

/// 64 bits, the first the most significant.
fn pack(bits: impl Iterator<Item = bool>) -> u64 {
    bits.fold(0, |acc, b| (acc << 1) | b as u64)
}

/// Bits in which two hashes differ.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// `bands` keys of `hash` (`1 <= bands <= 64`): band `i` holds bits of
/// nearly equal widths, tagged with `i` in the top byte so keys of
/// different bands never collide. Two hashes within `bands - 1` bits share
/// at least one key.
pub fn hamming_bands(hash: u64, bands: usize) -> impl Iterator<Item = u64> {
    assert!((1..=64).contains(&bands), "between 1 and 64 bands");
    (0..bands).map(move |i| {
        let (lo, hi) = (64 * i / bands, 64 * (i + 1) / bands);
        let width = hi - lo;
        let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
        ((i as u64) << 56) | ((hash >> lo) & mask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> Gray {
        let pixels =
            (0..width * height).map(|i| ((i % width) * 255 / width.max(1)) as u8 ^ (i / width) as u8).collect();
        Gray { width, height, pixels }
    }

    #[test]
    fn grayscale_is_pillows_fixed_point_luma() {
        let g = Gray::from_rgb(3, 1, &[255, 255, 255, 255, 0, 0, 10, 20, 30]);
        // Pillow: Image.new("RGB", ...).convert("L") gives 255, 76, 18.
        assert_eq!(g.pixels, [255, 76, 18]);
    }

    #[test]
    fn resizing_keeps_a_flat_image_flat_and_the_same_size_untouched() {
        let flat = Gray { width: 40, height: 30, pixels: vec![77; 1200] };
        assert!(flat.resize(32, 32).pixels.iter().all(|&p| p == 77));
        assert!(flat.resize(64, 48).pixels.iter().all(|&p| p == 77));
        let g = gradient(32, 32);
        assert_eq!(g.resize(32, 32), g);
    }

    #[test]
    fn a_hash_splits_its_block_at_the_median() {
        let h = phash(&gradient(50, 40));
        assert_eq!(h.count_ones(), 32, "half the coefficients lie above the median");
        assert_eq!(phash(&gradient(50, 40)), h, "deterministic");
        let mut brighter = gradient(50, 40);
        brighter.pixels.iter_mut().for_each(|p| *p = p.saturating_add(8));
        assert!(hamming(phash(&brighter), h) <= 6, "a brighter copy is a near-duplicate");
    }

    #[test]
    fn hashes_within_d_bits_share_a_band() {
        let a = 0xdead_beef_0123_4567u64;
        for flips in [[0, 9, 18, 27, 36, 45], [1, 2, 3, 4, 5, 6], [63, 62, 10, 20, 30, 40]] {
            let b = flips.iter().fold(a, |h, &i| h ^ (1 << i));
            let (ka, kb): (Vec<u64>, Vec<u64>) = (hamming_bands(a, 7).collect(), hamming_bands(b, 7).collect());
            assert!(ka.iter().zip(&kb).any(|(x, y)| x == y), "{flips:?}");
            assert_eq!(hamming(a, b), 6);
        }
        let keys: Vec<u64> = hamming_bands(0, 7).collect();
        assert_eq!(keys.iter().collect::<std::collections::HashSet<_>>().len(), 7, "bands are tagged");
    }
}
