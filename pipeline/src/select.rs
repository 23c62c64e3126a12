//! The select stage, in SQL: rank the valid rows by a score (or by a seeded
//! random number for the baseline) with window functions, per class or
//! globally, keep the top `round(F * n)` of each ranking, and write
//! `scores.parquet` back in input order with the decision as `keep`.
//!
//! Only the columns the decision reads go through the query's sorts
//! (position, id, label, error, the ranking score): a few dozen bytes per
//! row, one bit per row once decided. The wide rows (every score and the
//! embedding) are then streamed from the raw scores in input order, with
//! the extra columns (training dynamics, embedding methods) looked up by
//! position, so memory does not grow with the width of a row.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::cli::{Balance, Order, Strategy};
use crate::error::Result;
use crate::score::ROW;
use crate::plan::{RowSet, SelectPlan};
use crate::sqlgen::ident;
use sieve_schemas::OutputColumns;

mod merge;

/// Kept and total rows of one class.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

/// What the select stage decided.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SelectOutcome {
    /// Rows kept in all.
    pub kept: u64,
    /// Per class, by label (rows without a label last).
    pub per_class: Vec<ClassCount>,
}

/// The selection query over the table `raw` (the score stage's output).
pub fn selection_sql(plan: &SelectPlan) -> String {
    let key = match plan.strategy {
        Strategy::Score => ident(&plan.score),
        Strategy::Random => format!("seeded_random({}, id)", plan.seed),
        Strategy::Kcenter => format!("-{}", ident(crate::global::KCENTER_RANK)),
    };
    let direction = match (plan.strategy, plan.order) {
        (_, Order::Easy) if plan.strategy == Strategy::Score => "ASC NULLS LAST",
        // `auto` is resolved before selection ([`SelectPlan::resolve_order`]).
        _ => "DESC NULLS LAST",
    };
    // Rows with errors, and duplicates when de-duplicating, are never kept
    // and do not count towards the quotas.
    let valid = if plan.dedup.is_some() {
        format!("error IS NULL AND {} IS NULL", ident(crate::global::DUP_OF))
    } else {
        "error IS NULL".to_string()
    };
    let partition = match plan.balance {
        Balance::Class => format!("label, {valid}"),
        Balance::None => valid.clone(),
    };
    let pos = ident(ROW);
    format!(
        "SELECT {pos}, ({valid} AND __rank <= __quota) AS keep FROM ( \
           SELECT *, \
             ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {key} {direction}, {pos}) AS __rank, \
             ROUND(COUNT(*) OVER (PARTITION BY {partition}) * {keep:?}) AS __quota \
           FROM raw) \
         ORDER BY {pos}",
        keep = plan.keep,
    )
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
    let raw_table = if raw.is_dir() { format!("{}/", raw.display()) } else { raw.display().to_string() };
    let mut scores = ctx.read_parquet(raw_table, ParquetReadOptions::default()).await?;
    let row = ident(ROW);
    let mut provided: Vec<String> = Vec::new();
    let mut tables = Vec::new();
    for extra in extras {
        let table = ctx.read_parquet(extra.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
        provided.extend(table.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != ROW));
        tables.push(table);
    }
    // The decision's columns only: what selection_sql reads.
    let wanted = [ROW, OutputColumns::ID, "label", OutputColumns::ERROR, plan.score.as_str()];
    let narrow: Vec<&str> = wanted
        .into_iter()
        .filter(|c| scores.schema().has_column_with_unqualified_name(c) && !provided.iter().any(|p| p == c))
        .collect();
    scores = scores.select_columns(&narrow)?;
    for (i, table) in tables.into_iter().enumerate() {
        let columns: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != ROW).collect();
        let (left, right) = (format!("__s{i}"), format!("__x{i}"));
        ctx.register_table(left.as_str(), scores.into_view())?;
        ctx.register_table(right.as_str(), table.into_view())?;
        let picked: Vec<String> = columns.iter().map(|c| format!("x.{}", ident(c))).collect();
        scores = ctx
            .sql(&format!("SELECT s.*, {} FROM {left} s LEFT JOIN {right} x ON s.{row} = x.{row}", picked.join(", ")))
            .await?;
    }
    ctx.register_table("raw", scores.into_view())?;
    let decided = ctx.sql(&selection_sql(plan)).await?.collect().await;
    ctx.deregister_table("raw")?;
    for i in 0..extras.len() {
        ctx.deregister_table(format!("__s{i}").as_str())?;
        ctx.deregister_table(format!("__x{i}").as_str())?;
    }
    let mut kept = RowSet::new(merge::rows(&raw_files)?);
    for batch in decided? {
        let (pos, keep) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(1).as_boolean());
        for i in (0..batch.num_rows()).filter(|&i| keep.is_valid(i) && keep.value(i)) {
            kept.insert(pos.value(i) as u64);
        }
    }
    merge::write(&raw_files, extras, &kept, dest)?;
    class_counts(ctx, dest, classes).await
}

/// Counts rows and kept rows per label in a scores.parquet.
pub async fn class_counts(ctx: &SessionContext, scores: &Path, classes: &[String]) -> Result<SelectOutcome> {
    let df = ctx
        .read_parquet(scores.to_string_lossy().as_ref(), ParquetReadOptions::default())
        .await?
        .aggregate(
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
