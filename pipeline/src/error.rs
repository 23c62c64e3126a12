//! The error type of the pipeline library; the binary adds context with
//! `anyhow` at its edge.

use std::path::PathBuf;

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A descriptor, path or column problem.
    #[error(transparent)]
    Schema(#[from] sieve_schemas::SchemaError),
    /// A UDF could not read its input column.
    #[error(transparent)]
    Udf(#[from] sieve_udfs::UdfError),
    /// A model, proxy directory or device problem.
    #[error(transparent)]
    Proxy(#[from] sieve_proxy::ProxyError),
    /// An Arrow computation failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A query failed.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A tensor operation failed.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// A Parquet file could not be read or written.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error.
        source: datafusion::parquet::errors::ParquetError,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An object store (S3) request failed.
    #[error("{url}: {source}")]
    Store {
        /// The object or prefix.
        url: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A row could not be scored and `--on-error fail` was given.
    #[error("{file}, row {row}, column '{column}': {reason}")]
    BadRow {
        /// The input file.
        file: PathBuf,
        /// The row within that file (0-based).
        row: u64,
        /// The column at fault.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The consumer of an input stream stopped reading (a query ended early).
    #[error("the consumer of the input stream stopped")]
    ReaderStopped,
    /// The options do not make a valid job: a flag's value, or a
    /// combination of flags (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The data cannot make this job: scores made from other data, shards
    /// out of order, a file without a column the job reads.
    #[error("{0}")]
    Data(String),
    /// The machine cannot run the job: a runtime that does not start, a
    /// font that cannot be loaded.
    #[error("{0}")]
    Environment(String),
    /// A fault inside sieve: something that should always hold did not.
    #[error("internal error (a bug in sieve, please report it): {0}")]
    Internal(String),
}

impl PipelineError {
    /// Whether this is a usage error: the job's options are wrong, not its
    /// data or the machine (the binary exits with 2 for these).
    pub fn is_usage(&self) -> bool {
        use sieve_schemas::SchemaError;
        matches!(self, Self::Usage(_) | Self::Schema(SchemaError::UnknownDataset { .. } | SchemaError::BadGlob { .. }))
    }
}

/// Result alias of the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PipelineError {
    let path = path.into();
    move |source| PipelineError::Io { path, source }
}

/// Attaches a path to a Parquet error.
pub fn parquet_err(
    path: impl Into<PathBuf>,
) -> impl FnOnce(datafusion::parquet::errors::ParquetError) -> PipelineError {
    let path = path.into();
    move |source| PipelineError::Parquet { path, source }
}
