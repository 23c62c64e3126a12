//! A pretrained sentence encoder: all-MiniLM-L6-v2 (or any BERT checkpoint
//! laid out as sentence-transformers saves it) run through
//! candle-transformers' BERT, tokenized with the `tokenizers` crate, mean
//! pooled over the real tokens and L2-normalised, as sentence-transformers'
//! `Transformer -> Pooling(mean) -> Normalize` pipeline does. For text
//! datasets it replaces the proxy's features as the embedding that
//! prototypes, k-center and SemDeDup work on: a fastText proxy's features
//! know only the label, so near-duplicates by meaning do not fall together.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{ProxyError, Result};

/// Longest input in tokens (sentence-transformers' `max_seq_length` for
/// all-MiniLM-L6-v2); longer texts are truncated, as there.
const MAX_TOKENS: usize = 256;
/// Padded tokens per forward pass. Texts are sorted by length first, so a
/// pass holds texts of similar length and pads little.
const TOKENS_PER_PASS: usize = 4096;

/// A loaded sentence encoder.
pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    name: String,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("name", &self.name).field("dim", &self.dim).finish()
    }
}

fn encoder_err(dir: &Path, message: impl std::fmt::Display) -> ProxyError {
    ProxyError::Encoder { dir: dir.to_path_buf(), message: message.to_string() }
}

impl TextEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from
    /// `dir` (the layout `make models` writes).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(encoder_err(dir, format!("missing {name} (run `make models`)")))
            }
        };
        let config_text = std::fs::read_to_string(read("config.json")?)
            .map_err(|source| ProxyError::Io { path: dir.join("config.json"), source })?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| encoder_err(dir, format!("config.json: {e}")))?;
        let weights = read("model.safetensors")?;
        // SAFETY: the weights file is memory-mapped read-only; sieve never
        // writes to it while the encoder lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer = Tokenizer::from_file(read("tokenizer.json")?).map_err(|e| encoder_err(dir, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| encoder_err(dir, e))?;
        let name = dir.file_name().map_or_else(|| "encoder".to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Self { model, tokenizer, dim: config.hidden_size, name })
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The encoder's name (its directory's name), for manifests.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Embeds `texts`: `texts.len() x dim` floats, row-major, each row of
    /// unit length.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ProxyError::Encoder { dir: PathBuf::from(&self.name), message: e.to_string() })?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![0.0f32; texts.len() * self.dim];
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the pass's last text is its longest.
            let mut end = start + 1;
            while end < order.len() && (end + 1 - start) * ids[order[end]].len().max(1) <= TOKENS_PER_PASS {
                end += 1;
            }
            let pass: Vec<&[u32]> = order[start..end].iter().map(|&i| ids[i]).collect();
            let pooled = self.forward(&pass)?;
            for (k, &i) in order[start..end].iter().enumerate() {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&pooled[k * self.dim..(k + 1) * self.dim]);
            }
            start = end;
        }
        Ok(out)
    }

    /// One forward pass over token sequences padded to the longest:
    /// mean-pooled, normalised embeddings.
    fn forward(&self, ids: &[&[u32]]) -> Result<Vec<f32>> {
        let (b, len) = (ids.len(), ids.iter().map(|s| s.len()).max().unwrap_or(0).max(1));
        let mut flat = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, seq) in ids.iter().enumerate() {
            flat[r * len..r * len + seq.len()].copy_from_slice(seq);
            mask[r * len..r * len + seq.len()].fill(1);
        }
        let device = &Device::Cpu;
        let input = Tensor::from_vec(flat, (b, len), device)?;
        let mask = Tensor::from_vec(mask, (b, len), device)?;
        let hidden = self.model.forward(&input, &input.zeros_like()?, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?.clamp(1e-9, f32::MAX)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    /// The reference was computed once with Python sentence-transformers
    /// (fixtures/minilm_reference.py); `make test` fetches the model first.
    #[test]
    fn embeddings_match_sentence_transformers() {
        let dir = repo().join("models/all-MiniLM-L6-v2");
        let encoder = TextEncoder::load(&dir).expect("encoder in models/ (run `make models`)");
        let text = std::fs::read_to_string(repo().join("fixtures/minilm_reference.json")).unwrap();
        let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sentences: Vec<&str> =
            reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let ours = encoder.encode(&sentences).unwrap();
        assert_eq!(encoder.dim(), 384);
        for (i, expected) in reference["embeddings"].as_array().unwrap().iter().enumerate() {
            let expected: Vec<f32> = expected.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let got = &ours[i * 384..(i + 1) * 384];
            let c = cosine(got, &expected);
            assert!(c >= 0.999, "sentence {i}: cosine {c}");
            assert!((got.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit length");
        }
        // Batching with other lengths (padding) must not change a sentence's embedding.
        let alone = encoder.encode(&sentences[..1]).unwrap();
        assert!(cosine(&alone, &ours[..384]) > 0.99999);
    }

    #[test]
    fn a_missing_directory_names_the_fix() {
        let err = TextEncoder::load(Path::new("/nonexistent/encoder")).unwrap_err().to_string();
        assert!(err.contains("make models"), "{err}");
    }
}
