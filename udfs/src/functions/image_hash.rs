//! `phash(image)` and `dhash(image)`: 64-bit perceptual hashes, equal to
//! the imagehash library's ([`sieve_neardup::phash`]), as UInt64; NULL for
//! an image that is null or does not decode. `hamming(a, b)`: the bits in
//! which two hashes differ.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::common::utils::take_function_args;
use datafusion::common::Result;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use sieve_neardup::phash::{dhash, hamming, phash, Gray};

use crate::decode::ImageBytes;
use crate::pillow_jpeg;

/// Which perceptual hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DCT-based (`phash`).
    Phash,
    /// Gradient-based (`dhash`).
    Dhash,
}

/// The `phash` or `dhash` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ImageHash {
    kind: Kind,
    signature: Signature,
}

impl ImageHash {
    /// Builds the UDF of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self { kind, signature: Signature::any(1, Volatility::Immutable) }
    }
}

/// The perceptual hash of `kind` of encoded image `bytes`; `None` when they
/// do not decode. A JPEG is decoded as Pillow decodes it
/// ([`pillow_jpeg`]), so the bits are imagehash's from the same bytes;
/// one libjpeg cannot give as RGB (CMYK) falls back to the image crate, as
/// does every other format (PNG is lossless: every decoder agrees).
pub fn hash_image(kind: Kind, bytes: &[u8]) -> Option<u64> {
    let (width, height, rgb) = pillow_jpeg::decode_rgb(bytes).or_else(|| {
        let rgb = image::load_from_memory(bytes).ok()?.to_rgb8();
        Some((rgb.width() as usize, rgb.height() as usize, rgb.into_raw()))
    })?;
    let gray = Gray::from_rgb(width, height, &rgb);
    Some(match kind {
        Kind::Phash => phash(&gray),
        Kind::Dhash => dhash(&gray),
    })
}

static PHASH_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Perceptual hash of an image as the imagehash library's phash defines it (grayscale, 32x32 Lanczos, \
         DCT, the 8x8 low frequencies against their median), UInt64, first coefficient the top bit; \
         NULL when the image does not decode.",
        "phash(img)",
    )
    .with_argument("image", "Image column (struct<bytes, path> or binary).")
    .build()
});

static DHASH_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Difference hash of an image as the imagehash library's dhash defines it (grayscale, 9x8 Lanczos, \
         left darker than right), UInt64; NULL when the image does not decode.",
        "dhash(img)",
    )
    .with_argument("image", "Image column (struct<bytes, path> or binary).")
    .build()
});

impl ScalarUDFImpl for ImageHash {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Phash => "phash",
            Kind::Dhash => "dhash",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [input] = take_function_args(self.name(), args.args)?;
        let input = input.into_array(n)?;
        let bytes = ImageBytes::new(&input)?;
        let hashes: UInt64Array = (0..n).map(|i| bytes.get(i).and_then(|b| hash_image(self.kind, b))).collect();
        Ok(ColumnarValue::Array(Arc::new(hashes) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(match self.kind {
            Kind::Phash => &PHASH_DOC,
            Kind::Dhash => &DHASH_DOC,
        })
    }
}

/// The `hamming` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hamming {
    signature: Signature,
}

impl Default for Hamming {
    fn default() -> Self {
        Self::new()
    }
}

impl Hamming {
    /// Builds the UDF.
    pub fn new() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

static HAMMING_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Bits in which two 64-bit hashes differ (the Hamming distance of phash or dhash values).",
        "hamming(a.phash, b.phash)",
    )
    .with_argument("a", "A hash (an integer column or literal).")
    .with_argument("b", "Another.")
    .build()
});

impl ScalarUDFImpl for Hamming {
    fn name(&self) -> &str {
        "hamming"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [a, b] = take_function_args(self.name(), args.args)?;
        // Signed hashes reinterpret as unsigned: the bits are what count.
        let bits = |v: ColumnarValue| -> Result<ArrayRef> {
            let v = v.into_array(n)?;
            let v = if v.data_type() == &DataType::Int64 {
                Arc::new(v.as_primitive::<Int64Type>().unary::<_, UInt64Type>(|x| x as u64))
            } else {
                cast(&v, &DataType::UInt64)?
            };
            Ok(v)
        };
        let (a, b) = (bits(a)?, bits(b)?);
        let (a, b) = (a.as_primitive::<UInt64Type>(), b.as_primitive::<UInt64Type>());
        let out: Int32Array =
            (0..n).map(|i| (a.is_valid(i) && b.is_valid(i)).then(|| hamming(a.value(i), b.value(i)) as i32)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&HAMMING_DOC)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha1::{Digest, Sha1};

    use super::*;

    /// `fixtures/phash_reference.json`'s images: (JPEG bytes, SHA-1 of
    /// Pillow's RGB pixels, imagehash's phash, its dhash).
    fn reference() -> Vec<(Vec<u8>, String, String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/phash_reference.json");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let field = |image: &serde_json::Value, key: &str| image[key].as_str().unwrap().to_string();
        json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|image| {
                let jpeg = base64::engine::general_purpose::STANDARD.decode(field(image, "jpeg")).unwrap();
                (jpeg, field(image, "rgb_sha1"), field(image, "phash"), field(image, "dhash"))
            })
            .collect()
    }

    fn sha1_hex(bytes: &[u8]) -> String {
        Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn jpegs_decode_to_pillows_pixels_and_hash_to_imagehashs_bits() {
        let images = reference();
        assert_eq!(images.len(), 16);
        for (jpeg, rgb_sha1, phash_hex, dhash_hex) in &images {
            let (_, _, rgb) = pillow_jpeg::decode_rgb(jpeg).unwrap();
            assert_eq!(&sha1_hex(&rgb), rgb_sha1);
            assert_eq!(&format!("{:016x}", hash_image(Kind::Phash, jpeg).unwrap()), phash_hex);
            assert_eq!(&format!("{:016x}", hash_image(Kind::Dhash, jpeg).unwrap()), dhash_hex);
        }
        // The fixture tells the decoders apart: the image crate's pixels are
        // not Pillow's on these images.
        let image_crate = |jpeg: &[u8]| sha1_hex(image::load_from_memory(jpeg).unwrap().to_rgb8().as_raw());
        assert!(images.iter().all(|(jpeg, rgb_sha1, ..)| &image_crate(jpeg) != rgb_sha1));
    }
}
