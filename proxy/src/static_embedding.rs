//! Static sentence embeddings distilled from a sentence encoder, as model2vec
//! distills them (Tulkens & van Dongen 2024,
//! <https://github.com/MinishLab/model2vec>): every token of the encoder's
//! vocabulary is embedded on its own (`[CLS] token [SEP]` through the
//! encoder, mean pooled), the vectors are reduced by PCA to `dims`
//! components and weighted by SIF, `a / (a + p)` with `a = 1e-4` and the
//! token's probability `p` estimated by Zipf's law from its rank in the
//! vocabulary. A sentence is then the mean of its tokens' vectors,
//! L2-normalised: a lookup and a sum per token, no attention, so it embeds
//! tens of thousands of sentences a second where the encoder embeds
//! hundreds, and agrees with it only roughly (measured in the README).
//!
//! The directory is model2vec's layout, so its published models load too:
//! `model.safetensors` with one tensor `embeddings` (vocabulary x dims),
//! the encoder's `tokenizer.json`, and a `config.json` whose `model_type` is
//! `model2vec`. Unlike model2vec's distillation, the tokens BERT keeps as
//! placeholders (`[unused0]` ...) stay in the table: no text produces them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ProxyError, Result};

/// The name of the table in `model.safetensors`, as model2vec writes it.
const TABLE: &str = "embeddings";
/// SIF's `a` (model2vec's default `sif_coefficient`).
const SIF: f64 = 1e-4;
/// Tokens a sentence is cut to (model2vec's default `max_length`).
pub const MAX_TOKENS: usize = 512;
/// The `model_type` of a static model's `config.json`.
pub const MODEL_TYPE: &str = "model2vec";

/// `config.json` of a static model: the fields model2vec writes, of which
/// sieve reads `model_type`, `hidden_dim` and `normalize`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaticConfig {
    /// Always [`MODEL_TYPE`].
    pub model_type: String,
    /// `["StaticModel"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// The encoder it was distilled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_name: Option<String>,
    /// PCA components kept at distillation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_pca: Option<usize>,
    /// SIF's `a`, when the vectors were weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sif_coefficient: Option<f64>,
    /// Width of a vector.
    pub hidden_dim: usize,
    /// Whether a sentence's mean vector is scaled to unit length.
    #[serde(default)]
    pub normalize: bool,
    /// How the encoder's outputs were pooled at distillation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
}

/// A loaded table of token vectors.
#[derive(Clone, Debug)]
pub struct StaticTable {
    vectors: Vec<f32>,
    dim: usize,
    normalize: bool,
}

impl StaticTable {
    /// Reads `model.safetensors` of a static model whose `config.json` is
    /// `config` (f32 or f16 tables).
    pub fn load(dir: &Path, config: &StaticConfig) -> Result<Self> {
        let path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let table = tensors.get(TABLE).ok_or_else(|| ProxyError::Encoder {
            dir: dir.to_path_buf(),
            message: format!("model.safetensors holds no `{TABLE}` tensor"),
        })?;
        let (_, dim) = table.dims2()?;
        if dim != config.hidden_dim {
            return Err(ProxyError::Encoder {
                dir: dir.to_path_buf(),
                message: format!("config.json says hidden_dim {}, the table is {dim} wide", config.hidden_dim),
            });
        }
        let vectors = table.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { vectors, dim, normalize: config.normalize })
    }

    /// Width of a vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The sentence of token `ids` into `out` (`dim` floats): the mean of
    /// the first [`MAX_TOKENS`] ids' vectors, normalised when the model says
    /// so; zeros for no tokens. Ids outside the table are skipped.
    pub fn embed(&self, ids: impl IntoIterator<Item = u32>, out: &mut [f32]) {
        out.fill(0.0);
        let mut count = 0usize;
        for id in ids.into_iter().take(MAX_TOKENS) {
            if let Some(row) = self.vectors.get(id as usize * self.dim..(id as usize + 1) * self.dim) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
                count += 1;
            }
        }
        if count == 0 {
            return;
        }
        let scale = if self.normalize {
            let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                1.0 / norm
            } else {
                0.0
            }
        } else {
            1.0 / count as f32
        };
        out.iter_mut().for_each(|v| *v *= scale);
    }
}

/// What distillation did, for the log.
#[derive(Clone, Debug, Serialize)]
pub struct Distilled {
    /// Tokens embedded.
    pub vocabulary: usize,
    /// Width of the encoder's vectors.
    pub encoder_dim: usize,
    /// Components kept.
    pub dims: usize,
    /// Share of the token vectors' variance the kept components explain.
    pub explained_variance: f64,
}

