//! BERT's encoder (all-MiniLM-L6-v2, or any checkpoint of that architecture
//! with absolute positions and exact GELU), for inference on the CPU, run on
//! *packed* token sequences: the sequences of a pass lie end to end in one
//! `tokens x hidden` matrix, with no padding and no attention mask.
//!
//! Per layer, on that matrix (the products through `gemm`; one pass on one
//! thread, passes in parallel):
//!
//! ```text
//! qkv   = x W_qkv + b_qkv                 one product for the three projections;
//!                                          W_q, b_q pre-scaled by 1/sqrt(head size)
//! ctx   = softmax(q k^T) v                per sequence and head, in registers
//! x1    = LayerNorm(x + b_o + ctx W_o)    the product accumulates onto x + b_o
//! x     = LayerNorm(x1 + b_2 + GELU(x1 W_1 + b_1) W_2)
//! ```
//!
//! The elementwise work (GELU, softmax, layer norm) runs vectorised
//! (`vector_math`). candle's BERT, which this replaces, pads every
//! sequence of a batch to the longest, copies the heads into their own
//! layout for its batched products, and computes GELU and `exp` with scalar
//! libm calls; the tests check the two give the same hidden states.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use multiversion::multiversion;
use serde::Deserialize;
use sieve_kernels::matmul::{gemm_on, Mat, Parallelism};

use crate::error::{ProxyError, Result};
use crate::vector_math::{axpy, gelu_in_place, layer_norm_rows, softmax_of_prefix, LANES};

/// The fields of a Hugging Face BERT `config.json` the forward pass uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Tokens of the vocabulary.
    pub vocab_size: usize,
    /// Width of a token's hidden state.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// The feed-forward activation; only `gelu` (exact, erf-based) is run.
    pub hidden_act: String,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Token types (segments) the embeddings distinguish.
    pub type_vocab_size: usize,
    /// The layer norms' epsilon.
    pub layer_norm_eps: f64,
    /// Only `absolute` positions are run.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_string()
}

/// A linear layer, its weight stored transposed (`inputs x outputs`,
/// row-major) as the product reads it.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// A layer norm's scale, shift and epsilon.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

/// One transformer layer.
struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// A loaded BERT encoder.
pub struct Bert {
    /// The model's directory, for errors.
    dir: PathBuf,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    /// `vocab x hidden`.
    word: Vec<f32>,
    /// `max_positions x hidden`.
    position: Vec<f32>,
    /// The embedding of token type 0 (every token of a single sentence).
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// Reads named tensors out of a safetensors file as `f32`.
struct Weights<'a> {
    vb: VarBuilder<'a>,
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, shape: &[usize], name: &str) -> Result<Vec<f32>> {
        let tensor = self.vb.get(shape, &format!("{}{name}", self.prefix))?;
        Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
    }

    /// A linear layer of `name` (`weight` stored `outputs x inputs`, as
    /// PyTorch does), its outputs scaled by `scale`.
    fn linear(&self, name: &str, inputs: usize, outputs: usize, scale: f32) -> Result<Linear> {
        let stored = self.get(&[outputs, inputs], &format!("{name}.weight"))?;
        let mut weight = vec![0.0; inputs * outputs];
        for (o, row) in stored.chunks_exact(inputs).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight[i * outputs + o] = w * scale;
            }
        }
        let bias = self.get(&[outputs], &format!("{name}.bias"))?.into_iter().map(|b| b * scale).collect();
        Ok(Linear { weight, bias, inputs, outputs })
    }

    /// A layer norm, under the names of current checkpoints (`weight`,
    /// `bias`) or of old ones (`gamma`, `beta`).
    fn norm(&self, name: &str, width: usize, eps: f64) -> Result<Norm> {
        let full = |leaf: &str| format!("{}{name}.{leaf}", self.prefix);
        let (g, b) = if self.vb.contains_tensor(&full("weight")) { ("weight", "bias") } else { ("gamma", "beta") };
        let gamma = self.get(&[width], &format!("{name}.{g}"))?;
        Ok(Norm { gamma, beta: self.get(&[width], &format!("{name}.{b}"))?, eps: eps as f32 })
    }
}

