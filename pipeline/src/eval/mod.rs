//! `sieve eval`: does the pruned data train as well? A larger **target**
//! model trains on the full training split, on the subsets sieve keeps
//! (swept over kept fractions, strategies and orders) and on random subsets
//! of the same size, over several seeds, and is measured on the held-out
//! split. It also reports the seconds of each phase, SVP's end-to-end
//! speed-up, and (with `--agreement`) the Spearman rank agreement between
//! proxies of two seeds and two widths.
//!
//! Results go to `eval.json`, `eval.md` (tables) and `eval.png` (accuracy
//! against kept fraction). A sweep takes hours, so it is resumable: the
//! proxy and every finished target training are kept in the output's work
//! directory ([`crate::resume`]), and a run with the same inputs and proxy
//! trains only the targets it has no result for: an interrupted sweep
//! resumes, and a later one with more strategies, fractions or seeds trains
//! only those. The directory stays after the results are committed (it
//! holds a proxy and a few bytes per training); it is emptied when the
//! inputs or the proxy's settings change.

pub mod rank;
pub mod report;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sieve_proxy::recipe::{Overrides, FASTTEXT};
use sieve_schemas::score::UnknownScore;
use sieve_schemas::{layout, Stage};

use crate::choices::{Order, Strategy, TargetBudget};
use crate::cli::EvalArgs;
use crate::error::{io_err, PipelineError, Result};
use crate::manifest::Manifest;
use crate::plan::{DatasetPlan, Embedding, RowSet, RunPlan, SelectPlan, TrainPlan};
use crate::resume::{self, WorkDir};

use crate::session::{init_run, Runtime};
use crate::staging::Staging;
use crate::{global, label_issues, score, select, train};

/// One way of choosing a subset: a score with an order, `random` or `kcenter`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Method {
    /// Score name, `random` or `kcenter`.
    pub strategy: String,
    /// Hard or easy, for score strategies.
    pub order: Option<Order>,
}

impl Method {
    /// A short label: `el2n hard`, `random`.
    pub fn label(&self) -> String {
        match self.order {
            Some(Order::Hard) => format!("{} hard", self.strategy),
            Some(Order::Easy) => format!("{} easy", self.strategy),
            Some(Order::Auto) => format!("{} auto", self.strategy),
            None => self.strategy.clone(),
        }
    }

    /// Whether this is the random baseline.
    pub fn is_random(&self) -> bool {
        self.strategy == RANDOM
    }

    /// Whether the method draws a new subset per seed: the random baseline,
    /// and the strategies that sample at random within strata or classes
    /// (`ccs`, `auto`, their `clean-` forms). A ranking keeps the same rows
    /// whatever the seed.
    fn draws_per_seed(&self) -> bool {
        [RANDOM, CCS, AUTO].contains(&self.base())
    }

    /// Whether the method reads embeddings (and so pays for a text encoder).
    pub fn embeds(&self) -> bool {
        let strategy = self.base();
        strategy == KCENTER || strategy == global::PROTOTYPE
    }

    /// The strategy without its [`CLEAN`] prefix.
    fn base(&self) -> &str {
        self.strategy.strip_prefix(CLEAN).unwrap_or(&self.strategy)
    }
}

const RANDOM: &str = "random";
const KCENTER: &str = "kcenter";
/// Coverage-centric selection over `--score` (el2n by default).
const CCS: &str = "ccs";
/// `--strategy auto`: the rule's choice at each fraction.
const AUTO: &str = "auto";
/// Prefix of a strategy run on the rows confident learning does not flag
/// (`--drop-label-issues`): `clean-random`, `clean-el2n`.
const CLEAN: &str = "clean-";

