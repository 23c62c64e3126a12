//! The CIFAR ResNet of He, Zhang, Ren and Sun 2016, "Deep Residual Learning
//! for Image Recognition" (arXiv:1512.03385), section 4.2: a 3x3 stem, three
//! stages of `n` basic blocks of widths `w, 2w, 4w` (the second and third
//! start with stride 2), global average pooling and a linear head; depth
//! `6n + 2`. Where a block changes shape its shortcut is a 1x1 convolution
//! with batch norm (the paper's option B, as in torchvision). The layout of
//! this file follows candle-transformers' `models/resnet.rs`.
//!
//! Activations are NHWC and convolution weights HWIO (`[ksize, ksize, c_in,
//! c_out]`) so that the fast kernels of [`sieve_kernels`] apply; safetensors
//! keys are the `vb.pp` paths, e.g. `stem.conv.weight`,
//! `stages.0.blocks.1.bn2.weight`, `stages.1.blocks.0.shortcut.bn.running_var`,
//! `head.weight`. Batch-norm running statistics live in the same `VarMap` as
//! the parameters but are not among [`ResNet::trainable_vars`].
//!
//! For inference, [`ResNet::fold`] folds every batch norm into the weights and
//! bias of the convolution before it (`w' = w gamma / sigma`,
//! `b' = beta - mean gamma / sigma`), giving a [`FoldedResNet`] that runs one
//! fused conv + bias + ReLU op per layer.

use candle_core::{bail, DType, Device, Module, Result, Tensor, Var};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use sieve_kernels::conv_bn::ConvBnConfig;
pub use sieve_kernels::conv_impl::ConvImpl;
use sieve_kernels::malloc::retain_freed_memory;
use std::path::Path;

/// Batch-norm epsilon, PyTorch's default.
pub const BN_EPS: f64 = 1e-5;

/// Weight of the current batch in the running statistics, PyTorch's default.
pub const BN_MOMENTUM: f64 = 0.1;

/// The shape of a CIFAR ResNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Number of weighted layers, `6n + 2` for `n` blocks per stage.
    pub depth: usize,
    /// Channels of the first stage (16 in the paper); the others have 2x, 4x.
    pub width: usize,
    /// Outputs of the linear head.
    pub num_classes: usize,
    /// Input height and width in pixels (32 for CIFAR).
    pub image_size: usize,
}

impl ResNetConfig {
    /// ResNet-8 (one block per stage), width 16, 32x32 inputs: 78k parameters.
    pub fn resnet8(num_classes: usize) -> Self {
        Self { depth: 8, width: 16, num_classes, image_size: 32 }
    }

    /// ResNet-20 (three blocks per stage), width 16, 32x32 inputs: 0.27M
    /// parameters, 41M multiply-adds per image.
    pub fn resnet20(num_classes: usize) -> Self {
        Self { depth: 20, width: 16, num_classes, image_size: 32 }
    }

    /// Blocks per stage, `n = (depth - 2) / 6`, after checking every field.
    pub fn blocks_per_stage(&self) -> Result<usize> {
        if self.depth < 8 || !(self.depth - 2).is_multiple_of(6) {
            bail!("ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, ...), got {}", self.depth)
        }
        if self.width == 0 || self.num_classes == 0 {
            bail!("ResNet width and num_classes must be positive, got {self:?}")
        }
        if self.image_size < 4 {
            bail!("ResNet inputs must be at least 4x4 (two stride-2 stages), got {}", self.image_size)
        }
        Ok((self.depth - 2) / 6)
    }

