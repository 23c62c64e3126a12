//! Batched inference over an Arrow input column: validate labels, decode
//! inputs in parallel, cut the batch into model micro-batches, and return
//! each row's logits or the reason it has none. Shared by the scoring UDF and
//! the proxy's held-out evaluation.

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use rayon::prelude::*;

use crate::decode::{decode_image, text_value, ImageBytes, RowError};
use crate::error::Result;
use crate::proxy::{Forward, Proxy};

/// Images per forward pass: large enough to keep the convolution GEMMs
/// efficient, small enough that activations stay in a few MB per layer.
pub const IMAGE_MICRO_BATCH: usize = 256;
/// Texts per forward pass; fastText inference is a gather and a tiny matmul.
pub const TEXT_MICRO_BATCH: usize = 4096;

/// The proxy's output for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Logits, one per class.
    pub logits: Vec<f32>,
    /// Penultimate features (the embedding).
    pub features: Vec<f32>,
    /// The row's label, validated against the proxy's classes; `None` when
    /// scoring without labels.
    pub label: Option<usize>,
}

/// Checks row `i`'s label: `Ok(None)` when there are no labels at all.
fn label_at(labels: Option<&Int64Array>, i: usize, classes: usize) -> Result<Option<usize>, RowError> {
    let Some(labels) = labels else { return Ok(None) };
    if labels.is_null(i) {
        return Err(RowError::NullLabel);
    }
    let label = labels.value(i);
    if label < 0 || label as usize >= classes {
        return Err(RowError::LabelOutOfRange { label, classes });
    }
    Ok(Some(label as usize))
}

/// Runs `proxy` over every row of `input`; one entry per row, in order.
pub fn predict(
    proxy: &Proxy,
    input: &ArrayRef,
    labels: Option<&Int64Array>,
) -> Result<Vec<Result<Prediction, RowError>>> {
    let n = input.len();
    let classes = proxy.num_classes();
    let mut out = Vec::with_capacity(n);
    match proxy.image_size() {
        Some(size) => {
            let bytes = ImageBytes::new(input)?;
            let pixels_per_image = size * size * 3;
            let mut pixels = vec![0u8; IMAGE_MICRO_BATCH.min(n) * pixels_per_image];
            for start in (0..n).step_by(IMAGE_MICRO_BATCH) {
                let end = (start + IMAGE_MICRO_BATCH).min(n);
                let status: Vec<Result<Option<usize>, RowError>> = pixels
                    .par_chunks_mut(pixels_per_image)
                    .zip(start..end)
                    .map(|(px, i)| {
                        let image = bytes.get(i).ok_or(RowError::NullInput)?;
                        decode_image(image, size, px)?;
                        label_at(labels, i, classes)
                    })
                    .collect();
                // Move the decodable images to the front so one contiguous
                // micro-batch goes through the model.
                let mut valid = 0;
                for (k, s) in status.iter().enumerate() {
                    if s.is_ok() {
                        if k != valid {
                            pixels.copy_within(k * pixels_per_image..(k + 1) * pixels_per_image, valid * pixels_per_image);
                        }
                        valid += 1;
                    }
                }
                let forward = proxy.forward_images(&pixels[..valid * pixels_per_image], valid)?;
                collect_rows(status, &forward, proxy, &mut out);
            }
        }
        None => {
            for start in (0..n).step_by(TEXT_MICRO_BATCH) {
                let end = (start + TEXT_MICRO_BATCH).min(n);
                let mut texts = Vec::with_capacity(end - start);
                let status: Vec<Result<Option<usize>, RowError>> = (start..end)
                    .map(|i| {
                        let text = text_value(input.as_ref(), i)?;
                        let label = label_at(labels, i, classes)?;
                        texts.push(text);
                        Ok(label)
                    })
                    .collect();
                let forward = proxy.forward_texts(&texts)?;
                collect_rows(status, &forward, proxy, &mut out);
            }
        }
    }
    Ok(out)
}

/// Pairs the valid rows of `status` with consecutive rows of the forward pass.
fn collect_rows(
    status: Vec<Result<Option<usize>, RowError>>,
    forward: &Forward,
    proxy: &Proxy,
    out: &mut Vec<Result<Prediction, RowError>>,
) {
    let mut logits = forward.logits.chunks_exact(proxy.num_classes());
    let mut features = forward.features.chunks_exact(proxy.feature_dim());
    for s in status {
        out.push(s.map(|label| Prediction {
            logits: logits.next().expect("one logit row per valid input").to_vec(),
            features: features.next().expect("one feature row per valid input").to_vec(),
            label,
        }));
    }
}