/// Concatenates linear layers over their outputs (same inputs).
fn stacked(parts: [Linear; 3]) -> Linear {
    let (inputs, outputs) = (parts[0].inputs, parts.iter().map(|p| p.outputs).sum());
    let mut weight = Vec::with_capacity(inputs * outputs);
    for i in 0..inputs {
        for part in &parts {
            weight.extend_from_slice(&part.weight[i * part.outputs..(i + 1) * part.outputs]);
        }
    }
    let bias = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
    Linear { weight, bias, inputs, outputs }
}

/// The buffers of one pass, reused across passes.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    x1: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    up: Vec<f32>,
    keys: Vec<f32>,
    scores: Vec<f32>,
}

/// `dst` (`rows x width`, row-major) set to `bias` on every row, plus the
/// same row of `residual` when given.
fn fill_rows(dst: &mut Vec<f32>, rows: usize, bias: &[f32], residual: Option<&[f32]>) {
    let width = bias.len();
    dst.resize(rows * width, 0.0);
    for (r, row) in dst.chunks_exact_mut(width).enumerate() {
        row.copy_from_slice(bias);
        if let Some(residual) = residual {
            row.iter_mut().zip(&residual[r * width..(r + 1) * width]).for_each(|(y, x)| *y += x);
        }
    }
}

/// `dst += x layer.weight` (`dst` already holds the bias), on the calling
/// thread: the passes run in parallel instead.
fn accumulate_product(dst: &mut [f32], x: &[f32], rows: usize, layer: &Linear) {
    let lhs = Mat::row_major(x, rows, layer.inputs);
    let rhs = Mat::row_major(&layer.weight, layer.inputs, layer.outputs);
    gemm_on(dst, lhs, rhs, true, Parallelism::None);
}

/// Layer norm of every row of `x`.
fn normalize_rows(x: &mut [f32], norm: &Norm) {
    layer_norm_rows(x, &norm.gamma, &norm.beta, norm.eps)
}

