//! `proxy_scores(proxy, input, label)`: runs a trained proxy over each row
//! and returns a struct of its scores (Selection via Proxy, Coleman et al.,
//! ICLR 2020): `entropy`, `least_confidence`, `margin`, `el2n`, `loss`,
//! `grand`, `pred`, `correct`, `error` and the `embedding` (penultimate
//! features, `FixedSizeList<Float32>`). Higher = harder for every float score.
//!
//! ```text
//! +------------------+----------+-------+    +-------------------------------+
//! | img              | label    | ...   | -> | {entropy: 0.41, ..., error: ∅} |
//! | <undecodable>    | 3        |       |    | {entropy: ∅, ..., error: ...}  |
//! +------------------+----------+-------+    +-------------------------------+
//! ```
//!
//! # Performance
//! The proxy is loaded once per session (its [`crate::Models`] cache); each
//! DataFusion batch is decoded in parallel and cut into model micro-batches,
//! so every row costs one forward pass.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, FixedSizeListArray, Float32Array, Float32Builder, Int64Array, Int64Builder,
    StringBuilder, StructArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, internal_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use sieve_schemas::OutputColumns;

use crate::decode::RowError;
use crate::infer::{self, Prediction};
use crate::models::Models;
use sieve_proxy::artifact::Proxy;

/// The `proxy_scores` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProxyScores {
    signature: Signature,
    models: Models,
}

impl ProxyScores {
    /// Builds the UDF; any argument types, checked in `return_type`, loading its models through `models`.
    pub fn new(models: Models) -> Self {
        Self { signature: Signature::any(3, Volatility::Immutable), models }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Scores each row with a trained proxy (one forward pass): a struct of entropy, least_confidence, \
         margin, el2n, loss, grand (higher = harder), pred, correct, error ('reason: detail', why a row has no scores) \
         and embedding (the proxy's penultimate features). \
         Pass NULL as label for unlabeled rows: el2n, loss and correct are then null.",
        "proxy_scores('out/cifar10/proxy', img, label)",
    )
    .with_argument("proxy", "Directory of a proxy trained by `sieve train` (a string literal).")
    .with_argument("input", "Image column (struct<bytes, path> or binary) or text column.")
    .with_argument("label", "Integer class label, or NULL.")
    .build()
});

impl ScalarUDFImpl for ProxyScores {
    fn name(&self) -> &str {
        "proxy_scores"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("proxy_scores: the type depends on the proxy; return_field_from_args gives it")
    }

