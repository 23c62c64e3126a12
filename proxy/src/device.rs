//! Where the image proxy runs: the `--device auto|cpu|cuda:N` choice, its
//! resolution to a candle [`Device`] once per job, and what differs per
//! device (kernels, micro-batch size).
//!
//! `auto` takes the first GPU when the binary was built with the `cuda`
//! feature and one is present, and falls back to the CPU otherwise, saying
//! why. (candle's `Device::cuda_if_available` errors instead of falling back
//! in a cuda build on a machine without a GPU, so it is not used.) An
//! explicit `cuda:N` that cannot be had is an error, never a silent CPU run.
//!
//! The fastText proxy and the MiniLM encoder always run on the CPU: their
//! work is a gather and a few small products per text, which a GPU round
//! trip would not speed up.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{ProxyError, Result};
use sieve_kernels::conv_impl::ConvImpl;

/// The device asked for on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceChoice {
    /// A GPU when this build and machine have one, else the CPU.
    #[default]
    Auto,
    /// The CPU, with sieve's own kernels.
    Cpu,
    /// The NVIDIA GPU with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {text:?}: expected auto, cpu or cuda:N (e.g. cuda:0)")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A resolved choice: the device, and why `auto` fell back to the CPU.
#[derive(Debug)]
pub struct Resolved {
    /// The device models run on.
    pub device: Device,
    /// Set when `auto` found no usable GPU: the reason, for a log line.
    pub fallback: Option<String>,
}

impl DeviceChoice {
    /// Opens the device. `auto` never fails; `cuda:N` fails with the reason
    /// (a build without the `cuda` feature, no driver, no such GPU).
    pub fn resolve(self) -> Result<Resolved> {
        match self {
            Self::Cpu => Ok(Resolved { device: Device::Cpu, fallback: None }),
            Self::Cuda(n) => Ok(Resolved { device: open_cuda(n)?, fallback: None }),
            Self::Auto => Ok(match open_cuda(0) {
                Ok(device) => Resolved { device, fallback: None },
                Err(ProxyError::Device(why)) => Resolved { device: Device::Cpu, fallback: Some(why) },
                Err(e) => Resolved { device: Device::Cpu, fallback: Some(e.to_string()) },
            }),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    // The first line: with RUST_BACKTRACE set, candle appends a backtrace.
    Device::new_cuda(ordinal).map_err(|e| no_gpu(ordinal, e.to_string().lines().next().unwrap_or_default()))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(no_gpu(ordinal, "this sieve was built without the `cuda` feature (build it with `make build-cuda`)"))
}

fn no_gpu(ordinal: usize, why: &str) -> ProxyError {
    ProxyError::Device(format!("cuda:{ordinal} is not available: {why}"))
}

/// Where the image proxy infers, and in what precision.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The device the image proxies live on.
    pub device: Device,
    /// The floating-point type of inference; training is always f32.
    pub precision: Precision,
}

impl Default for Placement {
    fn default() -> Self {
        Self { device: Device::Cpu, precision: Precision::F32 }
    }
}

/// The floating-point type an image proxy infers in: f16 and bf16 halve the
/// memory traffic of a GPU forward pass at a small cost in score accuracy
/// (tested against f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// 32-bit floats, the reference.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (f32's range, 8 bits of mantissa).
    Bf16,
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown precision {text:?}: expected f32, f16 or bf16")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// The candle type.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::F16 => candle_core::DType::F16,
            Self::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// A short name for logs and manifests: `cpu`, `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The kernels a ResNet runs with on `device`: sieve's own on the CPU,
/// candle's ops with gemm-based convolution gradients elsewhere.
pub fn conv_impl(device: &Device) -> ConvImpl {
    if device.is_cpu() {
        ConvImpl::Fast
    } else {
        ConvImpl::Portable
    }
}

/// Images per forward pass on `device`: 256 keeps the CPU's GEMMs efficient
/// in a few MB of activations; a GPU needs thousands to fill its cores
/// (ResNet-20 at 2,048 images holds ~130 MB per activation).
pub fn image_micro_batch(device: &Device) -> usize {
    if device.is_cpu() {
        256
    } else {
        2048
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_back() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(choice), "{text}");
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
        for bad in ["cuda:", "cuda:x", "tpu", "cuda:-1", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("auto, cpu or cuda:N"), "{bad}: {err}");
        }
    }

    /// Without a GPU (every CI machine), `auto` falls back to the CPU and
    /// says why, while an explicit `cuda:0` is an error naming the device.
    #[test]
    fn auto_falls_back_to_the_cpu_and_cuda_without_a_gpu_is_an_error() {
        let gpu = DeviceChoice::Cuda(0).resolve();
        let auto = DeviceChoice::Auto.resolve().unwrap();
        match gpu {
            Ok(resolved) => {
                assert!(resolved.device.is_cuda());
                assert!(auto.device.is_cuda() && auto.fallback.is_none());
            }
            Err(e) => {
                assert!(e.to_string().contains("cuda:0 is not available"), "{e}");
                assert!(auto.device.is_cpu());
                assert!(auto.fallback.unwrap().contains("cuda:0 is not available"));
            }
        }
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("f8".parse::<Precision>().unwrap_err().contains("f32, f16 or bf16"));
        let cpu = DeviceChoice::Cpu.resolve().unwrap();
        assert!(cpu.device.is_cpu() && cpu.fallback.is_none());
        assert_eq!(conv_impl(&cpu.device), ConvImpl::Fast);
        assert_eq!(describe(&cpu.device), "cpu");
    }
}