/// One target training.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRun {
    /// How the subset was chosen; `None` = full data.
    pub method: Option<Method>,
    /// Kept fraction (1 for full data).
    pub fraction: f64,
    /// Seed of the target (and of the random subset).
    pub seed: u64,
    /// Rows the target trained on.
    pub rows: u64,
    /// Epochs the target trained.
    pub epochs: usize,
    /// Held-out accuracy.
    pub accuracy: f64,
    /// Seconds to train (and evaluate) the target.
    pub train_seconds: f64,
    /// Seconds to choose the subset.
    pub select_seconds: f64,
    /// The method whose run at this fraction and seed kept exactly these
    /// rows, so this one was not trained again (its accuracy and seconds
    /// are that run's): `auto` picking CCS, for example.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_rows_as: Option<Method>,
    /// Whether this training was read back from an earlier run into the
    /// same output (interrupted, or a narrower sweep) rather than trained
    /// (its seconds are that run's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// Mean and spread of one cell of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// How the subset was chosen; `None` = full data.
    pub method: Option<Method>,
    /// Kept fraction.
    pub fraction: f64,
    /// Target trainings averaged.
    pub runs: usize,
    /// Mean held-out accuracy.
    pub mean: f64,
    /// Sample standard deviation (0 for one run).
    pub std: f64,
    /// SVP's end-to-end speed-up: the target on all data, against proxy
    /// training + scoring + selection + the target on the subset.
    pub speedup: f64,
}

/// Everything `sieve eval` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Dataset name.
    pub dataset: String,
    /// Training rows.
    pub rows: u64,
    /// The proxy that scored the rows.
    pub proxy: String,
    /// The proxy's held-out accuracy, when known.
    pub proxy_accuracy: Option<f64>,
    /// The target model's settings (its epochs are the full data's).
    pub target: TrainPlan,
    /// Whether a subset's target trains the same epochs or the same steps.
    pub target_budget: TargetBudget,
    /// Seconds to train the proxy and to score every row (from the scores'
    /// manifest with `--scores`).
    pub proxy_seconds: f64,
    /// Seconds of scoring.
    pub score_seconds: f64,
    /// Seconds of embedding the rows with a text encoder (for prototype and
    /// k-center on text; 0 when the proxy's features serve).
    pub embed_seconds: f64,
    /// Every target training.
    pub runs: Vec<TargetRun>,
    /// Per method and fraction, and the full-data reference.
    pub cells: Vec<Cell>,
    /// Spearman rank agreement between proxies (with `--agreement`).
    pub agreement: Vec<rank::Agreement>,
}

/// The target's settings: `--target*`, else a deeper ResNet (resnet20) for
/// images and a wider fastText (dim 64) for text.
fn target_plan(args: &EvalArgs, dataset: &DatasetPlan, seed: u64) -> Result<TrainPlan> {
    let image = dataset.kind == sieve_schemas::InputKind::Image;
    let preset = args.target.clone().unwrap_or_else(|| if image { "resnet20" } else { FASTTEXT }.to_string());
    let overrides = Overrides {
        width: args.target_width.or(if image { None } else { Some(64) }),
        epochs: args.target_epochs,
        ..Overrides::default()
    };
    TrainPlan::new(Some(preset), overrides, seed, dataset)
}

/// The target's plan on a subset of `kept` rows: the full data's epochs, or
/// with `--target-budget steps` as many epochs as give the full data's SGD
/// steps (rounded to the nearest, so never more than half an epoch off).
fn subset_target_plan(args: &EvalArgs, dataset: &DatasetPlan, seed: u64, kept: u64) -> Result<TrainPlan> {
    let plan = target_plan(args, dataset, seed)?;
    if args.target_budget != TargetBudget::Steps {
        return Ok(plan);
    }
    let epochs = plan.recipe.epochs() as f64 * dataset.train.total_rows() as f64 / kept.max(1) as f64;
    plan.with(Overrides { epochs: Some((epochs.round() as usize).max(1)), ..plan.overrides }, seed, dataset)
}

/// The methods of the sweep: every score strategy in each order, then
/// `kcenter`, `ccs`, `auto` and `random` once each (also with [`CLEAN`]).
fn methods(args: &EvalArgs) -> Vec<Method> {
    let mut out = Vec::new();
    for strategy in &args.strategies {
        let base = strategy.strip_prefix(CLEAN).unwrap_or(strategy);
        if [RANDOM, KCENTER, CCS, AUTO].contains(&base) {
            out.push(Method { strategy: strategy.clone(), order: None });
        } else {
            out.extend(args.orders.iter().map(|&o| Method { strategy: strategy.clone(), order: Some(o) }));
        }
    }
    out
}

