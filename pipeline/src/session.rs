//! What every stage runs in: a [`Runtime`] (the device and precision of the
//! models and the cache of the ones loaded, made by [`init_run`]) and the one
//! DataFusion session factory ([`session`]), with sieve's functions and the
//! object stores registered.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sieve_proxy::cache::ModelCache;
use sieve_proxy::device::{Placement, Precision};
use sieve_udfs::Models;

use crate::error::{PipelineError, Result};
use crate::plan::RunPlan;

/// What a job's stages share: the models loaded, and so where they run.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The models the job's functions have loaded, on the job's placement.
    pub models: Models,
}

impl Default for Runtime {
    /// The CPU, in f32: for sessions that load no model or only the CPU ones
    /// (`sieve sql`, the selection's decision).
    fn default() -> Self {
        Self::new(Placement::default())
    }
}

impl Runtime {
    /// A runtime on `placement` with an empty model cache.
    pub fn new(placement: Placement) -> Self {
        Self { models: Models(Arc::new(ModelCache::new(placement, ModelCache::DEFAULT_CAPACITY))) }
    }

    /// The device and precision of the image proxies (`--device`, `--precision`).
    pub fn placement(&self) -> &Placement {
        self.models.placement()
    }

    /// A session whose functions load their models through this runtime.
    pub fn session(&self, memory_limit: Option<usize>) -> Result<SessionContext> {
        session(memory_limit, &self.models)
    }
}

/// The runtime of a job: resolves `--device` and `--precision` (`auto`
/// without a GPU logs why it runs on the CPU) and sizes the rayon pool that
/// runs the models and decoding (`--threads`). rayon's global pool is set
/// once per process, so a second job in the same process with another
/// `--threads` runs on the first one's pool, and says so in a log line.
pub fn init_run(run: &RunPlan) -> Result<Runtime> {
    let _ = rayon::ThreadPoolBuilder::new().num_threads(run.threads).build_global();
    if rayon::current_num_threads() != run.threads {
        let fields = serde_json::json!({"requested": run.threads, "threads": rayon::current_num_threads()});
        crate::log::info("threads", "this process's thread pool is already sized", fields);
    }
    let resolved = run.device.resolve()?;
    if resolved.device.is_cpu() && run.precision != Precision::F32 {
        return Err(PipelineError::Usage(format!(
            "--precision {} needs a GPU (the CPU kernels are f32); {}",
            run.precision,
            resolved.fallback.as_deref().unwrap_or("drop --precision or pass --device cuda:N")
        )));
    }
    let mut fields = serde_json::json!({
        "device": sieve_proxy::device::describe(&resolved.device),
        "precision": run.precision.to_string(),
    });
    let message = match resolved.fallback {
        Some(reason) => {
            fields["fallback"] = reason.into();
            "no usable GPU: the models run on the CPU"
        }
        None => "the models run here",
    };
    crate::log::info("device", message, fields);
    Ok(Runtime::new(Placement { device: resolved.device, precision: run.precision }))
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
/// The model-running functions load through `models`.
pub fn session(memory_limit: Option<usize>, models: &Models) -> Result<SessionContext> {
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
    let config = config.with_extension(Arc::new(models.placement().clone()));
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
    sieve_udfs::register_all(&ctx, models);
    Ok(ctx)
}

/// Where the models of `ctx`'s job run: the placement its session was made
/// with ([`session`]), the CPU for a context made elsewhere.
pub fn placement_of(ctx: &SessionContext) -> Placement {
    ctx.state().config().get_extension::<Placement>().map(|p| p.as_ref().clone()).unwrap_or_default()
}
