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
/// do not decode.
pub fn hash_image(kind: Kind, bytes: &[u8]) -> Option<u64> {
    let rgb = image::load_from_memory(bytes).ok()?.to_rgb8();
    let gray = Gray::from_rgb(rgb.width() as usize, rgb.height() as usize, rgb.as_raw());
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
