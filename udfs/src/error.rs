//! The one error type of this crate.

use std::path::PathBuf;

/// Why a UDF or a proxy could not do its work. Row-level problems (a bad
/// image, a null label) are not errors: they become [`crate::decode::RowError`]s
/// in the row's `error` column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdfError {
    /// The input column's Arrow type carries neither image bytes nor text.
    #[error("input column type {found} holds no image bytes or text")]
    InputType {
        /// The type found.
        found: String,
    },
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
    FastText(#[from] crate::models::fasttext::FastTextError),
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
pub type Result<T, E = UdfError> = std::result::Result<T, E>;

impl From<UdfError> for datafusion::error::DataFusionError {
    fn from(e: UdfError) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
