//! Active learning, SVP's other half (Coleman et al. 2020, section 3.1): a
//! proxy trained on the labeled rows scores the unlabeled pool with its
//! labels hidden, and the most uncertain rows (least confidence, entropy,
//! margin) or a greedy k-center cover of the embeddings around the labeled
//! set become the next batch to label.
//!
//! [`next_batch`] does one round on real files; [`simulate`] replays rounds
//! on a fully labeled dataset, hiding the labels, and measures the proxy's
//! held-out accuracy after each round against random batches of the same size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sieve_proxy::artifact::ProxyMeta;
use sieve_schemas::{layout, OutputColumns};
use sieve_selection::kcenter::k_center_greedy;
use sieve_selection::Embeddings;

use crate::choices::Acquisition;
use crate::error::{PipelineError, Result};
use crate::global::{read_valid, Valid};
use crate::input::InputFiles;
use crate::plan::{check_columns, DatasetPlan, RowSet, RunPlan, TrainPlan};
use crate::score::ROW;
use crate::session::Runtime;
use crate::sqlgen::ident;
use crate::{parquet_io, score, train};

/// Column of the pick order in an active-learning `scores.parquet`
/// (0 = label first; null = not picked).
pub const ACQUISITION_RANK: &str = "acquisition_rank";

/// Scores that need a label, null for an unlabeled pool and so left out.
const LABEL_SCORES: [&str; 4] =
    [OutputColumns::EL2N, OutputColumns::LOSS, OutputColumns::GRAND, OutputColumns::CORRECT];

/// The score column an acquisition ranks by (higher = more uncertain).
fn score_column(acquisition: Acquisition) -> &'static str {
    match acquisition {
        Acquisition::LeastConfidence | Acquisition::Kcenter => OutputColumns::LEAST_CONFIDENCE,
        Acquisition::Entropy => OutputColumns::ENTROPY,
        Acquisition::Margin => OutputColumns::MARGIN,
    }
}

/// Picks up to `budget` rows of `pool` (valid rows of a scoring, labels
/// hidden) that are not in `labeled`, in pick order, as input positions.
/// `centers` are extra embeddings (`dim` wide) that count as labeled for
/// k-center: the labeled rows when they live in other files.
fn pick(
    pool: &Valid,
    labeled: &RowSet,
    centers: &[f32],
    budget: usize,
    acquisition: Acquisition,
    seed: u64,
) -> Result<Vec<i64>> {
    let candidates: Vec<usize> = (0..pool.rows.len()).filter(|&i| !labeled.contains(pool.rows[i] as u64)).collect();
    if acquisition != Acquisition::Kcenter {
        let mut order = candidates;
        // Most uncertain first; ties by position, so a run is reproducible.
        order.sort_by(|&a, &b| pool.score[b].total_cmp(&pool.score[a]).then(pool.rows[a].cmp(&pool.rows[b])));
        return Ok(order.into_iter().take(budget).map(|i| pool.rows[i]).collect());
    }
    let mut values = pool.embeddings.clone();
    values.extend_from_slice(centers);
    let emb = Embeddings::new(&values, pool.dim).map_err(|e| PipelineError::Internal(e.to_string()))?;
    let extra = centers.len() / pool.dim.max(1);
    let mut initial: Vec<usize> = (0..pool.rows.len()).filter(|&i| labeled.contains(pool.rows[i] as u64)).collect();
    initial.extend(pool.rows.len()..pool.rows.len() + extra);
    let budget = budget.min(candidates.len());
    let picks = k_center_greedy(&emb, budget, &initial, seed).map_err(|e| PipelineError::Internal(e.to_string()))?;
    Ok(picks.into_iter().filter(|&i| i < pool.rows.len()).map(|i| pool.rows[i]).collect())
}

/// Scores `dataset.train` with the proxy in `proxy_dir`, labels hidden, into
/// `dest` (on `run`'s cluster when it names one); returns its valid rows
/// with the acquisition's score.
async fn score_pool(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    proxy_dir: &Path,
    run: &RunPlan,
    acquisition: Acquisition,
    dest: &Path,
) -> Result<Valid> {
    let pool = DatasetPlan { hide_labels: true, subset: None, ..dataset.clone() };
    match &run.cluster {
        None => {
            score::run(ctx, &pool, proxy_dir, run, dest).await?;
        }
        Some(url) => {
            let remote = crate::cluster::connect(url, &Runtime::of(ctx)?).await?;
            let work = crate::cluster::job::work_for(dest, &pool, proxy_dir)?;
            crate::cluster::job::score_into(&remote, ctx, &pool, proxy_dir, run, &work, dest).await?;
            work.remove()?;
        }
    }
    read_valid(dest, Some(score_column(acquisition)))
}

