//! `sieve cluster executor`: Ballista's executor, whose function registry
//! holds sieve's functions on a [`Runtime`] of its own: `--vcores` threads on
//! `--device` (one executor per GPU), one model cache shared by all its
//! tasks. Its health probes (`/healthz`, `/readyz`: registered with the
//! scheduler) answer on `--bind-health-port`.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_executor::health::spawn_health_server;
use sieve_proxy::device::{DeviceChoice, Precision};

use super::scheduler::environment;
use crate::error::{PipelineError, Result};

/// Runs the executor with Ballista's executor `flags`, its models on
/// `device` in `precision`, until the process is stopped or loses its
/// scheduler.
pub async fn run(flags: ballista_executor::config::Config, device: DeviceChoice, precision: Precision) -> Result<()> {
    let health_addr = format!("{}:{}", flags.bind_host, flags.bind_health_port);
    let health_addr: SocketAddr =
        health_addr.parse().map_err(|e| PipelineError::Usage(format!("--bind-health-port {health_addr}: {e}")))?;
    let mut config: ExecutorProcessConfig =
        flags.try_into().map_err(|e| PipelineError::Usage(format!("executor: {e}")))?;
    let runtime = crate::session::start(device, precision, config.vcores.max(1))?;
    let mut registry = BallistaFunctionRegistry::default();
    for f in sieve_udfs::all_functions(&runtime.models) {
        registry.scalar_functions.insert(f.name().to_string(), Arc::new(f));
    }
    config.override_function_registry = Some(Arc::new(registry));
    config.override_runtime_producer = Some(Arc::new(|_| super::runtime_env()));
    let codec = super::codec::SieveCodec::shared();
    config.override_logical_codec = Some(codec.clone());
    config.override_physical_codec = Some(codec);
    let (stop_health, stopped) = tokio::sync::oneshot::channel();
    let health = spawn_health_server(health_addr, config.health.clone(), stopped);
    crate::log::info(
        "executor",
        "starting",
        serde_json::json!({"scheduler": format!("{}:{}", config.scheduler_host, config.scheduler_port),
                           "vcores": config.vcores, "health": health_addr.to_string()}),
    );
    let result = start_executor_process(Arc::new(config)).await.map_err(environment);
    let _ = stop_health.send(());
    let _ = health.await;
    result
}
