//! The training recipe of every proxy preset, in one place: the network, the
//! optimiser and its schedule, augmentation, normalisation and the order rows
//! are visited in. `sieve train` builds a [`Recipe`] from the preset name and
//! the user's overrides, trains by it, and records it in `proxy.json`'s
//! `train_config`; the command line's defaults are the values below.
//!
//! The image recipe follows the short-budget recipes of fast CIFAR trainers
//! (airbench, Page's DAWNBench ResNet): SGD with Nesterov momentum 0.9,
//! weight decay 5e-4, batch 128, a one-cycle learning rate (linear warm-up
//! over the first 20% of steps to the peak, then linear decay to zero),
//! random crop (4-pixel padding) and horizontal flip. The text recipe is
//! fastText's (Joulin et al. 2017), measured on SST-2 (see
//! [`FastTextTrainConfig`]).

use serde::{Deserialize, Serialize};

use crate::artifact::Architecture;
use crate::fasttext::{FastTextConfig, FastTextTrainConfig};
use crate::image_trainer::{Augmentation, Normalize};
use crate::resnet::ResNetConfig;
use crate::sgd::SgdConfig;

/// The text model's preset name; every other preset is a ResNet (`resnet8`,
/// `resnet20`, ...: `resnet` and a depth 6n+2).
pub const FASTTEXT: &str = "fasttext";
/// The image preset of a dataset that names none.
pub const DEFAULT_IMAGE_PRESET: &str = "resnet8";

/// ResNet mini-batch: the batch the PyTorch baselines use.
const IMAGE_BATCH: usize = 128;
/// Peak learning rate at batch 128, scaled linearly with the batch.
const IMAGE_PEAK_LR: f64 = 0.2;
/// ResNet epochs: SVP's "fewer epochs" proxy on a CPU budget.
const IMAGE_EPOCHS: usize = 4;
/// Fraction of steps spent warming the learning rate up.
const WARMUP: f64 = 0.2;
/// Rows of the shuffle buffer a streamed training split passes through:
/// 16,384 CIFAR images are about 40 MB encoded, and with row groups also
/// shuffled, neighbours in a batch rarely come from the same part of a file.
const SHUFFLE_BUFFER: usize = 16_384;
/// A text training split whose payload is under this many bytes is held in
/// memory, hashed once and shuffled whole every epoch: SST-2's 67,349
/// sentences are 4.5 MB, so reading the Parquet once instead of every epoch
/// saves a third of the text proxy's training time, and a whole-split shuffle
/// replaces the buffer's local one.
const TEXT_CACHE_BYTES: usize = 256 << 20;

/// What the user may change about a preset (`--width`, `--epochs`,
/// `--batch-size`, `--lr`, or a dataset descriptor's defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// ResNet first-stage width, or the fastText embedding width.
    pub width: Option<usize>,
    /// Training epochs.
    pub epochs: Option<usize>,
    /// Mini-batch size (images only).
    pub batch_size: Option<usize>,
    /// Peak learning rate (images) or first-step learning rate (text).
    pub lr: Option<f64>,
}

/// Why a preset name or an override makes no recipe.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// The preset is neither `fasttext` nor `resnet<depth>`.
    #[error("unknown proxy '{0}': resnet8, resnet20, ... or fasttext")]
    UnknownPreset(String),
    /// A ResNet depth that is not 6n + 2.
    #[error("a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 56...), not {0}")]
    Depth(usize),
    /// An override of 0 where at least 1 is needed.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// How a ResNet proxy trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecipe {
    /// The network.
    pub network: ResNetConfig,
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per SGD step.
    pub batch_size: usize,
    /// The one-cycle schedule's peak learning rate.
    pub peak_lr: f64,
    /// Fraction of the steps spent warming up to the peak.
    pub warmup: f64,
    /// Momentum and weight decay.
    pub sgd: SgdConfig,
    /// Random crops and flips.
    pub augment: Augmentation,
    /// Pixel normalisation, in training and scoring alike.
    pub normalize: Normalize,
    /// Rows of the shuffle buffer the training split streams through.
    pub shuffle_buffer: usize,
}

impl ImageRecipe {
    /// The one-cycle learning rate of step `step` of `total`: linear warm-up
    /// to the peak, then linear decay to 0.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let t = step as f64 / total.max(1) as f64;
        if t < self.warmup {
            self.peak_lr * t / self.warmup
        } else {
            self.peak_lr * (1.0 - t).max(0.0) / (1.0 - self.warmup)
        }
    }
}

/// How a fastText proxy trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextRecipe {
    /// The network.
    pub network: FastTextConfig,
    /// Learning rate and epochs.
    pub schedule: FastTextTrainConfig,
    /// Rows of the shuffle buffer a split too big to hold streams through.
    pub shuffle_buffer: usize,
    /// Payload bytes under which the split is held in memory.
    pub cache_bytes: usize,
}

