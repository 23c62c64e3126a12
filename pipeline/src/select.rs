//! The select stage, in SQL: rank the valid rows by a score (or by a seeded
//! random number for the baseline) with window functions, per class or
//! globally, keep the top `round(F * n)` of each ranking (or spread them
//! over score strata: [`ccs`]), and write `scores.parquet` back in input
//! order with the decision as `keep`.
//!
//! Only the columns the decision reads go into the query (position, id,
//! label, error, the ranking's columns), written to a narrow file first;
//! the quotas are counted with a GROUP BY and inlined, so the query is a
//! sort and a streaming window, and its sort spills to disk past
//! [`DECISION_MEMORY`] (or the job's `--memory-limit`, if smaller). The
//! decision is one bit per row. The wide rows (every score and the
//! embedding) are then streamed from the raw scores in input order, with
//! the extra columns (training dynamics, embedding methods) looked up by
//! position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::choices::{Balance, NearDupDrop, Order, Strategy};
use futures::StreamExt;
use sieve_schemas::OutputColumns;

use crate::error::{io_err, Result};
use crate::global;
use crate::plan::{RowSet, SelectPlan};
use crate::score::ROW;
use crate::session::Runtime;
use crate::sqlgen::ident;

pub mod ccs;
mod merge;

/// Kept and total rows of one class.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassCount {
    /// The label; `None` for rows without one.
    pub label: Option<i64>,
    /// The class name, when the label is a known class.
    pub name: Option<String>,
    /// Rows of the class.
    pub rows: u64,
    /// Rows kept.
    pub kept: u64,
}

/// The rows one filter left out of the selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    /// The filter: `bad rows`, `semantic duplicates`, `label issues`,
    /// `near duplicates`, `leaks`, or `selection` (the ranking's quota).
    pub filter: String,
    /// Rows it removed of those the earlier filters passed.
    pub rows: u64,
}

/// What the select stage decided.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SelectOutcome {
    /// Rows kept in all.
    pub kept: u64,
    /// The path from the input rows to the kept ones: each filter's
    /// removals in order, the selection's last; with `kept` they add up to
    /// the rows scored.
    #[serde(default)]
    pub removed: Vec<Removed>,
    /// Per class, by label (rows without a label last).
    pub per_class: Vec<ClassCount>,
    /// Times the decision's sort spilled to disk (past its memory).
    pub spill_count: usize,
    /// Bytes the decision's sort spilled to disk.
    pub spilled_bytes: usize,
}

/// Memory the decision query may hold before its sorts spill to disk.
const DECISION_MEMORY: usize = 256 << 20;

/// The decision's memory: [`DECISION_MEMORY`], or the job's session's pool
/// when that is smaller.
fn decision_memory(ctx: &SessionContext) -> usize {
    crate::session::capped_memory(ctx, DECISION_MEMORY)
}

/// The filters a row must pass to count and be kept, in order: (what a
/// failing row is, the condition to pass, never NULL). No error; not a
/// duplicate when de-duplicating; not a label issue, a near-duplicate of an
/// earlier row or a leak of an evaluation row when dropping those.
fn filters(plan: &SelectPlan) -> Vec<(&'static str, String)> {
    let mut filters = vec![("bad rows", format!("{} IS NULL", OutputColumns::ERROR))];
    if plan.dedup.is_some() {
        filters.push(("semantic duplicates", format!("{} IS NULL", ident(global::DUP_OF))));
    }
    if plan.drop_label_issues {
        filters.push(("label issues", format!("{} IS NOT TRUE", ident(crate::label_issues::LABEL_ISSUE))));
    }
    match plan.near_dup.drop {
        NearDupDrop::None => {}
        NearDupDrop::All => filters.push(("near duplicates", format!("{} IS NULL", ident(OutputColumns::NEAR_DUP_OF)))),
        NearDupDrop::Label => filters.push(("near duplicates", format!("{} = 1", ident(NEAR_DUP_LABEL_RANK)))),
    }
    if plan.leaks.drop {
        filters.push(("leaks", format!("{} IS NULL", ident(OutputColumns::LEAK_KIND))));
    }
    filters
}

/// The condition for a row to count and be kept: every filter passed.
fn valid_sql(plan: &SelectPlan) -> String {
    filters(plan).into_iter().map(|(_, pass)| pass).collect::<Vec<_>>().join(" AND ")
}

/// How many of the rows that passed the earlier filters each filter
/// removed, in order; the select stage adds the rows the selection left
/// out, so the counts and the kept rows add up to the input rows.
async fn removed_by_filter(ctx: &SessionContext, plan: &SelectPlan) -> Result<Vec<Removed>> {
    let filters = filters(plan);
    let mut passed = "TRUE".to_string();
    let mut sums = Vec::new();
    for (_, pass) in &filters {
        sums.push(format!("CAST(sum(CASE WHEN {passed} AND NOT ({pass}) THEN 1 ELSE 0 END) AS BIGINT)"));
        passed = format!("{passed} AND {pass}");
    }
    let batches = ctx.sql(&format!("SELECT {} FROM raw", sums.join(", "))).await?.collect().await?;
    let count = |i: usize| {
        batches.first().map_or(0, |b| {
            let c = b.column(i).as_primitive::<Int64Type>();
            if c.is_valid(0) {
                c.value(0) as u64
            } else {
                0
            }
        })
    };
    Ok(filters
        .iter()
        .enumerate()
        .map(|(i, (filter, _))| Removed { filter: filter.to_string(), rows: count(i) })
        .collect())
}

