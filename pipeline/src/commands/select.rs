//! `sieve select`: re-select from existing scores, or active learning.

use std::path::PathBuf;
use std::time::Instant;

use sieve_schemas::{layout, ScoreName, Stage};

use super::{
    cluster_session, finish, heldout_accuracy, proxy_record, record, score_select_write, write_kept, write_report,
    Source,
};
use crate::active;
use crate::cli::SelectArgs;
use crate::error::{io_err, PipelineError, Result};
use crate::global;
use crate::manifest::Manifest;
use crate::session::init_run;
use crate::staging::Staging;

/// `sieve select`: re-select from existing scores, without rescoring; or,
/// with `--labeled` or `--rounds`, active learning.
pub async fn run(args: SelectArgs) -> Result<PathBuf> {
    if args.active.labeled.is_some() || args.active.rounds.is_some() {
        return active(args).await;
    }
    if let Some(url) = &args.cluster.cluster {
        let why = "re-selecting from --scores scores nothing: the selection runs here";
        crate::log::info("select", why, serde_json::json!({"cluster": url}));
    }
    let dataset = args.input.plan()?;
    let mut select_plan = args.select.plan(args.common.seed)?;
    select_plan.resolve_auto(dataset.train.total_rows(), dataset.classes.len())?;
    crate::leaks::against(&dataset, &select_plan.leaks)?;
    let run = args.common.run_plan(args.out, dataset.name.clone())?;
    let rt = init_run(&run)?;
    let scores = crate::store::localize(&args.scores.expect("clap requires --scores without --labeled or --rounds"))?;
    let scores = layout::scores_of(&scores);
    // Read the scores before staging: the output may replace their directory.
    let copy = tempfile::Builder::new().suffix(".parquet").tempfile().map_err(io_err(&scores))?;
    std::fs::copy(&scores, copy.path()).map_err(io_err(&scores))?;
    if select_plan.score != ScoreName::Prototype && !global::has_column(copy.path(), select_plan.score.column())? {
        return Err(PipelineError::Usage(format!(
            "--score {}: {} has no such column",
            select_plan.score,
            scores.display()
        )));
    }
    // The job that wrote the scores says which proxies gave its probabilities.
    let earlier = scores.parent().and_then(|dir| Manifest::read(dir).ok());
    let heldout_accuracy = earlier.as_ref().and_then(|m| heldout_accuracy(m, m.proxy.as_ref().map(|p| &p.meta)));
    let embedder = earlier.as_ref().and_then(|m| super::embedder_of_output(scores.parent()?, m));
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let source = Source::Scores { path: copy.path(), heldout_accuracy, embedder };
    score_select_write(&dataset, source, &select_plan, &run, &rt, &staging, &mut manifest).await?;
    write_report(&mut manifest, &dataset, &staging);
    finish(manifest, staging, run)
}

/// `sieve select --labeled L --unlabeled U --budget N`: the next batch to
/// label, written like a pruned dataset; or `--rounds R`: a simulation on a
/// fully labeled dataset, reported in the manifest's `active.rounds`.
async fn active(args: SelectArgs) -> Result<PathBuf> {
    let opts = &args.active;
    let budget = opts.budget.expect("clap requires --budget");
    if budget == 0 {
        return Err(PipelineError::Usage("--budget must be at least 1".into()));
    }
    let mut input = args.input.clone();
    if input.dataset.is_none() {
        input.input = opts.labeled.clone().or(input.input);
    }
    let mut dataset = input.plan()?;
    if let (Some(labeled), Some(_)) = (&opts.labeled, &args.input.dataset) {
        dataset = dataset.with_train(labeled)?;
    }
    let plan = args.train.plan(args.common.seed, &dataset)?;
    let run = args.common.run_plan(args.out, format!("{}-active", dataset.name))?.on_cluster(args.cluster.cluster)?;
    let rt = init_run(&run)?;
    // Connected once before any training: an unreachable cluster fails at once.
    cluster_session(&run, &rt).await?;
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let ctx = rt.session(run.memory_limit)?;
    let started = Instant::now();
    manifest.active = Some(match (&opts.unlabeled, opts.rounds) {
        (Some(unlabeled), _) => {
            let pool = active::pool_plan(&dataset, unlabeled)?;
            let outcome =
                active::next_batch(&ctx, &dataset, &pool, &plan, &run, opts.acquisition, budget, staging.path())
                    .await?;
            record(&mut manifest, Stage::Active, started);
            write_kept(&mut manifest, &pool.train, &staging, usize::MAX, run.quiet)?;
            let proxy_dir = layout::proxy(staging.path());
            manifest.proxy = Some(proxy_record(&proxy_dir, layout::proxy(&run.out))?);
            outcome
        }
        (None, Some(rounds)) => {
            let work = tempfile::tempdir_in(staging.path()).map_err(io_err(staging.path()))?;
            let outcome =
                active::simulate(&ctx, &dataset, &plan, &run, opts.acquisition, budget, rounds, work.path()).await?;
            record(&mut manifest, Stage::Active, started);
            outcome
        }
        (None, None) => unreachable!("clap requires --unlabeled with --labeled"),
    });
    manifest.config.train = Some(plan);
    finish(manifest, staging, run)
}