/// The selection plan of `method` at `fraction` (`auto` order resolved for `dataset`).
fn select_plan(
    args: &EvalArgs,
    dataset: &DatasetPlan,
    method: &Method,
    fraction: f64,
    seed: u64,
) -> Result<SelectPlan> {
    let mut opts = args.select.clone();
    opts.keep = Some(fraction);
    opts.prune = None;
    opts.drop_label_issues |= method.strategy.starts_with(CLEAN);
    opts.strategy = match method.base() {
        RANDOM => Strategy::Random,
        KCENTER => Strategy::Kcenter,
        CCS => Strategy::Ccs,
        AUTO => Strategy::Auto,
        score => {
            opts.score = score.parse().map_err(|e: UnknownScore| PipelineError::Usage(e.to_string()))?;
            Strategy::Score
        }
    };
    opts.order = method.order.unwrap_or(Order::Auto);
    let mut plan = opts.plan(seed)?;
    plan.resolve_auto(dataset.train.total_rows(), dataset.classes.len())?;
    Ok(plan)
}

/// Where the proxy's scores come from, and what they cost.
struct Scored {
    raw: PathBuf,
    extras: Vec<PathBuf>,
    proxy: String,
    proxy_accuracy: Option<f64>,
    proxy_plan: Option<TrainPlan>,
    train_seconds: f64,
    score_seconds: f64,
    embed_seconds: f64,
}

/// Trains the proxy (or finds the one an interrupted run of this sweep
/// trained in `resume`) and scores every row in `work`, or reads an earlier
/// run's scores.
async fn proxy_scores(
    ctx: &SessionContext,
    args: &EvalArgs,
    dataset: &DatasetPlan,
    run: &RunPlan,
    (resume, work): (&WorkDir, &Path),
) -> Result<Scored> {
    if let Some(dir) = &args.scores {
        let dir = &crate::store::localize(dir)?;
        let raw = layout::scores_of(dir);
        let manifest = Manifest::read(raw.parent().unwrap_or(Path::new(".")))?;
        let seconds = |stage| manifest.seconds.get(&stage).copied().unwrap_or(0.0);
        let proxy = manifest.proxy.as_ref().map(|p| &p.meta);
        let embedder = crate::commands::embedder_of_output(raw.parent().unwrap_or(Path::new(".")), &manifest);
        let extras = duplicates(ctx, args, dataset, (&raw, embedder.as_ref()), work).await?;
        return Ok(Scored {
            raw,
            extras,
            proxy: proxy.map_or("proxy", |p| &p.preset).to_string(),
            proxy_accuracy: proxy.and_then(|p| p.heldout_accuracy),
            proxy_plan: None,
            train_seconds: seconds(Stage::Train),
            score_seconds: seconds(Stage::Score),
            embed_seconds: 0.0,
        });
    }
    let plan = args.train.plan(args.common.seed, dataset)?;
    let dir = resume.proxy_dir();
    let meta = if dir.join(sieve_proxy::artifact::META_FILE).is_file() {
        sieve_proxy::artifact::ProxyMeta::read(&dir)?
    } else {
        let tmp = resume.temporary("proxy");
        let meta = train::run(dataset, &plan, run, &Runtime::of(ctx)?, &tmp)?;
        resume::publish(&tmp, &dir)?;
        meta
    };
    let train_seconds = meta.seconds;
    let raw = work.join("proxy-scores.parquet");
    let started = Instant::now();
    let proxy_only = DatasetPlan { embedding: Embedding::Proxy, ..dataset.clone() };
    score::run(ctx, &proxy_only, &dir, run, &raw).await?;
    let score_seconds = started.elapsed().as_secs_f64();
    // With a text encoder, score again with its embeddings, timed apart:
    // only the methods that read embeddings pay for it.
    let started = Instant::now();
    if dataset.embedding != Embedding::Proxy {
        score::run(ctx, dataset, &dir, run, &raw).await?;
    }
    let embed_seconds = if dataset.embedding == Embedding::Proxy { 0.0 } else { started.elapsed().as_secs_f64() };
    let mut extras = vec![dir.join(crate::dynamics::FILE)];
    if !dataset.hide_labels {
        // For the `clean-` methods: the rows confident learning flags.
        let labels = work.join("label-issues.parquet");
        let counting = label_issues::Counting::of(args.select.issue_count, meta.heldout_accuracy);
        label_issues::run(std::slice::from_ref(&raw), None, counting, dataset.classes.len(), &labels)?;
        extras.push(labels);
    }
    let embedder = crate::leaks::Embedder { proxy_dir: dir.clone(), embedding: dataset.embedding.clone() };
    extras.extend(duplicates(ctx, args, dataset, (&raw, Some(&embedder)), work).await?);
    Ok(Scored {
        raw,
        extras,
        proxy: plan.preset.clone(),
        proxy_accuracy: meta.heldout_accuracy,
        proxy_plan: Some(plan),
        train_seconds,
        score_seconds,
        embed_seconds,
    })
}