/// The ranking a row belongs to, as SQL: its label (per class) or one for all.
fn group_sql(plan: &SelectPlan) -> &'static str {
    match plan.balance {
        Balance::Class => "label",
        Balance::None => "0",
    }
}

/// How many valid rows each ranking keeps: `round(F * n)` of its valid
/// rows, by ranking (the label per class, `Some(0)` for all rows).
async fn quotas(ctx: &SessionContext, plan: &SelectPlan) -> Result<BTreeMap<Option<i64>, i64>> {
    let g = group_sql(plan);
    // Grouped by label, or one group (`GROUP BY 0` would name a position).
    let by = if plan.balance == Balance::Class { " GROUP BY label" } else { "" };
    let counts = ctx.sql(&format!("SELECT {g} AS g, COUNT(*) AS n FROM raw WHERE {}{by}", valid_sql(plan))).await?;
    let mut quotas = BTreeMap::new();
    for batch in counts.collect().await? {
        let g = datafusion::arrow::compute::cast(batch.column(0), &datafusion::arrow::datatypes::DataType::Int64)?;
        let (g, n) = (g.as_primitive::<Int64Type>(), batch.column(1).as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            quotas.insert(g.is_valid(i).then(|| g.value(i)), (n.value(i) as f64 * plan.keep).round() as i64);
        }
    }
    Ok(quotas)
}

/// The quotas as a SQL expression over `label` (per class) or a number.
fn quota_sql(plan: &SelectPlan, quotas: &BTreeMap<Option<i64>, i64>) -> String {
    match plan.balance {
        Balance::Class if quotas.is_empty() => "0".to_string(),
        Balance::Class => {
            let arms: String = quotas
                .iter()
                .map(|(label, q)| match label {
                    Some(l) => format!("WHEN label = {l} THEN {q} "),
                    None => format!("WHEN label IS NULL THEN {q} "),
                })
                .collect();
            format!("CASE {arms}ELSE 0 END")
        }
        Balance::None => quotas.values().next().copied().unwrap_or(0).to_string(),
    }
}

/// The decision query over the table `raw` (position, id, label, error and
/// the ranking's columns): each valid row's rank in its ranking (per class
/// or global) by the score (or a seeded random number, or the k-center pick
/// order), and `keep` for the first `quota` of each.
pub fn selection_sql(plan: &SelectPlan, quota: &str) -> String {
    let key = match plan.strategy {
        Strategy::Score => ident(plan.score.column()),
        Strategy::Random => format!("seeded_random({}, id)", plan.seed),
        Strategy::Kcenter => format!("-{}", ident(global::KCENTER_RANK)),
        Strategy::Ccs => unreachable!("ccs has its own decision query (select::ccs)"),
        Strategy::Auto => unreachable!("auto is resolved before selection (SelectPlan::resolve_auto)"),
    };
    let direction = match (plan.strategy, plan.order) {
        (_, Order::Easy) if plan.strategy == Strategy::Score => "ASC NULLS LAST",
        // `auto` is resolved before selection ([`SelectPlan::resolve_auto`]).
        _ => "DESC NULLS LAST",
    };
    let valid = valid_sql(plan);
    let partition = match plan.balance {
        Balance::Class => format!("label, {valid}"),
        Balance::None => valid.clone(),
    };
    let pos = ident(ROW);
    format!(
        "SELECT {pos}, ({valid} AND ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {key} {direction}, {pos}) <= {quota}) AS keep FROM raw"
    )
}

/// With `--drop-near-dups label`: a row's place among the rows of its
/// near-duplicate component with its label, in input order (1 for the first).
const NEAR_DUP_LABEL_RANK: &str = "near_dup_label_rank";

/// Registers the decision's rows at `narrow` as `raw`, with
/// [`NEAR_DUP_LABEL_RANK`] when the plan drops near-duplicates per label (a
/// component is its representative's id: `near_dup_of`, or the row's own id).
async fn register_rows(decision: &SessionContext, narrow: &Path, plan: &SelectPlan) -> Result<()> {
    let path = narrow.to_string_lossy();
    if plan.near_dup.drop != NearDupDrop::Label {
        decision.register_parquet("raw", path.as_ref(), ParquetReadOptions::default()).await?;
        return Ok(());
    }
    decision.register_parquet("rows", path.as_ref(), ParquetReadOptions::default()).await?;
    let (of, id, pos) = (ident(OutputColumns::NEAR_DUP_OF), ident(OutputColumns::ID), ident(ROW));
    let ranked = decision
        .sql(&format!(
            "SELECT *, ROW_NUMBER() OVER (PARTITION BY COALESCE({of}, {id}), label ORDER BY {pos}) AS {} FROM rows",
            ident(NEAR_DUP_LABEL_RANK)
        ))
        .await?;
    decision.register_table("raw", ranked.into_view())?;
    Ok(())
}

