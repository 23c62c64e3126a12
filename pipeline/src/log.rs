//! Log lines on stderr, for people (`--log-format text`, the default) or for
//! batch schedulers (`--log-format json`: one JSON object per line with
//! `ts`, `level`, `stage`, `message` and the event's figures). `--quiet`
//! silences the informational lines; errors are always written.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{json, Value};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `sieve: <stage>: <message> (key=value ...)`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

static SETTINGS: OnceLock<(LogFormat, bool)> = OnceLock::new();

/// Sets the format and quietness for the process; the first call wins.
/// The libraries' own log records (Ballista's, DataFusion's) come out as
/// sieve's lines too: warnings and errors always, Ballista's informational
/// ones unless `quiet`, under the stage `ballista`.
pub fn init(format: LogFormat, quiet: bool) {
    let _ = SETTINGS.set((format, quiet));
    if ::log::set_logger(&LIBRARIES).is_ok() {
        ::log::set_max_level(if quiet { ::log::LevelFilter::Warn } else { ::log::LevelFilter::Info });
    }
}

/// The `log` crate's records of the libraries sieve runs, as sieve's lines.
struct Libraries;

static LIBRARIES: Libraries = Libraries;

impl ::log::Log for Libraries {
    fn enabled(&self, meta: &::log::Metadata) -> bool {
        meta.level() <= ::log::Level::Warn || meta.target().starts_with("ballista")
    }

    fn log(&self, record: &::log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            write(&level, "ballista", &record.args().to_string(), json!({"target": record.target()}));
        }
    }

    fn flush(&self) {}
}

fn write(level: &str, stage: &str, message: &str, fields: Value) {
    let (format, _) = SETTINGS.get().copied().unwrap_or_default();
    let line = match format {
        LogFormat::Json => {
            let ts =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let mut event = json!({"ts": ts, "level": level, "stage": stage, "message": message});
            if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
                event.extend(fields);
            }
            event.to_string()
        }
        LogFormat::Text => {
            let details: Vec<String> = match fields {
                Value::Object(fields) => fields.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                _ => Vec::new(),
            };
            let details = if details.is_empty() { String::new() } else { format!(" ({})", details.join(", ")) };
            format!("sieve: {stage}: {message}{details}")
        }
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// An informational event of `stage` with its figures (a JSON object).
pub fn info(stage: &str, message: &str, fields: Value) {
    if !SETTINGS.get().is_some_and(|&(_, quiet)| quiet) {
        write("info", stage, message, fields);
    }
}

/// An error, with its fields (a JSON object, or null).
pub fn error(message: &str, fields: Value) {
    write("error", "error", message, fields);
}
