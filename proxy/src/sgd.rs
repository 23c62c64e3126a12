//! Stochastic gradient descent with momentum, optional Nesterov momentum and
//! weight decay, the optimizer of the CIFAR ResNets (He et al. 2016, section
//! 4.2: momentum 0.9, weight decay 1e-4 or 5e-4). candle-nn's `SGD` has
//! neither momentum nor weight decay.
//!
//! The update is PyTorch's `torch.optim.SGD` with `dampening = 0`, so
//! hyperparameters carry over unchanged (Nesterov as formulated by Sutskever
//! et al. 2013, "On the importance of initialization and momentum in deep
//! learning"):
//!
//! ```text
//! g = grad + wd * p                       (WeightDecay::L2 only)
//! b = g on the first step, else mu * b + g
//! d = g + mu * b if nesterov, else b
//! p = p - lr * d                          (WeightDecay::L2)
//! p = p * (1 - lr * wd) - lr * d          (WeightDecay::Decoupled)
//! ```
//!
//! The decoupled form is SGDW of Loshchilov and Hutter 2019, "Decoupled
//! Weight Decay Regularization" (arXiv:1711.05101): the decay bypasses the
//! momentum buffer. The learning rate is an argument of every step because
//! the trainer runs the schedule.

use candle_core::backprop::GradStore;
use candle_core::{bail, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// How weight decay enters the update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightDecay {
    /// Added to the gradient before momentum, `torch.optim.SGD`'s behaviour.
    #[default]
    L2,
    /// Applied to the weights directly, outside the momentum (SGDW).
    Decoupled,
}

/// Hyperparameters of [`SgdMomentum`], except the learning rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Momentum `mu`; 0.9 as in He et al. 2016.
    pub momentum: f64,
    /// Weight decay per unit learning rate; 5e-4, the usual value for
    /// CIFAR-10 runs shorter than the paper's 64k iterations.
    pub weight_decay: f64,
    /// Nesterov momentum; true by default, slightly better on short schedules.
    pub nesterov: bool,
    /// Whether the decay goes through the gradient or straight to the weights.
    pub decay: WeightDecay,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { momentum: 0.9, weight_decay: 5e-4, nesterov: true, decay: WeightDecay::L2 }
    }
}

/// A variable's momentum buffer: on the host for CPU variables (updated in
/// one pass over plain slices), on the device for the others (updated with
/// tensor ops, so a GPU step copies nothing back).
enum Buffer {
    Host(Vec<f32>),
    Device(Tensor),
}

/// SGD over a fixed list of variables, keeping one momentum buffer each.
pub struct SgdMomentum {
    vars: Vec<Var>,
    /// Momentum buffers, None until a variable's first step.
    buffers: Vec<Option<Buffer>>,
    cfg: SgdConfig,
}

impl SgdMomentum {
    /// An optimizer for `vars`; every variable must be f32.
    pub fn new(vars: Vec<Var>, cfg: SgdConfig) -> Result<Self> {
        if let Some(v) = vars.iter().find(|v| v.dtype() != candle_core::DType::F32) {
            bail!("SgdMomentum: only f32 variables are supported, got {:?}", v.dtype())
        }
        let buffers = (0..vars.len()).map(|_| None).collect();
        Ok(Self { vars, buffers, cfg })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// One update at learning rate `lr`; variables without a gradient in
    /// `grads` (unused in this step) are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (var, buf) in self.vars.iter().zip(&mut self.buffers) {
            let Some(grad) = grads.get(var) else { continue };
            if var.device().is_cpu() {
                self.cfg.update_host(var, grad, buf, lr as f32)?;
            } else {
                self.cfg.update_tensors(var, grad, buf, lr)?;
            }
        }
        Ok(())
    }

    /// Backpropagates `loss` and takes one step at `lr`.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads, lr)
    }
}

impl SgdConfig {
    /// The update of the module doc in one pass over host slices.
    fn update_host(&self, var: &Var, grad: &Tensor, buf: &mut Option<Buffer>, lr: f32) -> Result<()> {
        let (mu, wd) = (self.momentum as f32, self.weight_decay as f32);
        let mut p = var.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let first = buf.is_none();
        let Buffer::Host(buf) = buf.get_or_insert_with(|| Buffer::Host(vec![0.0; g.len()])) else {
            bail!("SgdMomentum: a variable moved between host and device")
        };
        for ((p, &g), b) in p.iter_mut().zip(&g).zip(buf.iter_mut()) {
            let g = match self.decay {
                WeightDecay::L2 => g + wd * *p,
                WeightDecay::Decoupled => g,
            };
            *b = if first { g } else { mu * *b + g };
            let d = if self.nesterov { g + mu * *b } else { *b };
            if self.decay == WeightDecay::Decoupled {
                *p *= 1.0 - lr * wd;
            }
            *p -= lr * d;
        }
        var.set(&Tensor::from_vec(p, var.shape(), var.device())?)
    }

