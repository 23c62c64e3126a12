//! fastText-style text classifier: a bag of hashed word n-grams, averaged, then
//! a linear layer and a softmax.
//!
//! Paper: "Bag of Tricks for Efficient Text Classification", Joulin, Grave,
//! Bojanowski and Mikolov, EACL 2017, <https://arxiv.org/abs/1607.01759>.
//! Reference code: facebookresearch/fastText, `src/dictionary.cc`
//! (`addWordNgrams`), `src/model.cc` (`computeHidden`, `update`) and
//! `src/loss.cc` (`SoftmaxLoss`).
//!
//! ```text
//! text ──split on whitespace, lowercase, append </s>──▶ w_1 … w_T </s>
//!      ──xxh3 of each token and each run of up to `ngrams` tokens──▶ ids in [0, buckets)
//!      ──mean of embedding rows──▶ hidden h ∈ R^dim
//!      ──W h + b──▶ logits ∈ R^num_classes ──softmax──▶ p,   loss = −log p_y
//! ```
//!
//! Training is fastText's plain SGD, one example at a time. For
//! `α_i = lr · (1[i = y] − p_i)` it sets `g = Σ_i α_i W_i` (with the old `W`),
//! then `W_i += α_i h`, `b_i += α_i`, and adds `g / F` to each of the `F`
//! embedding rows the example used. Only those rows are written: a dense
//! gradient of the whole table (what candle's embedding backward builds) costs
//! `buckets × dim` per step, 67M floats at the default size, against about
//! `20 × 32` for an SST-2 phrase here.
//!
//! Like fastText, each non-empty text ends with the token `</s>`, so the last
//! word gets its own bigram `(w_T, </s>)`. On SST-2 that is worth more than a
//! point of validation accuracy (80.7% → 82.1%, mean of 5 seeds); adding a
//! `<s>` at the start as well scored 0.2 to 0.8 points lower, so there is none.
//!
//! Where this file departs from the reference, and why:
//! - **No vocabulary.** Words share the `buckets` rows with the n-grams
//!   (fastText keeps a word dictionary plus 2M n-gram buckets). The model then
//!   needs no dictionary file and no counting pass over the data, which a
//!   streaming trainer can't afford. Collisions are the price: at 2^20 buckets
//!   SST-2 loses a point to them. At the default 2^21 it scores 82.1%, where
//!   fastText 0.9.2 itself (bigrams, dim 64, lr 0.5, 5 epochs, one thread,
//!   5 shuffles of the file) scores 81.1%.
//! - **Rows initialised on first use, zero when never used, saved sparse**
//!   ([`HashedTable`]): fastText fills its whole table with random values at
//!   the start and saves all of it; here a row gets its random initial value
//!   when training first uses it, a row no example used stays zero (so a
//!   feature unseen in training adds no noise at inference), and only the
//!   used rows are held (packed, behind an index) and saved (SST-2: 95k of
//!   2^21 rows, a 12 MB file, not 256 MiB). Making, saving and reloading the
//!   2^21-row table then costs milliseconds, where it took longer than the
//!   training itself, and the rows fit the CPU's caches.
//! - **An output bias,** saved as `output.bias`. It gives an empty text, which
//!   has no features (not even `</s>`), a defined answer: the class prior the
//!   bias learns. fastText has no bias and would see `</s>` alone.
//! - **Words are lowercased** before hashing, so `Good` and `good` share a row.
//! - **At most `max_tokens` words per text** are read, so a single huge row
//!   can't stall a batch or blow up memory.
//!
//! Training is deterministic: one thread, a fixed hash seed, and a ChaCha8
//! stream for the initial weights and the shuffles, so the same data and seed
//! give bit-identical weights. Inference ([`FastText::predict_batch`]) runs in
//! parallel over texts with rayon; each text is computed on its own, so the
//! result doesn't depend on the thread count either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::hashed_table::HashedTable;

/// Seed of the word hash. Changing it (or [`NGRAM_SEED`]) changes every feature
/// id and so invalidates every saved model; `features_are_pinned` guards it.
const WORD_SEED: u64 = 0x5349_4556_4557_4f52; // "SIEVEWOR"
/// Seed of the hash that folds a word into the n-gram to its right.
const NGRAM_SEED: u64 = 0x5349_4556_454e_4752; // "SIEVENGR"
/// Longest n-gram order accepted, the size of the stack array that holds the
/// recent token hashes. Well past useful: on SST-2 trigrams already score
/// below bigrams (81.5% against 82.1%).
pub const MAX_NGRAMS: usize = 8;
/// End-of-text token, fastText's name for it. A literal `</s>` word in a text
/// hashes the same, as in fastText.
const EOS: &str = "</s>";

