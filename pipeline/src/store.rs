//! Object storage: inputs and outputs at `s3://bucket/key` URLs, through the
//! object store registry every DataFusion session of sieve uses. A bucket's
//! store is made on first use from the usual AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers, ...).
//!
//! Reading: a remote Parquet file's footer is fetched once when the input is
//! opened; each row group is then read by fetching only the byte ranges of
//! the columns asked for, so memory holds one row group's columns, never
//! the file. Writing: a job writes its output locally (see
//! [`crate::staging`]) and uploads it when complete; S3 has no atomic
//! rename, so the marker files (`manifest.json`, or a proxy's `proxy.json`)
//! go last, after a previous output's marker is deleted: an output prefix is
//! complete exactly when its marker exists.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use datafusion::parquet::file::reader::{ChunkReader, Length};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sieve_schemas::layout;
use url::Url;

use crate::error::{io_err, PipelineError, Result};

/// The URL scheme sieve reads and writes besides local paths.
pub const S3_PREFIX: &str = "s3://";

/// Files uploaded last, in this order: their presence marks an output whole.
const MARKERS: [&str; 2] = [sieve_proxy::artifact::META_FILE, layout::MANIFEST_FILE];

/// Upload part size: S3's parts must be at least 5 MiB.
const PART_BYTES: usize = 16 << 20;

/// Whether `location` names object storage rather than a local path.
pub fn is_remote(location: impl AsRef<Path>) -> bool {
    location.as_ref().to_str().is_some_and(|s| s.starts_with(S3_PREFIX))
}

/// An `s3://bucket/key` location, parsed.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The bucket's URL (`s3://bucket`), the registry's key.
    pub bucket_url: Url,
    /// The bucket.
    pub bucket: String,
    /// The key (or key prefix), without leading or trailing `/`.
    pub key: String,
}

impl Remote {
    /// Parses `s3://bucket/key`.
    pub fn parse(location: impl AsRef<Path>) -> Result<Self> {
        let text = location.as_ref().to_string_lossy();
        let rest =
            text.strip_prefix(S3_PREFIX).ok_or_else(|| PipelineError::Usage(format!("{text}: not an s3:// URL")))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(PipelineError::Usage(format!("{text}: the URL names no bucket")));
        }
        let bucket_url =
            Url::parse(&format!("{S3_PREFIX}{bucket}")).map_err(|e| PipelineError::Usage(format!("{text}: {e}")))?;
        Ok(Self { bucket_url, bucket: bucket.to_string(), key: key.trim_matches('/').to_string() })
    }

    /// The URL of `key` in the same bucket.
    pub fn url_of(&self, key: &str) -> String {
        format!("{S3_PREFIX}{}/{key}", self.bucket)
    }

    /// The bucket's store, from the session registry.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(registry().get_store(&self.bucket_url)?)
    }

    /// The key joined with `name` (`name` alone when the key is empty).
    fn child(&self, name: &str) -> ObjectPath {
        ObjectPath::from(if self.key.is_empty() { name.to_string() } else { format!("{}/{name}", self.key) })
    }
}

/// The registry behind every session: DataFusion's default (local files),
/// plus one S3 store per bucket, made from the environment on first use.
#[derive(Debug, Default)]
pub struct Registry {
    stores: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for Registry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.stores.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.stores.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.stores.get_store(url).or_else(|missing| {
            if url.scheme() != "s3" {
                return Err(missing);
            }
            let bucket = url.host_str().unwrap_or_default();
            let store: Arc<dyn ObjectStore> = Arc::new(s3_from_env(bucket)?);
            self.stores.register_store(url, store.clone());
            Ok(store)
        })
    }
}

/// An S3 client for `bucket` from the AWS environment variables; plain HTTP
/// is allowed when the endpoint says `http://` (local S3-compatible servers).
fn s3_from_env(bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
    let endpoint =
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"].iter().find_map(|k| std::env::var(k).ok());
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    builder.build()
}

/// The process's registry, shared by every session.
pub fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default).clone()
}

