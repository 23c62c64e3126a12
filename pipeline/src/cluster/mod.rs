//! sieve on an Apache Ballista cluster: the scheduler and executor processes
//! built into the `sieve` binary with sieve's functions, object stores and
//! model runtime ([`scheduler`], [`executor`]), and the client's session that
//! submits to them ([`connect`]).
//!
//! Scalar functions travel by name: the client's plan names them, the
//! scheduler resolves them in the sessions its builder makes, the executors
//! in their function registry, each holding its own [`Runtime`] (its threads
//! and device, its cache of loaded models).

pub mod codec;
pub mod executor;
pub mod job;
pub mod scan;
pub mod scheduler;
pub mod shards;

use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{PipelineError, Result};
use crate::session::Runtime;

/// A session whose queries run on the cluster whose scheduler `url`
/// (`df://HOST:PORT`) names, with sieve's functions registered, planned here
/// with the client's `runtime` (the scheduler and executors resolve the
/// functions by name in their own).
pub async fn connect(url: &str, runtime: &Runtime) -> Result<SessionContext> {
    reachable(url).await?;
    let local = runtime.session(None)?.state();
    let codec = codec::SieveCodec::shared();
    let config = local
        .config()
        .clone()
        .with_ballista_logical_extension_codec(codec.clone())
        .with_ballista_physical_extension_codec(codec)
        // A scoring job's partitions are its row groups, one shard each:
        // neither a round-robin repartition nor the adaptive planner's
        // coalescing of small partitions may merge them.
        .with_ballista_adaptive_query_planner(false)
        .set_bool("datafusion.optimizer.enable_round_robin_repartition", false);
    let state = SessionStateBuilder::new_from_existing(local).with_config(config).build();
    let ctx = SessionContext::remote_with_state(url, state)
        .await
        .map_err(|e| PipelineError::Environment(format!("--cluster {url}: {e}")))?;
    // Connecting replaces the state's scalar functions with Ballista's list.
    sieve_udfs::register_all(&ctx, &runtime.models);
    Ok(ctx)
}

/// How long the client waits for the scheduler to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the client waits for the scheduler to have an executor.
const EXECUTOR_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks, within bounded times, that the scheduler `url` names answers and
/// has an executor alive: Ballista itself connects only when the first query
/// runs, says then only what its transport saw, and holds a job without
/// executors until one registers.
async fn reachable(url: &str) -> Result<()> {
    let address = url
        .strip_prefix("df://")
        .ok_or_else(|| PipelineError::Usage(format!("--cluster {url}: give df://HOST:PORT")))?;
    let started = std::time::Instant::now();
    loop {
        let executors = executors(address)
            .await
            .map_err(|why| PipelineError::Environment(format!("--cluster {url}: cannot reach the scheduler: {why}")))?;
        if executors > 0 {
            return Ok(());
        }
        if started.elapsed() > EXECUTOR_WAIT {
            return Err(PipelineError::Environment(format!(
                "--cluster {url}: the scheduler has no executor after {} s (start one with `sieve cluster executor`)",
                EXECUTOR_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// How many executors the scheduler at `address` (HOST:PORT) lists as
/// alive, from its REST API (`GET /api/executors`).
async fn executors(address: &str) -> std::result::Result<usize, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request = format!("GET /api/executors HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
        Ok(response) => response.map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("no HTTP answer");
        return Err(format!("GET /api/executors: {status} (is it a Ballista scheduler with its REST API?)"));
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_str(body).map_err(|e| format!("GET /api/executors: not a list of executors: {e}"))?;
    Ok(list.len())
}

/// The one input of one of sieve's plan nodes (`node` names it in the
/// error when there is not exactly one).
pub(crate) fn only_input<T: Clone>(inputs: &[T], node: &str) -> datafusion::error::Result<T> {
    match inputs {
        [input] => Ok(input.clone()),
        _ => {
            Err(datafusion::error::DataFusionError::Internal(format!("{node}: {} inputs, expected one", inputs.len())))
        }
    }
}

/// The object stores every node resolves `s3://` paths with: sieve's.
fn runtime_env() -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new().with_object_store_registry(crate::store::registry()).build_arc()
}

/// A session state on a node of the cluster: `config` as the client sent
/// it, sieve's object stores, DataFusion's and Ballista's functions and
/// sieve's, loading and running models through `runtime`.
fn node_state(
    config: SessionConfig,
    runtime: &Runtime,
) -> datafusion::error::Result<datafusion::execution::SessionState> {
    let mut functions = ballista_core::extension::ballista_scalar_functions();
    functions.extend(sieve_udfs::all_functions(&runtime.models).into_iter().map(Arc::new));
    Ok(SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime_env()?)
        .with_default_features()
        .with_scalar_functions(functions)
        .with_aggregate_functions(ballista_core::extension::ballista_aggregate_functions())
        .with_window_functions(ballista_core::extension::ballista_window_functions())
        .with_query_planner(Arc::new(shards::SieveQueryPlanner))
        .build())
}
