//! The HTML of `report.html`: one self-contained page (inline CSS, images
//! as `data:` URIs, no script) built from what [`super::write`] gathered.
//! Every piece of data-derived text goes through [`escape`].

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use sieve_schemas::InputKind;

use plotters::style::RGBColor;

use super::plots::{class_name, Figure, KEPT, MAX_CLASSES, PRUNED};
use super::rows::{Duplicates, Pair, Scan, Scored};
use crate::choices::{Balance, Order, Strategy};
use crate::manifest::Manifest;
use crate::plan::SelectPlan;

/// Characters of text shown per example; longer texts end in `…`.
pub const TEXT_CHARS: usize = 300;

/// The page's style: system fonts, tables with rules, image grids with
/// pixels scaled up as blocks (the inputs are often 32x32).
const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1140px;color:#222;font-size:14px}\
h1{font-size:24px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse}td,th{border-bottom:1px solid #e3e3e3;padding:3px 10px;text-align:left;vertical-align:top}\
td.n,th.n{text-align:right}.tables{display:flex;gap:40px;flex-wrap:wrap;align-items:flex-start}.note{color:#666}\
img.plot{max-width:100%;display:block}.cards{display:flex;flex-wrap:wrap;gap:10px}\
figure{margin:0;width:100px;font-size:11px;line-height:1.3}figure.pair{width:202px}.pair div{display:flex;gap:6px}\
figure img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #bbb;display:block}\
.wrong{color:#c0392b;font-weight:bold}.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin:0 4px 0 12px}\
table.examples td.t{max-width:640px}";

/// What the page shows.
pub struct Page<'a> {
    /// The job's manifest (dataset, proxy, selection, seconds).
    pub manifest: &'a Manifest,
    /// The selection.
    pub plan: &'a SelectPlan,
    /// Image or text: how examples are shown.
    pub kind: InputKind,
    /// The pass over scores.parquet.
    pub scan: &'a Scan,
    /// The flagged label issues shown, most likely wrong first.
    pub label_issues: &'a [Scored],
    /// The near-duplicates and leaks shown.
    pub duplicates: &'a Duplicates,
    /// The input positions of the rows the near-duplicates duplicate, by id.
    pub original_rows: &'a HashMap<String, u64>,
    /// The payloads of the evaluation rows the leaks duplicate, by id.
    pub evaluation: &'a HashMap<String, Vec<u8>>,
    /// Payloads of the rows in the grids, by input position.
    pub payloads: &'a HashMap<u64, Vec<u8>>,
    /// Score histograms per class.
    pub histograms: &'a Figure,
    /// Kept fraction per class.
    pub kept: &'a Figure,
    /// The proxy's training curve.
    pub curve: &'a Figure,
}

/// `text` with `& < > " '` replaced by entities, safe in elements and
/// quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The first `chars` characters of `text`, with `…` when cut.
pub fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The MIME type of encoded image `bytes`, from their magic number.
pub fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else {
        None
    }
}

/// A `data:` URI of `bytes`.
fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A colour as CSS: `#rrggbb`.
fn css(RGBColor(r, g, b): RGBColor) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The whole page.
pub fn render(page: &Page<'_>) -> String {
    let name = escape(&page.manifest.dataset.name);
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sieve report: {name}</title>\
         <style>{STYLE}</style></head><body>\n<h1>sieve report: {name}</h1>\n<div class=\"tables\">"
    );
    summary(&mut s, page);
    class_table(&mut s, page);
    s.push_str("</div>\n");
    plots(&mut s, page);
    grids(&mut s, page);
    label_issues(&mut s, page);
    duplicates(&mut s, page);
    s.push_str("</body></html>\n");
    s
}

/// The summary table: dataset, rows, selection, proxy, seconds.
fn summary(s: &mut String, page: &Page<'_>) {
    let (m, scan) = (page.manifest, page.scan);
    let scored = scan.rows - scan.unscored;
    let kept = m.selection.as_ref().map_or(0, |sel| sel.kept);
    let mut rows: Vec<(&str, String)> = vec![
        (
            "dataset",
            format!(
                "{} ({} column {})",
                m.dataset.name,
                format!("{:?}", page.kind).to_lowercase(),
                m.dataset.input_column
            ),
        ),
        ("rows", scan.rows.to_string()),
        ("rows scored", scored.to_string()),
        ("rows without scores", unscored(page)),
        ("rows kept", format!("{kept} ({} of all rows)", percent(kept as f64 / scan.rows.max(1) as f64))),
        ("selection", selection(page.plan)),
        ("proxy", proxy(m)),
        ("seconds per stage", seconds(m)),
    ];
    rows.retain(|(_, v)| !v.is_empty());
    s.push_str("<table class=\"summary\">");
    for (key, value) in rows {
        let _ = write!(s, "<tr><th>{key}</th><td>{}</td></tr>", escape(&value));
    }
    s.push_str("</table>\n");
}

