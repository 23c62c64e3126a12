//! The subcommands, a module each: each resolves its plans, runs its
//! stages in order into a staging directory, writes the manifest and commits
//! the directory atomically. This module holds what they share: timing a
//! stage into the manifest, score + select + write, the report and the
//! commit.

pub mod distill;
pub mod prune;
pub mod score;
pub mod select;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::prelude::SessionContext;

use sieve_proxy::artifact::ProxyMeta;
use sieve_schemas::{layout, Stage};

use crate::error::{io_err, Result};
use crate::input::InputFiles;
use crate::leaks::{Checks, Embedder};
use crate::manifest::{Manifest, ProxyRecord};
use crate::plan::{DatasetPlan, RunPlan, SelectPlan};
use crate::resume::WorkDir;
use crate::session::Runtime;
use crate::staging::Staging;
use crate::{global, label_issues, report, write};

pub(crate) fn timed<T>(manifest: &mut Manifest, stage: Stage, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let out = f()?;
    record(manifest, stage, started);
    Ok(out)
}

/// Records a finished stage's seconds in the manifest and logs it.
pub(crate) fn record(manifest: &mut Manifest, stage: Stage, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    manifest.seconds.insert(stage, seconds);
    crate::log::info(stage.name(), "done", serde_json::json!({"seconds": seconds}));
}

/// The proxy record for the manifest, pointing at where the proxy will live.
pub(crate) fn proxy_record(dir: &Path, final_dir: PathBuf) -> Result<ProxyRecord> {
    Ok(ProxyRecord { dir: final_dir, meta: ProxyMeta::read(dir)? })
}

/// The proxy's training dynamics, when it was trained on exactly these files
/// (its rows are keyed by input position, so other data cannot use them).
pub(crate) fn dynamics_of(proxy_dir: &Path, dataset: &DatasetPlan) -> Option<PathBuf> {
    let path = proxy_dir.join(crate::dynamics::FILE);
    let meta = ProxyMeta::read(proxy_dir).ok()?;
    let same = meta.train_files.iter().eq(dataset.train.files.iter().map(|f| &f.path));
    (same && path.is_file()).then_some(path)
}

/// Where the select stage's scores come from.
pub(crate) enum Source<'a> {
    /// Scored now with this proxy, resumably in this work directory, here
    /// or on the cluster this session submits to; with cross-fitting's
    /// out-of-sample probabilities when it ran.
    Proxy { dir: &'a Path, work: &'a WorkDir, cluster: Option<&'a SessionContext>, out_of_sample: Option<&'a Path> },
    /// An existing scores.parquet, the held-out accuracy of the proxies
    /// behind its probabilities and what embedded its rows (from its job's
    /// manifest, when known).
    Scores { path: &'a Path, heldout_accuracy: Option<f64>, embedder: Option<Embedder> },
}

/// The held-out accuracy of the proxies behind a job's probabilities, as
/// its manifest says: the fold proxies' mean when it cross-fitted, else
/// that of its proxy (`proxy`).
pub(crate) fn heldout_accuracy(manifest: &Manifest, proxy: Option<&ProxyMeta>) -> Option<f64> {
    match &manifest.cross_fit {
        Some(cf) => {
            let each: Option<Vec<f64>> = cf.per_fold.iter().map(|f| f.heldout_accuracy).collect();
            each.filter(|a| !a.is_empty()).map(|a| a.iter().sum::<f64>() / a.len() as f64)
        }
        None => proxy?.heldout_accuracy,
    }
}