/// Runs an object store request to completion from synchronous code, on a
/// small runtime of its own (callers may be on DataFusion's runtime threads,
/// where blocking on that runtime is not allowed).
fn block_on<T: Send + 'static>(
    what: &str,
    request: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> Result<T> {
    static IO: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime = IO
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("sieve-io").enable_all().build()
        })
        .as_ref()
        .map_err(|e| PipelineError::Environment(format!("cannot start the object store runtime: {e}")))?;
    let fail = |source: object_store::Error| PipelineError::Store { url: what.to_string(), source };
    match futures::executor::block_on(runtime.spawn(request)) {
        Ok(result) => result.map_err(fail),
        Err(join) => Err(fail(object_store::Error::Generic { store: "S3", source: Box::new(join) })),
    }
}

/// Expands a remote `pattern` like [`sieve_schemas::paths::resolve_files`]
/// does a local one: a `.parquet` object, a glob (`*`, `?`, `[` in the
/// key; `*` does not cross `/`) or a prefix (every `.parquet` object below
/// it). Returns the objects sorted by key; a missing `.parquet` object is
/// the store's not-found error.
pub fn list_parquet(pattern: &str) -> Result<Vec<ObjectMeta>> {
    let remote = Remote::parse(pattern)?;
    let store = remote.store()?;
    let glob_at = remote.key.find(['*', '?', '[']);
    let prefix = match glob_at {
        Some(i) => remote.key[..i].rsplit_once('/').map_or("", |(dir, _)| dir).to_string(),
        None => remote.key.clone(),
    };
    let matcher = match glob_at {
        Some(_) => Some(glob::Pattern::new(&remote.key).map_err(|e| sieve_schemas::SchemaError::BadGlob {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })?),
        None => None,
    };
    if glob_at.is_none() && remote.key.ends_with(".parquet") {
        let key = ObjectPath::from(remote.key.clone());
        return Ok(vec![block_on(pattern, async move { store.head(&key).await })?]);
    }
    let listed: Vec<ObjectMeta> = block_on(pattern, async move {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        store.list(prefix.as_ref()).try_collect().await
    })?;
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    let mut files: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| {
            let key = m.location.as_ref();
            match &matcher {
                Some(p) => p.matches_with(key, options),
                None => key.ends_with(".parquet"),
            }
        })
        .collect();
    files.sort_by(|a, b| a.location.cmp(&b.location));
    if files.is_empty() {
        return Err(sieve_schemas::SchemaError::NoFiles { pattern: pattern.to_string() }.into());
    }
    Ok(files)
}

/// A remote Parquet file: where it is and its footer, read once.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    remote: Remote,
    location: ObjectPath,
    len: u64,
}

impl RemoteFile {
    /// The object `meta` of `pattern`'s bucket.
    pub fn new(pattern: &str, meta: &ObjectMeta) -> Result<Self> {
        Ok(Self { remote: Remote::parse(pattern)?, location: meta.location.clone(), len: meta.size })
    }

    /// Its `s3://` URL.
    pub fn url(&self) -> String {
        self.remote.url_of(self.location.as_ref())
    }