/// Errors of the fastText model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FastTextError {
    /// A [`FastTextConfig`] field is outside its valid range.
    #[error("invalid fastText config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// The rejected value.
        value: usize,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// A training label is not below `num_classes`.
    #[error("label {label} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        /// The rejected label.
        label: usize,
        /// The model's number of classes.
        num_classes: usize,
    },
    /// A learning rate is negative, NaN or infinite.
    #[error("learning rate {lr} is not a finite non-negative number")]
    InvalidLearningRate {
        /// The rejected learning rate.
        lr: f32,
    },
    /// [`FastText::fit`] got different numbers of texts and labels.
    #[error("{texts} texts but {labels} labels")]
    LengthMismatch {
        /// Number of texts.
        texts: usize,
        /// Number of labels.
        labels: usize,
    },
    /// The embedding table does not fit in memory.
    #[error("cannot allocate the {bytes}-byte embedding table")]
    Alloc {
        /// Size that was asked for.
        bytes: usize,
    },
    /// A feature id given to [`FastText::train_features`] is past the table.
    #[error("feature id {id} is past the table's {buckets} rows")]
    FeatureOutOfRange {
        /// The id.
        id: u32,
        /// Rows of the table.
        buckets: usize,
    },
    /// A weights file names an embedding row twice, or past the table's end.
    #[error("{}: embeddings.rows names a row twice or past the table's {buckets} rows", path.display())]
    BadRows {
        /// The weights file.
        path: PathBuf,
        /// Rows of the table.
        buckets: usize,
    },
    /// A weights file lacks one of its tensors.
    #[error("{}: no tensor named {name:?}", path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The missing tensor.
        name: &'static str,
    },
    /// A tensor in a weights file doesn't match the config's shape.
    #[error("{}: tensor {name:?} has shape {found:?}, the config needs {expected:?}", path.display())]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: &'static str,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor in a weights file is not f32.
    #[error("{}: tensor {name:?} is {found:?}, expected f32", path.display())]
    WrongDType {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: &'static str,
        /// Its dtype.
        found: DType,
    },
    /// Reading, writing or converting a safetensors file failed.
    #[error("{}: {source}", path.display())]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
}

/// Shape of the network. [`FastText::load`] needs the same config the weights
/// were saved with, so it belongs in the run's manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FastTextConfig {
    /// Width of each embedding row and of the hidden vector. Default 32: on
    /// SST-2, dims 16, 32 and 64 score within seed noise of each other (81.9%,
    /// 82.1%, 81.9%; with two classes the output rows stay opposite, so
    /// training moves the embeddings along one direction), and 32 halves 64's
    /// table and trains 1.5× faster.
    pub dim: usize,
    /// Rows of the hashed embedding table, shared by words and n-grams.
    /// Default 2^21, fastText's 2M n-gram buckets (256 MiB at dim 32). SST-2's
    /// train split has 15k words and 80k bigrams; 4.4% of them share a row at
    /// 2^21 and 8.6% at 2^20, where validation accuracy drops from 82.1% to
    /// 81.1%. 2^22 gains nothing (82.0%).
    pub buckets: usize,
    /// Longest word n-gram hashed: 1 = words only, 2 = words + bigrams. Default
    /// 2, the paper's "bigram" setting: +2 to +4 points on its Yelp and Amazon
    /// sentiment sets, +0.7 on SST-2 here (81.4% → 82.1%).
    pub ngrams: usize,
    /// Number of classes, the width of the output layer.
    pub num_classes: usize,
    /// Words read per text; the rest are ignored. Default 16,384: far above
    /// any sentence or review (SST-2's longest phrase has 52 words) and a cap
    /// on the cost of one pathological row.
    pub max_tokens: usize,
}

impl FastTextConfig {
    /// The default network for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self { dim: 32, buckets: 1 << 21, ngrams: 2, num_classes, max_tokens: 1 << 14 }
    }

    /// Checks every field's range. Feature ids are `u32`, hence the bucket cap.
    pub fn validate(&self) -> Result<(), FastTextError> {
        let check = |field, value: usize, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(FastTextError::InvalidConfig { field, value, reason })
            }
        };
        check("dim", self.dim, self.dim >= 1, "must be at least 1")?;
        check("buckets", self.buckets, self.buckets >= 1 && self.buckets as u64 <= 1 << 32, "must be in 1..=2^32")?;
        check("ngrams", self.ngrams, (1..=MAX_NGRAMS).contains(&self.ngrams), "must be in 1..=8")?;
        check("num_classes", self.num_classes, self.num_classes >= 2, "must be at least 2")?;
        check("max_tokens", self.max_tokens, self.max_tokens >= 1, "must be at least 1")?;
        check("buckets", self.buckets, self.buckets.checked_mul(self.dim).is_some(), "buckets × dim overflows usize")
    }
}

/// SGD schedule: the learning rate falls linearly from `lr` to 0 over
/// `epochs` passes, as in fastText. The streaming caller computes each step's
/// rate with [`FastTextTrainConfig::lr_at`]; [`FastText::fit`] does it for
/// in-memory data.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FastTextTrainConfig {
    /// Learning rate of the first step, per example (no batching). Default
    /// 0.5: on SST-2 (5 seeds each) 0.1, fastText's default, scores 81.9%,
    /// 0.25 81.8%, 0.5 82.1% and 1.0 81.6%; flat, so the best of them.
    pub lr: f32,
    /// Passes over the data. Default 5, fastText's default: on SST-2, 3
    /// epochs score 81.8% and 10 score 81.7%, against 82.1%. One epoch of
    /// SST-2 takes 0.07 s.
    pub epochs: usize,
}

