//! JPEG decoding with libjpeg-turbo's decoder (through the `mozjpeg` crate,
//! whose C sources are libjpeg-turbo's, built without SIMD), for the hashes
//! that must equal a Pillow-based library's. Pillow decodes JPEG with
//! libjpeg-turbo (accurate integer IDCT, fancy upsampling); the image
//! crate's decoder rounds differently, so on CIFAR-10's test JPEGs it left
//! 22% of the pixels a level or two off Pillow's and 1.7% of the perceptual
//! hashes a bit or two off imagehash's. With this decoder the pixels are
//! Pillow's on all 10,000 (`make bench`, `benches/near_dup.py`).

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The three bytes every JPEG stream starts with (SOI and the next marker's
/// prefix).
const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// `bytes` decoded as libjpeg-turbo (and so Pillow) decodes them, converted
/// to RGB: `(width, height, pixels)`, row-major, 3 bytes a pixel. `None`
/// when they are not a JPEG stream, or libjpeg refuses it or cannot give
/// RGB (CMYK, for one).
///
/// libjpeg reports a fatal error by unwinding out of its C code (the crate's
/// error manager does so without calling the panic hook); it is caught here,
/// so a bad stream is a `None`, never a panic. Warnings (a truncated stream
/// padded with gray) are silenced, as the crate's manager does.
pub fn decode_rgb(bytes: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    if !bytes.starts_with(&JPEG_MAGIC) {
        return None;
    }
    catch_unwind(AssertUnwindSafe(|| -> std::io::Result<_> {
        let mut started = mozjpeg::Decompress::new_mem(bytes)?.rgb()?;
        let (width, height) = (started.width(), started.height());
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok((width, height, pixels))
    }))
    .ok()?
    .ok()
    .filter(|(width, height, pixels)| pixels.len() == width * height * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded() -> Vec<u8> {
        let (width, height) = (24, 16);
        let pixels: Vec<u8> = (0..width * height * 3).map(|i| ((i * 37) % 251) as u8).collect();
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        compress.set_size(width, height);
        compress.set_quality(90.0);
        let mut started = compress.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&pixels).unwrap();
        started.finish().unwrap()
    }

    #[test]
    fn a_jpeg_decodes_to_its_size_in_rgb() {
        let bytes = encoded();
        let (width, height, pixels) = decode_rgb(&bytes).unwrap();
        assert_eq!((width, height, pixels.len()), (24, 16, 24 * 16 * 3));
    }

    #[test]
    fn a_broken_stream_is_none_not_a_panic() {
        let bytes = encoded();
        assert_eq!(decode_rgb(&bytes[..20]), None);
        assert_eq!(decode_rgb(b"\xFF\xD8\xFFnot a jpeg at all"), None);
        assert_eq!(decode_rgb(&[]), None);
        assert_eq!(decode_rgb(b"\x89PNG\r\n\x1a\n"), None);
    }
}
