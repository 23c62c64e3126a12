//! Cross-fitting (`sieve prune --folds K`): the rows are split into K folds
//! by a seeded hash of their input position, K proxies are trained by the
//! job's recipe, proxy `k` on every fold but `k`, and each row's class
//! probabilities come from the proxy that never trained on it. Those
//! out-of-sample probabilities are what confident learning needs (Northcutt
//! et al. 2021): in-sample ones are overconfident on exactly the rows a
//! proxy memorised, the mislabeled ones among them.
//!
//! Only the probabilities (`probs`, and the label-issue decisions made
//! from them) are cross-fitted. Every other score, the embedding and the
//! training dynamics stay those of the proxy trained on every row: one
//! model for all rows, so that distances, k-center picks and forgetting
//! events compare across rows. The fold proxies are trained in the job's
//! work directory (an interrupted job keeps the finished ones) and
//! published with the output, in `folds/fold-<k>/`: the evidence behind
//! every row's `probs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sieve_proxy::artifact::{ProxyMeta, META_FILE};
use sieve_schemas::{layout, OutputColumns};
use sieve_udfs::functions::seeded_random::seeded_unit;

use crate::error::{PipelineError, Result};
use crate::input::POS;
use crate::parquet_io;
use crate::plan::{DatasetPlan, RowSet, RunPlan, TrainPlan};
use crate::resume::{publish, WorkDir};
use crate::score::ROW;
use crate::session::Runtime;
use crate::sqlgen::{ident, literal};

/// Column of scores.parquet: the fold a row was held out of, i.e. which
/// fold proxy gave its out-of-sample `probs`.
pub const FOLD: &str = "fold";

/// Mixed into the job's seed so that the folds do not follow the random
/// baseline's `seeded_random(seed, id)`.
const FOLD_SALT: u64 = 0xf01d_5eed;

/// How rows fall into folds: `floor(seeded_random(seed, row) * folds)`, the
/// same in SQL and in Rust, whatever the partitioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folds {
    /// How many folds (and fold proxies); at least 2.
    pub folds: usize,
    /// The hash seed.
    pub seed: u64,
}

impl Folds {
    /// The folds of a job with seed `job_seed`; `folds` must be at least 2.
    pub fn new(folds: usize, job_seed: u64) -> Result<Self> {
        if folds < 2 {
            return Err(PipelineError::Usage(format!(
                "--folds {folds}: cross-fitting needs at least 2 folds (1 means in-sample, without cross-fitting)"
            )));
        }
        Ok(Self { folds, seed: job_seed ^ FOLD_SALT })
    }

    /// The fold of input position `pos`.
    pub fn of(&self, pos: u64) -> usize {
        ((seeded_unit(self.seed, pos as i64) * self.folds as f64) as usize).min(self.folds - 1)
    }

    /// The fold of the position column `pos`, as SQL.
    pub fn sql(&self, pos: &str) -> String {
        // `seeded_random` reads its seed as a signed literal.
        format!("CAST(floor(seeded_random({}, {pos}) * {}) AS INT)", self.seed as i64, self.folds)
    }

    /// The rows fold `k`'s proxy trains on: those of `rows` positions (of
    /// `subset`, if given) outside fold `k`.
    fn training_rows(&self, k: usize, rows: u64, subset: Option<&RowSet>) -> RowSet {
        let mut set = RowSet::new(rows);
        let wanted = |pos: u64| subset.is_none_or(|s| s.contains(pos));
        for pos in (0..rows).filter(|&pos| self.of(pos) != k && wanted(pos)) {
            set.insert(pos);
        }
        set
    }
}

/// One fold's proxy, for the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldRecord {
    /// The fold it did not train on, and scored.
    pub fold: usize,
    /// Where the proxy lives.
    pub dir: PathBuf,
    /// Rows it trained on.
    pub train_rows: u64,
    /// Its accuracy on the held-out split, when there is one.
    pub heldout_accuracy: Option<f64>,
    /// Seconds its training took.
    pub seconds: f64,
}

/// What cross-fitting did and what it cost, for the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossFit {
    /// Folds, and fold proxies.
    pub folds: usize,
    /// Each row's fold, as SQL over scores.parquet's `row` (its `fold` column).
    pub fold_sql: String,
    /// The fold proxies.
    pub per_fold: Vec<FoldRecord>,
    /// Fold proxies an interrupted earlier run of this job had trained.
    pub resumed_proxies: usize,
    /// Seconds training the fold proxies (zero for resumed ones).
    pub train_seconds: f64,
    /// Seconds scoring every row with its fold's proxy.
    pub score_seconds: f64,
}