/// Rows without scores, with the reasons the score stage counted.
fn unscored(page: &Page<'_>) -> String {
    let reasons: Vec<String> = page
        .manifest
        .scoring
        .iter()
        .flat_map(|sc| sc.skipped.iter().map(|(reason, n)| format!("{reason}: {n}")))
        .collect();
    match reasons.is_empty() {
        true => format!("{} (never kept, not shown below)", page.scan.unscored),
        false => format!("{} ({}; never kept, not shown below)", page.scan.unscored, reasons.join(", ")),
    }
}

/// The selection in words.
fn selection(plan: &SelectPlan) -> String {
    let order = match plan.order {
        Order::Hard => "highest (hardest) kept",
        Order::Easy => "lowest (easiest) kept",
        Order::Auto => "order auto",
    };
    let how = match plan.strategy {
        Strategy::Score => format!("by {}, {order}", plan.score),
        Strategy::Random => format!("random subset, seed {} (grids ranked by {})", plan.seed, plan.score),
        Strategy::Kcenter => format!("k-center core-set (grids ranked by {})", plan.score),
        Strategy::Ccs => format!(
            "coverage-centric over {}: hardest {:.0}% dropped, {} strata",
            plan.score,
            plan.hard_cutoff * 100.0,
            plan.strata
        ),
        Strategy::Auto => "auto".to_string(),
    };
    let how = match &plan.auto {
        Some(why) => format!("{how} (chosen by --strategy auto: {why})"),
        None => how,
    };
    let balance = match plan.balance {
        Balance::Class => "per class",
        Balance::None => "over all rows",
    };
    format!("keep {} {balance}, {how}", percent(plan.keep))
}

/// The proxy: preset and accuracies, or that the job had none.
fn proxy(m: &Manifest) -> String {
    let Some(p) = &m.proxy else { return "none (selected from existing scores)".to_string() };
    let accuracy = |a: Option<f64>| a.map_or("n/a".to_string(), percent);
    format!(
        "{}: held-out accuracy {}, training accuracy {}, {} epochs",
        p.meta.preset,
        accuracy(p.meta.heldout_accuracy),
        accuracy(p.meta.train_accuracy),
        p.meta.epochs
    )
}

/// Seconds of each stage, in pipeline order.
fn seconds(m: &Manifest) -> String {
    m.seconds.iter().map(|(stage, s)| format!("{stage} {s:.1} s")).collect::<Vec<_>>().join(", ")
}

/// Rows, kept rows and kept fraction of each class.
fn class_table(s: &mut String, page: &Page<'_>) {
    let Some(selection) = &page.manifest.selection else { return };
    s.push_str("<table class=\"classes\"><tr><th>class</th><th class=\"n\">rows</th><th class=\"n\">kept</th><th class=\"n\">kept fraction</th></tr>");
    for c in &selection.per_class {
        let name = c.name.clone().unwrap_or_else(|| class_name(&page.manifest.dataset.classes, c.label));
        let fraction = if c.rows == 0 { 0.0 } else { c.kept as f64 / c.rows as f64 };
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&name),
            c.rows,
            c.kept,
            percent(fraction)
        );
    }
    s.push_str("</table>\n");
}

/// The three plots, each under its heading.
fn plots(s: &mut String, page: &Page<'_>) {
    let classes = page.manifest.dataset.classes.len();
    let more =
        if classes > MAX_CLASSES { format!(" (the first {MAX_CLASSES} of {classes} classes)") } else { String::new() };
    let swatch =
        |colour: RGBColor, what: &str| format!("<span class=\"sw\" style=\"background:{}\"></span>{what}", css(colour));
    let legend = format!("<p>{}{}{more}</p>", swatch(KEPT, "kept"), swatch(PRUNED, "pruned"));
    figure(s, &format!("Scores per class: {}", page.plan.score), &legend, page.histograms);
    figure(s, "Kept fraction per class", &more, page.kept);
    figure(s, "Proxy training curve", "", page.curve);
}

