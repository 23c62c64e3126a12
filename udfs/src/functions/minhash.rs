//! `minhash(text [, num_perm [, shingle [, seed]]])`: the MinHash signature
//! of a text's word shingles ([`sieve_neardup::minhash`]), and
//! `minhash_jaccard(a, b)`: the Jaccard similarity two signatures estimate.
//! NULL, empty and non-UTF-8 text give a NULL signature.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use sieve_neardup::minhash::{jaccard, MinHasher, DEFAULT_PERMUTATIONS, DEFAULT_SEED, DEFAULT_SHINGLE};

use crate::decode::text_value;

/// The `minhash` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MinHash {
    signature: Signature,
}

impl Default for MinHash {
    fn default() -> Self {
        Self::new()
    }
}

impl MinHash {
    /// Builds the UDF.
    pub fn new() -> Self {
        let arities = (1..=4).map(TypeSignature::Any).collect();
        Self { signature: Signature::one_of(arities, Volatility::Immutable) }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "MinHash signature of a text's word shingles (split on whitespace, lowercased), as FixedSizeList<UInt32>, \
         equal to datasketch 2.0's MinHash of the same shingles and seed; the fraction of equal positions of two signatures estimates the Jaccard similarity of their shingle sets.",
        "minhash(sentence), minhash(sentence, 128, 3, 1)",
    )
    .with_argument("text", "Text column (Utf8, LargeUtf8, Utf8View or UTF-8 binary).")
    .with_argument("num_perm", "Permutations, the signature's length (a literal; default 128).")
    .with_argument("shingle", "Words per shingle (a literal; default 3).")
    .with_argument("seed", "Seed of the permutations, below 2^32 (a literal; default 1, datasketch's default).")
    .build()
});

/// The literal integer argument `i` of `name`, or `default` when absent.
fn literal_arg(name: &str, args: &[Option<&ScalarValue>], i: usize, default: u64) -> Result<u64> {
    if i >= args.len() {
        return Ok(default);
    }
    match args[i].map(|v| v.cast_to(&DataType::Int64)) {
        Some(Ok(ScalarValue::Int64(Some(v)))) if v > 0 || (i == 3 && v >= 0) => Ok(v as u64),
        Some(_) => plan_err!("{name}: argument {} must be a positive integer literal", i + 1),
        None => plan_err!("{name}: argument {} must be a literal, not a column", i + 1),
    }
}

/// The hasher the literal arguments describe.
fn hasher(name: &str, args: &[Option<&ScalarValue>]) -> Result<MinHasher> {
    let num_perm = literal_arg(name, args, 1, DEFAULT_PERMUTATIONS as u64)?;
    let shingle = literal_arg(name, args, 2, DEFAULT_SHINGLE as u64)?;
    let seed = literal_arg(name, args, 3, DEFAULT_SEED as u64)?;
    if num_perm > 4096 {
        return plan_err!("{name}: at most 4096 permutations");
    }
    let Ok(seed) = u32::try_from(seed) else {
        return plan_err!("{name}: the seed must be below 2^32 (NumPy's RandomState seeds, as datasketch's)");
    };
    Ok(MinHasher::new(num_perm as usize, shingle as usize, seed))
}

/// The type of a signature of `num_perm` values.
pub fn signature_type(num_perm: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::UInt32, false)), num_perm as i32)
}

impl ScalarUDFImpl for MinHash {
    fn name(&self) -> &str {
        "minhash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        datafusion::common::internal_err!("minhash: the width is an argument; return_field_from_args gives it")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let hasher = hasher(self.name(), args.scalar_arguments)?;
        Ok(Arc::new(Field::new(self.name(), signature_type(hasher.num_perm()), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let literals: Vec<Option<ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let refs: Vec<Option<&ScalarValue>> = literals.iter().map(Option::as_ref).collect();
        let hasher = hasher(self.name(), &refs)?;
        let text = args.args[0].clone().into_array(n)?;
        let width = hasher.num_perm();
        let mut values = vec![0u32; n * width];
        let valid: Vec<bool> = values
            .chunks_exact_mut(width)
            .enumerate()
            .map(|(i, out)| text_value(text.as_ref(), i).is_ok_and(|t| hasher.signature_into(t, out)))
            .collect();
        let item = Arc::new(Field::new("item", DataType::UInt32, false));
        let list = FixedSizeListArray::try_new(
            item,
            width as i32,
            Arc::new(UInt32Array::from(values)),
            Some(NullBuffer::from(valid)),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The `minhash_jaccard` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MinHashJaccard {
    signature: Signature,
}

impl Default for MinHashJaccard {
    fn default() -> Self {
        Self::new()
    }
}

impl MinHashJaccard {
    /// Builds the UDF.
    pub fn new() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

static JACCARD_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "The Jaccard similarity two MinHash signatures of one hasher estimate: the fraction of equal positions.",
        "minhash_jaccard(a.minhash, b.minhash)",
    )
    .with_argument("a", "A signature (`minhash`).")
    .with_argument("b", "Another, of the same length.")
    .build()
});

impl ScalarUDFImpl for MinHashJaccard {
    fn name(&self) -> &str {
        "minhash_jaccard"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [a, b] = take_function_args(self.name(), args.args)?;
        let (a, b) = (a.into_array(n)?, b.into_array(n)?);
        let (Some(a), Some(b)) = (a.as_fixed_size_list_opt(), b.as_fixed_size_list_opt()) else {
            return exec_err!("minhash_jaccard: both arguments must be minhash signatures");
        };
        if a.value_length() != b.value_length() || a.values().data_type() != &DataType::UInt32 {
            return exec_err!("minhash_jaccard: signatures of different lengths or types");
        }
        let w = a.value_length() as usize;
        let (va, vb) =
            (a.values().as_primitive::<UInt32Type>().values(), b.values().as_primitive::<UInt32Type>().values());
        let out: Float32Array = (0..n)
            .map(|i| {
                (a.is_valid(i) && b.is_valid(i)).then(|| {
                    let (ia, ib) = (a.value_offset(i) as usize, b.value_offset(i) as usize);
                    jaccard(&va[ia..ia + w], &vb[ib..ib + w]) as f32
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&JACCARD_DOC)
    }
}
