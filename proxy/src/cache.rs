//! The models a job has loaded: a bounded cache, owned by whoever runs the
//! job (a DataFusion session's functions hold it), that loads each model
//! once onto its placement and shares it with every partition and batch.
//!
//! A model is keyed by its canonical directory and the modification times of
//! the files in it, so a directory retrained in place is loaded anew rather
//! than served stale. Past [`ModelCache::capacity`] models, the least
//! recently used one is dropped (a batch still scoring with it keeps its
//! `Arc`), so `--rounds` or `sieve eval`, which train proxy after proxy, do
//! not keep every one resident.

use std::any::{Any, TypeId};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::artifact::Proxy;
use crate::device::Placement;
use crate::error::{ProxyError, Result};
use crate::text_encoder::TextEncoder;

/// What identifies a loaded model: its type, directory and the newest
/// modification time of the directory's files.
type Key = (TypeId, PathBuf, Option<SystemTime>);

/// Loaded models, the most recently used last.
type Entries = Vec<(Key, Arc<dyn Any + Send + Sync>)>;

/// A bounded cache of loaded models on one placement.
pub struct ModelCache {
    placement: Placement,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache").field("placement", &self.placement).field("capacity", &self.capacity).finish()
    }
}

impl ModelCache {
    /// Models held by default: a proxy, a text encoder and room for the
    /// proxies a comparison trains beside them.
    pub const DEFAULT_CAPACITY: usize = 4;

    /// An empty cache loading image proxies onto `placement`, holding at
    /// most `capacity` models (at least one).
    pub fn new(placement: Placement, capacity: usize) -> Self {
        Self { placement, capacity: capacity.max(1), entries: Mutex::new(Vec::new()) }
    }

    /// Where the image proxies it loads run.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The most models it holds at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The proxy in `dir`, loaded on first use.
    pub fn proxy(&self, dir: &Path) -> Result<Arc<Proxy>> {
        self.get(dir, |dir| Proxy::load(dir, &self.placement))
    }

    /// The text encoder in `dir`, loaded on first use.
    pub fn encoder(&self, dir: &Path) -> Result<Arc<TextEncoder>> {
        self.get(dir, TextEncoder::load)
    }

    /// The model of type `T` in `dir`, loaded with `load` unless held.
    fn get<T: Send + Sync + 'static>(&self, dir: &Path, load: impl FnOnce(&Path) -> Result<T>) -> Result<Arc<T>> {
        let path = dir.canonicalize().map_err(|source| ProxyError::Io { path: dir.to_path_buf(), source })?;
        let stamp = newest_change(&path);
        let key = (TypeId::of::<T>(), path, stamp);
        // Holding the lock while loading makes concurrent first calls wait for
        // one load instead of each loading its own copy.
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
            let entry = entries.remove(i);
            entries.push(entry);
            let model = entries.last().expect("just pushed").1.clone();
            return Ok(model.downcast::<T>().expect("a key's type is its model's"));
        }
        let model = Arc::new(load(&key.1)?);
        // A model of the same type and directory that changed on disk is stale.
        entries.retain(|(k, _)| (k.0, &k.1) != (key.0, &key.1));
        if entries.len() >= self.capacity {
            entries.remove(0);
        }
        entries.push((key, model.clone()));
        Ok(model)
    }

    /// How many models it holds now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether it holds no model.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The newest modification time of `dir` and the files directly in it
/// (`None` where the filesystem keeps none).
fn newest_change(dir: &Path) -> Option<SystemTime> {
    let own = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
    let files = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok());
    files.chain(own).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in model type: the cache is generic over what it holds.
    struct Loaded(u32);

    #[test]
    fn models_load_once_and_the_least_recently_used_goes_past_the_capacity() {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let cache = ModelCache::new(Placement::default(), 2);
        let loads = std::cell::Cell::new(0);
        let get = |i: usize| {
            cache
                .get(dirs[i].path(), |_| {
                    loads.set(loads.get() + 1);
                    Ok(Loaded(i as u32))
                })
                .unwrap()
                .0
        };
        assert_eq!((get(0), get(1), get(0)), (0, 1, 0));
        assert_eq!((loads.get(), cache.len()), (2, 2), "a held model is not loaded again");
        get(2); // evicts 1, the least recently used
        assert_eq!(cache.len(), 2);
        get(0);
        assert_eq!(loads.get(), 3, "0 was used more recently than 1 and stays");
        get(1);
        assert_eq!(loads.get(), 4, "1 was evicted and loads again");
    }

    #[test]
    fn a_directory_changed_on_disk_is_loaded_anew() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::new(Placement::default(), 4);
        let load = |v| move |_: &Path| Ok(Loaded(v));
        assert_eq!(cache.get(dir.path(), load(1)).unwrap().0, 1);
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"new weights").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        assert_eq!(cache.get(dir.path(), load(2)).unwrap().0, 2, "the changed directory is reloaded");
        assert_eq!(cache.len(), 1, "and its stale model is gone");
    }
}
