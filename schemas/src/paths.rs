//! Turns what a user types as input (a Parquet file, a directory or a glob)
//! into the sorted list of files to read. Sorting makes the row order, and so
//! every position-based example id, the same on every run.

use std::path::{Path, PathBuf};

use crate::error::{Result, SchemaError};

/// Expands `pattern` into Parquet files, sorted by path.
///
/// A directory yields the `*.parquet` files below it (recursively, as the
/// Hugging Face exports nest them per split); a pattern with `*`, `?` or `[`
/// is a glob; anything else must be an existing file.
pub fn resolve_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let mut files = if path.is_dir() {
        let mut found = Vec::new();
        walk_parquet(path, &mut found);
        found
    } else if pattern.contains(['*', '?', '[']) {
        let paths = glob::glob(pattern)
            .map_err(|e| SchemaError::BadGlob { pattern: pattern.to_string(), message: e.to_string() })?;
        paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    };
    files.sort();
    if files.is_empty() {
        return Err(SchemaError::NoFiles { pattern: pattern.to_string() });
    }
    Ok(files)
}

/// Collects `*.parquet` files under `dir`; unreadable entries are skipped, as
/// `find` would, because the empty result is reported by the caller.
fn walk_parquet(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk_parquet(&p, out);
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn file_directory_and_glob_resolve_to_sorted_parquet_files() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), "b.parquet");
        touch(tmp.path(), "a.parquet");
        touch(tmp.path(), "sub/c.parquet");
        touch(tmp.path(), "notes.txt");
        let dir = tmp.path().to_str().unwrap();
        let all = resolve_files(dir).unwrap();
        let names: Vec<_> = all.iter().map(|p| p.strip_prefix(tmp.path()).unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["a.parquet", "b.parquet", "sub/c.parquet"]);
        assert_eq!(resolve_files(&format!("{dir}/*.parquet")).unwrap().len(), 2);
        assert_eq!(resolve_files(&format!("{dir}/a.parquet")).unwrap().len(), 1);
    }

    #[test]
    fn nothing_matching_is_an_error_naming_the_pattern() {
        let err = resolve_files("/nonexistent/*.parquet").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/*.parquet"), "{err}");
    }
}
