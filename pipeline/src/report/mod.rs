//! `report.html`: the page a person opens to see what a `prune` or `select`
//! did. One self-contained file (inline CSS, images as `data:` URIs, no
//! script, nothing fetched) holding:
//!
//! - a summary (dataset, rows scored and kept, the selection, the proxy's
//!   held-out accuracy, seconds per stage) and a per-class table;
//! - plots: each class's score histogram (kept and pruned rows), the kept
//!   fraction per class, the proxy's training curve;
//! - the hardest and easiest [`GRID`] rows by the selection score and a
//!   seeded sample of pruned rows: images as pictures, texts in tables, each
//!   with its label, the proxy's prediction and its score;
//! - the label issues confident learning flagged: per class, and the
//!   [`GRID`] most likely wrong with their given and confident labels;
//! - duplicates: near-duplicates and leaks counted per kind and per
//!   threshold, and the first [`PAIRS`] of each beside the row they
//!   duplicate.
//!
//! It streams `scores.parquet` twice (a few columns), then reads only the
//! input row groups that hold the rows shown: memory stays flat as the
//! dataset grows. Rows without scores are counted, not shown.

pub mod html;
pub mod payloads;
pub mod plots;
pub mod rows;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use sieve_schemas::layout;

use crate::error::{io_err, PipelineError, Result};
use crate::manifest::Manifest;
use crate::plan::DatasetPlan;
use plots::Figure;

/// Rows per grid (hardest, easiest, pruned sample).
pub const GRID: usize = 24;
/// Bins of each class's score histogram.
const BINS: usize = 30;
/// Near-duplicate and leak pairs shown.
const PAIRS: usize = 12;

/// The payloads of the evaluation rows the shown leaks duplicate, by id.
fn evaluation_payloads(
    plan: &crate::plan::SelectPlan,
    dataset: &DatasetPlan,
    duplicates: &rows::Duplicates,
) -> Result<HashMap<String, Vec<u8>>> {
    if duplicates.leaks.is_empty() {
        return Ok(HashMap::new());
    }
    let Some((_, against)) = crate::leaks::against(dataset, &plan.leaks)? else { return Ok(HashMap::new()) };
    let ids: BTreeSet<String> = duplicates.leaks.iter().map(|p| p.of.clone()).collect();
    let rows = payloads::positions_of(&against, dataset.id_column.as_deref(), &ids)?;
    let positions: BTreeSet<u64> = rows.values().copied().collect();
    let bytes = payloads::fetch_from(&against, dataset.kind, &dataset.input_column, &positions)?;
    Ok(rows.into_iter().filter_map(|(id, pos)| Some((id, bytes.get(&pos)?.clone()))).collect())
}

/// Writes `dir/report.html` for the job `manifest` describes, whose
/// `scores.parquet` is in `dir`, over `dataset`'s training input. A plot
/// that cannot be drawn (no font) is logged and replaced by a note; the
/// rest of the page is still written.
pub fn write(manifest: &Manifest, dataset: &DatasetPlan, dir: &Path) -> Result<()> {
    let plan = manifest
        .config
        .select
        .as_ref()
        .ok_or_else(|| PipelineError::Internal("report: the job made no selection".into()))?;
    let scores = layout::scores(dir);
    let scan = rows::scan(&scores, plan.score.column(), GRID, plan.seed)?;
    let histograms = scan.range.map(|range| rows::histograms(&scores, plan.score.column(), range, BINS)).transpose()?;
    let issues = rows::label_issues(&scores, GRID)?;
    let duplicates = rows::duplicates(&scores, PAIRS)?;
    let originals: BTreeSet<String> = duplicates.near.iter().map(|p| p.of.clone()).collect();
    let original_rows = payloads::positions_of(&dataset.train, dataset.id_column.as_deref(), &originals)?;
    let mut shown: BTreeSet<u64> =
        [&scan.hardest, &scan.easiest, &scan.pruned_sample, &issues].into_iter().flatten().map(|r| r.pos).collect();
    shown.extend(duplicates.near.iter().chain(&duplicates.leaks).map(|p| p.pos));
    shown.extend(original_rows.values());
    let payloads = payloads::fetch(dataset, &shown)?;
    let evaluation = evaluation_payloads(plan, dataset, &duplicates)?;
    let per_class = manifest.selection.as_ref().map_or(&[][..], |s| &s.per_class[..]);
    let page = html::Page {
        manifest,
        plan,
        kind: dataset.kind,
        scan: &scan,
        label_issues: &issues,
        duplicates: &duplicates,
        original_rows: &original_rows,
        evaluation: &evaluation,
        payloads: &payloads,
        histograms: &plots::histograms(histograms.as_ref(), &dataset.classes, plan.score.column()),
        kept: &plots::kept_fraction(per_class, &dataset.classes),
        curve: &curve(manifest),
    };
    for figure in [page.histograms, page.kept, page.curve] {
        if let Figure::Failed(why) = figure {
            crate::log::error(&format!("report: no plot: {why}"), serde_json::Value::Null);
        }
    }
    let path = layout::report(dir);
    std::fs::write(&path, html::render(&page)).map_err(io_err(&path))
}

/// The proxy's training curve, or why there is none.
fn curve(manifest: &Manifest) -> Figure {
    match &manifest.proxy {
        None => Figure::Absent("No training curve: this job selected from existing scores, without a proxy".into()),
        Some(p) if p.meta.history.is_empty() => {
            Figure::Absent("No training curve: the proxy was loaded and its proxy.json records none".into())
        }
        Some(p) => plots::training_curve(&p.meta.history),
    }
}
