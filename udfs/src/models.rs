//! The handle to a session's loaded models that the model-running functions
//! (`proxy_scores`, `proxy_embedding`, `text_embedding`) hold.

use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::{plan_err, Result, ScalarValue};
use sieve_proxy::artifact::Proxy;
use sieve_proxy::cache::ModelCache;
use sieve_proxy::text_encoder::TextEncoder;

use crate::UdfError;

/// A shared [`ModelCache`]. Two handles are equal when they share one cache,
/// which is what DataFusion's function equality needs.
#[derive(Clone, Debug)]
pub struct Models(pub Arc<ModelCache>);

impl PartialEq for Models {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Models {}

impl Hash for Models {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

impl Deref for Models {
    type Target = ModelCache;

    fn deref(&self) -> &ModelCache {
        &self.0
    }
}

impl Models {
    /// The proxy a literal directory argument of `function` names.
    pub fn literal_proxy(&self, function: &str, value: Option<&ScalarValue>) -> Result<Arc<Proxy>> {
        Ok(self.proxy(&literal_dir(function, "proxy", value)?).map_err(UdfError::from)?)
    }

    /// The text encoder a literal directory argument of `function` names.
    pub fn literal_encoder(&self, function: &str, value: Option<&ScalarValue>) -> Result<Arc<TextEncoder>> {
        Ok(self.encoder(&literal_dir(function, "encoder", value)?).map_err(UdfError::from)?)
    }
}

/// The directory a string-literal argument (`what`: proxy, encoder) names.
fn literal_dir(function: &str, what: &str, value: Option<&ScalarValue>) -> Result<std::path::PathBuf> {
    match value.and_then(ScalarValue::try_as_str) {
        Some(Some(dir)) => Ok(Path::new(dir).to_path_buf()),
        _ => plan_err!("{function}: the {what} must be a non-null string literal (a directory)"),
    }
}