    /// The same update with tensor ops, on the variable's device.
    fn update_tensors(&self, var: &Var, grad: &Tensor, buf: &mut Option<Buffer>, lr: f64) -> Result<()> {
        let p = var.as_tensor().detach();
        let g = match self.decay {
            WeightDecay::L2 => (grad + (&p * self.weight_decay)?)?,
            WeightDecay::Decoupled => grad.clone(),
        };
        let b = match buf.take() {
            None => g.clone(),
            Some(Buffer::Device(b)) => ((b * self.momentum)? + &g)?,
            Some(Buffer::Host(_)) => bail!("SgdMomentum: a variable moved between host and device"),
        };
        let d = if self.nesterov { (&g + (&b * self.momentum)?)? } else { b.clone() };
        *buf = Some(Buffer::Device(b));
        let p = match self.decay {
            WeightDecay::L2 => p,
            WeightDecay::Decoupled => (p * (1.0 - lr * self.weight_decay))?,
        };
        var.set(&(p - (d * lr)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The update of the module doc for one scalar, step by step, on the
    /// loss p^2 (gradient 2p): the reference for the vectorised version.
    fn scalar_reference(cfg: &SgdConfig, p0: f32, lr: f32, steps: usize) -> f32 {
        let (mu, wd) = (cfg.momentum as f32, cfg.weight_decay as f32);
        let (mut p, mut b) = (p0, None::<f32>);
        for _ in 0..steps {
            let mut g = 2.0 * p;
            if cfg.decay == WeightDecay::L2 {
                g += wd * p;
            }
            let nb = b.map_or(g, |b| mu * b + g);
            b = Some(nb);
            let d = if cfg.nesterov { g + mu * nb } else { nb };
            if cfg.decay == WeightDecay::Decoupled {
                p *= 1.0 - lr * wd;
            }
            p -= lr * d;
        }
        p
    }

    #[test]
    fn every_variant_matches_the_scalar_reference() -> Result<()> {
        for nesterov in [false, true] {
            for decay in [WeightDecay::L2, WeightDecay::Decoupled] {
                let cfg = SgdConfig { momentum: 0.9, weight_decay: 0.01, nesterov, decay };
                let p0 = [1.5f32, -0.25, 3.0];
                // The host path (the optimizer on CPU variables), and the
                // tensor-op path a GPU variable takes, called directly.
                for tensor_ops in [false, true] {
                    let var = Var::new(&p0[..], &Device::Cpu)?;
                    let mut opt = SgdMomentum::new(vec![var.clone()], cfg.clone())?;
                    let mut buf = None;
                    for _ in 0..5 {
                        let loss = var.as_tensor().sqr()?.sum_all()?;
                        if tensor_ops {
                            let grads = loss.backward()?;
                            cfg.update_tensors(&var, grads.get(&var).unwrap(), &mut buf, 0.05)?;
                        } else {
                            opt.backward_step(&loss, 0.05)?;
                        }
                    }
                    let got = var.to_vec1::<f32>()?;
                    // The tensor ops scale in f64 and round once more.
                    let tol = if tensor_ops { 1e-5 } else { 1e-6 };
                    for (g, &p) in got.iter().zip(&p0) {
                        let want = scalar_reference(&cfg, p, 0.05, 5);
                        assert!(
                            (g - want).abs() <= tol * want.abs().max(1.0),
                            "{cfg:?}, tensor ops {tensor_ops}: {g} vs {want}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn variables_without_gradient_are_untouched() -> Result<()> {
        let (used, unused) = (Var::new(&[1f32][..], &Device::Cpu)?, Var::new(&[2f32][..], &Device::Cpu)?);
        let mut opt = SgdMomentum::new(vec![used.clone(), unused.clone()], SgdConfig::default())?;
        opt.backward_step(&used.as_tensor().sqr()?.sum_all()?, 0.1)?;
        assert_eq!(unused.to_vec1::<f32>()?, [2.0]);
        assert_ne!(used.to_vec1::<f32>()?, [1.0]);
        Ok(())
    }
}
