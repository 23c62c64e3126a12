//! `sieve cluster scheduler`: Ballista's scheduler, whose sessions know
//! sieve's functions and object stores. It plans the jobs clients submit and
//! hands their tasks to the executors; it runs no model itself. Its gRPC
//! service, REST API and health probes (`/healthz`, `/readyz`) share
//! `--bind-host:--bind-port`.

use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use crate::error::{PipelineError, Result};
use crate::session::Runtime;

/// Runs the scheduler with Ballista's scheduler `flags` until the process is stopped.
pub async fn run(flags: ballista_scheduler::config::Config) -> Result<()> {
    let addr = format!("{}:{}", flags.bind_host, flags.bind_port);
    let addr: std::net::SocketAddr =
        addr.parse().map_err(|e| PipelineError::Usage(format!("--bind-host/--bind-port {addr}: {e}")))?;
    let config: SchedulerConfig = flags.try_into().map_err(|e| PipelineError::Usage(format!("scheduler: {e}")))?;
    // Planning resolves a function's return type, which for the model
    // functions reads the proxy: on the CPU, one thread.
    let runtime = Runtime::new(Default::default(), 1)?;
    let mut config = config.with_override_session_builder(Arc::new(move |c| super::node_state(c, &runtime)));
    let codec = super::codec::SieveCodec::shared();
    config.override_logical_codec = Some(codec.clone());
    config.override_physical_codec = Some(codec);
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(environment)?;
    crate::log::info("scheduler", "listening", serde_json::json!({"address": addr.to_string()}));
    start_server(cluster, addr, Arc::new(config)).await.map_err(environment)
}

/// A Ballista failure of a node: the machine's (ports, peers), not the job's.
pub(super) fn environment(e: ballista_core::error::BallistaError) -> PipelineError {
    PipelineError::Environment(e.to_string())
}
