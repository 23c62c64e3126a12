//! Batched inference over an Arrow input column: validate labels, decode
//! inputs in parallel, cut the batch into model micro-batches (sized to the
//! device, [`sieve_proxy::device::image_micro_batch`]), and return
//! each row's logits or the reason it has none. Shared by the scoring UDF and
//! the proxy's held-out evaluation.

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use rayon::prelude::*;

use crate::decode::{decode_image, text_value, ImageBytes, RowError};
use crate::error::Result;
use sieve_proxy::artifact::{Forward, Proxy};

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
            let micro = proxy.image_micro_batch();
            let pixels_per_image = size * size * 3;
            let mut pixels = vec![0u8; micro.min(n) * pixels_per_image];
            let starts: Vec<usize> = (0..n).step_by(micro).collect();
            let decode = |start: usize, pixels: &mut [u8]| {
                decode_images(&bytes, labels, classes, size, start..(start + micro).min(n), pixels)
            };
            // Micro-batch k+1 is decoded while the device runs k's forward
            // pass (on the CPU the two alternate on the same threads).
            let mut next = starts.first().map(|&start| decode(start, &mut pixels));
            for k in 0..starts.len() {
                let (status, valid) = next.take().expect("micro-batch k is decoded before its pass");
                let launched = proxy.launch_images(&pixels[..valid * pixels_per_image], valid)?;
                next = starts.get(k + 1).map(|&start| decode(start, &mut pixels));
                collect_rows(status, &launched.read()?, proxy, &mut out);
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

/// Decodes rows `range` of `bytes` into `pixels` in parallel and checks
/// their labels: each row's status, and how many decodable rows now lie
/// at the front of `pixels`, in order, for one contiguous forward pass.
fn decode_images(
    bytes: &ImageBytes,
    labels: Option<&Int64Array>,
    classes: usize,
    size: usize,
    range: std::ops::Range<usize>,
    pixels: &mut [u8],
) -> (Vec<Result<Option<usize>, RowError>>, usize) {
    let pixels_per_image = size * size * 3;
    let status: Vec<Result<Option<usize>, RowError>> = pixels
        .par_chunks_mut(pixels_per_image)
        .zip(range)
        .map(|(px, i)| {
            let image = bytes.get(i).ok_or(RowError::NullInput)?;
            decode_image(image, size, px)?;
            label_at(labels, i, classes)
        })
        .collect();
    let mut valid = 0;
    for (k, s) in status.iter().enumerate() {
        if s.is_ok() {
            if k != valid {
                pixels.copy_within(k * pixels_per_image..(k + 1) * pixels_per_image, valid * pixels_per_image);
            }
            valid += 1;
        }
    }
    (status, valid)
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
