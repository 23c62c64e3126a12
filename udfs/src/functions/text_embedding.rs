//! `text_embedding(encoder, text)`: each row's sentence embedding from a
//! pretrained encoder (all-MiniLM-L6-v2 by default, see
//! [`sieve_proxy::text_encoder`]), as `FixedSizeList<Float32>` of unit
//! length. Null, empty or non-UTF-8 text gets NULL.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, internal_err, Result};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use sieve_schemas::OutputColumns;

use super::proxy_scores::vectors_array;
use crate::decode::text_value;
use crate::models::Models;
use crate::UdfError;

/// The `text_embedding` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextEmbedding {
    signature: Signature,
    models: Models,
}

impl TextEmbedding {
    /// Builds the UDF, loading its models through `models`.
    pub fn new(models: Models) -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable), models }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Sentence embedding of each text from a pretrained encoder (mean-pooled, unit length, \
         FixedSizeList<Float32>); NULL for null, empty or non-UTF-8 text.",
        "text_embedding('models/all-MiniLM-L6-v2', sentence)",
    )
    .with_argument("encoder", "Directory of the encoder (`make models` writes models/all-MiniLM-L6-v2).")
    .with_argument("text", "Text column (Utf8, LargeUtf8, Utf8View or UTF-8 binary).")
    .build()
});

impl ScalarUDFImpl for TextEmbedding {
    fn name(&self) -> &str {
        "text_embedding"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("text_embedding: the width depends on the encoder; return_field_from_args gives it")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let encoder = self.models.literal_encoder(self.name(), args.scalar_arguments.first().copied().flatten())?;
        let field = OutputColumns::embedding_field(encoder.dim());
        Ok(Arc::new(Field::new(self.name(), field.data_type().clone(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [encoder, text] = take_function_args(self.name(), args.args)?;
        let encoder = match encoder {
            ColumnarValue::Scalar(s) => self.models.literal_encoder(self.name(), Some(&s))?,
            ColumnarValue::Array(_) => return exec_err!("text_embedding: the encoder must be a literal, not a column"),
        };
        let text = text.into_array(n)?;
        let texts: Vec<Option<&str>> = (0..n).map(|i| text_value(text.as_ref(), i).ok()).collect();
        let valid: Vec<&str> = texts.iter().flatten().copied().collect();
        let vectors = self.models.install(|| encoder.encode(&valid)).map_err(UdfError::from)?;
        let dim = encoder.dim();
        let mut next = vectors.chunks_exact(dim);
        let rows = texts.iter().map(|t| t.and_then(|_| next.next()));
        Ok(ColumnarValue::Array(Arc::new(vectors_array(rows, dim)?)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