impl Bert {
    /// Loads the weights of `weights` (a safetensors file) as `config`
    /// describes them, with or without the `bert.` prefix of checkpoints
    /// saved with a task head.
    pub fn load(config: &BertConfig, weights: &Path) -> Result<Self> {
        let dir = weights.parent().unwrap_or(weights).to_path_buf();
        let unsupported = |what: String| ProxyError::Encoder {
            dir: dir.clone(),
            message: format!("config.json: {what} is not supported"),
        };
        if config.hidden_act != "gelu" {
            return Err(unsupported(format!("hidden_act {:?} (only \"gelu\")", config.hidden_act)));
        }
        if config.position_embedding_type != "absolute" {
            return Err(unsupported(format!("position_embedding_type {:?}", config.position_embedding_type)));
        }
        let (hidden, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || !hidden.is_multiple_of(heads) || config.type_vocab_size == 0 {
            return Err(unsupported(format!("{heads} heads for hidden size {hidden}, or no token types")));
        }
        // SAFETY: the weights file is memory-mapped read-only, and only for
        // the duration of this function (every tensor is copied out).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
        let prefix = if vb.contains_tensor("embeddings.word_embeddings.weight") { "" } else { "bert." };
        let w = Weights { vb, prefix };
        let scale = 1.0 / ((hidden / heads) as f32).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let at = |name: &str| format!("encoder.layer.{i}.{name}");
                let attention = |name: &str, s| w.linear(&at(&format!("attention.self.{name}")), hidden, hidden, s);
                Ok(Layer {
                    qkv: stacked([attention("query", scale)?, attention("key", 1.0)?, attention("value", 1.0)?]),
                    attention_out: w.linear(&at("attention.output.dense"), hidden, hidden, 1.0)?,
                    attention_norm: w.norm(&at("attention.output.LayerNorm"), hidden, config.layer_norm_eps)?,
                    up: w.linear(&at("intermediate.dense"), hidden, config.intermediate_size, 1.0)?,
                    down: w.linear(&at("output.dense"), config.intermediate_size, hidden, 1.0)?,
                    output_norm: w.norm(&at("output.LayerNorm"), hidden, config.layer_norm_eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (vocab, max_positions) = (config.vocab_size, config.max_position_embeddings);
        Ok(Self {
            dir,
            hidden,
            heads,
            vocab,
            max_positions,
            word: w.get(&[vocab, hidden], "embeddings.word_embeddings.weight")?,
            position: w.get(&[max_positions, hidden], "embeddings.position_embeddings.weight")?,
            token_type: w.get(&[config.type_vocab_size, hidden], "embeddings.token_type_embeddings.weight")?[..hidden]
                .to_vec(),
            embedding_norm: w.norm("embeddings.LayerNorm", hidden, config.layer_norm_eps)?,
            layers,
        })
    }

    /// The last layer's hidden states of `sequences` (token ids), packed:
    /// `total tokens x hidden`, row-major, the sequences' tokens in order.
    /// It runs on the calling thread, its buffers in `scratch` (reused from
    /// pass to pass); callers run passes in parallel. An id outside the
    /// vocabulary or a sequence longer than the position embeddings is an
    /// error.
    pub fn forward<'s>(&self, sequences: &[&[u32]], scratch: &'s mut Scratch) -> Result<&'s [f32]> {
        let h = self.hidden;
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        if let Some(long) = sequences.iter().find(|s| s.len() > self.max_positions) {
            return Err(self.err(format!("{} tokens, more than the {} positions", long.len(), self.max_positions)));
        }
        if let Some(&id) = sequences.iter().flat_map(|s| s.iter()).find(|&&id| id as usize >= self.vocab) {
            return Err(self.err(format!("token id {id} outside the vocabulary of {}", self.vocab)));
        }
        let Scratch { x, x1, qkv, ctx, up, keys, scores } = scratch;
        x.clear();
        for sequence in sequences {
            for (p, &id) in sequence.iter().enumerate() {
                let (word, position) = (&self.word[id as usize * h..][..h], &self.position[p * h..][..h]);
                x.extend(word.iter().zip(position).zip(&self.token_type).map(|((w, p), t)| w + p + t));
            }
        }
        normalize_rows(x, &self.embedding_norm);
        for layer in &self.layers {
            fill_rows(qkv, tokens, &layer.qkv.bias, None);
            accumulate_product(qkv, x, tokens, &layer.qkv);
            ctx.resize(tokens * h, 0.0);
            self.attend(qkv, ctx, sequences, keys, scores);
            fill_rows(x1, tokens, &layer.attention_out.bias, Some(x));
            accumulate_product(x1, ctx, tokens, &layer.attention_out);
            normalize_rows(x1, &layer.attention_norm);
            fill_rows(up, tokens, &layer.up.bias, None);
            accumulate_product(up, x1, tokens, &layer.up);
            gelu_in_place(up);
            fill_rows(x, tokens, &layer.down.bias, Some(x1));
            accumulate_product(x, up, tokens, &layer.down);
            normalize_rows(x, &layer.output_norm);
        }
        Ok(&x[..tokens * h])
    }

    /// Self-attention of each sequence on its own: `ctx`'s rows of a
    /// sequence from `qkv`'s rows of the same sequence.
    fn attend(&self, qkv: &[f32], ctx: &mut [f32], sequences: &[&[u32]], keys: &mut Vec<f32>, scores: &mut Vec<f32>) {
        let h = self.hidden;
        let mut start = 0;
        for sequence in sequences {
            let len = sequence.len();
            let padded = len.next_multiple_of(LANES);
            keys.resize(h / self.heads * padded, 0.0);
            scores.resize(padded, 0.0);
            let (qkv, ctx) = (&qkv[start * 3 * h..(start + len) * 3 * h], &mut ctx[start * h..(start + len) * h]);
            attend_sequence(qkv, ctx, h, self.heads, keys, scores);
            start += len;
        }
    }

    fn err(&self, message: String) -> ProxyError {
        ProxyError::Encoder { dir: self.dir.clone(), message }
    }
}

/// Independent accumulators of the attention sums: enough to hide the
/// latency of each multiply-add chain.
const CHAINS: usize = 4;

/// `sum over i of coefficients[i] vector(i)`, for vectors of [`LANES`]
/// floats, summed in [`CHAINS`] chains.
#[inline(always)]
fn combination<'a>(coefficients: &[f32], vector: impl Fn(usize) -> &'a [f32]) -> [f32; LANES] {
    let mut acc = [[0.0f32; LANES]; CHAINS];
    let mut groups = coefficients.chunks_exact(CHAINS);
    for (g, group) in (&mut groups).enumerate() {
        // A loop of constant length, unrolled: each chain stays in a register.
        for t in 0..CHAINS {
            let v = vector(g * CHAINS + t);
            for l in 0..LANES {
                acc[t][l] = group[t].mul_add(v[l], acc[t][l]);
            }
        }
    }
    let done = coefficients.len() - groups.remainder().len();
    for (t, &c) in groups.remainder().iter().enumerate() {
        let v = vector(done + t);
        for l in 0..LANES {
            acc[t][l] = c.mul_add(v[l], acc[t][l]);
        }
    }
    std::array::from_fn(|l| acc.iter().map(|a| a[l]).sum())
}

/// `scores[j] = query . key j` for `keys` transposed (`query.len() x
/// padded`, `padded = scores.len()` a multiple of [`LANES`]), one vector of
/// scores at a time.
#[inline(always)]
fn scores_of(query: &[f32], keys: &[f32], scores: &mut [f32]) {
    let padded = scores.len();
    for (block, out) in scores.chunks_exact_mut(LANES).enumerate() {
        let column = |c: usize| &keys[c * padded + block * LANES..c * padded + (block + 1) * LANES];
        out.copy_from_slice(&combination(query, column));
    }
}

/// `out = sum over j of weights[j] value(j)`, `out.len()` wide, one vector
/// of `out` at a time.
#[inline(always)]
fn weighted_sum<'a>(weights: &[f32], value: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
    let at = out.len() / LANES * LANES;
    let mut blocks = out.chunks_exact_mut(LANES);
    for (block, out) in (&mut blocks).enumerate() {
        out.copy_from_slice(&combination(weights, |j| &value(j)[block * LANES..(block + 1) * LANES]));
    }
    let tail = blocks.into_remainder();
    tail.fill(0.0);
    for (j, &w) in weights.iter().enumerate() {
        axpy(tail, w, &value(j)[at..]);
    }
}

