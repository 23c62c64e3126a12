//! Training examples in a seeded random order without holding the dataset:
//! either streamed (row groups visited in a shuffled order, rows passed
//! through a bounded shuffle buffer, as `tf.data`'s `shuffle(buffer)` does),
//! so memory is bounded by the buffer, or, for a training split small enough
//! to hold ([`cached`], under the recipe's `cache_bytes` of payload), read once and
//! shuffled whole each epoch by the trainer.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sieve_schemas::InputKind;
use sieve_udfs::decode::{text_bytes, ImageBytes};

use crate::error::{PipelineError, Result};
use crate::input::Chunk;
use crate::plan::DatasetPlan;

/// One row as the trainer sees it: the encoded payload (image bytes or UTF-8
/// text) and the label, either of which may be missing.
#[derive(Clone, Debug)]
pub struct Example {
    /// Input position, the example's identity for training dynamics.
    pub pos: u64,
    /// Image bytes or text bytes; `None` when the input is null.
    pub payload: Option<Vec<u8>>,
    /// The label; `None` when null.
    pub label: Option<i64>,
}

/// Read access to the encoded payload of each row of an input column: the
/// image bytes (whatever the image column's layout) or the text's bytes.
pub enum Payloads<'a> {
    /// An image column.
    Image(ImageBytes<'a>),
    /// A text (or binary text) column.
    Text(&'a dyn Array),
}

impl<'a> Payloads<'a> {
    /// Wraps the input column of a dataset of `kind`.
    pub fn new(kind: InputKind, input: &'a ArrayRef) -> Result<Self> {
        Ok(match kind {
            InputKind::Image => Self::Image(ImageBytes::new(input)?),
            InputKind::Text => Self::Text(input.as_ref()),
        })
    }

    /// The payload of row `i`; `None` when it is null.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            Self::Image(images) => images.get(i),
            Self::Text(text) => text_bytes(*text, i),
        }
    }
}

/// Every training row of `dataset` (those of its `subset`), in input order,
/// when their payloads add up to at most `limit` bytes; `None` when they do
/// not, after reading at most `limit` bytes of them.
pub fn cached(dataset: &DatasetPlan, limit: usize) -> Result<Option<Vec<Example>>> {
    let (mut rows, mut bytes) = (Vec::new(), 0usize);
    let read = for_each_row(dataset, &dataset.train.chunks(), |example| {
        bytes += example.payload.as_ref().map_or(0, Vec::len);
        if bytes > limit {
            return Err(PipelineError::ReaderStopped);
        }
        rows.push(example);
        Ok(())
    });
    match read {
        Ok(()) => Ok(Some(rows)),
        Err(PipelineError::ReaderStopped) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Calls `f` on every training row of `dataset` (those of its `subset`) in
/// the row groups `chunks`, in their order.
fn for_each_row(dataset: &DatasetPlan, chunks: &[Chunk], mut f: impl FnMut(Example) -> Result<()>) -> Result<()> {
    let columns = [dataset.input_column.clone(), dataset.label_column.clone()];
    let subset = dataset.subset.as_deref();
    dataset.train.for_each_batch(chunks, Some(&columns), |batch| {
        let labels = cast(batch.column(1), &DataType::Int64)?;
        let labels = labels.as_primitive::<Int64Type>();
        let positions = batch.column(2).as_primitive::<Int64Type>();
        let payloads = Payloads::new(dataset.kind, batch.column(0))?;
        for i in 0..batch.num_rows() {
            if subset.is_some_and(|s| !s.contains(positions.value(i) as u64)) {
                continue;
            }
            f(Example {
                pos: positions.value(i) as u64,
                payload: payloads.get(i).map(<[u8]>::to_vec),
                label: labels.is_valid(i).then(|| labels.value(i)),
            })?;
        }
        Ok(())
    })
}

/// Calls `f` once on every training row of `dataset` (those of its
/// `subset`, when it has one), in an order drawn from `rng` through a
/// shuffle buffer of `buffer_rows` rows.
pub fn for_each_shuffled(
    dataset: &DatasetPlan,
    buffer_rows: usize,
    rng: &mut ChaCha8Rng,
    mut f: impl FnMut(Example) -> Result<()>,
) -> Result<()> {
    let mut chunks = dataset.train.chunks();
    chunks.shuffle(rng);
    let mut buffer: Vec<Example> = Vec::with_capacity(buffer_rows.min(dataset.train_rows() as usize));
    for_each_row(dataset, &chunks, |example| {
        if buffer.len() < buffer_rows {
            buffer.push(example);
        } else {
            let k = rng.random_range(0..buffer.len());
            f(std::mem::replace(&mut buffer[k], example))?;
        }
        Ok(())
    })?;
    buffer.shuffle(rng);
    buffer.into_iter().try_for_each(f)
}
