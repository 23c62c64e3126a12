//! What every stage runs in: a [`Runtime`] (the device and precision of the
//! models, the threads they run on and the cache of the ones loaded, made
//! by [`init_run`]) and the one DataFusion session factory
//! ([`Runtime::session`]), with sieve's functions and the object stores
//! registered.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sieve_proxy::device::{DeviceChoice, Placement, Precision};
use sieve_udfs::Models;

use crate::error::{PipelineError, Result};
use crate::plan::RunPlan;

/// What a job's stages share: the models loaded, where they run and the
/// threads they run on. Two runtimes in one process keep their own threads.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The models the job's functions have loaded, on the job's placement
    /// and threads.
    pub models: Models,
}

impl Runtime {
    /// A runtime on `placement` with `threads` threads and an empty model cache.
    pub fn new(placement: Placement, threads: usize) -> Result<Self> {
        let models = Models::new(placement, threads)
            .map_err(|e| PipelineError::Environment(format!("cannot start {threads} threads: {e}")))?;
        Ok(Self { models })
    }

    /// The CPU in f32 on every core: for sessions whose queries are the
    /// user's own (`sieve sql`, where a query may still run a proxy).
    pub fn cpu() -> Result<Self> {
        Self::new(Placement::default(), cores())
    }

    /// The runtime `ctx` was made with ([`Runtime::session`]).
    pub fn of(ctx: &SessionContext) -> Result<Self> {
        let models = ctx.state().config().get_extension::<Models>();
        let models = models.ok_or_else(|| PipelineError::Internal("a session made without a runtime".into()))?;
        Ok(Self { models: models.as_ref().clone() })
    }

    /// The device and precision of the image proxies (`--device`, `--precision`).
    pub fn placement(&self) -> &Placement {
        self.models.placement()
    }

    /// How many threads the job's models, training and selection run on (`--threads`).
    pub fn threads(&self) -> usize {
        self.models.threads()
    }

    /// Runs `f` on the runtime's threads (see [`Models::install`]).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.models.install(f)
    }

    /// A DataFusion session with sieve's functions. One partition: the input is
    /// read in order and the proxy already uses every thread, so partitions x
    /// model threads never exceed the cores. `s3://` tables resolve through
    /// [`crate::store::registry`]. Strings and binaries are read as
    /// plain Utf8/Binary rather than DataFusion's default view types, so the
    /// files sieve writes keep the types every Parquet reader knows.
    ///
    /// With `memory_limit`, operators share a pool of that many bytes and spill
    /// (sorts) or stop with a resources error instead of growing without bound.
    /// The model-running functions load and run through this runtime, which the
    /// session also carries ([`Runtime::of`]).
    pub fn session(&self, memory_limit: Option<usize>) -> Result<SessionContext> {
        let mut config = SessionConfig::new().with_target_partitions(1);
        config.options_mut().execution.parquet.schema_force_view_types = false;
        let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(crate::store::registry());
        if let Some(bytes) = memory_limit {
            runtime = runtime.with_memory_limit(bytes, 1.0);
            // A sort holds this much back for merging its spills (10 MiB by
            // default); a quarter of a small pool leaves room to sort at all.
            let reserve = &mut config.options_mut().execution.sort_spill_reservation_bytes;
            *reserve = (*reserve).min(bytes / 4);
        }
        let config = config.with_extension(Arc::new(self.models.clone()));
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
        sieve_udfs::register_all(&ctx, &self.models);
        Ok(ctx)
    }
}

/// Memory for a query of `ctx`'s job that spills: `cap`, or the job's
/// session's pool (`--memory-limit`) when that is smaller.
pub fn capped_memory(ctx: &SessionContext, cap: usize) -> usize {
    use datafusion::execution::memory_pool::MemoryLimit;
    match ctx.runtime_env().memory_pool.memory_limit() {
        MemoryLimit::Finite(bytes) => bytes.min(cap),
        MemoryLimit::Infinite | MemoryLimit::Unknown => cap,
    }
}

/// The machine's cores: the default of `--threads`.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets what the libraries under sieve read once per process, for a process
/// whose jobs run on `threads` threads. The binary calls it before it starts
/// any thread; a library caller may, or set the same itself.
///
/// - candle (0.11) keeps pools of its own: its element-wise operations run on
///   one sized from `CANDLE_NUM_THREADS`, its matrix products split into
///   `RAYON_NUM_THREADS` parts. Both are set to `threads`; without them a
///   `--threads 1` job still spins a second core in candle's pool.
/// - glibc's malloc gives each thread that allocates an arena of 64 MiB heaps;
///   the proxy's activation buffers, allocated and freed every step on the
///   runtime's threads, churn those heaps and re-fault their pages (25 times
///   the page faults, 5% of a training run). One arena grows with `brk`, as
///   the main thread's does, and keeps them.
pub fn configure_process(threads: usize) {
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; no thread is allocating concurrently yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The runtime of a job: resolves `--device` and `--precision` (`auto`
/// without a GPU logs why it runs on the CPU) and starts the `--threads`
/// threads that run the models, decoding, training and selection.
pub fn init_run(run: &RunPlan) -> Result<Runtime> {
    start(run.device, run.precision, run.threads)
}

/// A runtime of `threads` threads on `device` in `precision`, resolved and
/// logged as [`init_run`] does (a job's, or a cluster executor's).
pub fn start(device: DeviceChoice, precision: Precision, threads: usize) -> Result<Runtime> {
    let resolved = device.resolve()?;
    if resolved.device.is_cpu() && precision != Precision::F32 {
        return Err(PipelineError::Usage(format!(
            "--precision {} needs a GPU (the CPU kernels are f32); {}",
            precision,
            resolved.fallback.as_deref().unwrap_or("drop --precision or pass --device cuda:N")
        )));
    }
    let mut fields = serde_json::json!({
        "device": sieve_proxy::device::describe(&resolved.device),
        "precision": precision.to_string(),
        "threads": threads,
    });
    let message = match resolved.fallback {
        Some(reason) => {
            fields["fallback"] = reason.into();
            "no usable GPU: the models run on the CPU"
        }
        None => "the models run here",
    };
    crate::log::info("device", message, fields);
    Runtime::new(Placement { device: resolved.device, precision }, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_in_one_process_keep_their_own_threads() -> Result<()> {
        let one = Runtime::new(Placement::default(), 1)?;
        let three = Runtime::new(Placement::default(), 3)?;
        assert_eq!(one.install(rayon::current_num_threads), 1);
        assert_eq!(three.install(rayon::current_num_threads), 3);
        assert_eq!(one.install(rayon::current_num_threads), 1, "the first runtime is not resized by the second");
        // A session carries its runtime to the stages that get only the session.
        let ctx = three.session(None)?;
        assert_eq!(Runtime::of(&ctx)?.install(rayon::current_num_threads), 3);
        assert_eq!(Runtime::of(&ctx)?.models, three.models, "the same model cache, not a copy");
        Ok(())
    }

    #[test]
    fn a_session_made_elsewhere_has_no_runtime() {
        let err = Runtime::of(&SessionContext::new()).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Internal);
    }
}