/// One plot with its heading and a line above it (`intro`, HTML).
fn figure(s: &mut String, title: &str, intro: &str, figure: &Figure) {
    let _ = write!(s, "<h2>{}</h2>{intro}", escape(title));
    let _ = match figure {
        Figure::Png(png) => {
            writeln!(s, "<img class=\"plot\" alt=\"{}\" src=\"{}\">", escape(title), data_uri("image/png", png))
        }
        Figure::Absent(why) => writeln!(s, "<p class=\"note\">{}.</p>", escape(why)),
        Figure::Failed(why) => writeln!(s, "<p class=\"note\">No plot, drawing failed: {}.</p>", escape(why)),
    };
}

/// The hardest, easiest and sampled pruned rows.
fn grids(s: &mut String, page: &Page<'_>) {
    let (scan, score) = (page.scan, &page.plan.score);
    let n = scan.hardest.len();
    grid(s, page, "hardest", &format!("Hardest {n} by {score}"), &scan.hardest);
    grid(s, page, "easiest", &format!("Easiest {n} by {score}"), &scan.easiest);
    let title =
        format!("A sample of {} pruned rows (seed {}), hardest first", scan.pruned_sample.len(), page.plan.seed);
    grid(s, page, "pruned", &title, &scan.pruned_sample);
}

/// The label issues: how many per class, and the most likely wrong.
fn label_issues(s: &mut String, page: &Page<'_>) {
    let Some(issues) = &page.manifest.label_issues else { return };
    let classes = &page.manifest.dataset.classes;
    let probabilities = if issues.in_sample {
        "in-sample probabilities: the proxy trained on these rows, so it is overconfident on the ones it memorised"
    } else {
        "out-of-sample probabilities (cross-fitted)"
    };
    let dropped = if issues.dropped { "; never kept (--drop-label-issues)" } else { "" };
    let counted = match (issues.counted_by, issues.heldout_accuracy, issues.heldout_errors) {
        (crate::choices::IssueCount::Heldout, Some(a), Some(n)) => format!(
            "As many rows are flagged as the held-out split says are wrong: held-out accuracy {a:.3} against {:.3} \
             agreement with the given labels estimates {n} label errors.",
            issues.agreement
        ),
        _ => "Each class flags as many rows as its calibrated confident joint counts off the diagonal.".to_string(),
    };
    let _ = write!(
        s,
        "<section id=\"label-issues\"><h2>Label issues: {} rows flagged</h2><p>Confident learning over the proxy's          {probabilities}{dropped}. {counted} In the grid, <i>pred</i> is the class the row confidently belongs to and the score          its <code>label_quality</code> (1 − p(given label)).</p>",
        issues.flagged
    );
    s.push_str(
        "<table class=\"classes\"><tr><th>given label</th><th class=\"n\">rows</th><th class=\"n\">flagged</th><th class=\"n\">joint count</th><th class=\"n\">threshold</th></tr>",
    );
    for c in &issues.per_class {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td></tr>",
            escape(&class_name(classes, Some(c.label))),
            c.rows,
            c.flagged,
            c.joint_errors,
            c.threshold
        );
    }
    s.push_str("</table>");
    let title = format!("The {} most likely wrong", page.label_issues.len());
    let _ = write!(s, "<h3>{}</h3>", escape(&title));
    match page.kind {
        InputKind::Image => image_cards(s, page, page.label_issues, crate::label_issues::LABEL_QUALITY),
        InputKind::Text => text_table(s, page, page.label_issues),
    }
    s.push_str("</section>\n");
}