/// With `--drop-near-dups`, the near-duplicates of the scores at `raw`, and
/// with `--drop-leaks` their leaks of the evaluation rows: the rows every
/// method then leaves out, as `prune` does.
async fn duplicates(
    ctx: &SessionContext,
    args: &EvalArgs,
    dataset: &DatasetPlan,
    (raw, embedder): (&Path, Option<&crate::leaks::Embedder>),
    work: &Path,
) -> Result<Vec<PathBuf>> {
    let plan = args.select.plan(args.common.seed)?;
    let files = sieve_schemas::paths::resolve_files(&raw.to_string_lossy())?;
    let mut extras = Vec::new();
    if plan.near_dup.drop != crate::choices::NearDupDrop::None {
        let dest = work.join("near-dups.parquet");
        let found = crate::near_dup::run(ctx, &files, &plan.near_dup, &dest).await?;
        crate::log::info("eval", "near-duplicates", serde_json::to_value(&found).expect("serializes"));
        extras.push(dest);
    }
    if let Some(against) = crate::leaks::against(dataset, &plan.leaks)?.filter(|_| plan.leaks.drop) {
        let dest = work.join("leaks.parquet");
        let checks = crate::commands::leak_checks(&plan, embedder)?;
        let found = crate::leaks::run(ctx, &files, dataset, (&against.0, &against.1), checks, work, &dest).await?;
        crate::log::info("eval", "leaks", serde_json::to_value(&found).expect("serializes"));
        extras.push(dest);
    }
    Ok(extras)
}

/// The rows `plan` keeps from the scores, as a set of input positions;
/// `global` holds the embedding methods' columns when the plan needs them.
async fn kept_rows(
    ctx: &SessionContext,
    scored: &Scored,
    plan: &SelectPlan,
    global: Option<&Path>,
    dataset: &DatasetPlan,
    work: &Path,
) -> Result<RowSet> {
    let mut extras = scored.extras.clone();
    extras.extend(global.map(Path::to_path_buf));
    let dest = work.join("selection.parquet");
    select::run(ctx, &scored.raw, &extras, plan, &dataset.classes, &dest).await?;
    let mut rows = RowSet::new(dataset.train.total_rows());
    let file = std::fs::File::open(&dest).map_err(io_err(&dest))?;
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, crate::input::BATCH_ROWS)
            .map_err(crate::error::parquet_err(&dest))?;
    for batch in reader {
        let batch = batch?;
        let row = batch.column_by_name(score::ROW).expect("selection has row").as_primitive::<Int64Type>();
        let keep = batch.column_by_name(sieve_schemas::OutputColumns::KEEP).expect("selection has keep").as_boolean();
        for i in (0..batch.num_rows()).filter(|&i| keep.is_valid(i) && keep.value(i)) {
            rows.insert(row.value(i) as u64);
        }
    }
    Ok(rows)
}

/// What one target training gave.
#[derive(Clone, Serialize, Deserialize)]
struct Trained {
    accuracy: f64,
    seconds: f64,
    epochs: usize,
    /// Read back from an earlier run of the sweep rather than trained.
    #[serde(skip)]
    resumed: bool,
}

