//! One training step of the image proxy: u8 images in, augmented,
//! normalised, forward, cross-entropy, backward and an SGD update, with the
//! per-example logits out for training-dynamics scores.
//!
//! The augmentation is the CIFAR recipe of He et al. 2016, "Deep Residual
//! Learning for Image Recognition" (arXiv:1512.03385), section 4.2: "4 pixels
//! are padded on each side, and a 32x32 crop is randomly sampled from the
//! padded image or its horizontal flip". Padding is black (pixel value 0
//! before normalisation), as torchvision's `RandomCrop(32, padding=4)` does.
//! Crop and flip are drawn from the trainer's seeded generator, and initial
//! weights from [`seeded_var_builder`] (ChaCha8, not candle's device RNG), so
//! a run is reproducible from its seed; every reduction in the kernels uses
//! fixed chunks, so it does not depend on the thread count either.

use crate::resnet::{ConvImpl, FoldedResNet, ResNet, ResNetConfig};
use crate::sgd::{SgdConfig, SgdMomentum};
use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The ChaCha8 stream the augmentation draws from; initialisation uses
/// streams derived from tensor names, so the two never overlap in practice.
const AUGMENT_STREAM: u64 = 0xA06;

/// Per-channel normalisation of RGB pixels scaled to [0, 1]:
/// `(v / 255 - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Channel means of the training set, RGB.
    pub mean: [f32; 3],
    /// Channel standard deviations of the training set, RGB.
    pub std: [f32; 3],
}

impl Normalize {
    /// CIFAR-10's training-set statistics, the values torchvision examples use.
    pub const CIFAR10: Self = Self { mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] };
}

/// The augmentation of every training image: a random crop of the image
/// padded by `crop_padding` black pixels on each side, and random mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Pixels of padding around the random crop.
    pub crop_padding: i32,
    /// Random horizontal flips.
    pub flip: bool,
}

impl Augmentation {
    /// The standard CIFAR augmentation: 4 pixels of padding and flips.
    pub const CIFAR: Self = Self { crop_padding: 4, flip: true };
}

/// Where one training image is cropped from and whether it is mirrored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Vertical shift of the crop in pixels, in `-padding..=padding`.
    pub dy: i32,
    /// Horizontal shift of the crop in pixels, same range.
    pub dx: i32,
    /// Mirror left-right.
    pub flip: bool,
}

impl Augment {
    /// A uniformly random crop within `a`'s padding and, when `a` flips, a
    /// fair coin for the mirror (drawn either way, so the crops do not
    /// depend on it).
    pub fn random(rng: &mut impl Rng, a: Augmentation) -> Self {
        let r = -a.crop_padding..=a.crop_padding;
        Self { dy: rng.random_range(r.clone()), dx: rng.random_range(r), flip: rng.random::<bool>() && a.flip }
    }
}

/// Turns `n` HWC RGB u8 images of `size x size` pixels into the normalised
/// f32 NHWC tensor `[n, size, size, 3]` the ResNet takes, optionally
/// augmenting image `i` by `augment[i]`. Shared by training and inference so
/// the two always normalise alike.
pub fn images_to_tensor(images: &[u8], size: usize, norm: &Normalize, augment: Option<&[Augment]>) -> Result<Tensor> {
    let pixels = size * size * 3;
    if pixels == 0 || !images.len().is_multiple_of(pixels) {
        bail!("images_to_tensor: {} bytes is not a whole number of {size}x{size}x3 images", images.len())
    }
    let n = images.len() / pixels;
    if let Some(a) = augment.filter(|a| a.len() != n) {
        bail!("images_to_tensor: {} augmentations for {n} images", a.len())
    }
    // v * scale + offset == (v / 255 - mean) / std; black padding is offset.
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let offset: [f32; 3] = std::array::from_fn(|c| -norm.mean[c] / norm.std[c]);
    let mut out = vec![0f32; images.len()];
    out.par_chunks_mut(pixels).zip(images.par_chunks(pixels)).enumerate().for_each(|(i, (dst, src))| {
        let a = augment.map_or(Augment::default(), |a| a[i]);
        let s = size as i32;
        for (h, row) in dst.chunks_exact_mut(size * 3).enumerate() {
            let sh = h as i32 + a.dy;
            for (w, px) in row.chunks_exact_mut(3).enumerate() {
                let sw = if a.flip { s - 1 - w as i32 } else { w as i32 } + a.dx;
                let inside = (0..s).contains(&sh) && (0..s).contains(&sw);
                for c in 0..3 {
                    let v = if inside { src[((sh * s + sw) * 3) as usize + c] as f32 } else { 0.0 };
                    px[c] = v * scale[c] + offset[c];
                }
            }
        }
    });
    Tensor::from_vec(out, (n, size, size, 3), &Device::Cpu)
}

