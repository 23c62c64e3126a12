//! Column roles and types: which Arrow types an input column of each kind may
//! have, and the columns sieve adds to its outputs.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SchemaError};

/// What the proxy reads from the input column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Encoded images (PNG or JPEG): `struct<bytes, path>` as the Hugging
    /// Face `Image` feature stores them, or Binary, LargeBinary, BinaryView.
    Image,
    /// Text: Utf8, LargeUtf8 or Utf8View (Binary is accepted and checked
    /// for UTF-8 row by row).
    Text,
}

impl InputKind {
    /// Checks that `data_type` can carry this kind of input.
    pub fn check(self, column: &str, data_type: &DataType) -> Result<()> {
        let ok = match self {
            InputKind::Image => match data_type {
                DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes" && is_binary(f.data_type())),
                other => is_binary(other),
            },
            InputKind::Text => is_text(data_type) || is_binary(data_type),
        };
        if ok {
            return Ok(());
        }
        Err(SchemaError::ColumnType {
            column: column.to_string(),
            role: "input",
            found: data_type.to_string(),
            expected: match self {
                InputKind::Image => "struct<bytes: binary, path: string>, Binary, LargeBinary or BinaryView",
                InputKind::Text => "Utf8, LargeUtf8, Utf8View or Binary",
            },
        })
    }
}

/// Binary, LargeBinary or BinaryView.
pub fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

/// Utf8, LargeUtf8 or Utf8View.
pub fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Checks that a label column holds integer class indices.
pub fn check_label(column: &str, data_type: &DataType) -> Result<()> {
    if data_type.is_integer() {
        return Ok(());
    }
    Err(SchemaError::ColumnType {
        column: column.to_string(),
        role: "label",
        found: data_type.to_string(),
        expected: "an integer class index",
    })
}

