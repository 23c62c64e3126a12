//! `sieve score`: every row scored, no selection.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sieve_schemas::{layout, Stage};

use super::{cluster_session, finish, proxy_record, record};
use crate::cli::ScoreArgs;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::plan::{DatasetPlan, Embedding, RunPlan};
use crate::resume::{self, WorkDir};
use crate::score::{ScoreOutcome, ROW};
use crate::session::init_run;
use crate::staging::Staging;

/// `sieve score`: scores.parquet (every row, no selection) and a manifest.
pub async fn run(args: ScoreArgs) -> Result<PathBuf> {
    let mut dataset = args.input.plan()?;
    // Nothing here reads embeddings, so `auto` means the proxy's features.
    dataset.embedding = Embedding::resolve(&args.embedding.embedding, dataset.kind, false)?;
    let run =
        args.common.run_plan(args.out, format!("{}-scores", dataset.name))?.on_cluster(args.cluster.cluster.clone())?;
    let rt = init_run(&run)?;
    let cluster = cluster_session(&run, &rt).await?;
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let ctx = rt.session(run.memory_limit)?;
    let started = Instant::now();
    let dest = layout::scores(staging.path());
    let proxy_dir = crate::store::localize(&args.proxy_dir)?;
    let mut work = None;
    manifest.scoring = Some(match &cluster {
        None => crate::score::run(&ctx, &dataset, &proxy_dir, &run, &dest).await?,
        Some(remote) => {
            let mut identity = vec![env!("CARGO_PKG_VERSION").to_string(), format!("proxy {}", proxy_dir.display())];
            identity.extend(dataset.train.files.iter().map(resume::file_identity));
            identity.push(format!("{:?}", dataset.embedding));
            let dir = work.insert(WorkDir::open(&run.out, &resume::fingerprint(&identity))?);
            on_cluster(remote, &ctx, &dataset, &proxy_dir, &run, dir, &dest).await?
        }
    });
    record(&mut manifest, Stage::Score, started);
    manifest.proxy = Some(proxy_record(&proxy_dir, args.proxy_dir.clone())?);
    let out = finish(manifest, staging, run)?;
    if let Some(work) = work {
        work.remove()?;
    }
    Ok(out)
}

/// Scores on the cluster `remote` submits to: the executors write shards
/// into `work` beside the output (kept until the output is committed, so a
/// rerun after a failure reuses them), merged here into `dest` in input
/// order.
async fn on_cluster(
    remote: &SessionContext,
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    work: &WorkDir,
    dest: &Path,
) -> Result<ScoreOutcome> {
    let (shards, outcome) = crate::cluster::job::score(remote, dataset, proxy_dir, run, work).await?;
    ctx.register_parquet("shards", shards.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
    let merged = ctx.sql(&format!("SELECT * FROM shards ORDER BY {ROW}")).await?;
    crate::parquet_io::write_query(merged, dest, Ok).await?;
    Ok(outcome)
}