    /// Fetches and decodes the footer: the last 64 KiB, and the rest of the
    /// metadata when it is larger.
    pub fn metadata(&self) -> Result<ArrowReaderMetadata> {
        let path = PathBuf::from(self.url());
        let corrupt =
            |m: &str| PipelineError::Parquet { path: path.clone(), source: ParquetError::General(m.to_string()) };
        if self.len < 12 {
            return Err(corrupt("too short to be a Parquet file"));
        }
        let tail_len = self.len.min(64 << 10);
        let footer_range = self.len - tail_len..self.len;
        let mut tail = self.fetch(vec![footer_range])?.remove(0);
        let footer = &tail[tail.len() - 8..];
        if &footer[4..] != b"PAR1" {
            return Err(corrupt("no Parquet footer (PAR1) at the end"));
        }
        let meta_len = u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")) as u64;
        if meta_len + 8 > self.len {
            return Err(corrupt("the footer's length exceeds the file"));
        }
        if meta_len + 8 > tail_len {
            let metadata_range = self.len - meta_len - 8..self.len;
            tail = self.fetch(vec![metadata_range])?.remove(0);
        }
        let meta = &tail[tail.len() - 8 - meta_len as usize..tail.len() - 8];
        let meta = ParquetMetaDataReader::decode_metadata(meta)
            .map_err(|e| PipelineError::Parquet { path: path.clone(), source: e })?;
        ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::default())
            .map_err(|source| PipelineError::Parquet { path, source })
    }

    /// Fetches `ranges` (coalesced into few requests by the store).
    fn fetch(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
        let store = self.remote.store()?;
        let location = self.location.clone();
        block_on(&self.url(), async move { store.get_ranges(&location, &ranges).await })
    }

    /// The bytes of `ranges`, fetched now, as a Parquet reader's input.
    pub fn prefetch(&self, ranges: Vec<Range<u64>>) -> Result<Fetched> {
        let parts = self.fetch(ranges.clone())?;
        let mut parts: Vec<(u64, Bytes)> = ranges.iter().map(|r| r.start).zip(parts).collect();
        parts.sort_by_key(|(start, _)| *start);
        Ok(Fetched { len: self.len, parts })
    }
}

/// Parts of a remote file held in memory, read by Parquet as if the file
/// were local. Asking for bytes outside them is an error, not a request.
#[derive(Debug)]
pub struct Fetched {
    len: u64,
    parts: Vec<(u64, Bytes)>,
}

impl Fetched {
    fn part(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        let i = self.parts.partition_point(|(s, _)| *s <= start);
        let found =
            i.checked_sub(1).map(|i| &self.parts[i]).filter(|(s, b)| start + length as u64 <= s + b.len() as u64);
        match found {
            Some((s, b)) => Ok(b.slice((start - s) as usize..)),
            None => Err(ParquetError::General(format!("bytes {start}..+{length} were not fetched"))),
        }
    }
}

impl Length for Fetched {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Fetched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        Ok(self.part(start, 0)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        Ok(self.part(start, length)?.slice(..length))
    }
}

/// Where the local copy of a remote output (or the work directory of a job
/// writing one) lives: under the system's temporary directory, at a path
/// made of the bucket and key, so a rerun of the same job finds it.
pub fn local_shadow(location: &Path) -> PathBuf {
    match Remote::parse(location) {
        Ok(remote) => std::env::temp_dir().join("sieve-s3").join(&remote.bucket).join(&remote.key),
        Err(_) => location.to_path_buf(),
    }
}

/// Uploads the local directory `dir` to the prefix `target`, replacing what
/// was there: the old marker is deleted first, the markers go last, and
/// objects of the old output that the new one lacks are deleted before the
/// markers are written.
pub fn upload_dir(dir: &Path, target: &Path) -> Result<()> {
    let remote = Remote::parse(target)?;
    let store = remote.store()?;
    let url = target.to_string_lossy().into_owned();
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let (markers, data): (Vec<String>, Vec<String>) =
        files.into_iter().partition(|rel| MARKERS.contains(&rel.as_str()));
    let markers: Vec<&str> = MARKERS.into_iter().filter(|m| markers.iter().any(|r| r == m)).collect();
    let prefix = (!remote.key.is_empty()).then(|| ObjectPath::from(remote.key.clone()));
    let old: Vec<ObjectMeta> = {
        let store = store.clone();
        block_on(&url, async move { store.list(prefix.as_ref()).try_collect().await })?
    };
    for marker in MARKERS.map(|m| remote.child(m)).into_iter().filter(|m| old.iter().any(|o| &o.location == m)) {
        let store = store.clone();
        block_on(&url, async move { store.delete(&marker).await })?;
    }
    let upload = |rel: &str| {
        let location = remote.child(rel);
        upload_file(&store, &dir.join(rel), location.clone(), &remote.url_of(location.as_ref()))
    };
    data.iter().try_for_each(|rel| upload(rel))?;
    let new: Vec<ObjectPath> =
        data.iter().map(String::as_str).chain(markers.iter().copied()).map(|rel| remote.child(rel)).collect();
    for stale in old.iter().filter(|m| !new.contains(&m.location)) {
        let (store, location) = (store.clone(), stale.location.clone());
        block_on(&url, async move { store.delete(&location).await })?;
    }
    markers.into_iter().try_for_each(upload)
}