impl Default for FastTextTrainConfig {
    fn default() -> Self {
        Self { lr: 0.5, epochs: 5 }
    }
}

impl FastTextTrainConfig {
    /// Learning rate for step `step` of `total_steps` (= epochs × rows):
    /// `lr · (1 − step / total_steps)`, never below 0. `total_steps = 0` gives
    /// `lr`.
    pub fn lr_at(&self, step: u64, total_steps: u64) -> f32 {
        if total_steps == 0 {
            return self.lr;
        }
        // f64: at 10^8 steps an f32 ratio would move in visible stairs.
        let left = 1.0 - step as f64 / total_steps as f64;
        (self.lr as f64 * left.max(0.0)) as f32
    }
}

/// Reusable buffers for [`FastText::train_example`], so the training loop
/// allocates nothing per example.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    features: Vec<u32>,
    hidden: Vec<f32>,
    grad: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
}

/// What one SGD step saw, for training dynamics (margins, forgetting events).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStep<'s> {
    /// Cross-entropy `−log p_label` before the update, in nats.
    pub loss: f32,
    /// Logits before the update, `num_classes` of them.
    pub logits: &'s [f32],
}

/// The classifier's weights. See the module doc for the architecture.
#[derive(Clone, Debug)]
pub struct FastText {
    cfg: FastTextConfig,
    /// `[buckets, dim]`, rows initialised on first use.
    embeddings: HashedTable,
    /// `[num_classes, dim]`, row-major.
    output: Vec<f32>,
    /// `[num_classes]`.
    bias: Vec<f32>,
}

impl FastText {
    /// A fresh model: each embedding row uniform in `(−1/dim, 1/dim)` when
    /// training first uses it, from a stream seeded with `seed` and the row
    /// (see [`HashedTable`]); output layer and bias zero, as fastText
    /// initialises them.
    pub fn new(cfg: FastTextConfig, seed: u64) -> Result<Self, FastTextError> {
        cfg.validate()?;
        let embeddings =
            HashedTable::new(cfg.buckets, cfg.dim, seed).map_err(|e| FastTextError::Alloc { bytes: e.bytes })?;
        Ok(Self { output: vec![0.0; cfg.num_classes * cfg.dim], bias: vec![0.0; cfg.num_classes], embeddings, cfg })
    }

    /// The network's shape.
    pub fn config(&self) -> &FastTextConfig {
        &self.cfg
    }

    /// The embedding table, `[buckets, dim]`: zero in the rows training never used.
    pub fn embeddings(&self) -> &HashedTable {
        &self.embeddings
    }

    /// The output weight, `[num_classes, dim]` row-major.
    pub fn output_weight(&self) -> &[f32] {
        &self.output
    }

    /// The output bias, `[num_classes]`.
    pub fn output_bias(&self) -> &[f32] {
        &self.bias
    }

    /// Appends the feature ids of `text` to `out` (it is not cleared): for each
    /// of the first `max_tokens` whitespace-separated words, then for `</s>`,
    /// its unigram id followed by the ids of the 2-gram … `ngrams`-gram ending
    /// at it. Empty or all-space text adds nothing. Allocates only to lowercase
    /// a word that has uppercase letters.
    pub fn features(&self, text: &str, out: &mut Vec<u32>) {
        // Hashes of the last MAX_NGRAMS tokens, indexed by position mod MAX_NGRAMS.
        let mut recent = [0u64; MAX_NGRAMS];
        let mut count = 0;
        for word in text.split_whitespace().take(self.cfg.max_tokens) {
            self.push_token(word_hash(word), count, &mut recent, out);
            count += 1;
        }
        if count > 0 {
            self.push_token(word_hash(EOS), count, &mut recent, out);
        }
    }