/// Scores, selects and writes into `staging`: the stages `prune` and
/// `select` share after the proxy exists. The manifest's configuration gets
/// the selection as it ran (`auto` dropping no label issues where the
/// scores cannot decide them).
pub(crate) async fn score_select_write(
    dataset: &DatasetPlan,
    source: Source<'_>,
    select_plan: &SelectPlan,
    run: &RunPlan,
    rt: &Runtime,
    staging: &Staging,
    manifest: &mut Manifest,
) -> Result<()> {
    let ctx = rt.session(run.memory_limit)?;
    let (scores_in, proxy_dir, out_of_sample, accuracy, embedder) = match source {
        Source::Proxy { dir, work, cluster, out_of_sample } => {
            let started = Instant::now();
            let (shards, outcome) = match cluster {
                Some(remote) => crate::cluster::job::score(remote, dataset, dir, run, work).await?,
                None => crate::score::run_resumable(&ctx, dataset, dir, run, work).await?,
            };
            manifest.scoring = Some(outcome);
            record(manifest, Stage::Score, started);
            let accuracy = heldout_accuracy(manifest, ProxyMeta::read(dir).ok().as_ref());
            let embedder = Embedder { proxy_dir: dir.to_path_buf(), embedding: dataset.embedding.clone() };
            (shards, Some(dir), out_of_sample, accuracy, Some(embedder))
        }
        Source::Scores { path, heldout_accuracy, embedder } => {
            (path.to_path_buf(), None, None, heldout_accuracy, embedder)
        }
    };
    let without_label_issues = SelectPlan { drop_label_issues: false, ..select_plan.clone() };
    let mut select_plan = select_plan;
    let mut extras: Vec<PathBuf> = proxy_dir.and_then(|dir| dynamics_of(dir, dataset)).into_iter().collect();
    // Its `probs` replace the full-data proxy's; its `fold` is added.
    extras.extend(out_of_sample.map(Path::to_path_buf));
    let raw_files = sieve_schemas::paths::resolve_files(&scores_in.to_string_lossy())?;
    if !dataset.hide_labels && label_issues::possible(&scores_in)? {
        let dest = staging.path().join(".labels.parquet");
        let classes = dataset.classes.len();
        let counting = label_issues::Counting::of(select_plan.issue_count, accuracy);
        let mut issues = timed(manifest, Stage::LabelIssues, || {
            label_issues::run(&raw_files, out_of_sample, counting, classes, &dest)
        })?;
        issues.dropped = select_plan.drop_label_issues;
        manifest.label_issues = Some(issues);
        extras.push(dest);
    } else if select_plan.drop_label_issues && select_plan.auto.is_some() {
        // `auto` drops label issues where it can; these scores cannot say.
        let why = "no class probabilities to decide label issues from: none dropped";
        crate::log::info("select", why, serde_json::json!({"scores": scores_in}));
        select_plan = &without_label_issues;
    } else if select_plan.drop_label_issues {
        return Err(crate::error::PipelineError::Usage(format!(
            "--drop-label-issues: {} has no class probabilities (`probs`) to decide label issues from: rescore with this sieve",
            scores_in.display()
        )));
    }
    if crate::near_dup::hash_column(&raw_files)?.is_some() {
        let dest = staging.path().join(".near-dups.parquet");
        let started = Instant::now();
        manifest.near_dups = Some(crate::near_dup::run(&ctx, &raw_files, &select_plan.near_dup, &dest).await?);
        record(manifest, Stage::NearDups, started);
        extras.push(dest);
    } else if select_plan.near_dup.drop != crate::choices::NearDupDrop::None {
        return Err(crate::error::PipelineError::Usage(format!(
            "--drop-near-dups: {} has no minhash or phash column to find near-duplicates from: rescore with this sieve",
            scores_in.display()
        )));
    }
    let checks = leak_checks(select_plan, embedder.as_ref())?;
    leaks(&ctx, (&raw_files, dataset), select_plan, checks, staging, manifest, &mut extras).await?;
    if global::needed(select_plan) {
        let dest = staging.path().join(".global.parquet");
        manifest.global = Some(timed(manifest, Stage::EmbeddingMethods, || {
            rt.install(|| global::run(&scores_in, &extras, select_plan, dataset.classes.len(), &dest))
        })?);
        extras.push(dest);
    }
    let scores = layout::scores(staging.path());
    let started = Instant::now();
    manifest.selection =
        Some(crate::select::run(&ctx, &scores_in, &extras, select_plan, &dataset.classes, &scores).await?);
    for extra in extras.iter().filter(|e| e.starts_with(staging.path())) {
        std::fs::remove_file(extra).map_err(io_err(extra))?;
    }
    record(manifest, Stage::Select, started);
    manifest.config.select = Some(select_plan.clone());
    write_kept(manifest, &dataset.train, staging, select_plan.rows_per_file, run.quiet)
}

/// What embedded the scores of the job whose output is `dir` and whose
/// manifest is `manifest`: its proxy published in `dir`, else where the
/// manifest says it lives; `None` without a proxy.
pub(crate) fn embedder_of_output(dir: &Path, manifest: &Manifest) -> Option<Embedder> {
    let beside = Some(layout::proxy(dir)).filter(|d| d.join(sieve_proxy::artifact::META_FILE).is_file());
    let proxy_dir = beside.or_else(|| manifest.proxy.as_ref().map(|p| p.dir.clone()))?;
    Some(Embedder { proxy_dir, embedding: manifest.dataset.embedding.clone() })
}

