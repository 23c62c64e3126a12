//! What every stage runs in: the process's thread pool and device
//! ([`init_run`]) and the one DataFusion session factory ([`session`]), with
//! sieve's functions and the object stores registered.

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sieve_proxy::device::{Placement, Precision};

use crate::error::{PipelineError, Result};
use crate::plan::RunPlan;

/// Sets up what a run shares process-wide: the rayon pool that runs the
/// models and decoding (`--threads`; the first call in a process wins, as
/// rayon's global pool is set once) and the device and precision of the
/// image proxy (`--device`, `--precision`; `auto` without a GPU logs why it
/// runs on the CPU).
pub fn init_run(run: &RunPlan) -> Result<()> {
    let _ = rayon::ThreadPoolBuilder::new().num_threads(run.threads).build_global();
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
    sieve_proxy::device::init(Placement { device: resolved.device, precision: run.precision })?;
    crate::log::info("device", message, fields);
    Ok(())
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
pub fn session(memory_limit: Option<usize>) -> Result<SessionContext> {
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
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
    sieve_udfs::register_all(&ctx);
    Ok(ctx)
}
