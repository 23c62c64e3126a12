//! The subcommands as jobs: each resolves its plan, runs its stages in
//! order into a staging directory, writes the manifest and commits the
//! directory atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sieve_proxy::artifact::ProxyMeta;
use sieve_schemas::{layout, ScoreName, ScoreSource, Stage};

use crate::cli::{PruneArgs, ScoreArgs, SelectArgs, TrainArgs};
use crate::error::{io_err, PipelineError, Result};
use crate::input::InputFiles;
use crate::manifest::{Manifest, ProxyRecord};
use crate::plan::{DatasetPlan, Embedding, RunPlan, SelectPlan, TrainPlan};
use crate::resume::{self, WorkDir};
use crate::session::{init_run, Runtime};
use crate::staging::Staging;
use crate::{active, global, report, score, select, train, write};

fn timed<T>(manifest: &mut Manifest, stage: Stage, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let out = f()?;
    record(manifest, stage, started);
    Ok(out)
}

/// Records a finished stage's seconds in the manifest and logs it.
fn record(manifest: &mut Manifest, stage: Stage, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    manifest.seconds.insert(stage, seconds);
    crate::log::info(stage.name(), "done", serde_json::json!({"seconds": seconds}));
}

/// The proxy record for the manifest, pointing at where the proxy will live.
fn proxy_record(dir: &Path, final_dir: PathBuf) -> Result<ProxyRecord> {
    Ok(ProxyRecord { dir: final_dir, meta: ProxyMeta::read(dir)? })
}

/// The proxy's training dynamics, when it was trained on exactly these files
/// (its rows are keyed by input position, so other data cannot use them).
fn dynamics_of(proxy_dir: &Path, dataset: &DatasetPlan) -> Option<PathBuf> {
    let path = proxy_dir.join(crate::dynamics::FILE);
    let meta = ProxyMeta::read(proxy_dir).ok()?;
    let same = meta.train_files.iter().eq(dataset.train.files.iter().map(|f| &f.path));
    (same && path.is_file()).then_some(path)
}

/// Where the select stage's scores come from.
enum Source<'a> {
    /// Scored now with this proxy, resumably in this work directory.
    Proxy { dir: &'a Path, work: &'a WorkDir },
    /// An existing scores.parquet.
    Scores(&'a Path),
}

/// Scores, selects and writes into `staging`: the stages `prune` and
/// `select` share after the proxy exists.
async fn score_select_write(
    dataset: &DatasetPlan,
    source: Source<'_>,
    select_plan: &SelectPlan,
    run: &RunPlan,
    rt: &Runtime,
    staging: &Staging,
    manifest: &mut Manifest,
) -> Result<()> {
    let ctx = rt.session(run.memory_limit)?;
    let (scores_in, proxy_dir) = match source {
        Source::Proxy { dir, work } => {
            let started = Instant::now();
            let (shards, outcome) = score::run_resumable(&ctx, dataset, dir, run, work).await?;
            manifest.scoring = Some(outcome);
            record(manifest, Stage::Score, started);
            (shards, Some(dir))
        }
        Source::Scores(existing) => (existing.to_path_buf(), None),
    };
    let mut extras: Vec<PathBuf> = proxy_dir.and_then(|dir| dynamics_of(dir, dataset)).into_iter().collect();
    if global::needed(select_plan) {
        let dest = staging.path().join(".global.parquet");
        manifest.global = Some(timed(manifest, Stage::EmbeddingMethods, || {
            global::run(&scores_in, &extras, select_plan, dataset.classes.len(), &dest)
        })?);
        extras.push(dest);
    }
    let scores = layout::scores(staging.path());
    let started = Instant::now();
    manifest.selection = Some(select::run(&ctx, &scores_in, &extras, select_plan, &dataset.classes, &scores).await?);
    for extra in extras.iter().filter(|e| e.starts_with(staging.path())) {
        std::fs::remove_file(extra).map_err(io_err(extra))?;
    }
    record(manifest, Stage::Select, started);
    write_kept(manifest, &dataset.train, staging, select_plan.rows_per_file, run.quiet)
}

/// The write stage: the rows `staging`'s scores.parquet keeps, copied from
/// `input` into `data/`, recorded in the manifest.
fn write_kept(
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

/// `sieve prune`: train (or load) a proxy, score, select, write.
pub async fn prune(args: PruneArgs) -> Result<PathBuf> {
    let mut dataset = DatasetPlan::resolve(&args.input)?;
    let mut select_plan = SelectPlan::resolve(&args.select, &args.common)?;
    dataset.embedding = Embedding::resolve(&args.embedding.embedding, dataset.kind, global::needed(&select_plan))?;
    select_plan.resolve_order(dataset.train.total_rows(), dataset.classes.len());
    let run = RunPlan::resolve(&args.common, args.out, dataset.name.clone())?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let plan = TrainPlan::new(args.train.proxy.clone(), args.train.overrides(), args.common.seed, &dataset)?;
    let mut identity: Vec<String> = vec![env!("CARGO_PKG_VERSION").to_string()];
    identity.extend(dataset.train.files.iter().map(resume::file_identity));
    identity.push(match &args.proxy_dir {
        Some(dir) => format!("proxy {}", dir.display()),
        None => serde_json::to_string(&plan).expect("the plan serializes"),
    });
    identity.push(format!("{:?}", dataset.embedding));
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
                timed(&mut manifest, Stage::Train, || train::run(&dataset, &plan, &run, &rt.placement, &tmp))?;
                resume::publish(&tmp, &dir)?;
            }
            manifest.config.train = Some(plan);
            dir
        }
    };
    score_select_write(
        &dataset,
        Source::Proxy { dir: &proxy_dir, work: &work },
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
    manifest.config.select = Some(select_plan);
    write_report(&mut manifest, &dataset, &staging);
    let out = finish(manifest, staging, run)?;
    work.remove()?;
    Ok(out)
}