/// A `VarBuilder` over `varmap` that creates missing tensors on the CPU from
/// `seed` instead of candle's device RNG, so the same seed gives the same
/// weights. Each tensor draws from its own ChaCha8 stream chosen by a hash
/// of its name, so values do not depend on creation order.
pub fn seeded_var_builder(varmap: &VarMap, seed: u64) -> VarBuilder<'static> {
    seeded_var_builder_on(varmap, seed, &Device::Cpu)
}

/// [`seeded_var_builder`] creating its tensors on `device`: the values are
/// drawn on the host, so every device starts from the same weights.
pub fn seeded_var_builder_on(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(SeededInit { varmap: varmap.clone(), seed }), DType::F32, device.clone())
}

/// The backend behind [`seeded_var_builder`].
struct SeededInit {
    varmap: VarMap,
    seed: u64,
}

impl SeededInit {
    fn values(&self, n: usize, name: &str, init: Init) -> Result<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(xxhash_rust::xxh3::xxh3_64(name.as_bytes()));
        Ok(match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform { lo, up } if lo < up => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| {
                    // Box-Muller; 1 - u keeps the logarithm finite.
                    let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                    (mean + stdev * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect(),
            other => bail!("seeded init of {name}: unsupported {other:?}; give Randn or Uniform explicitly"),
        })
    }
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if dtype != DType::F32 {
            bail!("seeded init of {name}: only f32, got {dtype:?}")
        }
        let mut vars = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                bail!("{name}: shape {s:?} requested but {:?} stored", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let var = Var::from_vec(self.values(s.elem_count(), name, h)?, s, dev)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let vars = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        match vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => bail!("{name}: not in the VarMap and no shape to create it"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().is_ok_and(|vars| vars.contains_key(name))
    }
}

/// What one [`ImageTrainer::step`] reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// Mean cross-entropy over the batch, before the update.
    pub loss: f32,
    /// Examples whose largest logit is their label.
    pub correct: usize,
    /// Logits before the update, `[n * num_classes]` row-major.
    pub logits: Vec<f32>,
}

/// A ResNet, its parameters and its optimizer, trained one batch at a time.
pub struct ImageTrainer {
    model: ResNet,
    device: Device,
    varmap: VarMap,
    opt: SgdMomentum,
    rng: ChaCha8Rng,
    norm: Normalize,
    augment: Augmentation,
}

impl ImageTrainer {
    /// A freshly initialised network on `device` (weights from `seed`, see
    /// [`seeded_var_builder`]; kernels from [`crate::device::conv_impl`])
    /// normalising with [`Normalize::CIFAR10`] and augmenting with
    /// [`Augmentation::CIFAR`].
    pub fn new(cfg: ResNetConfig, opt: SgdConfig, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let model = ResNet::new(&cfg, seeded_var_builder_on(&varmap, seed, device))?
            .with_conv_impl(crate::device::conv_impl(device));
        let opt = SgdMomentum::new(model.trainable_vars(), opt)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(AUGMENT_STREAM);
        let (norm, augment) = (Normalize::CIFAR10, Augmentation::CIFAR);
        Ok(Self { model, device: device.clone(), varmap, opt, rng, norm, augment })
    }

