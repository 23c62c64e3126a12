//! The one error type of this crate.

use std::path::PathBuf;

/// Why a dataset could not be described or resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A descriptor file could not be read.
    #[error("cannot read dataset descriptor {path}: {source}")]
    ReadDescriptor {
        /// The descriptor's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A descriptor file is not valid TOML or misses a field.
    #[error("invalid dataset descriptor {path}: {message}")]
    InvalidDescriptor {
        /// The descriptor's path.
        path: PathBuf,
        /// What is wrong, as the TOML parser says it.
        message: String,
    },
    /// No descriptor of that name is built in or in the user's directory.
    #[error("unknown dataset '{name}': {searched} (known: {known})")]
    UnknownDataset {
        /// The requested name.
        name: String,
        /// Where it was looked for.
        searched: String,
        /// The names that do exist, comma-separated.
        known: String,
    },
    /// A path, directory or glob matched no Parquet file.
    #[error("no Parquet files match '{pattern}'")]
    NoFiles {
        /// The path, directory or glob as given.
        pattern: String,
    },
    /// A glob pattern is malformed.
    #[error("invalid glob '{pattern}': {message}")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// The glob crate's message.
        message: String,
    },
    /// A column named by the user or the descriptor is not in the files.
    #[error("column '{column}' ({role}) is not in {file}; its columns are: {available}")]
    MissingColumn {
        /// The missing column.
        column: String,
        /// Its role: input, label or id.
        role: &'static str,
        /// The first file that lacks it.
        file: String,
        /// The columns that file does have, comma-separated.
        available: String,
    },
    /// A column exists but has a type its role cannot use.
    #[error("column '{column}' ({role}) has type {found}, expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// Its role: input, label or id.
        role: &'static str,
        /// The type found.
        found: String,
        /// The types accepted.
        expected: &'static str,
    },
    /// Two input files disagree on a column's type.
    #[error("{file} does not have the schema of {first}: {message}")]
    SchemaMismatch {
        /// The first file, whose schema is the reference.
        first: String,
        /// The file that differs.
        file: String,
        /// The difference.
        message: String,
    },
    /// The `huggingface` metadata is not the JSON the `datasets` library writes.
    #[error("invalid 'huggingface' schema metadata: {0}")]
    HuggingFaceMetadata(String),
}

/// Result alias of this crate.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