/// Trains the fold proxies of `dataset` by `plan` in `work` (keeping those
/// an interrupted run finished) and scores every row with the proxy that
/// did not train on it; returns the out-of-sample file (`row`, [`FOLD`],
/// `probs`, sorted by row, an extra column set for selection) and the record.
pub async fn run(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    plan: &TrainPlan,
    folds: Folds,
    run: &RunPlan,
    rt: &Runtime,
    work: &WorkDir,
) -> Result<(PathBuf, CrossFit)> {
    let started = Instant::now();
    let (mut per_fold, mut dirs, mut resumed_proxies) = (Vec::new(), Vec::new(), 0);
    for k in 0..folds.folds {
        let dir = work.fold_proxy_dir(k);
        if dir.join(META_FILE).is_file() {
            resumed_proxies += 1;
        } else {
            let rows = folds.training_rows(k, dataset.train.total_rows(), dataset.subset.as_deref());
            let part = DatasetPlan { subset: Some(Arc::new(rows)), ..dataset.clone() };
            crate::log::info(
                "cross_fit",
                "training a fold proxy",
                serde_json::json!({"fold": k, "rows": part.train_rows()}),
            );
            let tmp = work.temporary(&format!("fold-{k}"));
            crate::train::run(&part, plan, run, rt, &tmp)?;
            publish(&tmp, &dir)?;
        }
        let meta = ProxyMeta::read(&dir)?;
        per_fold.push(FoldRecord {
            fold: k,
            dir: dir.clone(),
            train_rows: meta.train_rows,
            heldout_accuracy: meta.heldout_accuracy,
            seconds: meta.seconds,
        });
        dirs.push(dir);
    }
    let trained = started.elapsed().as_secs_f64();
    let dest = work.out_of_sample();
    if !dest.is_file() {
        let tmp = work.temporary("out-of-sample");
        score(ctx, dataset, &dirs, folds, run, &tmp).await?;
        publish(&tmp, &dest)?;
    }
    let record = CrossFit {
        folds: folds.folds,
        fold_sql: folds.sql(ROW),
        per_fold,
        resumed_proxies,
        train_seconds: trained,
        score_seconds: started.elapsed().as_secs_f64() - trained,
    };
    Ok((dest, record))
}

/// Moves the fold proxies of `record` into the staging directory `staging`
/// of the output `out`, recording where they will live.
pub fn publish_proxies(record: &mut CrossFit, staging: &Path, out: &Path) -> Result<()> {
    let parent = layout::fold_proxy(staging, 0);
    let parent = parent.parent().expect("a fold proxy has a parent");
    std::fs::create_dir_all(parent).map_err(crate::error::io_err(parent))?;
    for fold in &mut record.per_fold {
        publish(&fold.dir, &layout::fold_proxy(staging, fold.fold))?;
        fold.dir = layout::fold_proxy(out, fold.fold);
    }
    Ok(())
}

/// The out-of-sample query: each row's position, fold and the
/// probabilities of its fold's proxy (a `CASE` evaluates each proxy on its
/// fold's rows only), in input order.
fn scoring_sql(dataset: &DatasetPlan, dirs: &[PathBuf], folds: Folds) -> String {
    let (input, label) = (ident(&dataset.input_column), ident(&dataset.label_column));
    let arms: String = dirs
        .iter()
        .enumerate()
        .map(|(k, dir)| format!("WHEN {k} THEN proxy_scores({}, {input}, {label}) ", literal(&dir.to_string_lossy())))
        .collect();
    format!(
        "SELECT {row}, {fold}, get_field(CASE {fold} {arms}END, {probs}) AS {probs_col} \
         FROM (SELECT {pos} AS {row}, {fold_of} AS {fold}, {input}, {label} FROM input)",
        row = ident(ROW),
        fold = ident(FOLD),
        probs = literal(OutputColumns::PROBS),
        probs_col = ident(OutputColumns::PROBS),
        pos = ident(POS),
        fold_of = folds.sql(&ident(POS)),
    )
}

/// Scores every row of `dataset` with its fold's proxy (`dirs[k]` for fold
/// `k`) into `dest`.
async fn score(
    ctx: &SessionContext,
    dataset: &DatasetPlan,
    dirs: &[PathBuf],
    folds: Folds,
    run: &RunPlan,
    dest: &Path,
) -> Result<()> {
    ctx.register_table("input", Arc::new(dataset.train.table()?))?;
    let df = ctx.sql(&scoring_sql(dataset, dirs, folds)).await?;
    let bar = crate::progress::bar("cross_fit", dataset.train.total_rows(), "rows", run.quiet);
    parquet_io::write_query(df, dest, |batch| {
        bar.inc(batch.num_rows() as u64);
        Ok(batch)
    })
    .await?;
    bar.finish_and_clear();
    ctx.deregister_table("input")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int32Type;

    #[tokio::test]
    async fn the_folds_in_sql_are_the_folds_in_rust() {
        let folds = Folds::new(3, 7).unwrap();
        let ctx = Runtime::cpu().unwrap().session(None).unwrap();
        let sql = format!("SELECT {} FROM unnest(range(0, 2000)) AS t(row)", folds.sql(ROW));
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let in_sql: Vec<i32> =
            batches.iter().flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec()).collect();
        let in_rust: Vec<i32> = (0..2000).map(|pos| folds.of(pos) as i32).collect();
        assert_eq!(in_sql, in_rust);
        for k in 0..3 {
            let n = in_rust.iter().filter(|&&f| f == k).count();
            assert!((600..734).contains(&n), "fold {k} holds {n} of 2000 rows");
        }
        assert_ne!(Folds::new(3, 8).unwrap().sql(ROW), folds.sql(ROW), "the folds follow the job's seed");
    }

    #[test]
    fn a_fold_proxy_trains_on_every_row_but_its_folds() {
        let folds = Folds::new(4, 0).unwrap();
        let mut subset = RowSet::new(500);
        (0..500).filter(|p| p % 5 != 0).for_each(|p| subset.insert(p));
        let sets: Vec<RowSet> = (0..4).map(|k| folds.training_rows(k, 500, Some(&subset))).collect();
        for pos in 0..500 {
            let fold = folds.of(pos);
            for (k, set) in sets.iter().enumerate() {
                let expected = subset.contains(pos) && k != fold;
                assert_eq!(set.contains(pos), expected, "row {pos} (fold {fold}) in proxy {k}'s training rows");
            }
        }
    }

    #[test]
    fn one_fold_is_no_cross_fitting() {
        assert!(matches!(Folds::new(1, 0), Err(PipelineError::Usage(_))));
    }
}