    /// Multiply-accumulates of one image's forward pass: convolutions and
    /// head (batch norm, ReLU and pooling are a rounding error). 40.8M for
    /// ResNet-20, 12.5M for ResNet-8.
    pub fn macs_per_image(&self) -> Result<usize> {
        let n = self.blocks_per_stage()?;
        let conv = |size: usize, ksize: usize, c_in: usize, c_out: usize| size * size * ksize * ksize * c_in * c_out;
        let (w, mut size) = (self.width, self.image_size);
        let mut macs = conv(size, 3, 3, w);
        for (c_in, c_out) in [(w, w), (w, 2 * w), (2 * w, 4 * w)] {
            if c_in != c_out {
                // Stride 2 for both the first 3x3 and the 1x1 shortcut.
                size = (size - 1) / 2 + 1;
                macs += conv(size, 1, c_in, c_out);
            }
            macs += conv(size, 3, c_in, c_out) + (2 * n - 1) * conv(size, 3, c_out, c_out);
        }
        Ok(macs + self.feature_dim() * self.num_classes)
    }

    /// Length of the penultimate feature vector, `4 * width`.
    pub fn feature_dim(&self) -> usize {
        4 * self.width
    }
}

/// How a layer runs: which kernels, and batch or running statistics.
#[derive(Clone, Copy, Debug)]
struct Mode {
    imp: ConvImpl,
    train: bool,
}

/// A convolution-plus-normalisation unit, the building block of the
/// skeleton below; the trainable and the folded networks differ only here.
trait Unit {
    /// `relu?(bn(conv(x)) + residual?)` in whatever form the unit holds.
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool, mode: Mode) -> Result<Tensor>;
}

/// A convolution without bias followed by batch norm.
struct ConvBn {
    weight: Var,
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
    stride: usize,
    padding: usize,
}

/// Builds a `ksize x ksize` convolution (weights under `conv`) and its batch
/// norm (under `bn`). Kaiming-normal weights, std `sqrt(2 / fan_in)` with
/// `fan_in = ksize^2 c_in` (He et al. 2015, "Delving Deep into Rectifiers",
/// eq. 10); gamma 1, beta 0.
fn conv_bn(c_in: usize, c_out: usize, ksize: usize, stride: usize, conv: VarBuilder, bn: VarBuilder) -> Result<ConvBn> {
    let stdev = (2.0 / (ksize * ksize * c_in) as f64).sqrt();
    let weight = conv.get_with_hints((ksize, ksize, c_in, c_out), "weight", Init::Randn { mean: 0.0, stdev })?;
    let var = |name, value| -> Result<Var> { Var::from_tensor(&bn.get_with_hints(c_out, name, Init::Const(value))?) };
    Ok(ConvBn {
        weight: Var::from_tensor(&weight)?,
        gamma: var("weight", 1.0)?,
        beta: var("bias", 0.0)?,
        running_mean: var("running_mean", 0.0)?,
        running_var: var("running_var", 1.0)?,
        stride,
        padding: ksize / 2,
    })
}

impl ConvBn {
    /// `gamma / sqrt(running_var + eps)` and `beta - running_mean * that`.
    fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.gamma.broadcast_div(&(self.running_var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let shift = (self.beta.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Moves the running statistics towards this batch's, with PyTorch's
    /// unbiased variance (`rows / (rows - 1)`).
    fn update_running(&self, mean: &Tensor, var: &Tensor, rows: usize) -> Result<()> {
        let unbias = rows as f64 / (rows.max(2) - 1) as f64;
        let m = BN_MOMENTUM;
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (var * (m * unbias))?)?)
    }

    /// The unit with its batch norm folded into the convolution.
    fn fold(&self) -> Result<FoldedConv> {
        let (scale, shift) = self.eval_affine()?;
        // HWIO: output channels are the last axis, so [c_out] broadcasts.
        // Detached: a snapshot for inference keeps no autograd history.
        let weight = self.weight.broadcast_mul(&scale)?.detach();
        Ok(FoldedConv { weight, bias: shift.detach(), stride: self.stride, padding: self.padding })
    }
}

impl Unit for ConvBn {
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool, mode: Mode) -> Result<Tensor> {
        if mode.train {
            let cfg = ConvBnConfig { stride: self.stride, padding: self.padding, eps: BN_EPS, relu };
            let (y, mean, var) = mode.imp.train_unit(x, &self.weight, &self.gamma, &self.beta, residual, &cfg)?;
            self.update_running(&mean, &var, y.elem_count() / mean.elem_count())?;
            return Ok(y);
        }
        let (scale, shift) = self.eval_affine()?;
        let y = mode
            .imp
            .conv(x, &self.weight, self.stride, self.padding)?
            .broadcast_mul(&mode.imp.per_channel(&scale)?)?
            .broadcast_add(&mode.imp.per_channel(&shift)?)?;
        mode.imp.merge(y, residual, relu)
    }
}