    /// The struct's embedding width depends on the proxy, which the literal
    /// first argument names, so the proxy is loaded (once) while planning.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let [_, _, label] = take_function_args(self.name(), args.arg_fields)?;
        if !(label.data_type().is_integer() || label.data_type().is_null()) {
            return plan_err!("proxy_scores: the label must be an integer or NULL, got {}", label.data_type());
        }
        // The type comes from proxy.json, not from loading the weights:
        // planning a job on a cluster's client and scheduler loads no model.
        let meta = self.models.literal_proxy_meta(self.name(), args.scalar_arguments.first().copied().flatten())?;
        let fields = OutputColumns::scores_struct_fields(meta.architecture.feature_dim(), meta.classes.len());
        Ok(Arc::new(Field::new(self.name(), DataType::Struct(fields), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [proxy, input, label] = take_function_args(self.name(), args.args)?;
        let proxy = match proxy {
            ColumnarValue::Scalar(s) => self.models.literal_proxy(self.name(), Some(&s))?,
            ColumnarValue::Array(_) => return exec_err!("proxy_scores: the proxy must be a literal, not a column"),
        };
        let input = input.into_array(n)?;
        let labels = match label {
            ColumnarValue::Scalar(ScalarValue::Null) => None,
            label => Some(cast(&label.into_array(n)?, &DataType::Int64)?),
        };
        let labels = labels.as_ref().map(|l| l.as_any().downcast_ref::<Int64Array>().expect("cast to Int64"));
        let predictions = self.models.install(|| infer::predict(&proxy, &input, labels))?;
        Ok(ColumnarValue::Array(Arc::new(scores_array(&predictions, &proxy)?)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The embeddings of `rows` as a `FixedSizeList<Float32>`; null where a row has no prediction.
pub fn embeddings_array(rows: &[Result<Prediction, RowError>], dim: usize) -> Result<FixedSizeListArray> {
    vectors_array(rows.iter().map(|r| r.as_ref().ok().map(|p| p.features.as_slice())), dim)
}

/// `dim`-wide vectors as a `FixedSizeList<Float32>` of the embedding's
/// type; null where `None`.
pub fn vectors_array<'a>(rows: impl Iterator<Item = Option<&'a [f32]>>, dim: usize) -> Result<FixedSizeListArray> {
    list_array(rows, dim, OutputColumns::embedding_field(dim))
}

/// `dim`-wide vectors as the `FixedSizeList<Float32>` column `field`; null where `None`.
fn list_array<'a>(
    rows: impl Iterator<Item = Option<&'a [f32]>>,
    dim: usize,
    field: Field,
) -> Result<FixedSizeListArray> {
    let mut values = Vec::with_capacity(rows.size_hint().0 * dim);
    let mut valid = Vec::with_capacity(rows.size_hint().0);
    for row in rows {
        match row {
            Some(v) => values.extend_from_slice(v),
            None => values.resize(values.len() + dim, 0.0),
        }
        valid.push(row.is_some());
    }
    let DataType::FixedSizeList(item, _) = field.data_type().clone() else {
        return internal_err!("{} is a FixedSizeList", field.name());
    };
    let nulls = NullBuffer::from(valid);
    Ok(FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), Some(nulls))?)
}

/// Builds the struct column from per-row predictions.
fn scores_array(rows: &[Result<Prediction, RowError>], proxy: &Proxy) -> Result<StructArray> {
    let n = rows.len();
    let classes = proxy.num_classes();
    let mut floats: Vec<Float32Builder> =
        (0..OutputColumns::FLOAT_SCORES.len()).map(|_| Float32Builder::with_capacity(n)).collect();
    let mut pred = Int64Builder::with_capacity(n);
    let mut correct = BooleanBuilder::with_capacity(n);
    let mut error = StringBuilder::new();
    let mut probs = vec![0.0f32; classes];
    let mut all_probs: Vec<Option<Vec<f32>>> = Vec::with_capacity(n);
    for row in rows {
        match row {
            Ok(p) => {
                let s = sieve_selection::scores::row_scores(&p.logits, p.label, &mut probs);
                all_probs.push(Some(probs.clone()));
                let grand = s.el2n.map(|e| sieve_selection::scores::grand(e, &p.features));
                let values = [Some(s.entropy), Some(s.least_confidence), Some(s.margin), s.el2n, s.loss, grand];
                for (b, v) in floats.iter_mut().zip(values) {
                    b.append_option(v);
                }
                pred.append_value(s.pred as i64);
                correct.append_option(p.label.map(|y| y == s.pred));
                error.append_null();
            }
            Err(e) => {
                all_probs.push(None);
                floats.iter_mut().for_each(|b| b.append_null());
                pred.append_null();
                correct.append_null();
                error.append_value(e.error_text());
            }
        }
    }
    let mut columns: Vec<ArrayRef> = floats.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    columns.push(Arc::new(pred.finish()));
    columns.push(Arc::new(correct.finish()));
    columns.push(Arc::new(error.finish()));
    columns.push(Arc::new(embeddings_array(rows, proxy.feature_dim())?));
    let probs_column =
        list_array(all_probs.iter().map(Option::as_deref), classes, OutputColumns::probs_field(classes))?;
    columns.push(Arc::new(probs_column));
    Ok(StructArray::try_new(OutputColumns::scores_struct_fields(proxy.feature_dim(), classes), columns, None)?)
}
