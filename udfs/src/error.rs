//! The one error type of this crate.

/// Why a UDF could not do its work. Row-level problems (a bad image, a null
/// label) are not errors: they become [`crate::decode::RowError`]s in the
/// row's `error` column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UdfError {
    /// The input column's Arrow type carries neither image bytes nor text.
    #[error("input column type {found} holds no image bytes or text")]
    InputType {
        /// The type found.
        found: String,
    },
    /// The model behind the function failed to load or run.
    #[error(transparent)]
    Proxy(#[from] sieve_proxy::ProxyError),
}

/// Result alias of this crate.
pub type Result<T, E = UdfError> = std::result::Result<T, E>;

impl From<UdfError> for datafusion::error::DataFusionError {
    fn from(e: UdfError) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