/// Finds `column` in `schema` or says which columns exist.
pub fn require<'a>(schema: &'a Schema, column: &str, role: &'static str, file: &str) -> Result<&'a Field> {
    schema.field_with_name(column).map_err(|_| SchemaError::MissingColumn {
        column: column.to_string(),
        role,
        file: file.to_string(),
        available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// The per-row outputs of the proxy, in the order they appear as columns.
/// Every float score means higher = harder / more informative.
pub struct OutputColumns;

impl OutputColumns {
    /// Predictive entropy of the softmax, in nats.
    pub const ENTROPY: &'static str = "entropy";
    /// 1 - max softmax probability (SVP's least confidence).
    pub const LEAST_CONFIDENCE: &'static str = "least_confidence";
    /// Margin score: 1 - (p_label - max other p), so higher = harder.
    pub const MARGIN: &'static str = "margin";
    /// EL2N: `||softmax - onehot(label)||_2`.
    pub const EL2N: &'static str = "el2n";
    /// Cross-entropy loss of the label.
    pub const LOSS: &'static str = "loss";
    /// Last-layer GraNd (Paul et al. 2021): `||p - y||_2 * sqrt(1 + ||h||^2)`,
    /// with `h` the penultimate features; the gradient norm of the loss with
    /// respect to the last layer's weights and bias.
    pub const GRAND: &'static str = "grand";
    /// The proxy's penultimate features, `FixedSizeList<Float32>`.
    pub const EMBEDDING: &'static str = "embedding";
    /// The proxy's class probabilities (its softmax), `FixedSizeList<Float32>`
    /// with one value per class: what confident learning and other tools read.
    pub const PROBS: &'static str = "probs";
    /// The predicted class.
    pub const PRED: &'static str = "pred";
    /// Whether the prediction equals the label.
    pub const CORRECT: &'static str = "correct";
    /// Why a row has no scores (undecodable input, bad label), else null.
    pub const ERROR: &'static str = "error";
    /// The selection decision.
    pub const KEEP: &'static str = "keep";
    /// The stable example id.
    pub const ID: &'static str = "id";
    /// xxh3-64 of the input payload; exact duplicates share it.
    pub const CONTENT_HASH: &'static str = "content_hash";
    /// A text row's MinHash signature (`FixedSizeList<UInt32>`), for
    /// near-duplicates.
    pub const MINHASH: &'static str = "minhash";
    /// An image row's perceptual hash (`UInt64`, imagehash's phash), for
    /// near-duplicates.
    pub const PHASH: &'static str = "phash";
    /// The id of the row a near-duplicate duplicates (its component's first
    /// row, the one kept); null for every other row.
    pub const NEAR_DUP_OF: &'static str = "near_dup_of";
    /// A text near-duplicate's estimated Jaccard similarity to that row.
    pub const NEAR_DUP_JACCARD: &'static str = "near_dup_jaccard";
    /// An image near-duplicate's Hamming distance (bits) to that row.
    pub const NEAR_DUP_BITS: &'static str = "near_dup_bits";
    /// How a training row duplicates an evaluation row (`exact` or `near`);
    /// null for a row that leaks nothing.
    pub const LEAK_KIND: &'static str = "leak_kind";
    /// The id of the evaluation row a leaking training row duplicates.
    pub const LEAK_OF: &'static str = "leak_of";
    /// How far the leaking row is from that evaluation row: 0 for an exact
    /// copy; for a near one the Hamming bits of the perceptual hashes
    /// (images) or 1 − the estimated Jaccard similarity (text).
    pub const LEAK_DISTANCE: &'static str = "leak_distance";

    /// The float scores, all "higher = harder".
    pub const FLOAT_SCORES: [&'static str; 6] =
        [Self::ENTROPY, Self::LEAST_CONFIDENCE, Self::MARGIN, Self::EL2N, Self::LOSS, Self::GRAND];

    /// Fields of the struct the scoring UDF returns, and of the score columns
    /// added to outputs: the float scores, then `pred`, `correct`, `error`.
    pub fn score_fields() -> Fields {
        let mut fields: Vec<Field> =
            Self::FLOAT_SCORES.iter().map(|n| Field::new(*n, DataType::Float32, true)).collect();
        fields.push(Field::new(Self::PRED, DataType::Int64, true));
        fields.push(Field::new(Self::CORRECT, DataType::Boolean, true));
        fields.push(Field::new(Self::ERROR, DataType::Utf8, true));
        Fields::from(fields)
    }

    /// The embedding column of a proxy whose features have `dim` values.
    pub fn embedding_field(dim: usize) -> Field {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        Field::new(Self::EMBEDDING, DataType::FixedSizeList(item, dim as i32), true)
    }

    /// The `probs` column of a proxy of `classes` classes.
    pub fn probs_field(classes: usize) -> Field {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        Field::new(Self::PROBS, DataType::FixedSizeList(item, classes as i32), true)
    }

    /// Fields of the struct the scoring UDF returns: [`Self::score_fields`],
    /// the embedding (`dim` values) and the probabilities (`classes`).
    pub fn scores_struct_fields(dim: usize, classes: usize) -> Fields {
        let mut fields: Vec<Field> = Self::score_fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Self::embedding_field(dim));
        fields.push(Self::probs_field(classes));
        Fields::from(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_columns_accept_the_hugging_face_struct_and_plain_binaries() {
        let hf = DataType::Struct(Fields::from(vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]));
        for t in [hf, DataType::Binary, DataType::LargeBinary, DataType::BinaryView] {
            InputKind::Image.check("img", &t).unwrap();
        }
        let err = InputKind::Image.check("img", &DataType::Utf8).unwrap_err().to_string();
        assert!(err.contains("img") && err.contains("Utf8"), "{err}");
    }

    #[test]
    fn missing_column_error_lists_existing_columns() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)]);
        let err = require(&schema, "c", "label", "x.parquet").unwrap_err().to_string();
        assert!(err.contains("a, b") && err.contains("x.parquet"), "{err}");
    }
}