/// Self-attention of one sequence of `len` tokens: `ctx` (`len x h`) from
/// `qkv` (`len x 3h`: queries, keys, values), `heads` heads. Per head, the
/// keys are transposed into `keys` (`head size x padded`, the length rounded
/// up to whole vectors; `scores` holds `padded` floats) so that a query's
/// scores are sums of whole vectors; padded keys are zero and get weight 0.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma"))]
fn attend_sequence(qkv: &[f32], ctx: &mut [f32], h: usize, heads: usize, keys: &mut [f32], scores: &mut [f32]) {
    let (len, d) = (ctx.len() / h, h / heads);
    let row = |t: usize| &qkv[t * 3 * h..(t + 1) * 3 * h];
    for head in 0..heads {
        let (q, k, v) = (head * d, h + head * d, 2 * h + head * d);
        let padded = scores.len();
        keys.fill(0.0);
        for j in 0..len {
            for (c, &key) in row(j)[k..k + d].iter().enumerate() {
                keys[c * padded + j] = key;
            }
        }
        for i in 0..len {
            scores_of(&row(i)[q..q + d], keys, scores);
            softmax_of_prefix(scores, len);
            let out = &mut ctx[i * h + head * d..i * h + head * d + d];
            weighted_sum(&scores[..len], |j| &row(j)[v..v + d], out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;
    use candle_transformers::models::bert::{BertModel, Config};
    use rand::{Rng, SeedableRng};

    /// A small random BERT (hidden 48, 4 heads, 2 layers), saved as a
    /// safetensors file, and its config.
    fn random_bert(dir: &Path) -> (BertConfig, Config) {
        let json = serde_json::json!({
            "vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 80, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "max_position_embeddings": 40, "type_vocab_size": 2, "initializer_range": 0.02,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "classifier_dropout": null, "model_type": "bert",
        });
        let ours: BertConfig = serde_json::from_value(json.clone()).unwrap();
        let theirs: Config = serde_json::from_value(json).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut tensors = std::collections::HashMap::new();
        let mut add = |name: String, shape: &[usize], around: f32| {
            let n = shape.iter().product::<usize>();
            let values: Vec<f32> = (0..n).map(|_| around + rng.random_range(-0.5f32..0.5)).collect();
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
        };
        let (h, f) = (48, 80);
        add("embeddings.word_embeddings.weight".into(), &[97, h], 0.0);
        add("embeddings.position_embeddings.weight".into(), &[40, h], 0.0);
        add("embeddings.token_type_embeddings.weight".into(), &[2, h], 0.0);
        for norm in ["embeddings.LayerNorm".to_string()].into_iter().chain((0..2).flat_map(|i| {
            [format!("encoder.layer.{i}.attention.output.LayerNorm"), format!("encoder.layer.{i}.output.LayerNorm")]
        })) {
            add(format!("{norm}.weight"), &[h], 1.0);
            add(format!("{norm}.bias"), &[h], 0.0);
        }
        for i in 0..2 {
            for (name, inputs, outputs) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", h, f),
                ("output.dense", f, h),
            ] {
                add(format!("encoder.layer.{i}.{name}.weight"), &[outputs, inputs], 0.0);
                add(format!("encoder.layer.{i}.{name}.bias"), &[outputs], 0.0);
            }
        }
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        (ours, theirs)
    }

    /// The packed forward pass gives candle-transformers' hidden states for
    /// every real token of a padded, masked batch of varied lengths.
    #[test]
    fn packed_forward_matches_candles_padded_bert() {
        let dir = tempfile::tempdir().unwrap();
        let (config, candle_config) = random_bert(dir.path());
        let weights = dir.path().join("model.safetensors");
        let ours = Bert::load(&config, &weights).unwrap();
        // SAFETY: the file is not written while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu).unwrap() };
        let theirs = BertModel::load(vb, &candle_config).unwrap();

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let lengths = [1usize, 7, 40, 3, 17, 2, 33];
        let sequences: Vec<Vec<u32>> =
            lengths.iter().map(|&n| (0..n).map(|_| rng.random_range(0..97u32)).collect()).collect();
        let refs: Vec<&[u32]> = sequences.iter().map(|s| &s[..]).collect();
        let mut scratch = Scratch::default();
        let packed = ours.forward(&refs, &mut scratch).unwrap().to_vec();

        let (b, len, h) = (lengths.len(), 40, 48);
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, s) in sequences.iter().enumerate() {
            ids[r * len..r * len + s.len()].copy_from_slice(s);
            mask[r * len..r * len + s.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (b, len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
        let padded = theirs.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        let padded = padded.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut at = 0;
        for (r, &n) in lengths.iter().enumerate() {
            for t in 0..n {
                let want = &padded[(r * len + t) * h..(r * len + t + 1) * h];
                let got = &packed[at * h..(at + 1) * h];
                let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-4, "sequence {r} token {t}: differs by {worst}");
                at += 1;
            }
        }
        assert_eq!(at * h, packed.len());
    }

    #[test]
    fn bad_ids_and_long_sequences_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = random_bert(dir.path());
        let bert = Bert::load(&config, &dir.path().join("model.safetensors")).unwrap();
        let mut scratch = Scratch::default();
        let err = bert.forward(&[&[1, 97]], &mut scratch).err().unwrap().to_string();
        assert!(err.contains("token id 97"), "{err}");
        let long = vec![1u32; 41];
        let err = bert.forward(&[&long], &mut scratch).err().unwrap().to_string();
        assert!(err.contains("41 tokens"), "{err}");
        let mut other = config.clone();
        other.hidden_act = "relu".into();
        let err = Bert::load(&other, &dir.path().join("model.safetensors")).err().unwrap().to_string();
        assert!(err.contains("hidden_act"), "{err}");
    }
}
