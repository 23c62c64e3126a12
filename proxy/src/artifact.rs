//! A trained proxy as it lives on disk, and the loaded model it becomes
//! ([`crate::cache::ModelCache`] holds the loaded ones of a job).
//!
//! A proxy is a directory: `model.safetensors` (the weights) and
//! `proxy.json` ([`ProxyMeta`]: architecture, classes, preprocessing, and the
//! training record: train and held-out accuracy, epochs, seconds).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::{Placement, Precision};
use crate::error::{ProxyError, Result};
use crate::fasttext::{FastText, FastTextConfig};
use crate::image_trainer::{images_to_tensor, Normalize};
use crate::resnet::{FoldedResNet, ResNetConfig};

/// File name of the weights inside a proxy directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the metadata inside a proxy directory.
pub const META_FILE: &str = "proxy.json";

/// The architecture of a proxy, with everything needed to rebuild it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Architecture {
    /// A CIFAR-style ResNet over RGB images.
    Resnet(ResNetConfig),
    /// A fastText-style bag of hashed n-grams over text.
    Fasttext(FastTextConfig),
}

impl Architecture {
    /// Length of the penultimate feature vector (the `embedding` column).
    pub fn feature_dim(&self) -> usize {
        match self {
            Architecture::Resnet(cfg) => cfg.feature_dim(),
            Architecture::Fasttext(cfg) => cfg.dim,
        }
    }
}

/// One epoch of the proxy's training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Training accuracy over the epoch (on augmented inputs for images).
    pub accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Seconds spent in the epoch.
    pub seconds: f64,
}

/// `proxy.json`: what a proxy is and how it was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyMeta {
    /// The architecture preset name (`resnet8`, `fasttext`, ...).
    pub preset: String,
    /// The architecture and its sizes.
    pub architecture: Architecture,
    /// Class names, index = class id.
    pub classes: Vec<String>,
    /// Pixel normalisation of an image proxy (`None` for text).
    pub normalize: Option<Normalize>,
    /// The files the proxy trained on, in input order: its training
    /// dynamics (`dynamics.parquet`, keyed by input position) describe
    /// exactly these rows.
    #[serde(default)]
    pub train_files: Vec<PathBuf>,
    /// The training configuration, as given (recorded, not re-read).
    pub train_config: serde_json::Value,
    /// Rows the proxy trained on.
    pub train_rows: u64,
    /// Training rows skipped because they could not be decoded or had bad labels.
    pub train_rows_skipped: u64,
    /// Accuracy on the training split, measured without augmentation.
    pub train_accuracy: Option<f64>,
    /// Accuracy on the held-out split; `None` without one.
    pub heldout_accuracy: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Wall-clock seconds of training.
    pub seconds: f64,
    /// Per-epoch training curve.
    pub history: Vec<EpochRecord>,
}

impl ProxyMeta {
    /// The record of a proxy about to be trained: what it is, nothing measured yet.
    pub fn new(
        preset: &str,
        architecture: Architecture,
        classes: Vec<String>,
        normalize: Option<Normalize>,
        train_files: Vec<PathBuf>,
        train_config: serde_json::Value,
    ) -> Self {
        Self {
            preset: preset.to_string(),
            architecture,
            classes,
            normalize,
            train_files,
            train_config,
            train_rows: 0,
            train_rows_skipped: 0,
            train_accuracy: None,
            heldout_accuracy: None,
            epochs: 0,
            seconds: 0.0,
            history: Vec::new(),
        }
    }

    /// Reads `dir/proxy.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ProxyError::Io { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|e| ProxyError::Proxy { dir: dir.to_path_buf(), message: e.to_string() })
    }

    /// Writes `dir/proxy.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        let text = serde_json::to_string_pretty(self).expect("ProxyMeta serializes");
        std::fs::write(&path, text).map_err(|source| ProxyError::Io { path, source })
    }
}

/// A loaded, inference-ready proxy.
pub enum ProxyModel {
    /// A ResNet with BatchNorm folded into its convolutions.
    Resnet(FoldedResNet),
    /// A fastText classifier.
    Fasttext(FastText),
}

