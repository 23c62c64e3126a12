//! Writing `sieve eval`'s results: `eval.json` (everything), `eval.md`
//! (accuracy and speed-up tables, rank agreement) and `eval.png` (accuracy
//! against kept fraction, a line per method, random dashed, full data as a
//! horizontal line).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{Cell, EvalReport};
use crate::choices::TargetBudget;
use crate::error::{io_err, Result};
use crate::plot::{self, PALETTE};

/// Name of the JSON report.
pub const JSON: &str = "eval.json";
/// Name of the markdown report.
pub const MARKDOWN: &str = "eval.md";
/// Name of the plot.
pub const PLOT: &str = "eval.png";

/// Writes the three reports into `dir`. The plot comes last: a machine
/// without a font still gets the tables, and a log line says why there is
/// no plot.
pub fn write(report: &EvalReport, dir: &Path) -> Result<()> {
    let json = dir.join(JSON);
    std::fs::write(&json, serde_json::to_string_pretty(report).expect("the report serializes"))
        .map_err(io_err(&json))?;
    let md = dir.join(MARKDOWN);
    std::fs::write(&md, markdown(report)).map_err(io_err(&md))?;
    if let Err(e) = plot(report, &dir.join(PLOT)) {
        crate::log::error(&format!("eval: no plot: {e}"), serde_json::Value::Null);
    }
    Ok(())
}

fn percent(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// The sweep's fractions, ascending.
fn fractions(report: &EvalReport) -> Vec<f64> {
    let mut f: Vec<f64> = report.cells.iter().filter(|c| c.method.is_some()).map(|c| c.fraction).collect();
    f.sort_by(f64::total_cmp);
    f.dedup();
    f
}

/// The methods' labels in sweep order.
fn labels(report: &EvalReport) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in report.cells.iter().filter_map(|c| c.method.as_ref()) {
        if !out.contains(&c.label()) {
            out.push(c.label());
        }
    }
    out
}

fn cell<'a>(report: &'a EvalReport, label: &str, fraction: f64) -> Option<&'a Cell> {
    report.cells.iter().find(|c| c.method.as_ref().is_some_and(|m| m.label() == label) && c.fraction == fraction)
}

fn full(report: &EvalReport) -> Option<&Cell> {
    report.cells.iter().find(|c| c.method.is_none())
}

/// The markdown tables.
pub fn markdown(report: &EvalReport) -> String {
    let fractions = fractions(report);
    let labels = labels(report);
    let seeds = full(report).map_or(0, |c| c.runs);
    let t = &report.target;
    let mut md = String::new();
    let _ = writeln!(md, "# sieve eval: {}\n", report.dataset);
    let _ = writeln!(
        md,
        "Target: {} (width {}, {} epochs on the full data; {}), {seeds} seed(s) per cell; proxy: {} (held-out accuracy {}), {:.1} s to train, {:.1} s to score {} rows{}.\n",
        t.preset,
        t.overrides.width.map_or("default".to_string(), |w| w.to_string()),
        t.recipe.epochs(),
        match report.target_budget {
            TargetBudget::Epochs => "a subset trains as many epochs, so fewer steps",
            TargetBudget::Steps => "a subset trains epochs ÷ kept fraction, so as many steps",
        },
        report.proxy,
        report.proxy_accuracy.map_or("n/a".to_string(), |a| format!("{}%", percent(a))),
        report.proxy_seconds,
        report.score_seconds,
        report.rows,
        if report.embed_seconds > 0.0 { format!(", {:.1} s to embed them with the text encoder (prototype, kcenter)", report.embed_seconds) } else { String::new() },
    );
    let header = |md: &mut String| {
        let _ = write!(md, "| method |");
        for f in &fractions {
            let _ = write!(md, " keep {f} |");
        }
        let _ = writeln!(md, "\n|---|{}", "---|".repeat(fractions.len()));
    };
    let _ = writeln!(md, "Held-out accuracy (%), mean ± standard deviation over seeds:\n");
    header(&mut md);
    if let Some(full) = full(report) {
        let _ = write!(md, "| full data (1.0) |");
        for _ in &fractions {
            let _ = write!(md, " {} ± {} |", percent(full.mean), percent(full.std));
        }
        let _ = writeln!(md);
    }
    for label in &labels {
        let _ = write!(md, "| {label} |");
        for &f in &fractions {
            let _ = match cell(report, label, f) {
                Some(c) => write!(md, " {} ± {} |", percent(c.mean), percent(c.std)),
                None => write!(md, " |"),
            };
        }
        let _ = writeln!(md);
    }
    for r in &report.runs {
        if let (Some(m), Some(same)) = (&r.method, &r.same_rows_as) {
            let _ = writeln!(
                md,
                "\n{} kept the same rows as {} at keep {}, seed {}: trained once.",
                m.label(),
                same.label(),
                r.fraction,
                r.seed
            );
        }
    }
    let _ = writeln!(
        md,
        "\nSVP end-to-end speed-up (target on all data ÷ proxy + scoring + selection + target on the subset):\n"
    );
    header(&mut md);
    for label in &labels {
        let _ = write!(md, "| {label} |");
        for &f in &fractions {
            let _ = match cell(report, label, f) {
                Some(c) => write!(md, " {:.2}x |", c.speedup),
                None => write!(md, " |"),
            };
        }
        let _ = writeln!(md);
    }
    if !report.agreement.is_empty() {
        let _ = writeln!(md, "\nRank agreement between proxies (Spearman's rho over the rows both scored):\n");
        let _ = writeln!(md, "| score | other seed | half width |\n|---|---|---|");
        let mut scores: Vec<&str> = Vec::new();
        for a in &report.agreement {
            if !scores.contains(&a.score.as_str()) {
                scores.push(&a.score);
            }
        }
        for score in scores {
            let rho = |between: &str| {
                report
                    .agreement
                    .iter()
                    .find(|a| a.score == score && a.between == between)
                    .and_then(|a| a.spearman)
                    .map_or("n/a".to_string(), |r| format!("{r:.3}"))
            };
            let _ = writeln!(md, "| {score} | {} | {} |", rho("seed"), rho("width"));
        }
    }
    md
}

/// Draws accuracy against kept fraction into a PNG at `path`.
pub fn plot(report: &EvalReport, path: &Path) -> Result<()> {
    let (w, h) = (900u32, 600u32);
    let fractions = fractions(report);
    let accuracies: Vec<f64> = report.cells.iter().map(|c| 100.0 * c.mean).collect();
    let lo = accuracies.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = accuracies.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.5);
    let x_lo = fractions.first().copied().unwrap_or(0.0).min(1.0) - 0.05;
    let png = plot::png(&path.display().to_string(), (w, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: target {} held-out accuracy", report.dataset, report.target.preset),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..1.02, (lo - pad)..(hi + pad))?;
        chart.configure_mesh().x_desc("kept fraction").y_desc("accuracy (%)").label_style(("sans-serif", 14)).draw()?;
        if let Some(full) = full(report) {
            let y = 100.0 * full.mean;
            chart
                .draw_series(LineSeries::new([(x_lo, y), (1.02, y)], BLACK.stroke_width(1)))?
                .label("full data")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        }
        let mut colour = 0;
        for label in labels(report) {
            let points: Vec<(f64, f64)> =
                fractions.iter().filter_map(|&f| cell(report, &label, f).map(|c| (f, 100.0 * c.mean))).collect();
            let style = if label == super::RANDOM {
                ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(3)
            } else {
                colour += 1;
                ShapeStyle::from(&PALETTE[(colour - 1) % PALETTE.len()]).stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(points.clone(), style).point_size(3))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    })?;
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, png).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