    /// One SGD step on one example at learning rate `lr`, updating only the
    /// embedding rows `text` uses. Returns the loss and logits from before the
    /// update. The caller picks `lr` per step, normally with
    /// [`FastTextTrainConfig::lr_at`].
    pub fn train_example<'s>(
        &mut self,
        text: &str,
        label: usize,
        lr: f32,
        scratch: &'s mut Scratch,
    ) -> Result<TrainStep<'s>, FastTextError> {
        scratch.features.clear();
        self.features(text, &mut scratch.features);
        self.step(label, lr, scratch)
    }

    /// [`FastText::train_example`] on a text's feature ids, as
    /// [`FastText::features`] gives them: a trainer that holds its data in
    /// memory hashes each text once, not once per epoch.
    pub fn train_features<'s>(
        &mut self,
        features: &[u32],
        label: usize,
        lr: f32,
        scratch: &'s mut Scratch,
    ) -> Result<TrainStep<'s>, FastTextError> {
        if let Some(&id) = features.iter().find(|&&id| id as usize >= self.cfg.buckets) {
            return Err(FastTextError::FeatureOutOfRange { id, buckets: self.cfg.buckets });
        }
        scratch.features.clear();
        scratch.features.extend_from_slice(features);
        self.step(label, lr, scratch)
    }

    /// One SGD step on the feature ids in `scratch.features`.
    fn step<'s>(&mut self, label: usize, lr: f32, scratch: &'s mut Scratch) -> Result<TrainStep<'s>, FastTextError> {
        let (dim, classes) = (self.cfg.dim, self.cfg.num_classes);
        if label >= classes {
            return Err(FastTextError::LabelOutOfRange { label, num_classes: classes });
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(FastTextError::InvalidLearningRate { lr });
        }
        let Scratch { features, hidden, grad, logits, probs } = scratch;
        for &id in features.iter() {
            self.embeddings.init(id);
        }
        hidden.resize(dim, 0.0);
        logits.resize(classes, 0.0);
        self.hidden_into(features, hidden);
        self.logits_into(hidden, logits);

        // Softmax shifted by the max logit, so exp can't overflow.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        probs.clear();
        probs.extend(logits.iter().map(|&z| (z - max).exp()));
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let loss = sum.ln() + max - logits[label];

        // SoftmaxLoss::forward in fastText: the hidden gradient uses W before
        // its own update.
        grad.clear();
        grad.resize(dim, 0.0);
        for (i, (w, b)) in self.output.chunks_exact_mut(dim).zip(&mut self.bias).enumerate() {
            let alpha = lr * (f32::from(u8::from(i == label)) - probs[i]);
            for ((g, w), h) in grad.iter_mut().zip(w.iter_mut()).zip(hidden.iter()) {
                *g += alpha * *w;
                *w += alpha * h;
            }
            *b += alpha;
        }
        if !features.is_empty() {
            // The hidden vector is a mean, so each of the F rows gets 1/F of
            // the gradient (fastText's `grad.mul(1.0 / input.size())`).
            let scale = 1.0 / features.len() as f32;
            for &id in features.iter() {
                for (e, g) in self.embeddings.row_mut(id).iter_mut().zip(grad.iter()) {
                    *e += scale * g;
                }
            }
        }
        Ok(TrainStep { loss, logits })
    }

    /// Trains on in-memory data for `train.epochs` epochs, visiting the rows in
    /// a fresh ChaCha8 shuffle (seeded with `seed`) each epoch with the linear
    /// learning-rate decay. Returns each epoch's mean loss. The pipeline
    /// streams instead, calling [`FastText::train_example`] itself.
    pub fn fit<S: AsRef<str>>(
        &mut self,
        texts: &[S],
        labels: &[usize],
        train: &FastTextTrainConfig,
        seed: u64,
    ) -> Result<Vec<f32>, FastTextError> {
        if texts.len() != labels.len() {
            return Err(FastTextError::LengthMismatch { texts: texts.len(), labels: labels.len() });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..texts.len()).collect();
        let mut scratch = Scratch::default();
        let total = (texts.len() as u64).saturating_mul(train.epochs as u64);
        let mut step = 0u64;
        let mut epoch_losses = Vec::with_capacity(train.epochs);
        for _ in 0..train.epochs {
            order.shuffle(&mut rng);
            // f64: 67k f32 losses summed in f32 would lose the low digits.
            let mut loss_sum = 0.0f64;
            for &row in &order {
                let lr = train.lr_at(step, total);
                let out = self.train_example(texts[row].as_ref(), labels[row], lr, &mut scratch)?;
                loss_sum += f64::from(out.loss);
                step += 1;
            }
            epoch_losses.push((loss_sum / texts.len().max(1) as f64) as f32);
        }
        Ok(epoch_losses)
    }

    /// Logits of a batch of texts, `[texts.len(), num_classes]` row-major,
    /// computed in parallel.
    pub fn predict_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<f32> {
        let (dim, classes) = (self.cfg.dim, self.cfg.num_classes);
        let mut logits = vec![0.0; texts.len() * classes];
        logits
            .par_chunks_mut(classes)
            .zip(texts.par_iter())
            // Short texts take ~1 µs each; batching 64 keeps rayon's per-task
            // overhead out of the profile.
            .with_min_len(64)
            .for_each_init(
                || (Vec::new(), vec![0.0; dim]),
                |(features, hidden), (logits, text)| {
                    features.clear();
                    self.features(text.as_ref(), features);
                    self.hidden_into(features, hidden);
                    self.logits_into(hidden, logits);
                },
            );
        logits
    }

    /// Logits and hidden vectors (the penultimate features that k-center,
    /// prototypes and SemDeDup embed) of a batch of texts:
    /// `([n, num_classes], [n, dim])`, row-major, computed in parallel.
    pub fn predict_batch_with_hidden<S: AsRef<str> + Sync>(&self, texts: &[S]) -> (Vec<f32>, Vec<f32>) {
        let (dim, classes) = (self.cfg.dim, self.cfg.num_classes);
        let mut logits = vec![0.0; texts.len() * classes];
        let mut hidden = vec![0.0; texts.len() * dim];
        logits
            .par_chunks_mut(classes)
            .zip(hidden.par_chunks_mut(dim))
            .zip(texts.par_iter())
            .with_min_len(64)
            .for_each_init(Vec::new, |features, ((logits, hidden), text)| {
                features.clear();
                self.features(text.as_ref(), features);
                self.hidden_into(features, hidden);
                self.logits_into(hidden, logits);
            });
        (logits, hidden)
    }

    /// Writes the weights as safetensors: the embedding rows training used,
    /// as `embeddings.rows` (u32 `[n]`, ascending) and `embeddings.values`
    /// (f32 `[n, dim]`; every other row is zero), `output.weight`
    /// `[num_classes, dim]` and `output.bias` `[num_classes]`, f32. The
    /// config is not stored; keep it in the manifest.
    pub fn save(&self, path: &Path) -> Result<(), FastTextError> {
        let err = |source| FastTextError::Safetensors { path: path.to_path_buf(), source };
        let (dim, classes) = (self.cfg.dim, self.cfg.num_classes);
        let dev = Device::Cpu;
        let (rows, values) = self.embeddings.used();
        let tensors = HashMap::from([
            ("embeddings.rows", Tensor::from_slice(&rows, rows.len(), &dev).map_err(err)?),
            ("embeddings.values", Tensor::from_slice(&values, (rows.len(), dim), &dev).map_err(err)?),
            ("output.weight", Tensor::from_slice(&self.output, (classes, dim), &dev).map_err(err)?),
            ("output.bias", Tensor::from_slice(&self.bias, classes, &dev).map_err(err)?),
        ]);
        candle_core::safetensors::save(&tensors, path).map_err(err)
    }

    /// Reads weights written by [`FastText::save`] (or, from earlier
    /// versions, a dense `embeddings` `[buckets, dim]`); each tensor's shape
    /// must match `cfg`.
    pub fn load(path: &Path, cfg: FastTextConfig) -> Result<Self, FastTextError> {
        cfg.validate()?;
        let err = |source| FastTextError::Safetensors { path: path.to_path_buf(), source };
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(err)?;
        let (dim, classes) = (cfg.dim, cfg.num_classes);
        let dense = tensors.contains_key("embeddings");
        // A tensor of `dtype` whose shape is `expected`, flattened.
        let mut take = |name: &'static str,
                        dtype: DType,
                        expected: &dyn Fn(&[usize]) -> Option<Vec<usize>>|
         -> Result<Tensor, FastTextError> {
            let t =
                tensors.remove(name).ok_or_else(|| FastTextError::MissingTensor { path: path.to_path_buf(), name })?;
            if let Some(expected) = expected(t.dims()) {
                let found = t.dims().to_vec();
                return Err(FastTextError::ShapeMismatch { path: path.to_path_buf(), name, expected, found });
            }
            if t.dtype() != dtype {
                return Err(FastTextError::WrongDType { path: path.to_path_buf(), name, found: t.dtype() });
            }
            t.flatten_all().map_err(err)
        };
        let exactly = |want: Vec<usize>| move |dims: &[usize]| (dims != want.as_slice()).then(|| want.clone());
        let f32s = |t: Tensor| t.to_vec1::<f32>().map_err(err);
        let (ids, values) = if dense {
            let values = f32s(take("embeddings", DType::F32, &exactly(vec![cfg.buckets, dim]))?)?;
            ((0..cfg.buckets as u32).collect(), values)
        } else {
            let ids = take("embeddings.rows", DType::U32, &|dims: &[usize]| (dims.len() != 1).then(|| vec![0]))?;
            let ids = ids.to_vec1::<u32>().map_err(err)?;
            (ids.clone(), f32s(take("embeddings.values", DType::F32, &exactly(vec![ids.len(), dim]))?)?)
        };
        let embeddings = HashedTable::from_rows(cfg.buckets, dim, &ids, &values)
            .ok_or_else(|| FastTextError::BadRows { path: path.to_path_buf(), buckets: cfg.buckets })?
            .map_err(|e| FastTextError::Alloc { bytes: e.bytes })?;
        Ok(Self {
            embeddings,
            output: f32s(take("output.weight", DType::F32, &exactly(vec![classes, dim]))?)?,
            bias: f32s(take("output.bias", DType::F32, &exactly(vec![classes]))?)?,
            cfg,
        })
    }

    /// Pushes the ids of token `i`, hashed to `h`: its unigram, then the
    /// n-grams ending at it, folding earlier tokens in from the right (the
    /// bigram `(t_{i-1}, t_i)`, then the trigram `(t_{i-2}, t_{i-1}, t_i)`, …).
    fn push_token(&self, h: u64, i: usize, recent: &mut [u64; MAX_NGRAMS], out: &mut Vec<u32>) {
        out.push(self.bucket(h));
        let mut gram = h;
        for k in 1..self.cfg.ngrams.min(i + 1) {
            gram = ngram_hash(recent[(i - k) % MAX_NGRAMS], gram);
            out.push(self.bucket(gram));
        }
        recent[i % MAX_NGRAMS] = h;
    }

    /// Row of hash `h`: Lemire's multiply-shift maps 64 bits onto
    /// `[0, buckets)` without a division and, unlike a mask, for any size.
    fn bucket(&self, h: u64) -> u32 {
        ((u128::from(h) * self.cfg.buckets as u128) >> 64) as u32
    }

    /// Mean of the embedding rows `features`, into `hidden` (`dim` long); zero
    /// for no features.
    fn hidden_into(&self, features: &[u32], hidden: &mut [f32]) {
        hidden.fill(0.0);
        if features.is_empty() {
            return;
        }
        for &id in features {
            for (h, e) in hidden.iter_mut().zip(self.embeddings.row(id)) {
                *h += e;
            }
        }
        let scale = 1.0 / features.len() as f32;
        hidden.iter_mut().for_each(|h| *h *= scale);
    }

    /// `W hidden + b`, into `logits` (`num_classes` long).
    fn logits_into(&self, hidden: &[f32], logits: &mut [f32]) {
        let rows = self.output.chunks_exact(self.cfg.dim);
        for ((z, w), b) in logits.iter_mut().zip(rows).zip(&self.bias) {
            *z = b + w.iter().zip(hidden).map(|(w, h)| w * h).sum::<f32>();
        }
    }
}