/// Distills `vectors` (`vocabulary x width` token vectors of the encoder,
/// row `i` the token of id `i`) into a static model of `dims` components
/// written to `out` with `tokenizer_json` (the encoder's tokenizer file)
/// and a `config.json` naming `source`.
pub fn distill(
    vectors: &[f32],
    width: usize,
    dims: usize,
    tokenizer_json: &Path,
    source: &str,
    out: &Path,
) -> Result<Distilled> {
    let vocabulary = vectors.len() / width;
    if dims == 0 || dims > width || vocabulary <= dims {
        return Err(ProxyError::Encoder {
            dir: out.to_path_buf(),
            message: format!("{dims} components from {vocabulary} vectors of width {width}: need 1 <= dims <= width"),
        });
    }
    let (components, explained_variance) = principal_components(vectors, width, dims)?;
    let x = Tensor::from_slice(vectors, (vocabulary, width), &Device::Cpu)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let projected = centred.matmul(&Tensor::from_vec(components, (width, dims), &Device::Cpu)?)?;
    let mut table = projected.flatten_all()?.to_vec1::<f32>()?;
    // A component's sign is arbitrary; model2vec fixes it so that its
    // largest value (in magnitude) is positive, and so does this.
    let signs: Vec<f32> = (0..dims)
        .map(|j| {
            let column = table.iter().skip(j).step_by(dims);
            let largest = column.copied().max_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap_or(1.0);
            if largest < 0.0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    // Zipf: the token of rank r (its position in the vocabulary, from 2 as
    // model2vec counts) has probability proportional to 1 / r.
    let harmonic: f64 = (0..vocabulary).map(|i| 1.0 / (i + 2) as f64).sum();
    for (i, row) in table.chunks_mut(dims).enumerate() {
        let weight = (SIF / (SIF + 1.0 / ((i + 2) as f64 * harmonic))) as f32;
        row.iter_mut().zip(&signs).for_each(|(v, s)| *v *= weight * s);
    }
    let table = Tensor::from_vec(table, (vocabulary, dims), &Device::Cpu)?;
    let config = StaticConfig {
        model_type: MODEL_TYPE.into(),
        architectures: vec!["StaticModel".into()],
        tokenizer_name: Some(source.into()),
        apply_pca: Some(dims),
        sif_coefficient: Some(SIF),
        hidden_dim: dims,
        normalize: true,
        pooling: Some("mean".into()),
    };
    let io = |path: PathBuf| move |source| ProxyError::Io { path, source };
    candle_core::safetensors::save(&HashMap::from([(TABLE.to_string(), table)]), out.join("model.safetensors"))?;
    std::fs::copy(tokenizer_json, out.join("tokenizer.json")).map_err(io(tokenizer_json.to_path_buf()))?;
    let config_path = out.join("config.json");
    let text = serde_json::to_string_pretty(&config).expect("a config serialises");
    std::fs::write(&config_path, text).map_err(io(config_path.clone()))?;
    Ok(Distilled { vocabulary, encoder_dim: width, dims, explained_variance })
}

/// The `dims` leading principal components of the rows of `vectors`
/// (`width x dims`, row-major, each column a unit eigenvector of the
/// covariance, the largest eigenvalue first) and the share of the variance
/// they explain.
fn principal_components(vectors: &[f32], width: usize, dims: usize) -> Result<(Vec<f32>, f64)> {
    let n = vectors.len() / width;
    let x = Tensor::from_slice(vectors, (n, width), &Device::Cpu)?.to_dtype(DType::F64)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let covariance = (centred.t()?.matmul(&centred)? / (n - 1) as f64)?;
    let covariance = nalgebra::DMatrix::from_row_slice(width, width, &covariance.flatten_all()?.to_vec1::<f64>()?);
    let eigen = covariance.symmetric_eigen();
    let mut order: Vec<usize> = (0..width).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let total: f64 = eigen.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let kept: f64 = order[..dims].iter().map(|&k| eigen.eigenvalues[k].max(0.0)).sum();
    let mut components = vec![0f32; width * dims];
    for (j, &k) in order[..dims].iter().enumerate() {
        for i in 0..width {
            components[i * dims + j] = eigen.eigenvectors[(i, k)] as f32;
        }
    }
    Ok((components, if total > 0.0 { kept / total } else { 0.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_components_find_the_directions_of_largest_variance() {
        use rand::{Rng, SeedableRng};
        // Rows spread 10 along (1, 1, 0) / sqrt 2, 1 along z, 0.1 along (1, -1, 0).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rows = Vec::new();
        for _ in 0..4000 {
            let (a, b, c): (f32, f32, f32) =
                (rng.random_range(-10.0..10.0), rng.random_range(-1.0..1.0), rng.random_range(-0.1..0.1));
            rows.extend([a + c, a - c, b]);
        }
        let (pc, explained) = principal_components(&rows, 3, 2).unwrap();
        let first = [pc[0], pc[2], pc[4]];
        let second = [pc[1], pc[3], pc[5]];
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((first[0].abs() - h).abs() < 1e-3 && (first[1] - first[0]).abs() < 1e-3, "{first:?}");
        assert!(first[2].abs() < 1e-2 && second[2].abs() > 0.999, "{first:?} {second:?}");
        assert!(explained > 0.99 && explained < 1.0, "{explained}");
    }

    #[test]
    fn a_sentence_is_the_normalised_mean_of_its_tokens() {
        let table = StaticTable { vectors: vec![1.0, 0.0, 0.0, 2.0, 2.0, 4.0], dim: 2, normalize: true };
        let mut out = [0.0; 2];
        table.embed([0, 2, 99], &mut out);
        assert_eq!(out, [0.6, 0.8], "(1,0) + (2,4) + nothing for id 99, normalised");
        table.embed([], &mut out);
        assert_eq!(out, [0.0, 0.0]);
        let plain = StaticTable { normalize: false, ..table };
        plain.embed([1, 2], &mut out);
        assert_eq!(out, [1.0, 3.0]);
    }
}