/// Selects from the raw scores at `raw`, joined on `row` with `extras`
/// (Parquet files of more per-row columns: training dynamics, embedding
/// methods), and writes `dest` (scores.parquet).
pub async fn run(
    ctx: &SessionContext,
    raw: &Path,
    extras: &[PathBuf],
    plan: &SelectPlan,
    classes: &[String],
    dest: &Path,
) -> Result<SelectOutcome> {
    // A directory (the shards of a resumable run) is read whole.
    let raw_files = sieve_schemas::paths::resolve_files(&raw.to_string_lossy())?;
    let narrow = dest.with_extension("decision.parquet");
    let columns = [
        ROW,
        OutputColumns::ID,
        "label",
        OutputColumns::ERROR,
        plan.score.column(),
        global::KCENTER_RANK,
        global::DUP_OF,
        crate::label_issues::LABEL_ISSUE,
        OutputColumns::NEAR_DUP_OF,
        OutputColumns::LEAK_KIND,
    ];
    merge::write(&raw_files, extras, merge::Output::Columns(&columns), &narrow)?;
    // The decision is SQL over the scores: it loads no model.
    let decision = Runtime::of(ctx)?.session(Some(decision_memory(ctx)))?;
    register_rows(&decision, &narrow, plan).await?;
    let quotas = quotas(&decision, plan).await?;
    let mut removed = removed_by_filter(&decision, plan).await?;
    let query = match plan.strategy {
        Strategy::Ccs => ccs::decision_sql(&decision, plan, &quotas).await?,
        _ => selection_sql(plan, &quota_sql(plan, &quotas)),
    };
    let mut kept = RowSet::new(crate::parquet_io::rows(&raw_files)?);
    let physical = decision.sql(&query).await?.create_physical_plan().await?;
    let mut stream = datafusion::physical_plan::execute_stream(physical.clone(), decision.task_ctx())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (pos, keep) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_boolean());
        for i in (0..batch.num_rows()).filter(|&i| keep.is_valid(i) && keep.value(i)) {
            kept.insert(pos.value(i) as u64);
        }
    }
    drop(stream);
    std::fs::remove_file(&narrow).map_err(io_err(&narrow))?;
    merge::write(&raw_files, extras, merge::Output::Decided(&kept), dest)?;
    let (spill_count, spilled_bytes) = spills(&physical);
    let counts = class_counts(ctx, dest, classes).await?;
    let total: u64 = counts.per_class.iter().map(|c| c.rows).sum();
    let selection = total.saturating_sub(removed.iter().map(|r| r.rows).sum::<u64>() + counts.kept);
    removed.push(Removed { filter: "selection".into(), rows: selection });
    Ok(SelectOutcome { spill_count, spilled_bytes, removed, ..counts })
}

/// How often and how much a finished plan's operators spilled to disk, from
/// DataFusion's metrics.
fn spills(plan: &Arc<dyn ExecutionPlan>) -> (usize, usize) {
    let own = plan.metrics().map_or((0, 0), |m| (m.spill_count().unwrap_or(0), m.spilled_bytes().unwrap_or(0)));
    plan.children().into_iter().map(spills).fold(own, |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Counts rows and kept rows per label in a scores.parquet.
pub async fn class_counts(ctx: &SessionContext, scores: &Path, classes: &[String]) -> Result<SelectOutcome> {
    let df = ctx.read_parquet(scores.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?.aggregate(
        vec![datafusion::prelude::col("label")],
        vec![
            datafusion::functions_aggregate::count::count(datafusion::prelude::lit(1)).alias("rows"),
            datafusion::functions_aggregate::sum::sum(datafusion::prelude::cast(
                datafusion::prelude::col("keep"),
                datafusion::arrow::datatypes::DataType::Int64,
            ))
            .alias("kept"),
        ],
    )?;
    let mut outcome = SelectOutcome::default();
    for batch in df.collect().await? {
        let labels = batch.column(0).as_primitive::<Int64Type>();
        let rows = batch.column(1).as_primitive::<Int64Type>();
        let kept = batch.column(2).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let label = labels.is_valid(i).then(|| labels.value(i));
            let name = label.and_then(|l| classes.get(usize::try_from(l).ok()?).cloned());
            let count = ClassCount { label, name, rows: rows.value(i) as u64, kept: kept.value(i) as u64 };
            outcome.kept += count.kept;
            outcome.per_class.push(count);
        }
    }
    outcome.per_class.sort_by_key(|c| (c.label.is_none(), c.label));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_never_takes_more_memory_than_the_job_allows() {
        let with = |limit| decision_memory(&Runtime::cpu().unwrap().session(limit).unwrap());
        assert_eq!(with(None), DECISION_MEMORY);
        assert_eq!(with(Some(64 << 20)), 64 << 20);
        assert_eq!(with(Some(1 << 30)), DECISION_MEMORY);
    }
}