/// A convolution with batch norm folded into its weights and bias.
struct FoldedConv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Unit for FoldedConv {
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool, mode: Mode) -> Result<Tensor> {
        let (w, b, s, p) = (&self.weight, &self.bias, self.stride, self.padding);
        match residual {
            None => mode.imp.conv_bias(x, w, b, s, p, relu),
            Some(r) => mode.imp.merge(mode.imp.conv_bias(x, w, b, s, p, false)?, Some(r), relu),
        }
    }
}

/// A basic block (figure 2 left of the paper): two 3x3 units and a shortcut,
/// a 1x1 unit when the shape changes and the identity otherwise.
struct BasicBlock<U> {
    conv1: U,
    conv2: U,
    shortcut: Option<U>,
}

fn basic_block(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<BasicBlock<ConvBn>> {
    let shortcut = if stride != 1 || c_in != c_out {
        Some(conv_bn(c_in, c_out, 1, stride, vb.pp("shortcut.conv"), vb.pp("shortcut.bn"))?)
    } else {
        None
    };
    Ok(BasicBlock {
        conv1: conv_bn(c_in, c_out, 3, stride, vb.pp("conv1"), vb.pp("bn1"))?,
        conv2: conv_bn(c_out, c_out, 3, 1, vb.pp("conv2"), vb.pp("bn2"))?,
        shortcut,
    })
}

impl<U: Unit> BasicBlock<U> {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = self.conv1.forward(x, None, true, mode)?;
        let shortcut = match &self.shortcut {
            Some(s) => s.forward(x, None, false, mode)?,
            None => x.clone(),
        };
        self.conv2.forward(&h, Some(&shortcut), true, mode)
    }

    fn map<V>(&self, f: &impl Fn(&U) -> Result<V>) -> Result<BasicBlock<V>> {
        Ok(BasicBlock {
            conv1: f(&self.conv1)?,
            conv2: f(&self.conv2)?,
            shortcut: self.shortcut.as_ref().map(f).transpose()?,
        })
    }
}

/// Everything up to the pooled features, shared by the trainable and the
/// folded network.
struct Body<U> {
    stem: U,
    stages: Vec<Vec<BasicBlock<U>>>,
}

