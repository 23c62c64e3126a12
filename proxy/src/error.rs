//! The one error type of this crate.

use std::path::PathBuf;

/// Why a model, a proxy directory or a device could not do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A proxy directory lacks `proxy.json` or its weights, or they are invalid.
    #[error("proxy at {dir}: {message}")]
    Proxy {
        /// The proxy directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A text encoder directory lacks a file, or its files are invalid.
    #[error("text encoder at {dir}: {message}")]
    Encoder {
        /// The encoder directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The requested device cannot be used (no GPU, a build without `cuda`).
    #[error("device: {0}")]
    Device(String),
    /// The model failed (shape mismatch, out of memory, ...).
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The fastText model rejected its config or weights.
    #[error(transparent)]
    FastText(#[from] crate::fasttext::FastTextError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