/// A proxy ready to score: its metadata and its model.
pub struct Proxy {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// `proxy.json`.
    pub meta: ProxyMeta,
    /// The model.
    pub model: ProxyModel,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("dir", &self.dir).field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl Proxy {
    /// Loads the proxy stored in `dir`; an image proxy onto `placement`'s
    /// device and precision (a text proxy always runs on the CPU).
    pub fn load(dir: &Path, placement: &Placement) -> Result<Self> {
        let meta = ProxyMeta::read(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let model = match &meta.architecture {
            Architecture::Resnet(cfg) => {
                // A weights file that does not fit the architecture is the proxy's fault.
                let bad_weights =
                    |e: candle_core::Error| ProxyError::Proxy { dir: dir.to_path_buf(), message: e.to_string() };
                let model = FoldedResNet::load(&weights, cfg, &placement.device).map_err(bad_weights)?;
                ProxyModel::Resnet(match placement.precision {
                    Precision::F32 => model,
                    half => model.to_dtype(half.dtype())?,
                })
            }
            Architecture::Fasttext(cfg) => ProxyModel::Fasttext(FastText::load(&weights, cfg.clone())?),
        };
        Ok(Self { dir: dir.to_path_buf(), meta, model })
    }

    /// Number of classes the proxy predicts.
    pub fn num_classes(&self) -> usize {
        self.meta.classes.len()
    }

    /// The side of the square RGB input of an image proxy; `None` for text.
    pub fn image_size(&self) -> Option<usize> {
        match &self.meta.architecture {
            Architecture::Resnet(cfg) => Some(cfg.image_size),
            Architecture::Fasttext(_) => None,
        }
    }
}

/// One forward pass over a micro-batch: row-major logits `[n, classes]` and
/// penultimate features `[n, feature_dim]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Forward {
    /// Logits, one row per input.
    pub logits: Vec<f32>,
    /// Penultimate features (the embedding), one row per input.
    pub features: Vec<f32>,
}

impl Proxy {
    /// Width of the penultimate features (the embedding).
    pub fn feature_dim(&self) -> usize {
        self.meta.architecture.feature_dim()
    }

    /// Images per forward pass on the device the model lives on.
    pub fn image_micro_batch(&self) -> usize {
        match &self.model {
            ProxyModel::Resnet(model) => crate::device::image_micro_batch(model.device()),
            ProxyModel::Fasttext(_) => crate::device::image_micro_batch(&candle_core::Device::Cpu),
        }
    }

    /// Starts the forward pass of `n` decoded RGB images of the proxy's
    /// input size (HWC u8, back to back). On a GPU this returns once the
    /// work is queued, so the caller can decode the next batch meanwhile;
    /// [`Launched::read`] waits for the results.
    pub fn launch_images(&self, pixels: &[u8], n: usize) -> Result<Launched> {
        if n == 0 {
            return Ok(Launched(None));
        }
        let (ProxyModel::Resnet(model), Some(norm)) = (&self.model, &self.meta.normalize) else {
            return Err(self.wrong_kind("images"));
        };
        let x = images_to_tensor(pixels, model.config().image_size, norm, None)?.to_device(model.device())?;
        Ok(Launched(Some(model.forward(&x)?)))
    }

    /// Runs a batch of texts through the model.
    pub fn forward_texts(&self, texts: &[&str]) -> Result<Forward> {
        match &self.model {
            ProxyModel::Fasttext(model) => {
                let (logits, features) = model.predict_batch_with_hidden(texts);
                Ok(Forward { logits, features })
            }
            ProxyModel::Resnet(_) => Err(self.wrong_kind("text")),
        }
    }

    fn wrong_kind(&self, input: &str) -> ProxyError {
        ProxyError::Proxy {
            dir: self.dir.clone(),
            message: format!("a {} proxy cannot read {input}", self.meta.preset),
        }
    }
}

/// A forward pass in flight: `(features, logits)` tensors on the device.
pub struct Launched(Option<(candle_core::Tensor, candle_core::Tensor)>);

impl Launched {
    /// Waits for the pass and copies its results to the host.
    pub fn read(self) -> Result<Forward> {
        let Some((features, logits)) = self.0 else { return Ok(Forward::default()) };
        Ok(Forward {
            logits: logits.flatten_all()?.to_vec1::<f32>()?,
            features: features.flatten_all()?.to_vec1::<f32>()?,
        })
    }
}
