//! Coverage-centric coreset selection (Zheng et al., ICLR 2023, "Coverage-
//! centric coreset selection for high pruning rates"), in SQL over the raw
//! scores. Per ranking (each class with `--balance class`, else all rows):
//!
//! 1. the hardest `⌊β n⌋` of its `n` scored rows are dropped (`--hard-cutoff
//!    β`): at high pruning rates they are mostly mislabeled or ambiguous;
//! 2. the rest are split into `k` strata of equal score width (`--strata k`,
//!    the top score in the last one);
//! 3. the ranking's budget (the same `round(F n)` quota every strategy keeps)
//!    is spread over the strata by the paper's water-filling: the stratum
//!    with the fewest rows first, each given `min(its rows, remaining budget
//!    / remaining strata)`;
//! 4. each stratum keeps its share by a seeded random order, as the random
//!    baseline does.
//!
//! Steps 1, 2 and 4 are window functions; the water-filling (a loop over a
//! few hundred strata) is [`allocate`], between two queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::{group_sql, valid_sql};
use crate::error::Result;
use crate::plan::SelectPlan;
use crate::score::ROW;
use crate::sqlgen::ident;

/// The hard cutoff when none is given, by the kept fraction: the values
/// Zheng et al. tuned for CIFAR-10 (none at 30% and 50% pruning, 10% at 70%
/// and 80%, 30% at 90%).
pub fn default_cutoff(keep: f64) -> f64 {
    match 1.0 - keep {
        p if p < 0.6 => 0.0,
        p if p < 0.85 => 0.1,
        _ => 0.3,
    }
}

/// The strata's shares of `budget` rows, given each stratum's rows: the
/// smallest stratum first, each taking `min(its rows, what is left / the
/// strata left)`. The shares never exceed a stratum's rows, and add up to
/// `budget` whenever the strata hold that many.
pub fn allocate(rows: &[u64], budget: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i], i));
    let mut shares = vec![0; rows.len()];
    let mut left = budget;
    for (done, &i) in order.iter().enumerate() {
        let share = rows[i].min(left / (rows.len() - done) as u64);
        shares[i] = share;
        left -= share;
    }
    shares
}

/// The strata of the rows that pass the cutoff, as SQL common table
/// expressions ending in `strata` (position, id, ranking `g`, stratum `bin`).
fn strata_ctes(plan: &SelectPlan) -> String {
    let (pos, score) = (ident(ROW), ident(plan.score.column()));
    let (g, valid, k) = (group_sql(plan), valid_sql(plan), plan.strata);
    format!(
        "WITH scored AS (SELECT {pos}, id, {g} AS g, CAST({score} AS DOUBLE) AS s, \
           ROW_NUMBER() OVER (PARTITION BY {g} ORDER BY {score} DESC, {pos}) AS hard_rank, \
           COUNT(*) OVER (PARTITION BY {g}) AS n \
           FROM raw WHERE {valid} AND {score} IS NOT NULL), \
         kept AS (SELECT *, MIN(s) OVER (PARTITION BY g) AS lo, MAX(s) OVER (PARTITION BY g) AS hi \
           FROM scored WHERE hard_rank > CAST(FLOOR({beta} * n) AS BIGINT)), \
         strata AS (SELECT {pos}, id, g, CASE WHEN hi > lo \
           THEN LEAST({k} - 1, CAST(FLOOR((s - lo) * {k} / (hi - lo)) AS BIGINT)) ELSE 0 END AS bin FROM kept)",
        beta = plan.hard_cutoff,
    )
}

/// The decision query of `--strategy ccs` (position and `keep` of the rows
/// it may keep), with each ranking's budget from `quotas` (ranking → rows);
/// registers the strata's shares in `ctx` as the table `__ccs_shares`.
pub(super) async fn decision_sql(
    ctx: &SessionContext,
    plan: &SelectPlan,
    quotas: &BTreeMap<Option<i64>, i64>,
) -> Result<String> {
    let ctes = strata_ctes(plan);
    let counts = ctx.sql(&format!("{ctes} SELECT g, bin, COUNT(*) AS n FROM strata GROUP BY g, bin")).await?;
    let mut strata: BTreeMap<Option<i64>, Vec<(i64, u64)>> = BTreeMap::new();
    for batch in counts.collect().await? {
        let g = cast(batch.column(0), &DataType::Int64)?;
        let (g, bin, n) = (
            g.as_primitive::<Int64Type>(),
            batch.column(1).as_primitive::<Int64Type>(),
            batch.column(2).as_primitive::<Int64Type>(),
        );
        for i in 0..batch.num_rows() {
            let ranking = g.is_valid(i).then(|| g.value(i));
            strata.entry(ranking).or_default().push((bin.value(i), n.value(i) as u64));
        }
    }
    let (mut gs, mut bins, mut shares) = (Vec::new(), Vec::new(), Vec::new());
    for (ranking, mut cells) in strata {
        cells.sort();
        let budget = quotas.get(&ranking).copied().unwrap_or(0).max(0) as u64;
        let rows: Vec<u64> = cells.iter().map(|&(_, n)| n).collect();
        for (&(bin, _), share) in cells.iter().zip(allocate(&rows, budget)) {
            gs.push(ranking);
            bins.push(bin);
            shares.push(share as i64);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, true),
        Field::new("bin", DataType::Int64, false),
        Field::new("share", DataType::Int64, false),
    ]));
    let table = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(gs)), Arc::new(Int64Array::from(bins)), Arc::new(Int64Array::from(shares))],
    )?;
    ctx.deregister_table("__ccs_shares")?;
    ctx.register_table("__ccs_shares", Arc::new(MemTable::try_new(schema, vec![vec![table]])?))?;
    let pos = ident(ROW);
    Ok(format!(
        "{ctes} SELECT t.{pos}, ROW_NUMBER() OVER (PARTITION BY t.g, t.bin ORDER BY seeded_random({seed}, t.id), t.{pos}) \
         <= a.share AS keep FROM strata t JOIN __ccs_shares a ON (t.g IS NOT DISTINCT FROM a.g) AND t.bin = a.bin",
        seed = plan.seed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_strata_are_taken_whole_and_the_rest_shared_evenly() {
        // Sorted 1, 2, 6 for a budget of 6: 1 (≤ 6/3), 2 (≤ 5/2), then 3 of the 6.
        assert_eq!(allocate(&[6, 1, 2], 6), vec![3, 1, 2]);
        // Even strata share evenly; the floor's remainder goes to the last.
        assert_eq!(allocate(&[10, 10, 10], 10), vec![3, 3, 4]);
        // A budget above the rows takes every row.
        assert_eq!(allocate(&[2, 3], 9), vec![2, 3]);
        assert_eq!(allocate(&[], 5), Vec::<u64>::new());
    }

    #[test]
    fn the_cutoff_grows_with_the_pruning_rate() {
        assert_eq!(default_cutoff(0.7), 0.0);
        assert_eq!(default_cutoff(0.5), 0.0);
        assert_eq!(default_cutoff(0.3), 0.1);
        assert_eq!(default_cutoff(0.1), 0.3);
    }
}