fn body(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Body<ConvBn>> {
    let n = cfg.blocks_per_stage()?;
    let w = cfg.width;
    let stem = conv_bn(3, w, 3, 1, vb.pp("stem.conv"), vb.pp("stem.bn"))?;
    let mut stages = Vec::with_capacity(3);
    for (s, (c_in, c_out, stride)) in [(w, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)].into_iter().enumerate() {
        let vb = vb.pp(format!("stages.{s}.blocks"));
        let blocks = (0..n)
            .map(|b| {
                if b == 0 {
                    basic_block(c_in, c_out, stride, vb.pp(b))
                } else {
                    basic_block(c_out, c_out, 1, vb.pp(b))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        stages.push(blocks);
    }
    Ok(Body { stem, stages })
}

impl<U: Unit> Body<U> {
    /// Eval-mode `(features, logits)`: the body, then `head` on its output.
    fn features_and_logits(&self, head: &Linear, x: &Tensor, imp: ConvImpl) -> Result<(Tensor, Tensor)> {
        let features = self.features(x, Mode { imp, train: false })?;
        let logits = head.forward(&features)?;
        Ok((features, logits))
    }

    /// NHWC images `[n, h, w, 3]` to pooled features `[n, 4 width]`.
    fn features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut h = self.stem.forward(&mode.imp.input(x)?, None, true, mode)?;
        for block in self.stages.iter().flatten() {
            h = block.forward(&h, mode)?;
        }
        mode.imp.global_avg_pool(&h)
    }

    fn map<V>(&self, f: impl Fn(&U) -> Result<V>) -> Result<Body<V>> {
        let stages = self.stages.iter().map(|s| s.iter().map(|b| b.map(&f)).collect()).collect::<Result<_>>()?;
        Ok(Body { stem: f(&self.stem)?, stages })
    }

    /// Every unit, in a fixed order: stem, then each block's conv1, conv2, shortcut.
    fn units(&self) -> Vec<&U> {
        let mut units = vec![&self.stem];
        for b in self.stages.iter().flatten() {
            units.extend([&b.conv1, &b.conv2]);
            units.extend(&b.shortcut);
        }
        units
    }
}

/// The trainable CIFAR ResNet.
pub struct ResNet {
    cfg: ResNetConfig,
    body: Body<ConvBn>,
    head: Linear,
    head_vars: [Var; 2],
    imp: ConvImpl,
}

impl ResNet {
    /// Builds the network, creating or loading its tensors through `vb`
    /// (see the module doc for the key names). The head is initialised like
    /// PyTorch's `nn.Linear`, uniform in `+-1 / sqrt(4 width)`.
    ///
    /// # Notes
    /// Also tunes glibc's malloc for the whole process
    /// ([`retain_freed_memory`]): without it a fifth of every training step
    /// goes to page faults.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        retain_freed_memory();
        let body = body(cfg, vb.clone())?;
        let (f, bound) = (cfg.feature_dim(), 1.0 / (cfg.feature_dim() as f64).sqrt());
        let uniform = Init::Uniform { lo: -bound, up: bound };
        let w = Var::from_tensor(&vb.pp("head").get_with_hints((cfg.num_classes, f), "weight", uniform)?)?;
        let b = Var::from_tensor(&vb.pp("head").get_with_hints(cfg.num_classes, "bias", uniform)?)?;
        let head = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        Ok(Self { cfg: cfg.clone(), body, head, head_vars: [w, b], imp: ConvImpl::Fast })
    }

    /// The same network run by other kernels (see [`ConvImpl`]).
    pub fn with_conv_impl(mut self, imp: ConvImpl) -> Self {
        self.imp = imp;
        self
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Logits `[n, num_classes]` for normalised NHWC images `[n, h, w, 3]`,
    /// using batch statistics and updating the running ones (momentum
    /// [`BN_MOMENTUM`]). Differentiable in [`Self::trainable_vars`].
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.body.features(x, Mode { imp: self.imp, train: true })?;
        self.head.forward(&features)
    }

    /// `(features [n, 4 width], logits [n, num_classes])` with running
    /// statistics, without folding; [`FoldedResNet`] computes the same, faster.
    pub fn forward_eval(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.body.features_and_logits(&self.head, x, self.imp)
    }

    /// The parameters SGD updates: convolution weights, batch-norm gamma and
    /// beta, head weight and bias; not the running statistics.
    pub fn trainable_vars(&self) -> Vec<Var> {
        let mut vars: Vec<Var> =
            self.body.units().into_iter().flat_map(|u| [u.weight.clone(), u.gamma.clone(), u.beta.clone()]).collect();
        vars.extend(self.head_vars.iter().cloned());
        vars
    }

    /// A snapshot for inference with every batch norm folded into its
    /// convolution; later training does not change it.
    pub fn fold(&self) -> Result<FoldedResNet> {
        Ok(FoldedResNet {
            cfg: self.cfg.clone(),
            body: self.body.map(ConvBn::fold)?,
            head: Linear::new(self.head_vars[0].as_tensor().copy()?, Some(self.head_vars[1].as_tensor().copy()?)),
            imp: self.imp,
        })
    }
}

/// A ResNet for inference, batch norm folded into the convolutions.
pub struct FoldedResNet {
    cfg: ResNetConfig,
    body: Body<FoldedConv>,
    head: Linear,
    imp: ConvImpl,
}

impl FoldedResNet {
    /// Loads a safetensors file written by `VarMap::save` (e.g.
    /// [`crate::image_trainer::ImageTrainer::save`]) for `cfg` onto
    /// `device`, with that device's kernels ([`crate::device::conv_impl`]).
    pub fn load(path: &Path, cfg: &ResNetConfig, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)?;
        ResNet::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device))?
            .with_conv_impl(crate::device::conv_impl(device))
            .fold()
    }

    /// The same network computing in `dtype` (f16 or bf16 halve the memory
    /// traffic of GPU inference); inputs are cast to it and outputs back to
    /// f32. sieve's CPU kernels are f32 only, so half precision runs
    /// candle's ops.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let cast = |u: &FoldedConv| -> Result<FoldedConv> {
            Ok(FoldedConv {
                weight: u.weight.to_dtype(dtype)?,
                bias: u.bias.to_dtype(dtype)?,
                stride: u.stride,
                padding: u.padding,
            })
        };
        let imp = match (self.imp, dtype) {
            (ConvImpl::Fast, DType::F32) => ConvImpl::Fast,
            (ConvImpl::Fast, _) => ConvImpl::Candle,
            (imp, _) => imp,
        };
        Ok(Self {
            cfg: self.cfg.clone(),
            body: self.body.map(cast)?,
            head: Linear::new(
                self.head.weight().to_dtype(dtype)?,
                self.head.bias().map(|b| b.to_dtype(dtype)).transpose()?,
            ),
            imp,
        })
    }

    /// The device its weights live on.
    pub fn device(&self) -> &Device {
        self.head.weight().device()
    }

    /// The same network run by other kernels (see [`ConvImpl`]).
    pub fn with_conv_impl(mut self, imp: ConvImpl) -> Self {
        self.imp = imp;
        self
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// `(features [n, 4 width], logits [n, num_classes])` for normalised NHWC
    /// images `[n, h, w, 3]`; the features feed k-center, prototypes and
    /// SemDeDup.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        // `to_dtype` to the tensor's own type is a no-op (f32 inference).
        let x = x.to_dtype(self.head.weight().dtype())?;
        let (features, logits) = self.body.features_and_logits(&self.head, &x, self.imp)?;
        Ok((features.to_dtype(DType::F32)?, logits.to_dtype(DType::F32)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_trainer::seeded_var_builder;
    use candle_core::backprop::GradStore;
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// ResNet-8 at width 4 on 12x12 images: every kind of layer, in
    /// milliseconds.
    fn tiny() -> ResNetConfig {
        ResNetConfig { depth: 8, width: 4, num_classes: 3, image_size: 12 }
    }

    fn images(n: usize, cfg: &ResNetConfig, seed: u64) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = cfg.image_size;
        let v: Vec<f32> = (0..n * s * s * 3).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, (n, s, s, 3), &Device::Cpu)
    }

    /// `max |a - b| <= tol * max(1, max |b|)`.
    fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) -> Result<()> {
        let (a, b) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= tol * scale, "{what}: max error {err} > {tol} x {scale}");
        Ok(())
    }

    #[test]
    fn depth_must_be_6n_plus_2() {
        assert_eq!(ResNetConfig::resnet8(10).blocks_per_stage().unwrap(), 1);
        assert_eq!(ResNetConfig::resnet20(10).blocks_per_stage().unwrap(), 3);
        for depth in [0, 2, 7, 10, 21] {
            let err = ResNetConfig { depth, ..ResNetConfig::resnet20(10) }.blocks_per_stage().unwrap_err();
            assert!(err.to_string().contains("6n + 2"), "{err}");
        }
        assert!(ResNetConfig { width: 0, ..ResNetConfig::resnet8(10) }.blocks_per_stage().is_err());
        // The paper's "41M FLOPs" for ResNet-20 counts multiply-adds.
        let macs = ResNetConfig::resnet20(10).macs_per_image().unwrap();
        assert!((40_000_000..42_000_000).contains(&macs), "{macs}");
        assert!(ResNet::new(&ResNetConfig { depth: 9, ..tiny() }, seeded_var_builder(&VarMap::new(), 0)).is_err());
    }

    #[test]
    fn keys_are_the_safetensors_names_and_running_stats_are_not_trained() -> Result<()> {
        let varmap = VarMap::new();
        let net = ResNet::new(&ResNetConfig { depth: 14, ..tiny() }, seeded_var_builder(&varmap, 0))?;
        let keys = varmap.data().lock().unwrap().keys().cloned().collect::<std::collections::HashSet<_>>();
        for k in [
            "stem.conv.weight",
            "stem.bn.running_var",
            "stages.0.blocks.1.bn2.weight",
            "stages.1.blocks.0.shortcut.conv.weight",
            "stages.2.blocks.1.conv1.weight",
            "head.weight",
            "head.bias",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains("stages.0.blocks.0.shortcut.conv.weight"), "identity shortcut has no weights");
        // 13 conv units (stem, 12 block convs) + 2 shortcuts, 5 tensors each, + head.
        assert_eq!(keys.len(), 15 * 5 + 2);
        assert_eq!(net.trainable_vars().len(), 15 * 3 + 2);
        Ok(())
    }

    #[test]
    fn same_seed_same_weights() -> Result<()> {
        let weights = |seed| -> Result<Vec<f32>> {
            let net = ResNet::new(&tiny(), seeded_var_builder(&VarMap::new(), seed))?;
            let mut all = Vec::new();
            for v in net.trainable_vars() {
                all.extend(v.flatten_all()?.to_vec1::<f32>()?);
            }
            Ok(all)
        };
        assert_eq!(weights(7)?, weights(7)?);
        assert_ne!(weights(7)?, weights(8)?);
        // Kaiming: the stem's std is sqrt(2 / 27).
        let varmap = VarMap::new();
        ResNet::new(&ResNetConfig { width: 64, ..tiny() }, seeded_var_builder(&varmap, 1))?;
        let stem = varmap.data().lock().unwrap()["stem.conv.weight"].flatten_all()?.to_vec1::<f32>()?;
        let std = (stem.iter().map(|v| v * v).sum::<f32>() / stem.len() as f32).sqrt();
        assert!((std / (2f32 / 27.0).sqrt() - 1.0).abs() < 0.1, "stem std {std}");
        Ok(())
    }

    /// The fast kernels, candle's own ops and the portable (GPU) path
    /// compute the same training forward, gradients and running statistics
    /// (relative 1e-4: the gradients pass through ten layers of f32 sums in
    /// different orders).
    #[test]
    fn every_kernel_set_agrees_in_training() -> Result<()> {
        let run = |imp: ConvImpl| -> Result<(ResNet, Tensor, GradStore)> {
            let net = ResNet::new(&tiny(), seeded_var_builder(&VarMap::new(), 5))?.with_conv_impl(imp);
            let logits = net.forward_train(&images(4, &tiny(), 1)?)?;
            let grads =
                candle_nn::loss::cross_entropy(&logits, &Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu)?)?.backward()?;
            Ok((net, logits, grads))
        };
        let (fast, fast_logits, fast_grads) = run(ConvImpl::Fast)?;
        for imp in [ConvImpl::Candle, ConvImpl::Portable] {
            let (slow, slow_logits, slow_grads) = run(imp)?;
            assert_close(&fast_logits, &slow_logits, 1e-4, &format!("{imp:?} logits"))?;
            for (i, (a, b)) in fast.trainable_vars().iter().zip(slow.trainable_vars()).enumerate() {
                assert_close(
                    fast_grads.get(a).unwrap(),
                    slow_grads.get(&b).unwrap(),
                    1e-4,
                    &format!("{imp:?} grad of var {i}"),
                )?;
            }
            for (a, b) in fast.body.units().into_iter().zip(slow.body.units()) {
                assert_close(&a.running_mean, &b.running_mean, 1e-4, "running mean")?;
                assert_close(&a.running_var, &b.running_var, 1e-4, "running var")?;
            }
        }
        Ok(())
    }

    /// Folding is exact algebra, so folded and unfolded eval agree to f32
    /// rounding (relative 1e-4), after training has moved the running
    /// statistics and gamma/beta away from their initial values.
    #[test]
    fn folded_network_equals_eval_mode_network() -> Result<()> {
        let varmap = VarMap::new();
        let net = ResNet::new(&tiny(), seeded_var_builder(&varmap, 9))?;
        for seed in 0..3 {
            net.forward_train(&images(6, &tiny(), seed)?)?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for v in net.trainable_vars() {
            let noise: Vec<f32> = (0..v.elem_count()).map(|_| rng.random_range(-0.3..0.3)).collect();
            v.set(&(v.as_tensor() + Tensor::from_vec(noise, v.shape(), &Device::Cpu)?)?)?;
        }
        let x = images(5, &tiny(), 10)?;
        let (features, logits) = net.forward_eval(&x)?;
        for imp in [ConvImpl::Fast, ConvImpl::Candle, ConvImpl::Portable] {
            let (f, l) = net.fold()?.with_conv_impl(imp).forward(&x)?;
            assert_close(&f, &features, 1e-4, &format!("features {imp:?}"))?;
            assert_close(&l, &logits, 1e-4, &format!("logits {imp:?}"))?;
        }
        assert_eq!(features.dims(), [5, tiny().feature_dim()]);
        Ok(())
    }

    /// Half-precision inference stays within its rounding of f32: features
    /// and logits within 2% of their scale. f16 only: candle's CPU matmul has
    /// no bf16, so bf16 (the same code with another type) runs on GPUs only.
    #[test]
    fn half_precision_inference_follows_f32() -> Result<()> {
        let net = ResNet::new(&tiny(), seeded_var_builder(&VarMap::new(), 3))?;
        for seed in 0..3 {
            net.forward_train(&images(8, &tiny(), seed)?)?;
        }
        let folded = net.fold()?;
        let x = images(6, &tiny(), 11)?;
        let (features, logits) = folded.forward(&x)?;
        let (f, l) = folded.to_dtype(DType::F16)?.forward(&x)?;
        assert_eq!((f.dtype(), l.dtype()), (DType::F32, DType::F32));
        assert_close(&f, &features, 0.02, "f16 features")?;
        assert_close(&l, &logits, 0.02, "f16 logits")
    }

    #[test]
    fn running_statistics_follow_pytorch() -> Result<()> {
        let net = ResNet::new(&tiny(), seeded_var_builder(&VarMap::new(), 2))?;
        let x = images(3, &tiny(), 3)?;
        net.forward_train(&x)?;
        // The stem's pre-BN activations, to take their moments directly.
        let conv = sieve_kernels::conv2d::conv2d(&x, &net.body.stem.weight, 1, 1)?.reshape(((), 4))?;
        let mean = conv.mean(0)?;
        let rows = conv.dim(0)? as f64;
        let var = (conv.broadcast_sub(&mean)?.sqr()?.sum(0)? / (rows - 1.0))?;
        assert_close(&net.body.stem.running_mean, &(mean * BN_MOMENTUM)?, 1e-5, "running mean")?;
        assert_close(&net.body.stem.running_var, &((var * BN_MOMENTUM)? + (1.0 - BN_MOMENTUM))?, 1e-5, "running var")
    }
}
