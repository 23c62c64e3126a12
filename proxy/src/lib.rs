//! sieve-proxy: the proxy models, how they train and how they live on disk,
//! with no Arrow and no DataFusion.
//!
//! - [`resnet`]: the CIFAR-style ResNet of Selection via Proxy, and its
//!   inference form with batch norm folded into the convolutions.
//! - [`image_trainer`]: one SGD step of the ResNet on a batch of pixels
//!   (augmentation, normalisation, mixed precision).
//! - [`fasttext`]: the fastText-style text classifier (hashed n-grams, its
//!   own sparse trainer), with its embedding table in [`hashed_table`].
//! - [`sgd`]: SGD with Nesterov momentum and weight decay.
//! - [`recipe`]: each preset's training recipe (network, optimiser, schedule,
//!   augmentation), the one place the defaults live.
//! - [`text_encoder`]: a pretrained sentence encoder (all-MiniLM-L6-v2, run
//!   by [`bert`] with the vectorised kernels of `vector_math`), or
//!   a static model distilled from one ([`static_embedding`]), whose token
//!   ids come from [`wordpiece`] without the tokenizer's bookkeeping.
//! - [`artifact`]: the proxy directory (`model.safetensors` + `proxy.json`)
//!   and the loaded model it becomes; [`cache`]: the bounded cache of a
//!   job's loaded models.
//! - [`device`]: where the models run (CPU or a CUDA device) and at which
//!   precision.

#![deny(missing_docs)]

pub mod artifact;
pub mod bert;
pub mod cache;
pub mod device;
pub mod error;
pub mod fasttext;
pub mod hashed_table;
pub mod image_trainer;
pub mod recipe;
pub mod resnet;
pub mod sgd;
pub mod static_embedding;
pub mod text_encoder;
mod vector_math;
pub mod wordpiece;

pub use error::{ProxyError, Result};
