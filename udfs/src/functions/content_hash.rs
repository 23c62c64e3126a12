//! `content_hash(input)`: xxh3-64 of a row's payload (the encoded image bytes
//! or the UTF-8 text). Exact duplicates share it, which is why it is a
//! column of its own and never the example id. NULL in, NULL out.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::decode::{text_bytes, ImageBytes};

/// The `content_hash` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ContentHash {
    signature: Signature,
}

impl Default for ContentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentHash {
    /// Builds the UDF.
    pub fn new() -> Self {
        Self { signature: Signature::any(1, Volatility::Immutable) }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "xxh3-64 hash of an image's encoded bytes or a text's UTF-8 bytes; exact duplicates share it.",
        "content_hash(img)",
    )
    .with_argument("input", "Image column (struct<bytes, path> or binary) or text column.")
    .build()
});

impl ScalarUDFImpl for ContentHash {
    fn name(&self) -> &str {
        "content_hash"
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
        let hashes: UInt64Array = match input.data_type() {
            DataType::Struct(_) | DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let bytes = ImageBytes::new(&input)?;
                (0..n).map(|i| bytes.get(i).map(xxh3_64)).collect()
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                (0..n).map(|i| text_bytes(input.as_ref(), i).map(xxh3_64)).collect()
            }
            other => return exec_err!("content_hash: unsupported input type {other}"),
        };
        Ok(ColumnarValue::Array(Arc::new(hashes) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
