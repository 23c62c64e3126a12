//! `--config job.toml`: any flag of a subcommand can come from a TOML file,
//! and flags given on the command line override it. Keys are the long flag
//! names (`keep`, `balance`, `data_dir` or `data-dir`, ...); `true` turns a
//! switch on, `false` leaves it off:
//!
//! ```toml
//! dataset = "cifar10"
//! data_dir = "/data"
//! keep = 0.5
//! balance = "class"
//! quiet = true
//! ```
//!
//! The file is expanded into flags placed before the command line's own, and
//! clap lets the last occurrence of a flag win, so the command line overrides.
//! The manifest records the effective configuration.

use std::ffi::OsString;

use crate::error::{io_err, PipelineError, Result};

/// Replaces `--config FILE` (or `--config=FILE`) in `args` by the flags the
/// file holds, inserted right after the subcommand.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(at) = args.iter().position(|a| a == "--config" || a.to_string_lossy().starts_with("--config=")) else {
        return Ok(args);
    };
    let mut args = args;
    let flag = args.remove(at).to_string_lossy().into_owned();
    let path = match flag.strip_prefix("--config=") {
        Some(path) => path.to_string(),
        None if at < args.len() => args.remove(at).to_string_lossy().into_owned(),
        None => return Err(PipelineError::Usage("--config needs a file".into())),
    };
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| PipelineError::Usage(format!("invalid config {path}: {e}")))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let name = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(name),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([name, s]),
            toml::Value::Integer(i) => flags.extend([name, i.to_string()]),
            toml::Value::Float(f) => flags.extend([name, f.to_string()]),
            other => {
                return Err(PipelineError::Usage(format!(
                    "config {path}: '{key}' must be a string, number or boolean, not {}",
                    other.type_str()
                )))
            }
        }
    }
    // After the program and the subcommand, before the command line's flags.
    let insert = args.len().min(2);
    args.splice(insert..insert, flags.into_iter().map(OsString::from));
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_becomes_flags_before_the_command_lines_own() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("job.toml");
        std::fs::write(&path, "dataset = \"shapes\"\nkeep = 0.3\nquiet = true\nthreads = 2\nseed_free = false\n")
            .unwrap();
        let args: Vec<OsString> = ["sieve", "prune", "--config", path.to_str().unwrap(), "--keep", "0.5"]
            .iter()
            .map(OsString::from)
            .collect();
        let out: Vec<String> = expand(args).unwrap().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            out,
            ["sieve", "prune", "--dataset", "shapes", "--keep", "0.3", "--quiet", "--threads", "2", "--keep", "0.5"]
        );
    }

    #[test]
    fn tables_and_arrays_are_rejected_with_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("job.toml");
        std::fs::write(&path, "keep = [0.5]\n").unwrap();
        let args = vec![
            OsString::from("sieve"),
            OsString::from("prune"),
            OsString::from(format!("--config={}", path.display())),
        ];
        let err = expand(args).unwrap_err().to_string();
        assert!(err.contains("'keep'"), "{err}");
    }
}