/// What the leak stage checks for `plan`: semantic leaks need to know what
/// embedded the training rows (a usage error when it is not known).
pub(crate) fn leak_checks<'a>(plan: &'a SelectPlan, embedder: Option<&'a Embedder>) -> Result<Checks<'a>> {
    let semantic =
        match (plan.leaks.semantic, embedder) {
            (Some(eps), Some(embedder)) => Some((eps, embedder)),
            (Some(_), None) => return Err(crate::error::PipelineError::Usage(
                "--semantic-leaks: these scores have no manifest naming the proxy (or encoder) that embedded them, \
                 so the evaluation rows cannot be embedded alike: rescore them with this sieve"
                    .into(),
            )),
            (None, _) => None,
        };
    Ok(Checks { near_dup: &plan.near_dup, semantic })
}

/// The leak stage, when there are evaluation rows to check the training
/// rows against: their leaks as an extra file for the select stage.
async fn leaks(
    ctx: &SessionContext,
    (raw_files, dataset): (&[PathBuf], &DatasetPlan),
    plan: &SelectPlan,
    checks: Checks<'_>,
    staging: &Staging,
    manifest: &mut Manifest,
    extras: &mut Vec<PathBuf>,
) -> Result<()> {
    let against = crate::leaks::against(dataset, &plan.leaks)?;
    let hashed = crate::near_dup::hash_column(raw_files)?.is_some();
    let Some(against) = against.filter(|_| hashed) else {
        if plan.leaks.drop {
            return Err(crate::error::PipelineError::Usage(
                "--drop-leaks: the scores have no minhash or phash column: rescore them with this sieve".into(),
            ));
        }
        return Ok(());
    };
    let dest = staging.path().join(".leaks.parquet");
    let started = Instant::now();
    let mut found =
        crate::leaks::run(ctx, raw_files, dataset, (&against.0, &against.1), checks, staging.path(), &dest).await?;
    found.dropped = plan.leaks.drop;
    manifest.leaks = Some(found);
    record(manifest, Stage::Leaks, started);
    extras.push(dest);
    Ok(())
}

/// The write stage: the rows `staging`'s scores.parquet keeps, copied from
/// `input` into `data/`, recorded in the manifest.
pub(crate) fn write_kept(
    manifest: &mut Manifest,
    input: &InputFiles,
    staging: &Staging,
    rows_per_file: usize,
    quiet: bool,
) -> Result<()> {
    let scores = layout::scores(staging.path());
    let data = layout::data(staging.path());
    let (files, _) = timed(manifest, Stage::Write, || write::run(input, &scores, &data, rows_per_file, quiet))?;
    manifest.data_files =
        files.iter().filter_map(|f| f.strip_prefix(staging.path()).ok().map(Path::to_path_buf)).collect();
    Ok(())
}

/// The report stage: report.html in `staging`, unless `--no-report`. A
/// report that cannot be made is logged and the job goes on: the output
/// data matters more than the page about it.
pub(crate) fn write_report(manifest: &mut Manifest, dataset: &DatasetPlan, staging: &Staging) {
    if !manifest.config.select.as_ref().is_some_and(|plan| plan.report) {
        return;
    }
    let started = Instant::now();
    if let Err(e) = report::write(manifest, dataset, staging.path()) {
        crate::log::error(&format!("report: no {}: {e}", layout::REPORT_FILE), serde_json::Value::Null);
    }
    record(manifest, Stage::Report, started);
}

/// The session that submits to `run`'s cluster, when it names one:
/// connected before any stage runs, so that an unreachable cluster fails
/// the job at once.
pub(crate) async fn cluster_session(run: &RunPlan, rt: &Runtime) -> Result<Option<SessionContext>> {
    match &run.cluster {
        Some(url) => Ok(Some(crate::cluster::connect(url, rt).await?)),
        None => Ok(None),
    }
}

/// Records the run settings, writes the manifest and moves the output into place.
pub(crate) fn finish(mut manifest: Manifest, staging: Staging, run: RunPlan) -> Result<PathBuf> {
    manifest.config.run = Some(run.clone());
    manifest.write(staging.path())?;
    staging.commit()?;
    Ok(run.out)
}
