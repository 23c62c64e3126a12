//! The score stage on a cluster. The client plans the scoring query over
//! the row groups whose shards are not written yet, wrapped in a
//! [`WriteShards`] node, and submits it; the executors read their row
//! groups, score them and write one shard each into the work directory;
//! the client then counts the shards as a local run counts its own. The
//! select stage reads them in input order, as it reads a local run's.
//!
//! Resuming works as locally: a shard is renamed into place only when
//! complete, so after a failure (an executor lost for good, a stopped
//! client) a rerun submits only the row groups without one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::scan::{InputTable, Task};
use super::shards::WriteShards;
use crate::choices::OnError;
use crate::error::{io_err, PipelineError, Result};
use crate::plan::{DatasetPlan, Embedding, RunPlan};
use crate::resume::WorkDir;
use crate::score::{scoring_sql, ScoreOutcome, ROW};
use crate::sqlgen::ident;

/// Scores `dataset.train` on the cluster `ctx` submits to, with the proxy in
/// `proxy_dir`, into the shards of `work` (reusing those a failed run
/// finished); returns the directory of shards, as
/// [`crate::score::run_resumable`] does.
pub async fn score(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    work: &WorkDir,
) -> Result<(PathBuf, ScoreOutcome)> {
    let tasks = Task::all(&dataset.train);
    let names: Vec<String> = tasks.iter().map(Task::shard_name).collect();
    let dir = std::path::absolute(work.shards_dir()).map_err(io_err(work.shards_dir()))?;
    work.retain_shards(&names)?;
    let todo: Vec<Task> = tasks.iter().filter(|t| !dir.join(t.shard_name()).exists()).cloned().collect();
    if !todo.is_empty() {
        let dataset = shared_paths(dataset)?;
        let proxy_dir = std::path::absolute(proxy_dir).map_err(io_err(proxy_dir))?;
        crate::log::info(
            "score",
            "submitting",
            serde_json::json!({"row_groups": todo.len(), "reused": tasks.len() - todo.len()}),
        );
        ctx.register_table("input", Arc::new(InputTable::new(&dataset.train, todo.clone())?))?;
        let scoring = ctx.sql(&scoring_sql(&dataset, &proxy_dir)).await?.into_unoptimized_plan();
        let node = WriteShards::new(scoring, dir.clone(), todo.clone())?;
        let job = DataFrame::new(ctx.state(), LogicalPlan::Extension(Extension { node: Arc::new(node) }));
        // Ballista may hand back a partition's answer more than once: the
        // check is on the set of shards written.
        let mut written = std::collections::BTreeSet::new();
        // The job fails for the cluster's reasons (executors lost, a node
        // that cannot read the proxy or the input, another version).
        let answers =
            job.collect().await.map_err(|e| PipelineError::Environment(format!("the cluster job failed: {e}")))?;
        for batch in answers {
            written.extend(batch.column(0).as_string::<i32>().iter().flatten().map(String::from));
        }
        ctx.deregister_table("input")?;
        if let Some(missing) = todo.iter().map(Task::shard_name).find(|name| !written.contains(name)) {
            return Err(PipelineError::Internal(format!("the cluster finished without writing shard {missing}")));
        }
    }
    let mut outcome = ScoreOutcome::default();
    for task in &tasks {
        let shard = dir.join(task.shard_name());
        let check = (run.on_error == OnError::Fail).then_some(dataset);
        outcome.absorb(ScoreOutcome::of_shard(&shard, check)?);
    }
    outcome.reused_shards = tasks.len() - todo.len();
    Ok((dir, outcome))
}

/// Scores `dataset.train` on the cluster `remote` submits to, into the
/// shards of `work`, and merges them here (with the local session `ctx`)
/// into the Parquet file `dest` in input order: what [`crate::score::run`]
/// writes locally, byte for byte.
pub async fn score_into(
    remote: &SessionContext,
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    work: &WorkDir,
    dest: &Path,
) -> Result<ScoreOutcome> {
    let (shards, outcome) = score(remote, dataset, proxy_dir, run, work).await?;
    ctx.register_parquet("__shards", shards.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
    let merged = ctx.sql(&format!("SELECT * FROM __shards ORDER BY {}", ident(ROW))).await?;
    crate::parquet_io::write_query(merged, dest, Ok).await?;
    ctx.deregister_table("__shards")?;
    Ok(outcome)
}

/// The work directory of a cluster scoring job writing `dest`: beside it,
/// fingerprinted by sieve's version, the proxy, the input files and how
/// the query reads them (labels hidden, the embedding), so a rerun reuses
/// only the shards of the same job.
pub fn work_for(dest: &Path, dataset: &DatasetPlan, proxy_dir: &Path) -> Result<WorkDir> {
    let mut identity = vec![env!("CARGO_PKG_VERSION").to_string(), format!("proxy {}", proxy_dir.display())];
    identity.extend(dataset.train.files.iter().map(crate::resume::file_identity));
    identity.push(format!("{:?} hide_labels={}", dataset.embedding, dataset.hide_labels));
    WorkDir::open(dest, &crate::resume::fingerprint(&identity))
}

/// `dataset` with the paths the scoring query names made absolute: every
/// node resolves them itself, in its own working directory.
fn shared_paths(dataset: &DatasetPlan) -> Result<DatasetPlan> {
    let embedding = match &dataset.embedding {
        Embedding::Encoder(dir) => Embedding::Encoder(std::path::absolute(dir).map_err(io_err(dir))?),
        Embedding::Proxy => Embedding::Proxy,
    };
    Ok(DatasetPlan { embedding, ..dataset.clone() })
}
