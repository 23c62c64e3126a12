//! `sieve prune`: the whole job.

use std::path::PathBuf;

use sieve_proxy::artifact::ProxyMeta;
use sieve_schemas::{layout, ScoreSource, Stage};

use super::{cluster_session, dynamics_of, finish, proxy_record, score_select_write, timed, write_report, Source};
use crate::cli::PruneArgs;
use crate::error::{PipelineError, Result};
use crate::global;
use crate::manifest::Manifest;
use crate::plan::Embedding;
use crate::resume::{self, WorkDir};
use crate::session::init_run;
use crate::staging::Staging;

/// The folds of `--folds K`, when cross-fitting: it trains the fold proxies
/// by the job's recipe on labeled rows, so it needs both.
fn cross_fitting(args: &PruneArgs, dataset: &crate::plan::DatasetPlan) -> Result<Option<crate::crossfit::Folds>> {
    if args.folds == 1 {
        return Ok(None);
    }
    if args.proxy_dir.is_some() {
        return Err(PipelineError::Usage(
            "--folds trains its fold proxies by this job's recipe: drop --proxy-dir, or use --folds 1".into(),
        ));
    }
    if dataset.hide_labels {
        return Err(PipelineError::Usage("--folds cross-fits a classifier: it needs the labels".into()));
    }
    crate::crossfit::Folds::new(args.folds, args.common.seed).map(Some)
}

/// `sieve prune`: train (or load) a proxy, score, select, write.
pub async fn run(args: PruneArgs) -> Result<PathBuf> {
    let mut dataset = args.input.plan()?;
    let mut select_plan = args.select.plan(args.common.seed)?;
    dataset.embedding = Embedding::resolve(&args.embedding.embedding, dataset.kind, global::needed(&select_plan))?;
    select_plan.resolve_auto(dataset.train.total_rows(), dataset.classes.len())?;
    crate::leaks::against(&dataset, &select_plan.leaks)?;
    let folds = cross_fitting(&args, &dataset)?;
    let run = args.common.run_plan(args.out, dataset.name.clone())?.on_cluster(args.cluster.cluster.clone())?;
    let rt = init_run(&run)?;
    let cluster = cluster_session(&run, &rt).await?;
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let plan = args.train.plan(args.common.seed, &dataset)?;
    let mut identity: Vec<String> = vec![env!("CARGO_PKG_VERSION").to_string()];
    identity.extend(dataset.train.files.iter().map(resume::file_identity));
    identity.push(match &args.proxy_dir {
        Some(dir) => format!("proxy {}", dir.display()),
        None => serde_json::to_string(&plan).expect("the plan serializes"),
    });
    identity.push(format!("{:?}", dataset.embedding));
    identity.push(format!("{folds:?}"));
    let work = WorkDir::open(&run.out, &resume::fingerprint(&identity))?;
    let proxy_dir = match &args.proxy_dir {
        Some(dir) => {
            let local = crate::store::localize(dir)?;
            if select_plan.score.source() == ScoreSource::Dynamics && dynamics_of(&local, &dataset).is_none() {
                return Err(PipelineError::Usage(format!(
                    "--score {} is a training-dynamics score, and the proxy in {} recorded none for these files: drop --proxy-dir to train one here, or choose another --score",
                    select_plan.score,
                    dir.display()
                )));
            }
            local
        }
        None => {
            let dir = work.proxy_dir();
            if dir.join(sieve_proxy::artifact::META_FILE).is_file() {
                manifest.resumed_proxy = true;
            } else {
                let tmp = work.temporary("proxy");
                timed(&mut manifest, Stage::Train, || crate::train::run(&dataset, &plan, &run, &rt, &tmp))?;
                resume::publish(&tmp, &dir)?;
            }
            manifest.config.train = Some(plan.clone());
            dir
        }
    };
    let out_of_sample = match folds {
        Some(folds) => {
            let (ctx, started) = (rt.session(run.memory_limit)?, std::time::Instant::now());
            let (path, cross_fit) = crate::crossfit::run(&ctx, &dataset, &plan, folds, &run, &rt, &work).await?;
            super::record(&mut manifest, Stage::CrossFit, started);
            manifest.cross_fit = Some(cross_fit);
            Some(path)
        }
        None => None,
    };
    score_select_write(
        &dataset,
        Source::Proxy {
            dir: &proxy_dir,
            work: &work,
            cluster: cluster.as_ref(),
            out_of_sample: out_of_sample.as_deref(),
        },
        &select_plan,
        &run,
        &rt,
        &staging,
        &mut manifest,
    )
    .await?;
    let final_proxy_dir = match &args.proxy_dir {
        Some(dir) => dir.clone(),
        None => {
            // The training accuracy comes free from scoring: no augmentation, every row.
            let mut meta = ProxyMeta::read(&proxy_dir)?;
            meta.train_accuracy = manifest.scoring.as_ref().map(|s| s.train_accuracy);
            meta.write(&proxy_dir)?;
            resume::publish(&proxy_dir, &layout::proxy(staging.path()))?;
            layout::proxy(&run.out)
        }
    };
    let proxy_dir = if args.proxy_dir.is_some() { proxy_dir } else { layout::proxy(staging.path()) };
    manifest.proxy = Some(proxy_record(&proxy_dir, final_proxy_dir)?);
    if let Some(cross_fit) = &mut manifest.cross_fit {
        crate::crossfit::publish_proxies(cross_fit, staging.path(), &run.out)?;
    }
    write_report(&mut manifest, &dataset, &staging);
    let out = finish(manifest, staging, run)?;
    work.remove()?;
    Ok(out)
}