    /// Normalises with other channel statistics, for datasets other than
    /// CIFAR-10.
    pub fn with_normalize(mut self, norm: Normalize) -> Self {
        self.norm = norm;
        self
    }

    /// Augments every training image with `augment`.
    pub fn with_augment(mut self, augment: Augmentation) -> Self {
        self.augment = augment;
        self
    }

    /// Runs the network with other kernels (see [`ConvImpl`]).
    pub fn with_conv_impl(mut self, imp: ConvImpl) -> Self {
        self.model = self.model.with_conv_impl(imp);
        self
    }

    /// The normalisation applied to every batch.
    pub fn normalize(&self) -> &Normalize {
        &self.norm
    }

    /// One SGD step at learning rate `lr` on `images` (`n` HWC RGB u8 images
    /// of `image_size` pixels square) with `labels` (`n` values below
    /// `num_classes`).
    pub fn step(&mut self, images: &[u8], labels: &[u32], lr: f64) -> Result<StepOutput> {
        let cfg = self.model.config();
        let (n, size, classes) = (labels.len(), cfg.image_size, cfg.num_classes);
        if n == 0 || images.len() != n * size * size * 3 {
            bail!("step: {} bytes for {n} labels, expected {n} images of {size}x{size}x3", images.len())
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            bail!("step: label {l} is not below num_classes {classes}")
        }
        let augment: Vec<Augment> = (0..n).map(|_| Augment::random(&mut self.rng, self.augment)).collect();
        let x = images_to_tensor(images, size, &self.norm, Some(&augment))?.to_device(&self.device)?;
        let logits = self.model.forward_train(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &Tensor::from_slice(labels, n, &self.device)?)?;
        self.opt.backward_step(&loss, lr)?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let correct = logits.chunks_exact(classes).zip(labels).filter(|(row, &l)| argmax(row) == l as usize).count();
        Ok(StepOutput { loss: loss.to_scalar::<f32>()?, correct, logits })
    }

    /// Writes every tensor, running statistics included, as safetensors
    /// (readable by [`FoldedResNet::load`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.varmap.save(path)
    }

    /// An inference snapshot of the current weights.
    pub fn folded(&self) -> Result<FoldedResNet> {
        self.model.fold()
    }
}

