//! Rank agreement between proxies: Spearman's rho between two proxies'
//! scores of the same rows, the observation SVP rests on (a small, briefly
//! trained proxy ranks examples much as a larger one does).

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;
use sieve_schemas::OutputColumns;

use crate::error::Result;
use crate::score::ROW;
use crate::sqlgen::ident;

/// Ranks of `values` (0-based), ties sharing their average rank.
pub fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end - 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| out[i] = average);
        start = end;
    }
    out
}

/// Spearman's rank correlation of two equally long series; `None` when
/// either is constant or shorter than 2.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "spearman needs pairs");
    if a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() - 1) as f64 / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean) * (x - mean);
        vb += (y - mean) * (y - mean);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// Spearman's rho of one score between two proxies.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// What differs between the two proxies (`seed`, `width`).
    pub between: String,
    /// The score compared.
    pub score: String,
    /// Rows scored validly by both.
    pub rows: u64,
    /// Spearman's rho; `None` when a score is constant.
    pub spearman: Option<f64>,
}

/// Spearman's rho of every float score between the raw scores `a` and `b`
/// (files or shard directories of the score stage), over the rows both scored.
pub async fn agreement(ctx: &SessionContext, a: &Path, b: &Path, between: &str) -> Result<Vec<Agreement>> {
    let table = |p: &Path| if p.is_dir() { format!("{}/", p.display()) } else { p.display().to_string() };
    ctx.register_parquet("__a", table(a), ParquetReadOptions::default()).await?;
    ctx.register_parquet("__b", table(b), ParquetReadOptions::default()).await?;
    let scores = OutputColumns::FLOAT_SCORES;
    let pairs: Vec<String> = scores
        .iter()
        .map(|s| {
            format!(
                "a.{c} AS {a}, b.{c} AS {b}",
                c = ident(s),
                a = ident(&format!("a_{s}")),
                b = ident(&format!("b_{s}"))
            )
        })
        .collect();
    let df = ctx
        .sql(&format!(
            "SELECT {} FROM __a a JOIN __b b ON a.{row} = b.{row} WHERE a.error IS NULL AND b.error IS NULL",
            pairs.join(", "),
            row = ident(ROW)
        ))
        .await?;
    let batches = df.collect().await?;
    ctx.deregister_table("__a")?;
    ctx.deregister_table("__b")?;
    let mut out = Vec::new();
    for (k, score) in scores.iter().enumerate() {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for batch in &batches {
            let (x, y) = (
                batch.column(2 * k).as_primitive::<Float32Type>(),
                batch.column(2 * k + 1).as_primitive::<Float32Type>(),
            );
            // Scores that need a label are null on unlabeled rows; skip those pairs.
            for i in (0..batch.num_rows()).filter(|&i| x.is_valid(i) && y.is_valid(i)) {
                xs.push(x.value(i));
                ys.push(y.value(i));
            }
        }
        out.push(Agreement {
            between: between.to_string(),
            score: score.to_string(),
            rows: xs.len() as u64,
            spearman: spearman(&xs, &ys),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_their_average_rank() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![2.5, 0.0, 2.5, 1.0]);
    }

    #[test]
    fn spearman_sees_monotone_agreement_and_reversal() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let squares: Vec<f32> = a.iter().map(|x| x * x).collect();
        assert!((spearman(&a, &squares).unwrap() - 1.0).abs() < 1e-12);
        let reversed: Vec<f32> = a.iter().rev().copied().collect();
        assert!((spearman(&a, &reversed).unwrap() + 1.0).abs() < 1e-12);
        // Hand-computed: ranks (0,1,2,3) vs (1,0,3,2): rho = 1 - 6*4/(4*15) = 0.6.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(spearman(&a, &[1.0; 5]), None);
    }
}