/// The files under `dir`, as `/`-separated paths relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).expect("walked from root");
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    Ok(())
}

/// Streams one file to `location`: a single request when small, a multipart
/// upload of [`PART_BYTES`] parts otherwise, never the whole file in memory.
fn upload_file(store: &Arc<dyn ObjectStore>, path: &Path, location: ObjectPath, url: &str) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let store = store.clone();
    if len <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        return block_on(url, async move { store.put(&location, PutPayload::from(bytes)).await.map(drop) });
    }
    // The whole upload runs on the I/O runtime (its parts are tasks there);
    // reading the local file blocks that runtime's thread briefly per part.
    block_on(url, async move {
        let local = |e: std::io::Error| object_store::Error::Generic { store: "local file", source: Box::new(e) };
        let mut writer = WriteMultipart::new_with_chunk_size(store.put_multipart(&location).await?, PART_BYTES);
        let mut buf = vec![0u8; PART_BYTES];
        loop {
            let n = file.read(&mut buf).map_err(local)?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
            // At most two parts in flight: memory stays at a few parts.
            writer.wait_for_capacity(2).await?;
        }
        writer.finish().await.map(drop)
    })
}

/// Downloads the object or prefix `location` into `dest` (a file for an
/// object, a directory for a prefix), streaming each object to disk.
pub fn download(location: &Path, dest: &Path) -> Result<()> {
    let remote = Remote::parse(location)?;
    let store = remote.store()?;
    let url = location.to_string_lossy().into_owned();
    let key = ObjectPath::from(remote.key.clone());
    let object = {
        let (store, key) = (store.clone(), key.clone());
        block_on(&url, async move {
            match store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })?
    };
    let objects: Vec<(ObjectPath, PathBuf)> = if object {
        vec![(key, dest.to_path_buf())]
    } else {
        let listed: Vec<ObjectMeta> = {
            let (store, key) = (store.clone(), key.clone());
            block_on(&url, async move { store.list(Some(&key)).try_collect().await })?
        };
        let depth = key.parts().count();
        listed
            .iter()
            .map(|m| {
                (
                    m.location.clone(),
                    m.location.parts().skip(depth).fold(dest.to_path_buf(), |p, part| p.join(part.as_ref())),
                )
            })
            .collect()
    };
    if objects.is_empty() {
        return Err(PipelineError::Data { path: url.into(), reason: "no such object or prefix".into() });
    }
    for (location, path) in objects {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let object_url = remote.url_of(location.as_ref());
        let (store, file) = (store.clone(), path.clone());
        let written = block_on(&object_url, async move {
            let mut stream = store.get(&location).await?.into_stream();
            let mut out = std::fs::File::create(&file)
                .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
            while let Some(chunk) = stream.try_next().await? {
                std::io::Write::write_all(&mut out, &chunk)
                    .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
            }
            Ok(())
        });
        written?;
    }
    Ok(())
}