/// Near-duplicates and leaks: rows per kind, near-duplicates per stricter
/// threshold, and the first pairs of each.
fn duplicates(s: &mut String, page: &Page<'_>) {
    let m = page.manifest;
    if m.near_dups.is_none() && m.leaks.is_none() {
        return;
    }
    let never = |dropped: bool| if dropped { "never kept" } else { "may be kept" };
    s.push_str("<section id=\"duplicates\"><h2>Duplicates</h2><table class=\"classes\"><tr><th>kind</th><th class=\"n\">rows</th><th>how decided</th><th></th></tr>");
    let mut kind = |what: &str, rows: u64, how: String, fate: &str| {
        let _ =
            write!(s, "<tr><td>{what}</td><td class=\"n\">{rows}</td><td>{}</td><td>{fate}</td></tr>", escape(&how));
    };
    let near_how = |hash: &str, threshold: f64| match hash {
        "minhash" => format!("MinHash estimated Jaccard at least {threshold}"),
        _ => format!("perceptual hashes at most {threshold} bits apart"),
    };
    if let Some(n) = &m.near_dups {
        let how = format!(
            "{} ({} components; the first row of each is not flagged)",
            near_how(&n.hash, n.threshold),
            n.components
        );
        let fate = match n.dropped {
            crate::choices::NearDupDrop::None => never(false),
            crate::choices::NearDupDrop::All => never(true),
            crate::choices::NearDupDrop::Label => "never kept beside an earlier row of its label",
        };
        kind("near duplicates", n.flagged, how, fate);
    }
    if let Some(d) = m.global.as_ref().and_then(|g| g.duplicates) {
        kind("semantic duplicates", d, "SemDeDup on the embeddings (--dedup)".into(), "never kept");
    }
    if let (Some(l), Some(n)) = (&m.leaks, &m.near_dups) {
        let against = format!("of the {} evaluation rows ({}; {} of them leaked)", l.rows, l.against, l.leaked);
        kind("leaks: exact", l.exact, format!("the same content hash as one {against}"), never(l.dropped));
        kind("leaks: near", l.near, format!("{} to one {against}", near_how(&n.hash, n.threshold)), never(l.dropped));
        if let Some(eps) = m.config.select.as_ref().and_then(|p| p.leaks.semantic) {
            let how = format!("embedding cosine similarity above {} with one {against}", 1.0 - eps);
            kind("leaks: semantic", l.semantic, how, never(l.dropped));
        }
    }
    s.push_str("</table>");
    if let Some(n) = m.near_dups.as_ref().filter(|n| !n.by_threshold.is_empty()) {
        let measure = if n.hash == "minhash" { "Jaccard at least" } else { "bits at most" };
        let _ = write!(s, "<h3>Near duplicates by threshold</h3><p class=\"note\">What a stricter threshold on <code>near_dup_{}</code> leaves flagged (re-decide with <code>sieve select --scores</code>).</p><table class=\"classes\"><tr><th>{measure}</th><th class=\"n\">rows</th><th></th></tr>", if n.hash == "minhash" { "jaccard" } else { "bits" });
        let most = n.by_threshold.iter().map(|t| t.1).max().unwrap_or(0).max(1);
        for (threshold, rows) in &n.by_threshold {
            let width = 240 * rows / most;
            let _ = write!(s, "<tr><td>{threshold}</td><td class=\"n\">{rows}</td><td><span class=\"sw\" style=\"width:{width}px;margin:0;background:{}\"></span></td></tr>", css(KEPT));
        }
        s.push_str("</table>");
    }
    let (rows, payloads, evaluation) = (page.original_rows, page.payloads, page.evaluation);
    let original = |p: &Pair| rows.get(&p.of).and_then(|pos| payloads.get(pos));
    pairs(s, page, "near duplicates", "the earlier row it duplicates", &page.duplicates.near, original);
    let leaked = |p: &Pair| evaluation.get(&p.of);
    pairs(s, page, "leaks", "the evaluation row it duplicates", &page.duplicates.leaks, leaked);
    s.push_str("</section>\n");
}

/// The first `pairs` of a kind: each training row beside the row it
/// duplicates (`other`'s payload), with the other's id and the evidence.
fn pairs<'a>(
    s: &mut String,
    page: &Page<'a>,
    what: &str,
    other_is: &str,
    pairs: &[Pair],
    other: impl Fn(&Pair) -> Option<&'a Vec<u8>>,
) {
    if pairs.is_empty() {
        return;
    }
    let _ = write!(s, "<h3>The first {} {what}, each beside {other_is}</h3>", pairs.len());
    let shown = |bytes: Option<&Vec<u8>>| -> String {
        let bytes = bytes.map_or(&[][..], Vec::as_slice);
        match page.kind {
            InputKind::Image => match image_mime(bytes) {
                Some(mime) => format!("<img alt=\"\" src=\"{}\">", data_uri(mime, bytes)),
                None => "<p class=\"note\">(not shown)</p>".to_string(),
            },
            InputKind::Text => escape(&truncate(&String::from_utf8_lossy(bytes), TEXT_CHARS)),
        }
    };
    let evidence = |p: &Pair| match (p.kind.as_deref(), page.kind) {
        (Some("exact"), _) => "exact copy".to_string(),
        (Some(kind), InputKind::Image) => format!("{kind}, {} bits", p.evidence),
        (Some(kind), InputKind::Text) => format!("{kind}, distance {:.3}", p.evidence),
        (None, InputKind::Image) => format!("{} bits", p.evidence),
        (None, InputKind::Text) => format!("Jaccard {:.3}", p.evidence),
    };
    match page.kind {
        InputKind::Image => {
            s.push_str("<div class=\"cards\">");
            for p in pairs {
                let _ = write!(s, "<figure class=\"pair\" data-row=\"{pos}\"><div>{}{}</div><figcaption>row {pos}, of id {}<br>{}</figcaption></figure>", shown(page.payloads.get(&p.pos)), shown(other(p)), escape(&p.of), escape(&evidence(p)), pos = p.pos);
            }
            s.push_str("</div>");
        }
        InputKind::Text => {
            s.push_str("<table class=\"examples\"><tr><th class=\"n\">row</th><th>text</th><th>of</th><th>its text</th><th>evidence</th></tr>");
            for p in pairs {
                let _ = write!(s, "<tr data-row=\"{pos}\"><td class=\"n\">{pos}</td><td class=\"t\">{}</td><td>{}</td><td class=\"t\">{}</td><td>{}</td></tr>", shown(page.payloads.get(&p.pos)), escape(&p.of), shown(other(p)), escape(&evidence(p)), pos = p.pos);
            }
            s.push_str("</table>");
        }
    }
}

