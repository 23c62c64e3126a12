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
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file, directory or object at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The machine cannot run the job: a runtime that does not start, a
    /// font that cannot be loaded.
    #[error("{0}")]
    Environment(String),
    /// A fault inside sieve: something that should always hold did not.
    #[error("internal error (a bug in sieve, please report it): {0}")]
    Internal(String),
}

/// Whose fault an error is, which decides the exit code of `sieve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The options do not make a valid job (exit code 2).
    Usage,
    /// The data cannot make this job: a file, row or column at fault (exit code 1).
    Data,
    /// The machine cannot run the job: no GPU, an unreachable store, a full
    /// disk, a memory limit (exit code 1).
    Environment,
    /// A bug in sieve (exit code 3).
    Internal,
}

impl ErrorKind {
    /// The exit code of a job that ends with an error of this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Usage => 2,
            Self::Data | Self::Environment => 1,
            Self::Internal => 3,
        }
    }

    /// Its name in the error's log line (`kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Data => "data",
            Self::Environment => "environment",
            Self::Internal => "internal",
        }
    }
}

impl PipelineError {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        use sieve_proxy::ProxyError;
        use sieve_schemas::SchemaError;
        match self {
            Self::Usage(_) | Self::Schema(SchemaError::UnknownDataset { .. } | SchemaError::BadGlob { .. }) => {
                ErrorKind::Usage
            }
            Self::Proxy(ProxyError::Device(_)) | Self::Io { .. } | Self::Store { .. } | Self::Environment(_) => {
                ErrorKind::Environment
            }
            Self::DataFusion(datafusion::error::DataFusionError::ResourcesExhausted(_)) => ErrorKind::Environment,
            Self::Proxy(ProxyError::Model(_)) | Self::Candle(_) | Self::ReaderStopped | Self::Internal(_) => {
                ErrorKind::Internal
            }
            _ => ErrorKind::Data,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_has_its_exit_code() {
        let data = PipelineError::Data { path: "scores.parquet".into(), reason: "rows are not sorted".into() };
        assert_eq!(data.to_string(), "scores.parquet: rows are not sorted");
        let device = PipelineError::Proxy(sieve_proxy::ProxyError::Device("cuda:0 is not available".into()));
        let full = datafusion::error::DataFusionError::ResourcesExhausted("memory".into());
        let cases = [
            (PipelineError::Usage("--keep 2".into()), ErrorKind::Usage, 2),
            (data, ErrorKind::Data, 1),
            (device, ErrorKind::Environment, 1),
            (PipelineError::DataFusion(full), ErrorKind::Environment, 1),
            (PipelineError::Internal("a broken invariant".into()), ErrorKind::Internal, 3),
        ];
        for (error, kind, code) in cases {
            assert_eq!((error.kind(), error.kind().exit_code()), (kind, code), "{error}");
        }
    }
}