/// `location` as a local path: itself when local, else a fresh download
/// into the local shadow (`--scores` or `--proxy-dir` at an `s3://` URL).
pub fn localize(location: &Path) -> Result<PathBuf> {
    if !is_remote(location) {
        return Ok(location.to_path_buf());
    }
    let dest = local_shadow(location).with_extension("download");
    if dest.exists() {
        let removed = if dest.is_dir() { std::fs::remove_dir_all(&dest) } else { std::fs::remove_file(&dest) };
        removed.map_err(io_err(&dest))?;
    }
    download(location, &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_key() {
        let r = Remote::parse("s3://data/cifar10/train/").unwrap();
        assert_eq!((r.bucket.as_str(), r.key.as_str()), ("data", "cifar10/train"));
        assert_eq!(r.child("x.parquet").as_ref(), "cifar10/train/x.parquet");
        let root = Remote::parse("s3://data").unwrap();
        assert_eq!(root.key, "");
        assert_eq!(root.child("x").as_ref(), "x");
        assert!(Remote::parse("s3:///key").is_err());
        assert!(is_remote("s3://b/k") && !is_remote("out/s3"));
    }

    #[test]
    fn fetched_parts_serve_only_what_was_fetched() {
        let f =
            Fetched { len: 100, parts: vec![(10, Bytes::from_static(b"abcdef")), (50, Bytes::from_static(b"xyz"))] };
        assert_eq!(f.get_bytes(12, 3).unwrap().as_ref(), b"cde");
        assert_eq!(f.get_bytes(50, 3).unwrap().as_ref(), b"xyz");
        assert!(f.get_bytes(14, 3).is_err(), "crosses the end of a part");
        assert!(f.get_bytes(5, 2).is_err(), "before any part");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f.get_read(13).unwrap(), &mut s).unwrap();
        assert_eq!(s, "def");
    }

    /// An in-memory store registered for `bucket` (multipart uploads included).
    fn memory_bucket(bucket: &str) -> Arc<dyn ObjectStore> {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        registry().register_store(&Url::parse(&format!("s3://{bucket}")).unwrap(), store.clone());
        store
    }

    #[test]
    fn upload_replaces_an_output_and_round_trips_large_files() {
        let store = memory_bucket("upload-test");
        let keys = || -> Vec<String> {
            let store = store.clone();
            let mut k: Vec<String> =
                block_on(
                    "list",
                    async move { store.list(None).map_ok(|m| m.location.to_string()).try_collect().await },
                )
                .unwrap();
            k.sort();
            k
        };
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("first");
        std::fs::create_dir_all(first.join("data")).unwrap();
        std::fs::write(first.join("data/part-00000.parquet"), b"old").unwrap();
        std::fs::write(first.join("data/part-00001.parquet"), b"old").unwrap();
        std::fs::write(first.join("manifest.json"), b"{}").unwrap();
        upload_dir(&first, Path::new("s3://upload-test/out")).unwrap();
        assert_eq!(keys(), ["out/data/part-00000.parquet", "out/data/part-00001.parquet", "out/manifest.json"]);
        // The second output: one data file, larger than a part (a multipart upload).
        let second = tmp.path().join("second");
        std::fs::create_dir_all(second.join("data")).unwrap();
        let big: Vec<u8> = (0..PART_BYTES * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(second.join("data/part-00000.parquet"), &big).unwrap();
        std::fs::write(second.join("manifest.json"), b"{\"v\": 2}").unwrap();
        upload_dir(&second, Path::new("s3://upload-test/out/")).unwrap();
        assert_eq!(keys(), ["out/data/part-00000.parquet", "out/manifest.json"], "the stale part is deleted");
        let back = tmp.path().join("back");
        download(Path::new("s3://upload-test/out"), &back).unwrap();
        assert_eq!(std::fs::read(back.join("data/part-00000.parquet")).unwrap(), big);
        assert_eq!(std::fs::read(back.join("manifest.json")).unwrap(), b"{\"v\": 2}");
        let one = tmp.path().join("one.json");
        download(Path::new("s3://upload-test/out/manifest.json"), &one).unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), b"{\"v\": 2}");
    }

    #[test]
    fn remote_outputs_have_a_stable_local_shadow() {
        let a = local_shadow(Path::new("s3://b/out/x"));
        assert_eq!(a, local_shadow(Path::new("s3://b/out/x/")));
        assert!(a.starts_with(std::env::temp_dir()));
        assert_eq!(local_shadow(Path::new("out/x")), PathBuf::from("out/x"));
    }
}