/// One grid: image cards or a table of texts, in a section with `id`.
fn grid(s: &mut String, page: &Page<'_>, id: &str, title: &str, rows: &[Scored]) {
    let _ = write!(s, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
    if rows.is_empty() {
        s.push_str("<p class=\"note\">No rows.</p>");
    }
    match page.kind {
        InputKind::Image => image_cards(s, page, rows, &page.plan.score.to_string()),
        InputKind::Text => text_table(s, page, rows),
    }
    s.push_str("</section>\n");
}

/// Label, prediction (flagged when it differs) and score of a row.
fn facts(page: &Page<'_>, row: &Scored) -> (String, String, String) {
    let classes = &page.manifest.dataset.classes;
    let label = escape(&class_name(classes, row.label));
    let pred = escape(&class_name(classes, row.pred));
    let pred = if row.pred == row.label { pred } else { format!("<span class=\"wrong\">{pred}</span>") };
    (label, pred, format!("{:.4}", row.score))
}

/// Image cards of `rows`, each captioned with its label, prediction and
/// score (named `score_name`).
fn image_cards(s: &mut String, page: &Page<'_>, rows: &[Scored], score_name: &str) {
    s.push_str("<div class=\"cards\">");
    for row in rows {
        let (label, pred, score) = facts(page, row);
        let bytes = page.payloads.get(&row.pos).map_or(&[][..], Vec::as_slice);
        let img = match image_mime(bytes) {
            Some(mime) => format!("<img alt=\"row {}\" src=\"{}\">", row.pos, data_uri(mime, bytes)),
            None => "<p class=\"note\">(not a PNG or JPEG)</p>".to_string(),
        };
        let _ = write!(
            s,
            "<figure data-row=\"{}\">{img}<figcaption>label {label}<br>pred {pred}<br>{} {score}<br>row {}</figcaption></figure>",
            row.pos,
            escape(score_name),
            row.pos
        );
    }
    s.push_str("</div>");
}

fn text_table(s: &mut String, page: &Page<'_>, rows: &[Scored]) {
    s.push_str("<table class=\"examples\"><tr><th class=\"n\">row</th><th>text</th><th>label</th><th>predicted</th><th class=\"n\">score</th></tr>");
    for row in rows {
        let (label, pred, score) = facts(page, row);
        let text = page.payloads.get(&row.pos).map(|b| String::from_utf8_lossy(b)).unwrap_or_default();
        let _ = write!(
            s,
            "<tr data-row=\"{pos}\"><td class=\"n\">{pos}</td><td class=\"t\">{}</td><td>{label}</td><td>{pred}</td><td class=\"n\">{score}</td></tr>",
            escape(&truncate(&text, TEXT_CHARS)),
            pos = row.pos
        );
    }
    s.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(escape(r#"<b a="x">it 's & more</b>"#), "&lt;b a=&quot;x&quot;&gt;it &#39;s &amp; more&lt;/b&gt;");
    }

    #[test]
    fn truncate_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(truncate("héllo wörld", 5), "héllo…");
        assert_eq!(truncate("short", 5), "short");
    }

    #[test]
    fn image_mime_reads_the_magic_number() {
        assert_eq!(image_mime(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(image_mime(b"GIF89a"), None);
    }
}
