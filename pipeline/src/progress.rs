//! Progress bars for the stages that take more than a second; `--quiet`
//! hides them all.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` items named `stage`, or a hidden one when `quiet`.
pub fn bar(stage: &str, total: u64, unit: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{{prefix:>8}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    bar.set_prefix(stage.to_string());
    bar
}
