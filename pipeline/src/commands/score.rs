//! `sieve score`: every row scored, no selection.

use std::path::PathBuf;
use std::time::Instant;

use sieve_schemas::{layout, Stage};

use super::{cluster_session, finish, proxy_record, record};
use crate::cli::ScoreArgs;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::plan::Embedding;
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
            // The shards stay beside the output until it is committed, so
            // that a rerun after a failure reuses them.
            let dir = work.insert(crate::cluster::job::work_for(&run.out, &dataset, &proxy_dir)?);
            crate::cluster::job::score_into(remote, &ctx, &dataset, &proxy_dir, &run, dir, &dest).await?
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
