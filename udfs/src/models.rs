//! The handle to a session's loaded models and the threads they run on,
//! which the model-running functions (`proxy_scores`, `proxy_embedding`,
//! `text_embedding`) hold.

use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::{plan_err, Result, ScalarValue};
use sieve_proxy::artifact::{Proxy, ProxyMeta};
use sieve_proxy::cache::ModelCache;
use sieve_proxy::device::Placement;
use sieve_proxy::text_encoder::TextEncoder;

use crate::UdfError;

/// A shared [`ModelCache`] and the thread pool its models run on: the
/// functions decode and run the models inside [`Models::install`], so a job
/// uses the threads it was given however many other jobs share the process.
/// Two handles are equal when they share one cache, which is what
/// DataFusion's function equality needs.
#[derive(Clone, Debug)]
pub struct Models {
    cache: Arc<ModelCache>,
    pool: Arc<rayon::ThreadPool>,
}

impl PartialEq for Models {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &other.cache)
    }
}

impl Eq for Models {}

impl Hash for Models {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.cache).hash(state);
    }
}

impl Deref for Models {
    type Target = ModelCache;

    fn deref(&self) -> &ModelCache {
        &self.cache
    }
}

impl Models {
    /// Models on `placement`, in a cache of [`ModelCache::DEFAULT_CAPACITY`],
    /// run on a pool of `threads` threads (named `sieve-worker-N`).
    pub fn new(placement: Placement, threads: usize) -> std::result::Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("sieve-worker-{i}"))
            .build()?;
        let cache = ModelCache::new(placement, ModelCache::DEFAULT_CAPACITY);
        Ok(Self { cache: Arc::new(cache), pool: Arc::new(pool) })
    }

    /// Runs `f` on this handle's threads: every parallel loop inside it
    /// (decoding, the kernels, training, the selection algorithms) uses
    /// them and no others.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// How many threads [`Models::install`] runs on.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The proxy a literal directory argument of `function` names.
    pub fn literal_proxy(&self, function: &str, value: Option<&ScalarValue>) -> Result<Arc<Proxy>> {
        Ok(self.proxy(&literal_dir(function, "proxy", value)?).map_err(UdfError::from)?)
    }

    /// The record (`proxy.json`) of the proxy a literal directory argument
    /// of `function` names, read without loading its weights.
    pub fn literal_proxy_meta(&self, function: &str, value: Option<&ScalarValue>) -> Result<ProxyMeta> {
        let dir = literal_dir(function, "proxy", value)?;
        Ok(ProxyMeta::read(&dir).map_err(UdfError::from)?)
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