/// What one active-learning pick did, for the manifest.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ActiveOutcome {
    /// How rows were picked.
    pub acquisition: Option<Acquisition>,
    /// Labeled rows the proxy trained on.
    pub labeled: u64,
    /// Rows in the unlabeled pool.
    pub pool: u64,
    /// Rows picked for labeling.
    pub picked: u64,
    /// The simulated rounds, with `--rounds`.
    pub rounds: Vec<Round>,
}

/// One simulated round: the proxy trained on `labeled` rows picked by the
/// acquisition, and one trained on as many rows picked at random.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Round {
    /// 0 = the random start.
    pub round: usize,
    /// Labeled rows after the round.
    pub labeled: u64,
    /// Held-out accuracy of the proxy trained on the acquired rows.
    pub acquired_accuracy: f64,
    /// Held-out accuracy of the proxy trained on random rows.
    pub random_accuracy: f64,
    /// Seconds to score the pool and pick the round's batch.
    pub select_seconds: f64,
    /// Seconds to train the two proxies.
    pub train_seconds: f64,
}

/// The next batch to label: trains a proxy on `labeled`, scores `pool` with
/// it and writes `scores.parquet` (every pool row, `acquisition_rank`,
/// `keep` = picked) into `staging`; the caller writes the picked rows.
#[allow(
    clippy::too_many_arguments,
    reason = "the session, the data, the plans and the pick: issue 16 gathers the runtime ones"
)]
pub async fn next_batch(
    ctx: &SessionContext,
    labeled: &DatasetPlan,
    pool: &DatasetPlan,
    plan: &TrainPlan,
    run: &RunPlan,
    acquisition: Acquisition,
    budget: usize,
    staging: &Path,
) -> Result<ActiveOutcome> {
    let rt = Runtime::of(ctx)?;
    let proxy_dir = layout::proxy(staging);
    train::run(labeled, plan, run, &rt, &proxy_dir)?;
    let raw = staging.join(".pool.parquet");
    let valid = score_pool(ctx, pool, &proxy_dir, run, acquisition, &raw).await?;
    let centers = if acquisition == Acquisition::Kcenter {
        let labeled_raw = staging.join(".labeled.parquet");
        let centers = score_pool(ctx, labeled, &proxy_dir, run, acquisition, &labeled_raw).await?.embeddings;
        std::fs::remove_file(&labeled_raw).map_err(crate::error::io_err(&labeled_raw))?;
        centers
    } else {
        Vec::new()
    };
    let picks = rt.install(|| pick(&valid, &RowSet::new(0), &centers, budget, acquisition, plan.seed))?;
    write_picks(ctx, &raw, &picks, &layout::scores(staging)).await?;
    std::fs::remove_file(&raw).map_err(crate::error::io_err(&raw))?;
    Ok(ActiveOutcome {
        acquisition: Some(acquisition),
        labeled: labeled.train_rows(),
        pool: pool.train.total_rows(),
        picked: picks.len() as u64,
        rounds: Vec::new(),
    })
}

