//! `proxy_embedding(proxy, input)`: the proxy's penultimate features of each
//! row, as `FixedSizeList<Float32>` — the embedding that k-center core-sets
//! (Sener & Savarese 2018, as SVP uses them), prototypes (Sorscher et al.
//! 2022) and SemDeDup (Abbas et al. 2023) work on. A row that cannot be
//! decoded gets NULL. `proxy_scores` returns the same embedding beside the
//! scores from the same forward pass; this function is for queries that want
//! only the embedding.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, internal_err, Result};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use sieve_schemas::OutputColumns;

use super::proxy_scores::embeddings_array;
use crate::infer;
use crate::models::Models;

/// The `proxy_embedding` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProxyEmbedding {
    signature: Signature,
    models: Models,
}

impl ProxyEmbedding {
    /// Builds the UDF, loading its models through `models`.
    pub fn new(models: Models) -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable), models }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "The proxy's penultimate features of each row (FixedSizeList<Float32>); NULL where the input cannot be decoded.",
        "proxy_embedding('out/cifar10/proxy', img)",
    )
    .with_argument("proxy", "Directory of a proxy trained by `sieve train` (a string literal).")
    .with_argument("input", "Image column (struct<bytes, path> or binary) or text column.")
    .build()
});

impl ScalarUDFImpl for ProxyEmbedding {
    fn name(&self) -> &str {
        "proxy_embedding"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("proxy_embedding: the width depends on the proxy; return_field_from_args gives it")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let meta = self.models.literal_proxy_meta(self.name(), args.scalar_arguments.first().copied().flatten())?;
        let field = OutputColumns::embedding_field(meta.architecture.feature_dim());
        Ok(Arc::new(Field::new(self.name(), field.data_type().clone(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [proxy, input] = take_function_args(self.name(), args.args)?;
        let proxy = match proxy {
            ColumnarValue::Scalar(s) => self.models.literal_proxy(self.name(), Some(&s))?,
            ColumnarValue::Array(_) => return exec_err!("proxy_embedding: the proxy must be a literal, not a column"),
        };
        let input = input.into_array(n)?;
        let predictions = self.models.install(|| infer::predict(&proxy, &input, None))?;
        Ok(ColumnarValue::Array(Arc::new(embeddings_array(&predictions, proxy.feature_dim())?)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