/// The report stage: report.html in `staging`, unless `--no-report`. A
/// report that cannot be made is logged and the job goes on: the output
/// data matters more than the page about it.
fn write_report(manifest: &mut Manifest, dataset: &DatasetPlan, staging: &Staging) {
    if !manifest.config.select.as_ref().is_some_and(|plan| plan.report) {
        return;
    }
    let started = Instant::now();
    if let Err(e) = report::write(manifest, dataset, staging.path()) {
        crate::log::error(&format!("report: no {}: {e}", layout::REPORT_FILE), serde_json::Value::Null);
    }
    record(manifest, Stage::Report, started);
}

/// Records the run settings, writes the manifest and moves the output into place.
fn finish(mut manifest: Manifest, staging: Staging, run: RunPlan) -> Result<PathBuf> {
    manifest.config.run = Some(run.clone());
    manifest.write(staging.path())?;
    staging.commit()?;
    Ok(run.out)
}

/// `sieve train`: a proxy directory.
pub async fn train(args: TrainArgs) -> Result<PathBuf> {
    let dataset = DatasetPlan::resolve(&args.input)?;
    let plan = TrainPlan::new(args.train.proxy.clone(), args.train.overrides(), args.common.seed, &dataset)?;
    let run = RunPlan::resolve(&args.common, args.out, format!("{}-proxy", dataset.name))?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    train::run(&dataset, &plan, &run, &rt.placement, staging.path())?;
    staging.commit()?;
    Ok(run.out)
}

/// `sieve score`: scores.parquet (every row, no selection) and a manifest.
pub async fn score(args: ScoreArgs) -> Result<PathBuf> {
    let mut dataset = DatasetPlan::resolve(&args.input)?;
    // Nothing here reads embeddings, so `auto` means the proxy's features.
    dataset.embedding = Embedding::resolve(&args.embedding.embedding, dataset.kind, false)?;
    let run = RunPlan::resolve(&args.common, args.out, format!("{}-scores", dataset.name))?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    let ctx = rt.session(run.memory_limit)?;
    let started = Instant::now();
    let dest = layout::scores(staging.path());
    let proxy_dir = crate::store::localize(&args.proxy_dir)?;
    manifest.scoring = Some(score::run(&ctx, &dataset, &proxy_dir, &run, &dest).await?);
    record(&mut manifest, Stage::Score, started);
    manifest.proxy = Some(proxy_record(&proxy_dir, args.proxy_dir.clone())?);
    finish(manifest, staging, run)
}

/// `sieve select`: re-select from existing scores, without rescoring; or,
/// with `--labeled` or `--rounds`, active learning.
pub async fn select(args: SelectArgs) -> Result<PathBuf> {
    if args.active.labeled.is_some() || args.active.rounds.is_some() {
        return active(args).await;
    }
    let dataset = DatasetPlan::resolve(&args.input)?;
    let mut select_plan = SelectPlan::resolve(&args.select, &args.common)?;
    select_plan.resolve_order(dataset.train.total_rows(), dataset.classes.len());
    let run = RunPlan::resolve(&args.common, args.out, dataset.name.clone())?;
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
    let staging = Staging::new(&run.out)?;
    let mut manifest = Manifest::new(&dataset);
    score_select_write(&dataset, Source::Scores(copy.path()), &select_plan, &run, &rt, &staging, &mut manifest).await?;
    manifest.config.select = Some(select_plan);
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
        return Err(crate::error::PipelineError::Usage("--budget must be at least 1".into()));
    }
    let mut input = args.input.clone();
    if input.dataset.is_none() {
        input.input = opts.labeled.clone().or(input.input);
    }
    let mut dataset = DatasetPlan::resolve(&input)?;
    if let (Some(labeled), Some(_)) = (&opts.labeled, &args.input.dataset) {
        dataset = dataset.with_train(labeled)?;
    }
    let plan = TrainPlan::new(args.train.proxy.clone(), args.train.overrides(), args.common.seed, &dataset)?;
    let run = RunPlan::resolve(&args.common, args.out, format!("{}-active", dataset.name))?;
    let rt = init_run(&run)?;
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