/// Writes the pool's scores with `acquisition_rank` and `keep` to `dest`, in
/// input order.
async fn write_picks(ctx: &SessionContext, raw: &Path, picks: &[i64], dest: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(ROW, DataType::Int64, false),
        Field::new(ACQUISITION_RANK, DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(picks.to_vec())), Arc::new(Int64Array::from_iter_values(0..picks.len() as i64))],
    )?;
    ctx.register_table("__picks", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
    ctx.register_parquet("__pool", raw.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
    let (row, rank) = (ident(ROW), ident(ACQUISITION_RANK));
    let df = ctx
        .sql(&format!(
            "SELECT s.* EXCLUDE ({unlabeled}), p.{rank}, p.{rank} IS NOT NULL AS {keep} \
             FROM __pool s LEFT JOIN __picks p ON s.{row} = p.{row} ORDER BY s.{row}",
            unlabeled = LABEL_SCORES.map(ident).join(", "),
            keep = ident(OutputColumns::KEEP),
        ))
        .await?;
    parquet_io::write_query(df, dest, Ok).await?;
    ctx.deregister_table("__picks")?;
    ctx.deregister_table("__pool")?;
    Ok(())
}

/// Trains a proxy on the rows of `labeled` into a fresh directory under
/// `work`; returns its held-out accuracy and the directory.
fn train_on(
    dataset: &DatasetPlan,
    labeled: &RowSet,
    plan: &TrainPlan,
    run: &RunPlan,
    rt: &Runtime,
    work: &Path,
    name: &str,
) -> Result<(f64, PathBuf)> {
    let dir = work.join(name);
    let meta: ProxyMeta = train::run(&dataset.with_subset(Some(labeled)), plan, run, rt, &dir)?;
    Ok((meta.heldout_accuracy.unwrap_or(f64::NAN), dir))
}

/// Simulates `rounds` rounds of active learning on the fully labeled
/// `dataset`: a random start of `budget` rows, then `budget` more per round
/// by `acquisition` (labels hidden while scoring), against `budget` more at
/// random. Intermediate proxies live in `work`.
#[allow(
    clippy::too_many_arguments,
    reason = "the session, the data, the plans and the rounds: issue 16 gathers the runtime ones"
)]
pub async fn simulate(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    run: &RunPlan,
    acquisition: Acquisition,
    budget: usize,
    rounds: usize,
    work: &Path,
) -> Result<ActiveOutcome> {
    if dataset.heldout.is_none() {
        return Err(PipelineError::Usage(
            "--rounds reports held-out accuracy: the dataset needs a held-out split".into(),
        ));
    }
    let n = dataset.train.total_rows();
    if (budget as u64) * (rounds as u64 + 1) > n {
        return Err(PipelineError::Usage(format!(
            "{} rounds of {budget} rows need more than the {n} training rows",
            rounds + 1
        )));
    }
    let rt = Runtime::of(ctx)?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0xac71);
    let mut order: Vec<u64> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut acquired = RowSet::new(n);
    order[..budget].iter().for_each(|&p| acquired.insert(p));
    let mut random = acquired.clone();
    let mut next_random = order[budget..].iter().copied();
    let mut outcome = ActiveOutcome { acquisition: Some(acquisition), pool: n, ..Default::default() };
    let started = Instant::now();
    let (accuracy, mut proxy) = train_on(dataset, &acquired, plan, run, &rt, work, "round-0")?;
    outcome.rounds.push(Round {
        round: 0,
        labeled: acquired.len(),
        acquired_accuracy: accuracy,
        random_accuracy: accuracy,
        select_seconds: 0.0,
        train_seconds: started.elapsed().as_secs_f64(),
    });
    for round in 1..=rounds {
        let started = Instant::now();
        let raw = work.join(format!("pool-{round}.parquet"));
        let valid = score_pool(ctx, dataset, &proxy, run, acquisition, &raw).await?;
        for p in rt.install(|| pick(&valid, &acquired, &[], budget, acquisition, plan.seed))? {
            acquired.insert(p as u64);
        }
        std::fs::remove_file(&raw).map_err(crate::error::io_err(&raw))?;
        let select_seconds = started.elapsed().as_secs_f64();
        // `order` is a permutation, so these rows are all new to `random`.
        next_random.by_ref().take(budget).for_each(|p| random.insert(p));
        let started = Instant::now();
        let (acquired_accuracy, dir) = train_on(dataset, &acquired, plan, run, &rt, work, &format!("round-{round}"))?;
        let (random_accuracy, _) = train_on(dataset, &random, plan, run, &rt, work, &format!("random-{round}"))?;
        proxy = dir;
        outcome.rounds.push(Round {
            round,
            labeled: acquired.len(),
            acquired_accuracy,
            random_accuracy,
            select_seconds,
            train_seconds: started.elapsed().as_secs_f64(),
        });
        crate::log::info("active", "round", serde_json::to_value(outcome.rounds.last()).expect("serializes"));
    }
    outcome.labeled = acquired.len();
    outcome.picked = acquired.len() - budget as u64;
    Ok(outcome)
}

/// The pool of a `--labeled/--unlabeled` run: `pattern`'s files with the
/// labeled set's columns, scored without labels.
pub fn pool_plan(labeled: &DatasetPlan, pattern: &str) -> Result<DatasetPlan> {
    let train = Arc::new(InputFiles::open(pattern)?);
    check_columns(&train, labeled.kind, &labeled.input_column, None)?;
    let id_column = labeled.id_column.clone().filter(|c| train.schema.field_with_name(c).is_ok());
    Ok(DatasetPlan { train, heldout: None, subset: None, hide_labels: true, id_column, ..labeled.clone() })
}