/// Hash of a word, lowercased. Already-lowercase words (all of SST-2) are
/// hashed in place; others are lowercased into a new string first.
fn word_hash(word: &str) -> u64 {
    let lower = if word.is_ascii() {
        !word.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        // A char is kept iff it lowercases to itself alone; `str::to_lowercase`
        // differs from this per-char rule only for 'Σ', which fails it anyway.
        word.chars().all(|c| {
            let mut l = c.to_lowercase();
            l.next() == Some(c) && l.next().is_none()
        })
    };
    if lower {
        xxh3_64_with_seed(word.as_bytes(), WORD_SEED)
    } else {
        xxh3_64_with_seed(word.to_lowercase().as_bytes(), WORD_SEED)
    }
}

/// Hash of the token hashed to `left` followed by the token or (n−1)-gram
/// hashed to `right`. Not symmetric, so word order matters, and seeded apart
/// from [`word_hash`], so an n-gram doesn't share its words' rows.
fn ngram_hash(left: u64, right: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&left.to_le_bytes());
    bytes[8..].copy_from_slice(&right.to_le_bytes());
    xxh3_64_with_seed(&bytes, NGRAM_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small network for fast tests: 4,096 rows of width 8.
    fn small_cfg(num_classes: usize) -> FastTextConfig {
        FastTextConfig { dim: 8, buckets: 1 << 12, ..FastTextConfig::new(num_classes) }
    }

    fn features_of(model: &FastText, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        model.features(text, &mut out);
        out
    }

    /// Two-class toy data: a sentiment word among shared filler words, so only
    /// the sentiment word (and its bigrams) tells the classes apart.
    fn toy_data() -> (Vec<String>, Vec<usize>) {
        let good = ["good", "great", "lovely", "charming", "superb"];
        let bad = ["bad", "awful", "dull", "boring", "terrible"];
        let filler = ["the", "movie", "was", "a", "plot", "and", "acting", "quite"];
        let (mut texts, mut labels) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let (words, label) = if i % 2 == 0 { (&good, 1) } else { (&bad, 0) };
            let f = |k: usize| filler[(i * 7 + k * 3) % filler.len()];
            texts.push(format!("{} {} {} {} .", f(0), f(1), words[i / 2 % 5], f(2)));
            labels.push(label);
        }
        (texts, labels)
    }

    fn argmax(row: &[f32]) -> usize {
        (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
    }

    /// The whole embedding table, `[buckets, dim]`.
    fn table(model: &FastText) -> Vec<f32> {
        let t = model.embeddings();
        (0..t.rows() as u32).flat_map(|r| t.row(r).to_vec()).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Saved models depend on these ids: if this fails, the hashing changed
    /// and every stored fastText model reads garbage. Exact; from Python's
    /// `xxhash` 4.1 (libxxhash 0.8.4), independent of this file:
    ///
    /// ```text
    /// import xxhash, struct
    /// W, N, B = 0x5349_4556_4557_4f52, 0x5349_4556_454e_4752, 1 << 21
    /// h = lambda w: xxhash.xxh3_64_intdigest(w.encode(), seed=W)
    /// g = lambda l, r: xxhash.xxh3_64_intdigest(struct.pack("<QQ", l, r), seed=N)
    /// row = lambda x: (x * B) >> 64
    /// good, movie, eos = h("good"), h("movie"), h("</s>")
    /// print([row(good), row(movie), row(g(good, movie)), row(eos), row(g(movie, eos))])
    /// ```
    #[test]
    fn features_are_pinned() {
        let model = FastText::new(FastTextConfig::new(2), 0).unwrap();
        let pinned = [691_681, 1_188_360, 1_834_886, 1_637_731, 1_439_349];
        assert_eq!(features_of(&model, "good movie"), pinned);
    }

    #[test]
    fn features_are_stable_and_order_sensitive() {
        let model = FastText::new(small_cfg(2), 0).unwrap();
        // alpha, beta, (alpha beta), </s>, (beta </s>).
        let ab = features_of(&model, "alpha beta");
        assert_eq!(ab.len(), 5);
        assert_eq!(ab, features_of(&model, "alpha beta"));
        assert_eq!(ab, features_of(&model, "  Alpha\t\nBETA "), "whitespace and case are ignored");
        let ba = features_of(&model, "beta alpha");
        assert_eq!((ab[0], ab[1], ab[3]), (ba[1], ba[0], ba[3]), "unigrams are shared");
        assert_ne!(ab[2], ba[2], "bigrams depend on word order");
        assert!(ab[2] != ab[0] && ab[2] != ab[1], "a bigram has its own row");

        // Five tokens with </s>: 5 unigrams, 4 bigrams, 3 trigrams.
        let tri = FastText::new(FastTextConfig { ngrams: 3, ..small_cfg(2) }, 0).unwrap();
        assert_eq!(features_of(&tri, "a b c d").len(), 5 + 4 + 3);
        let uni = FastText::new(FastTextConfig { ngrams: 1, ..small_cfg(2) }, 0).unwrap();
        assert_eq!(features_of(&uni, "a b c d").len(), 5);
    }

    #[test]
    fn features_handle_unicode_and_huge_text() {
        let model = FastText::new(FastTextConfig { max_tokens: 100, ..small_cfg(2) }, 0).unwrap();
        assert_eq!(features_of(&model, "ÉCOLE Straße"), features_of(&model, "école straße"));
        // Mixed scripts, emoji, combining marks, ideographic space: no panic.
        let odd = "naïve 😀 e\u{301} 中文\u{3000}テキスト \u{0}";
        assert_eq!(features_of(&model, odd).len(), 7 + 6, "6 words and </s>");
        let huge = "word ".repeat(1_000_000);
        assert_eq!(features_of(&model, &huge).len(), 101 + 100, "capped at max_tokens words");
        assert!(features_of(&model, "").is_empty());
        assert!(features_of(&model, " \t\n ").is_empty());
    }

    #[test]
    fn empty_text_gives_the_bias_and_trains() {
        let mut model = FastText::new(small_cfg(3), 0).unwrap();
        let mut scratch = Scratch::default();
        let step = model.train_example("", 1, 0.5, &mut scratch).unwrap();
        // Zero logits at init: loss = ln 3.
        assert!((step.loss - 3f32.ln()).abs() < 1e-6);
        // Only the bias moved: b_i += lr (1[i = 1] − 1/3).
        let expected = [-0.5 / 3.0, 0.5 * 2.0 / 3.0, -0.5 / 3.0];
        for (b, e) in model.output_bias().iter().zip(expected) {
            assert!((b - e).abs() < 1e-6);
        }
        assert!(model.output_weight().iter().all(|&w| w == 0.0));
        let logits = model.predict_batch(&["", "   "]);
        assert_eq!(bits(&logits[..3]), bits(model.output_bias()));
        assert_eq!(bits(&logits[3..]), bits(model.output_bias()));
    }

    #[test]
    fn first_step_matches_the_softmax_gradient() {
        // By hand, for 2 classes, label 1, lr 0.5, zero W and b: p = (½, ½),
        // α = 0.5 · (1[i = 1] − ½) = (−¼, ¼), so b = (−¼, ¼), W_i = α_i h,
        // and g = Σ α_i W_i(old) = 0 leaves the embeddings alone.
        let mut model = FastText::new(small_cfg(2), 7).unwrap();
        let before = table(&model);
        let mut scratch = Scratch::default();
        let step = model.train_example("alpha beta gamma", 1, 0.5, &mut scratch).unwrap();
        assert_eq!(step.logits, &[0.0, 0.0]);
        assert!((step.loss - 2f32.ln()).abs() < 1e-6);
        // The step left the embeddings as it found them (initialised), so
        // the hidden vector now is the one it used.
        let (_, hidden) = model.predict_batch_with_hidden(&["alpha beta gamma"]);
        assert_eq!(model.output_bias(), &[-0.25, 0.25]);
        let (w0, w1) = model.output_weight().split_at(8);
        for ((a, b), h) in w0.iter().zip(w1).zip(&hidden) {
            assert_eq!((*a, *b), (-0.25 * h, 0.25 * h));
        }
        // The rows the step used took their initial values, and kept them.
        let mut init = FastText::new(small_cfg(2), 7).unwrap();
        for id in features_of(&model, "alpha beta gamma") {
            init.embeddings.init(id);
        }
        assert_eq!(bits(&table(&init)), bits(&table(&model)));
        assert!(before.iter().all(|&v| v == 0.0), "no row is used before training");
    }

    #[test]
    fn sparse_update_touches_only_used_rows() {
        let mut model = FastText::new(small_cfg(2), 1).unwrap();
        let mut scratch = Scratch::default();
        // Give W a value first: from W = 0 the embedding gradient is zero.
        for _ in 0..3 {
            model.train_example("warm up words", 0, 0.5, &mut scratch).unwrap();
        }
        let before = table(&model);
        model.train_example("alpha beta gamma", 1, 0.5, &mut scratch).unwrap();
        let used = features_of(&model, "alpha beta gamma");
        let changed: Vec<u32> = (0..model.config().buckets as u32)
            .filter(|&r| {
                let row = r as usize * 8..(r as usize + 1) * 8;
                bits(&before[row]) != bits(model.embeddings().row(r))
            })
            .collect();
        let mut expected = used;
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(changed, expected);
    }

    #[test]
    fn training_separates_a_toy_dataset() {
        let (texts, labels) = toy_data();
        let mut model = FastText::new(small_cfg(2), 3).unwrap();
        let losses = model.fit(&texts, &labels, &FastTextTrainConfig::default(), 3).unwrap();
        assert!(losses[4] < losses[0] / 4.0, "losses {losses:?}");
        let logits = model.predict_batch(&texts);
        let correct = logits.chunks(2).zip(&labels).filter(|(z, &y)| argmax(z) == y).count();
        assert_eq!(correct, texts.len());
        let unseen = model.predict_batch(&["a great plot", "a dull plot"]);
        assert_eq!((argmax(&unseen[..2]), argmax(&unseen[2..])), (1, 0));
    }

    #[test]
    fn training_is_deterministic() {
        let (texts, labels) = toy_data();
        let train = FastTextTrainConfig { epochs: 2, ..Default::default() };
        let run = |seed| {
            let mut model = FastText::new(small_cfg(2), seed).unwrap();
            model.fit(&texts, &labels, &train, seed).unwrap();
            model
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(bits(&table(&a)), bits(&table(&b)));
        assert_eq!(bits(a.output_weight()), bits(b.output_weight()));
        assert_eq!(bits(a.output_bias()), bits(b.output_bias()));
        assert_ne!(bits(&table(&a)), bits(&table(&c)));
        // Parallel inference gives the same bits as one text at a time.
        let batch = a.predict_batch(&texts);
        let single: Vec<f32> = texts.iter().flat_map(|t| a.predict_batch(&[t])).collect();
        assert_eq!(bits(&batch), bits(&single));
    }

    #[test]
    fn an_untrained_model_saves_no_rows_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.safetensors");
        FastText::new(small_cfg(2), 1).unwrap().save(&path).unwrap();
        let loaded = FastText::load(&path, small_cfg(2)).unwrap();
        assert_eq!(loaded.embeddings().used().0.len(), 0);
        assert_eq!(bits(&loaded.predict_batch(&["any words"])), bits(&[0.0, 0.0]));
    }

    #[test]
    fn save_load_round_trip_keeps_logits() {
        let (texts, labels) = toy_data();
        let mut model = FastText::new(small_cfg(2), 9).unwrap();
        let train = FastTextTrainConfig { epochs: 1, ..Default::default() };
        model.fit(&texts, &labels, &train, 9).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fasttext.safetensors");
        model.save(&path).unwrap();

        let loaded = FastText::load(&path, small_cfg(2)).unwrap();
        let (l0, h0) = model.predict_batch_with_hidden(&texts);
        let (l1, h1) = loaded.predict_batch_with_hidden(&texts);
        assert_eq!((bits(&l0), bits(&h0)), (bits(&l1), bits(&h1)));
        assert_eq!(bits(&l0), bits(&model.predict_batch(&texts)));

        let wrong = FastTextConfig { dim: 16, ..small_cfg(2) };
        assert!(matches!(
            FastText::load(&path, wrong),
            Err(FastTextError::ShapeMismatch { name: "embeddings.values", .. })
        ));
        let missing = dir.path().join("nope.safetensors");
        assert!(matches!(FastText::load(&missing, small_cfg(2)), Err(FastTextError::Safetensors { .. })));
    }

    #[test]
    fn bad_input_is_an_error() {
        for cfg in [
            FastTextConfig { dim: 0, ..small_cfg(2) },
            FastTextConfig { buckets: 0, ..small_cfg(2) },
            FastTextConfig { ngrams: 0, ..small_cfg(2) },
            FastTextConfig { ngrams: MAX_NGRAMS + 1, ..small_cfg(2) },
            FastTextConfig { max_tokens: 0, ..small_cfg(2) },
            small_cfg(1),
        ] {
            assert!(matches!(FastText::new(cfg, 0), Err(FastTextError::InvalidConfig { .. })));
        }
        let mut model = FastText::new(small_cfg(2), 0).unwrap();
        let mut scratch = Scratch::default();
        assert!(matches!(
            model.train_example("a", 2, 0.1, &mut scratch),
            Err(FastTextError::LabelOutOfRange { label: 2, num_classes: 2 })
        ));
        for lr in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                model.train_example("a", 0, lr, &mut scratch),
                Err(FastTextError::InvalidLearningRate { .. })
            ));
        }
        assert!(matches!(
            model.fit(&["a"], &[], &FastTextTrainConfig::default(), 0),
            Err(FastTextError::LengthMismatch { texts: 1, labels: 0 })
        ));
    }

    #[test]
    fn lr_decays_linearly_to_zero() {
        let train = FastTextTrainConfig { lr: 0.5, epochs: 5 };
        assert_eq!(train.lr_at(0, 100), 0.5);
        assert_eq!(train.lr_at(50, 100), 0.25);
        assert_eq!(train.lr_at(100, 100), 0.0);
        assert_eq!(train.lr_at(150, 100), 0.0);
        assert_eq!(train.lr_at(3, 0), 0.5);
    }
}
