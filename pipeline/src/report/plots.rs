//! The report's plots, as PNG bytes: the score histogram of each class
//! (small multiples, kept and pruned rows stacked in two colours), the kept
//! fraction of each class (bars) and the proxy's training curve (loss and
//! training accuracy per epoch). Bars are solid fills of [`KEPT`] and
//! [`PRUNED`], which the browser test counts in a screenshot.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use sieve_proxy::artifact::EpochRecord;

use super::rows::{Bins, Histograms};
use crate::error::Result;
use crate::plot::{self, Canvas, Drawn, PALETTE};
use crate::select::ClassCount;

/// Colour of kept rows: histogram bars and kept-fraction bars (31, 119, 180).
pub const KEPT: RGBColor = PALETTE[0];
/// Colour of pruned rows in the histograms (255, 127, 14).
pub const PRUNED: RGBColor = PALETTE[1];
/// Colour of the loss curve.
const LOSS: RGBColor = PALETTE[3];
/// Colour of the training accuracy curve.
const ACCURACY: RGBColor = PALETTE[2];
/// Classes drawn at most, as histogram panels or bars; the page says when
/// more exist (a thousand panels would tell nobody anything).
pub const MAX_CLASSES: usize = 16;
/// Width of every plot, in pixels: the page's content width.
const WIDTH: u32 = 1100;
/// Height of one row of histogram panels.
const PANEL_HEIGHT: u32 = 230;
/// Histogram panels per row.
const PANELS_PER_ROW: usize = 4;

/// One plot of the page, or why it is not there.
#[derive(Clone, Debug)]
pub enum Figure {
    /// The plot, PNG-encoded.
    Png(Vec<u8>),
    /// Nothing to draw (no scored rows, no training curve); the sentence
    /// the page shows instead.
    Absent(String),
    /// Drawing failed (no font, ...); says why, and the job logs it.
    Failed(String),
}

impl Figure {
    /// The outcome of drawing a plot.
    fn drawn(png: Result<Vec<u8>>) -> Self {
        png.map_or_else(|e| Self::Failed(e.to_string()), Self::Png)
    }
}

/// The name of `label` among `classes` (the number when it has none).
pub fn class_name(classes: &[String], label: Option<i64>) -> String {
    match label {
        None => "(no label)".to_string(),
        Some(l) => usize::try_from(l).ok().and_then(|i| classes.get(i)).cloned().unwrap_or_else(|| l.to_string()),
    }
}

/// The score histogram of each class (the first [`MAX_CLASSES`] labels),
/// one panel per class over the same score range.
pub fn histograms(h: Option<&Histograms>, classes: &[String], score: &str) -> Figure {
    let Some(h) = h.filter(|h| !h.classes.is_empty()) else {
        return Figure::Absent("No histograms: no row has a score".into());
    };
    let shown: Vec<(String, &Bins)> =
        h.classes.iter().take(MAX_CLASSES).map(|(l, b)| (class_name(classes, Some(*l)), b)).collect();
    let cols = shown.len().min(PANELS_PER_ROW);
    let rows = shown.len().div_ceil(cols);
    Figure::drawn(plot::png("the score histograms", (WIDTH, PANEL_HEIGHT * rows as u32), |root| {
        for ((name, bins), area) in shown.iter().zip(root.split_evenly((rows, cols))) {
            histogram_panel(&area, name, h, bins, score)?;
        }
        Ok(())
    }))
}

/// One class's histogram: kept rows at the bottom of each bin, pruned above.
fn histogram_panel(area: &Canvas<'_>, title: &str, h: &Histograms, bins: &Bins, score: &str) -> Drawn {
    let width = (h.hi - h.lo) / h.bins as f32;
    let top = bins.kept.iter().zip(&bins.pruned).map(|(k, p)| k + p).max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(40)
        .build_cartesian_2d(h.lo..h.hi, 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(5)
        .y_labels(4)
        .x_desc(score)
        .label_style(("sans-serif", 11))
        .draw()?;
    let bar = |i: usize, from: u64, to: u64, colour: RGBColor| {
        let x = h.lo + i as f32 * width;
        Rectangle::new([(x, from), (x + width, to)], colour.filled())
    };
    let stacked = bins.kept.iter().zip(&bins.pruned).enumerate();
    chart.draw_series(stacked.clone().filter(|(_, (&k, _))| k > 0).map(|(i, (&k, _))| bar(i, 0, k, KEPT)))?;
    chart.draw_series(stacked.filter(|(_, (_, &p))| p > 0).map(|(i, (&k, &p))| bar(i, k, k + p, PRUNED)))?;
    Ok(())
}

/// The kept fraction of each class (the first [`MAX_CLASSES`]), as bars.
pub fn kept_fraction(per_class: &[ClassCount], classes: &[String]) -> Figure {
    let shown = &per_class[..per_class.len().min(MAX_CLASSES)];
    if shown.is_empty() {
        return Figure::Absent("No kept fractions: the selection counted no classes".into());
    }
    let names: Vec<String> =
        shown.iter().map(|c| c.name.clone().unwrap_or_else(|| class_name(classes, c.label))).collect();
    Figure::drawn(plot::png("the kept fraction per class", (WIDTH, 260), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(56)
            // Plotters' integer ranges are inclusive: `0..n - 1` is n segments.
            .build_cartesian_2d((0..shown.len() - 1).into_segmented(), 0.0..1.1f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(shown.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("kept fraction")
            .label_style(("sans-serif", 13))
            .draw()?;
        let fractions: Vec<f64> =
            shown.iter().map(|c| if c.rows == 0 { 0.0 } else { c.kept as f64 / c.rows as f64 }).collect();
        chart.draw_series(fractions.iter().enumerate().map(|(i, &f)| {
            let mut bar =
                Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), f)], KEPT.filled());
            bar.set_margin(0, 0, 20, 20);
            bar
        }))?;
        let above = ("sans-serif", 13).into_font().into_text_style(root).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            fractions
                .iter()
                .enumerate()
                .map(|(i, &f)| Text::new(format!("{:.1}%", 100.0 * f), (SegmentValue::CenterOf(i), f), above.clone())),
        )?;
        Ok(())
    }))
}

/// The proxy's training loss and accuracy per epoch, side by side.
pub fn training_curve(history: &[EpochRecord]) -> Figure {
    let loss: Vec<(usize, f64)> = history.iter().map(|e| (e.epoch, e.loss)).collect();
    let accuracy: Vec<(usize, f64)> = history.iter().map(|e| (e.epoch, e.accuracy)).collect();
    let top_loss = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-6) * 1.1;
    Figure::drawn(plot::png("the training curve", (WIDTH, 280), |root| {
        let (left, right) = root.split_horizontally(WIDTH / 2);
        curve(&left, "training loss", &loss, top_loss, LOSS)?;
        curve(&right, "training accuracy", &accuracy, 1.0, ACCURACY)
    }))
}

/// One curve over epochs (an integer axis, so ticks fall on epochs), from 0 to `top`.
fn curve(area: &Canvas<'_>, title: &str, points: &[(usize, f64)], top: f64, colour: RGBColor) -> Drawn {
    let last = points.last().map_or(1, |p| p.0).max(2);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(1..last, 0.0..top)?;
    chart.configure_mesh().light_line_style(TRANSPARENT).x_desc("epoch").label_style(("sans-serif", 12)).draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)).point_size(3))?;
    Ok(())
}