/// The recipe of one proxy preset, with the user's overrides applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipe {
    /// A ResNet over images.
    Resnet(ImageRecipe),
    /// A fastText classifier over text.
    Fasttext(TextRecipe),
}

impl Recipe {
    /// The recipe of `preset` for `classes` classes, `overrides` applied. An
    /// image batch other than 128 scales the default peak learning rate
    /// linearly with it.
    pub fn new(preset: &str, classes: usize, overrides: &Overrides) -> Result<Self, RecipeError> {
        for (name, v) in
            [("--epochs", overrides.epochs), ("--batch-size", overrides.batch_size), ("--width", overrides.width)]
        {
            if v == Some(0) {
                return Err(RecipeError::Zero(name));
            }
        }
        if preset == FASTTEXT {
            let base = FastTextConfig::new(classes);
            let defaults = FastTextTrainConfig::default();
            return Ok(Self::Fasttext(TextRecipe {
                network: FastTextConfig { dim: overrides.width.unwrap_or(base.dim), ..base },
                schedule: FastTextTrainConfig {
                    lr: overrides.lr.map_or(defaults.lr, |lr| lr as f32),
                    epochs: overrides.epochs.unwrap_or(defaults.epochs),
                },
                shuffle_buffer: SHUFFLE_BUFFER,
                cache_bytes: TEXT_CACHE_BYTES,
            }));
        }
        let depth: usize = preset
            .strip_prefix("resnet")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| RecipeError::UnknownPreset(preset.to_string()))?;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(RecipeError::Depth(depth));
        }
        let base = ResNetConfig::resnet20(classes);
        let batch_size = overrides.batch_size.unwrap_or(IMAGE_BATCH);
        Ok(Self::Resnet(ImageRecipe {
            network: ResNetConfig { depth, width: overrides.width.unwrap_or(base.width), ..base },
            epochs: overrides.epochs.unwrap_or(IMAGE_EPOCHS),
            batch_size,
            peak_lr: overrides.lr.unwrap_or(IMAGE_PEAK_LR * batch_size as f64 / IMAGE_BATCH as f64),
            warmup: WARMUP,
            sgd: SgdConfig::default(),
            augment: Augmentation::CIFAR,
            normalize: Normalize::CIFAR10,
            shuffle_buffer: SHUFFLE_BUFFER,
        }))
    }

    /// The epochs it trains.
    pub fn epochs(&self) -> usize {
        match self {
            Self::Resnet(r) => r.epochs,
            Self::Fasttext(r) => r.schedule.epochs,
        }
    }

    /// The network it trains, as `proxy.json` records it.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::Resnet(r) => Architecture::Resnet(r.network.clone()),
            Self::Fasttext(r) => Architecture::Fasttext(r.network.clone()),
        }
    }

    /// The width of its network: the ResNet's first stage, or the fastText
    /// embedding's.
    pub fn width(&self) -> usize {
        match self {
            Self::Resnet(r) => r.network.width,
            Self::Fasttext(r) => r.network.dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_bad_ones_say_why() {
        let none = Overrides::default();
        let Recipe::Resnet(r) = Recipe::new("resnet20", 10, &none).unwrap() else { panic!("resnet20 is a ResNet") };
        assert_eq!((r.network.depth, r.network.width, r.batch_size, r.peak_lr), (20, 16, 128, 0.2));
        assert_eq!(Recipe::new("resnet9", 10, &none), Err(RecipeError::Depth(9)));
        assert_eq!(Recipe::new("vgg", 10, &none), Err(RecipeError::UnknownPreset("vgg".into())));
        let zero = Overrides { epochs: Some(0), ..none };
        assert_eq!(Recipe::new("fasttext", 2, &zero), Err(RecipeError::Zero("--epochs")));
        assert!(matches!(Recipe::new(FASTTEXT, 2, &none).unwrap(), Recipe::Fasttext(_)));
    }

    #[test]
    fn the_peak_lr_scales_with_the_batch_unless_given() {
        let lr = |o: Overrides| match Recipe::new("resnet8", 10, &o).unwrap() {
            Recipe::Resnet(r) => r.peak_lr,
            Recipe::Fasttext(_) => unreachable!(),
        };
        assert_eq!(lr(Overrides { batch_size: Some(256), ..Default::default() }), 0.4);
        assert_eq!(lr(Overrides { batch_size: Some(256), lr: Some(0.1), ..Default::default() }), 0.1);
    }

    #[test]
    fn one_cycle_warms_up_then_decays_to_zero() {
        let Recipe::Resnet(r) = Recipe::new("resnet8", 10, &Overrides::default()).unwrap() else { unreachable!() };
        assert_eq!(r.lr_at(0, 100), 0.0);
        assert!((r.lr_at(20, 100) - r.peak_lr).abs() < 1e-12);
        assert!((r.lr_at(60, 100) - r.peak_lr / 2.0).abs() < 1e-12);
        assert_eq!(r.lr_at(100, 100), 0.0);
    }
}
