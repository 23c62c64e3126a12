//! `band_keys(hash, bands [, rows])`: the keys under which a row is a
//! near-duplicate candidate, as `List<UInt64>`: two rows that share a key
//! are compared. For a MinHash signature, one key per band of `rows` values
//! ([`sieve_neardup::lsh::Banding`]); for a 64-bit perceptual hash, one per
//! band of bits ([`sieve_neardup::phash::hamming_bands`]: hashes within
//! `bands - 1` bits share one). `unnest` and `GROUP BY` the keys to find
//! the candidate pairs.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, UInt32Type, UInt64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use sieve_neardup::lsh::Banding;
use sieve_neardup::phash::hamming_bands;

/// The `band_keys` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BandKeys {
    signature: Signature,
}

impl Default for BandKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl BandKeys {
    /// Builds the UDF.
    pub fn new() -> Self {
        Self { signature: Signature::one_of(vec![TypeSignature::Any(2), TypeSignature::Any(3)], Volatility::Immutable) }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Candidate keys of a near-duplicate search, List<UInt64>: one per LSH band of a minhash signature \
         (bands of `rows` values), or one per band of bits of a 64-bit phash/dhash (hashes within bands - 1 \
         bits share a key).",
        "band_keys(minhash, 9, 13), band_keys(phash, 7)",
    )
    .with_argument("hash", "A `minhash` signature or a 64-bit hash.")
    .with_argument("bands", "Bands (a literal).")
    .with_argument("rows", "Signature values per band, for a minhash (a literal).")
    .build()
});

/// Literal argument `i` as a positive integer.
fn positive(args: &[ColumnarValue], i: usize) -> Result<usize> {
    match args.get(i) {
        Some(ColumnarValue::Scalar(s)) => match s.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(v))) if v > 0 => Ok(v as usize),
            _ => exec_err!("band_keys: argument {} must be a positive integer", i + 1),
        },
        Some(ColumnarValue::Array(_)) => exec_err!("band_keys: argument {} must be a literal", i + 1),
        None => exec_err!("band_keys: a minhash signature needs the rows per band"),
    }
}

impl ScalarUDFImpl for BandKeys {
    fn name(&self) -> &str {
        "band_keys"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", DataType::UInt64, true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let bands = positive(&args.args, 1)?;
        let hash = args.args[0].clone().into_array(n)?;
        let mut out = ListBuilder::new(UInt64Builder::new());
        match hash.data_type() {
            DataType::FixedSizeList(item, width) if item.data_type() == &DataType::UInt32 => {
                let rows = positive(&args.args, 2)?;
                if bands * rows > *width as usize {
                    return exec_err!("band_keys: {bands} bands of {rows} exceed the signature's {width} values");
                }
                let banding = Banding { bands, rows };
                let list = hash.as_fixed_size_list();
                let values = list.values().as_primitive::<UInt32Type>().values();
                for i in 0..n {
                    if list.is_valid(i) {
                        let start = list.value_offset(i) as usize;
                        out.values().extend(banding.keys(&values[start..start + *width as usize]).map(Some));
                    }
                    out.append(list.is_valid(i));
                }
            }
            DataType::UInt64 | DataType::Int64 => {
                if bands > 64 {
                    return exec_err!("band_keys: a 64-bit hash has at most 64 bands");
                }
                let hashes: Vec<Option<u64>> = match hash.data_type() {
                    DataType::UInt64 => hash.as_primitive::<UInt64Type>().iter().collect(),
                    _ => hash.as_primitive::<Int64Type>().iter().map(|v| v.map(|x| x as u64)).collect(),
                };
                for h in hashes {
                    if let Some(h) = h {
                        out.values().extend(hamming_bands(h, bands).map(Some));
                    }
                    out.append(h.is_some());
                }
            }
            other => return exec_err!("band_keys: a minhash signature or a 64-bit hash, not {other}"),
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
