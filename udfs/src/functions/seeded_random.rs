//! `seeded_random(seed, id)`: a uniform number in [0, 1) that depends only on
//! the seed and the example id, so the random-subset baseline is the same on
//! every run and for every partitioning, unlike SQL's `random()`.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The `seeded_random` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SeededRandom {
    signature: Signature,
}

impl Default for SeededRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl SeededRandom {
    /// Builds the UDF.
    pub fn new() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Deterministic pseudo-random number in [0, 1) from a seed and an example id (the random baseline).",
        "seeded_random(42, id)",
    )
    .with_argument("seed", "Integer seed (a literal).")
    .with_argument("id", "The example id: an integer or a string.")
    .build()
});

/// Maps 64 hash bits to [0, 1) with 53 bits of precision.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `seeded_random(seed, id)` of an integer id, for Rust code that must draw
/// what the SQL draws (the folds of cross-fitting).
pub fn seeded_unit(seed: u64, id: i64) -> f64 {
    unit(xxh3_64_with_seed(&id.to_le_bytes(), seed))
}

impl ScalarUDFImpl for SeededRandom {
    fn name(&self) -> &str {
        "seeded_random"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [seed, id] = take_function_args(self.name(), args.args)?;
        let seed = match seed {
            ColumnarValue::Scalar(s) if !s.is_null() => match s.cast_to(&DataType::Int64)? {
                datafusion::common::ScalarValue::Int64(Some(v)) => v as u64,
                _ => return exec_err!("seeded_random: the seed must be an integer"),
            },
            _ => return exec_err!("seeded_random: the seed must be a non-null literal"),
        };
        let id = id.into_array(n)?;
        let values: Float64Array = if id.data_type().is_integer() {
            let ids = cast(&id, &DataType::Int64)?;
            let ids = ids.as_primitive::<Int64Type>();
            (0..n).map(|i| ids.is_valid(i).then(|| seeded_unit(seed, ids.value(i)))).collect()
        } else {
            let ids = cast(&id, &DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            (0..n).map(|i| ids.is_valid(i).then(|| unit(xxh3_64_with_seed(ids.value(i).as_bytes(), seed)))).collect()
        };
        Ok(ColumnarValue::Array(Arc::new(values) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