/// Trains the target on `rows` (all rows when `None`) in `work`, or reads
/// the result an earlier run of the sweep recorded in `resume` for the same
/// settings and rows (training is deterministic in its seed and rows).
fn train_target(
    dataset: &DatasetPlan,
    rows: Option<&RowSet>,
    plan: &TrainPlan,
    (run, rt): (&RunPlan, &Runtime),
    (resume, work): (&WorkDir, &Path),
) -> Result<Trained> {
    let rows_id = rows.map_or_else(|| "all".to_string(), |r| format!("{:016x}", r.fingerprint()));
    let key = resume::fingerprint(&[serde_json::to_string(plan).expect("the plan serializes"), rows_id]);
    let record = resume.targets_dir().join(format!("{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&record) {
        if let Ok(t) = serde_json::from_str::<Trained>(&text) {
            return Ok(Trained { resumed: true, ..t });
        }
    }
    let dir = work.join("target");
    let started = Instant::now();
    let meta = train::run(&dataset.with_subset(rows), plan, run, rt, &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    let t =
        Trained { accuracy: meta.heldout_accuracy.unwrap_or(f64::NAN), seconds, epochs: meta.epochs, resumed: false };
    let tmp = resume.temporary("target.json");
    std::fs::write(&tmp, serde_json::to_string(&t).expect("serializes")).map_err(io_err(&tmp))?;
    resume::publish(&tmp, &record)?;
    crate::fault::point("eval:target-trained");
    Ok(t)
}

/// What decides a sweep's proxy and its targets' results besides their own
/// settings: sieve's version, the input files and how the rows are scored.
fn identity(args: &EvalArgs, dataset: &DatasetPlan) -> Result<String> {
    let mut parts: Vec<String> = vec![env!("CARGO_PKG_VERSION").to_string()];
    parts.extend(dataset.train.files.iter().map(resume::file_identity));
    parts.extend(dataset.heldout.iter().flat_map(|h| h.files.iter().map(resume::file_identity)));
    parts.push(match &args.scores {
        Some(dir) => format!("scores {}", dir.display()),
        None => serde_json::to_string(&args.train.plan(args.common.seed, dataset)?).expect("the plan serializes"),
    });
    parts.push(format!("{:?}", dataset.embedding));
    Ok(resume::fingerprint(&parts))
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Groups the runs into cells with their speed-ups; a ranked subset's cost
/// adds the proxy's (and the encoder's, for methods that read embeddings);
/// a random one's is its selection and target alone.
fn cells(runs: &[TargetRun], scored: &Scored) -> Vec<Cell> {
    let full: Vec<&TargetRun> = runs.iter().filter(|r| r.method.is_none()).collect();
    let full_seconds = full.iter().map(|r| r.train_seconds).sum::<f64>() / full.len().max(1) as f64;
    let mut out: Vec<Cell> = Vec::new();
    for run in runs {
        if out.iter().any(|c| c.method == run.method && c.fraction == run.fraction) {
            continue;
        }
        let group: Vec<&TargetRun> =
            runs.iter().filter(|r| r.method == run.method && r.fraction == run.fraction).collect();
        let (mean, std) = mean_std(&group.iter().map(|r| r.accuracy).collect::<Vec<_>>());
        let cost = group.iter().map(|r| r.train_seconds + r.select_seconds).sum::<f64>() / group.len() as f64;
        let cost = match &run.method {
            None => cost,
            // A random subset needs no proxy.
            Some(m) if m.is_random() => cost,
            Some(m) => {
                cost + scored.train_seconds + scored.score_seconds + if m.embeds() { scored.embed_seconds } else { 0.0 }
            }
        };
        out.push(Cell {
            method: run.method.clone(),
            fraction: run.fraction,
            runs: group.len(),
            mean,
            std,
            speedup: full_seconds / cost,
        });
    }
    out
}

/// `sieve eval`.
pub async fn run(args: EvalArgs) -> Result<PathBuf> {
    let mut dataset = args.input.plan()?;
    let embeds = args.strategies.iter().any(|s| s == KCENTER || s == global::PROTOTYPE);
    dataset.embedding = Embedding::resolve(&args.embedding.embedding, dataset.kind, embeds)?;
    if dataset.heldout.is_none() {
        return Err(PipelineError::Usage(
            "sieve eval measures held-out accuracy: the dataset needs a held-out split".into(),
        ));
    }
    if args.seeds == 0 {
        return Err(PipelineError::Usage("--seeds must be at least 1".into()));
    }
    let methods = methods(&args);
    for &f in &args.fractions {
        for m in &methods {
            select_plan(&args, &dataset, m, f, args.common.seed)?;
        }
    }
    let run = args.common.run_plan(args.out.clone(), format!("{}-eval", dataset.name))?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    let resume = WorkDir::open(&run.out, &identity(&args, &dataset)?)?;
    let targets = resume.targets_dir();
    std::fs::create_dir_all(&targets).map_err(io_err(&targets))?;
    let work = tempfile::tempdir_in(staging.path()).map_err(io_err(staging.path()))?;
    let mut manifest = Manifest::new(&dataset);
    let ctx = rt.session(run.memory_limit)?;
    let scored = proxy_scores(&ctx, &args, &dataset, &run, (&resume, work.path())).await?;
    let seeds: Vec<u64> = (0..args.seeds as u64).map(|k| args.common.seed + k).collect();
    let total = seeds.len() * (1 + methods.len() * args.fractions.len());
    let mut runs = Vec::with_capacity(total);
    let log_run = |r: &TargetRun| crate::log::info("eval", "target", serde_json::to_value(r).expect("serializes"));
    for &seed in &seeds {
        let t =
            train_target(&dataset, None, &target_plan(&args, &dataset, seed)?, (&run, &rt), (&resume, work.path()))?;
        let rows = dataset.train.total_rows();
        let r = TargetRun {
            method: None,
            fraction: 1.0,
            seed,
            rows,
            epochs: t.epochs,
            accuracy: t.accuracy,
            train_seconds: t.seconds,
            select_seconds: 0.0,
            same_rows_as: None,
            resumed: t.resumed,
        };
        log_run(&r);
        runs.push(r);
    }
    // The embedding methods' columns are the same at every kept fraction up
    // to the largest (k-center's greedy picks come in a fixed order, and
    // prototypes, de-duplication and schedules ignore the fraction), so they
    // are computed once per method and seed and charged to every cell.
    let largest = args.fractions.iter().copied().fold(0.0, f64::max);
    let mut globals: HashMap<(usize, u64), (PathBuf, f64)> = HashMap::new();
    for &fraction in &args.fractions {
        // Targets trained at this fraction: training is deterministic in
        // its seed and rows, so a method that keeps the same rows as an
        // earlier one at the same seed reuses its run.
        let mut trained: Vec<(u64, &Method, RowSet, Trained)> = Vec::new();
        for (m, method) in methods.iter().enumerate() {
            let mut rows: Option<(RowSet, f64)> = None;
            for &seed in &seeds {
                if rows.is_none() || method.draws_per_seed() {
                    let plan = select_plan(&args, &dataset, method, fraction, seed)?;
                    let mut global_seconds = 0.0;
                    let global = if global::needed(&plan) {
                        let (path, seconds) = match globals.entry((m, seed)) {
                            Entry::Occupied(e) => e.into_mut(),
                            Entry::Vacant(e) => {
                                let dest = work.path().join(format!("global-{m}-{seed}.parquet"));
                                let started = Instant::now();
                                let widest = select_plan(&args, &dataset, method, largest, seed)?;
                                rt.install(|| {
                                    global::run(&scored.raw, &scored.extras, &widest, dataset.classes.len(), &dest)
                                })?;
                                e.insert((dest, started.elapsed().as_secs_f64()))
                            }
                        };
                        global_seconds = *seconds;
                        Some(path.clone())
                    } else {
                        None
                    };
                    let started = Instant::now();
                    let kept = kept_rows(&ctx, &scored, &plan, global.as_deref(), &dataset, work.path()).await?;
                    rows = Some((kept, global_seconds + started.elapsed().as_secs_f64()));
                }
                let (kept, select_seconds) = rows.as_ref().expect("selected above");
                let earlier = trained.iter().find(|(s, _, r, _)| *s == seed && r == kept);
                let (t, same_rows_as) = match earlier {
                    Some((_, m, _, t)) => (t.clone(), Some((*m).clone())),
                    None => {
                        let plan = subset_target_plan(&args, &dataset, seed, kept.len())?;
                        let t = train_target(&dataset, Some(kept), &plan, (&run, &rt), (&resume, work.path()))?;
                        trained.push((seed, method, kept.clone(), t.clone()));
                        (t, None)
                    }
                };
                let r = TargetRun {
                    method: Some(method.clone()),
                    fraction,
                    seed,
                    rows: kept.len(),
                    epochs: t.epochs,
                    accuracy: t.accuracy,
                    train_seconds: t.seconds,
                    select_seconds: *select_seconds,
                    same_rows_as,
                    resumed: t.resumed,
                };
                log_run(&r);
                runs.push(r);
            }
        }
    }
    let agreement = match (&scored.proxy_plan, args.agreement) {
        (Some(plan), true) => proxy_agreement(&ctx, &dataset, plan, &scored.raw, &run, work.path()).await?,
        (None, true) => {
            return Err(PipelineError::Usage("--agreement trains proxies itself: leave out --scores".into()))
        }
        _ => Vec::new(),
    };
    let report = EvalReport {
        dataset: dataset.name.clone(),
        rows: dataset.train.total_rows(),
        proxy: scored.proxy.clone(),
        proxy_accuracy: scored.proxy_accuracy,
        target: target_plan(&args, &dataset, args.common.seed)?,
        target_budget: args.target_budget,
        proxy_seconds: scored.train_seconds,
        score_seconds: scored.score_seconds,
        embed_seconds: scored.embed_seconds,
        cells: cells(&runs, &scored),
        runs,
        agreement,
    };
    drop(work);
    report::write(&report, staging.path())?;
    manifest.seconds =
        BTreeMap::from([(Stage::Eval, report.runs.iter().map(|r| r.train_seconds + r.select_seconds).sum())]);
    manifest.config.train = scored.proxy_plan;
    manifest.config.run = Some(run.clone());
    manifest.write(staging.path())?;
    staging.commit()?;
    Ok(run.out)
}

/// Trains a proxy with the next seed and one of half the width, scores every
/// row with each and compares their rankings with the first proxy's.
async fn proxy_agreement(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    base: &Path,
    run: &RunPlan,
    work: &Path,
) -> Result<Vec<rank::Agreement>> {
    let width = plan.recipe.width();
    let variants = [
        ("seed", plan.with(plan.overrides, plan.seed + 1, dataset)?),
        ("width", plan.with(Overrides { width: Some((width / 2).max(1)), ..plan.overrides }, plan.seed, dataset)?),
    ];
    // Rankings compare scores only: no text encoder needed for the embedding.
    let dataset = &DatasetPlan { embedding: Embedding::Proxy, ..dataset.clone() };
    let mut out = Vec::new();
    for (between, variant) in variants {
        let dir = work.join(format!("proxy-{between}"));
        train::run(dataset, &variant, run, &Runtime::of(ctx)?, &dir)?;
        let raw = work.join(format!("scores-{between}.parquet"));
        score::run(ctx, dataset, &dir, run, &raw).await?;
        out.extend(rank::agreement(ctx, base, &raw, between).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ranked_subset_pays_for_its_proxy_and_a_random_one_does_not() {
        let run = |strategy: Option<&str>, train_seconds: f64, select_seconds: f64| TargetRun {
            method: strategy.map(|s| Method { strategy: s.to_string(), order: (s != RANDOM).then_some(Order::Hard) }),
            fraction: if strategy.is_some() { 0.5 } else { 1.0 },
            seed: 0,
            rows: 10,
            epochs: 1,
            accuracy: 0.5,
            train_seconds,
            select_seconds,
            same_rows_as: None,
            resumed: false,
        };
        let scored = Scored {
            raw: PathBuf::new(),
            extras: Vec::new(),
            proxy: "resnet8".into(),
            proxy_accuracy: None,
            proxy_plan: None,
            train_seconds: 20.0,
            score_seconds: 5.0,
            embed_seconds: 100.0,
        };
        let runs = [run(None, 100.0, 0.0), run(Some("el2n"), 50.0, 1.0), run(Some(RANDOM), 50.0, 0.5)];
        let speedups: Vec<f64> = cells(&runs, &scored).iter().map(|c| c.speedup).collect();
        assert_eq!(speedups, [1.0, 100.0 / (50.0 + 1.0 + 20.0 + 5.0), 100.0 / 50.5]);
    }
}