/// Index of the largest value, the first on ties (as `torch.argmax`).
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_formula() -> Result<()> {
        let img: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
        let x = images_to_tensor(&img, 2, &Normalize::CIFAR10, None)?.flatten_all()?.to_vec1::<f32>()?;
        for (i, (&v, &p)) in x.iter().zip(&img).enumerate() {
            let c = i % 3;
            let want = (p as f32 / 255.0 - Normalize::CIFAR10.mean[c]) / Normalize::CIFAR10.std[c];
            assert!((v - want).abs() < 1e-5, "{i}: {v} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn augmentation_shifts_flips_and_pads_black() -> Result<()> {
        // One channel's worth of distinct values in a 3x3 image.
        let img: Vec<u8> = (0..27).map(|i| i as u8 + 1).collect();
        let norm = Normalize { mean: [0.0; 3], std: [1.0 / 255.0; 3] };
        let aug = Augment { dy: 1, dx: -1, flip: true };
        let x = images_to_tensor(&img, 3, &norm, Some(&[aug]))?.flatten_all()?.to_vec1::<f32>()?;
        // out(h, w) = src(h + 1, 2 - w - 1): rows 1, 2 of the source, columns
        // 1, 0 and the padding; the last row falls in the padding.
        let src = |h: usize, w: usize| img[(h * 3 + w) * 3] as f32;
        let want = [src(1, 1), src(1, 0), 0.0, src(2, 1), src(2, 0), 0.0, 0.0, 0.0, 0.0];
        let got: Vec<f32> = x.chunks_exact(3).map(|px| px[0]).collect();
        assert_eq!(got, want);
        Ok(())
    }

    /// Bright images are class 1 and dark ones class 0, a task a tiny
    /// ResNet learns in a few steps.
    fn toy_batch(n: usize, size: usize, seed: u64) -> (Vec<u8>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..2)).collect();
        let mut images = Vec::with_capacity(n * size * size * 3);
        for &l in &labels {
            let base = if l == 1 { 200 } else { 40 };
            images.extend((0..size * size * 3).map(|_| base + rng.random_range(0..30u8)));
        }
        (images, labels)
    }

    fn tiny() -> ResNetConfig {
        ResNetConfig { depth: 8, width: 4, num_classes: 2, image_size: 8 }
    }

    #[test]
    fn training_is_deterministic_and_learns() -> Result<()> {
        let run = |seed: u64| -> Result<Vec<StepOutput>> {
            let mut t = ImageTrainer::new(tiny(), SgdConfig::default(), seed, &Device::Cpu)?;
            (0..30)
                .map(|i| {
                    let (x, y) = toy_batch(16, 8, i);
                    t.step(&x, &y, 0.05)
                })
                .collect()
        };
        let (a, b, c) = (run(1)?, run(1)?, run(2)?);
        assert_eq!(a, b, "same seed, same run");
        assert_ne!(a[0].logits, c[0].logits, "the seed changes the weights");
        let last = a.last().unwrap();
        assert!(last.correct >= 15 && last.loss < a[0].loss * 0.5, "did not learn: {last:?} after {:?}", a[0].loss);
        Ok(())
    }

    #[test]
    fn runs_are_identical_across_thread_counts() -> Result<()> {
        let run = |threads: usize| -> Result<Vec<StepOutput>> {
            let pool =
                rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(candle_core::Error::wrap)?;
            pool.install(|| {
                let mut t = ImageTrainer::new(tiny(), SgdConfig::default(), 4, &Device::Cpu)?;
                (0..3)
                    .map(|i| {
                        let (x, y) = toy_batch(20, 8, i);
                        t.step(&x, &y, 0.05)
                    })
                    .collect()
            })
        };
        assert_eq!(run(1)?, run(3)?);
        Ok(())
    }

    #[test]
    fn saved_weights_load_into_the_same_folded_network() -> Result<()> {
        let mut t = ImageTrainer::new(tiny(), SgdConfig::default(), 3, &Device::Cpu)?;
        let (x, y) = toy_batch(8, 8, 0);
        t.step(&x, &y, 0.1)?;
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("model.safetensors");
        t.save(&path)?;
        let input = images_to_tensor(&x, 8, t.normalize(), None)?;
        let (f1, l1) = t.folded()?.forward(&input)?;
        let (f2, l2) = FoldedResNet::load(&path, &tiny(), &Device::Cpu)?.forward(&input)?;
        assert_eq!(f1.flatten_all()?.to_vec1::<f32>()?, f2.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(l1.flatten_all()?.to_vec1::<f32>()?, l2.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }

    #[test]
    fn bad_batches_are_errors() -> Result<()> {
        let mut t = ImageTrainer::new(tiny(), SgdConfig::default(), 0, &Device::Cpu)?;
        let (x, y) = toy_batch(4, 8, 0);
        assert!(t.step(&x[1..], &y, 0.1).is_err(), "short image buffer");
        assert!(t.step(&x, &[0, 1, 2, 0], 0.1).is_err(), "label out of range");
        assert!(t.step(&[], &[], 0.1).is_err(), "empty batch");
        assert!(images_to_tensor(&x, 8, &Normalize::CIFAR10, Some(&[Augment::default()])).is_err());
        Ok(())
    }
}
