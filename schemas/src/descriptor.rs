//! Dataset descriptors: one TOML file per dataset under `schemas/datasets/`,
//! naming the files of each split and the role of each column, so that
//! `sieve prune --dataset cifar10` needs no other flag.
//!
//! ```toml
//! name = "cifar10"
//! kind = "image"              # image | text
//! input = "img"               # the column the proxy reads
//! label = "label"
//! # id = "idx"                # optional; else the row's position is its id
//! train = "cifar10/train.parquet"    # file, directory or glob
//! heldout = "cifar10/test.parquet"   # only used to report proxy accuracy
//! # root = "descriptor"       # paths relative to this file, not DATA_DIR
//! [defaults]                  # optional per-dataset defaults of CLI flags
//! proxy = "resnet8"
//! epochs = 4
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::columns::InputKind;
use crate::error::{Result, SchemaError};

/// Which files a split's path is relative to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Root {
    /// The `DATA_DIR` given on the command line (real datasets).
    #[default]
    DataDir,
    /// The directory holding the descriptor (the repository's fixtures).
    Descriptor,
}

/// Per-dataset defaults for flags the user did not give.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Proxy architecture preset, e.g. `resnet8` or `fasttext`.
    pub proxy: Option<String>,
    /// Proxy training epochs.
    pub epochs: Option<usize>,
    /// Training mini-batch size.
    pub batch_size: Option<usize>,
}

/// A dataset descriptor as written in `schemas/datasets/<name>.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDescriptor {
    /// The dataset's name, used for `--dataset` and the output directory.
    pub name: String,
    /// Whether the input column holds images or text.
    pub kind: InputKind,
    /// The column the proxy reads.
    pub input: String,
    /// The class label column (integer class index).
    pub label: String,
    /// An optional stable id column; without it the row position is the id.
    #[serde(default)]
    pub id: Option<String>,
    /// The training split: the rows that are scored and pruned.
    pub train: String,
    /// The held-out split, used only to report the proxy's accuracy.
    #[serde(default)]
    pub heldout: Option<String>,
    /// What `train` and `heldout` are relative to.
    #[serde(default)]
    pub root: Root,
    /// Defaults for flags the user leaves out.
    #[serde(default)]
    pub defaults: Defaults,
    /// The directory the descriptor was read from (not part of the file).
    #[serde(skip)]
    pub source_dir: Option<PathBuf>,
}

/// One of a dataset's splits, as far as sieve uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Scored and pruned.
    Train,
    /// Only for the proxy's held-out accuracy.
    Heldout,
}

impl DatasetDescriptor {
    /// Parses a descriptor file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::ReadDescriptor {
            path: path.to_path_buf(),
            source,
        })?;
        let mut d: Self = toml::from_str(&text).map_err(|e| SchemaError::InvalidDescriptor {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        d.source_dir = path.parent().map(Path::to_path_buf);
        Ok(d)
    }

    /// Finds `<dir>/<name>.toml`, listing the known names when it is absent.
    pub fn find(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.toml"));
        if path.is_file() {
            return Self::from_file(&path);
        }
        let mut known: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
            })
            .collect();
        known.sort();
        Err(SchemaError::UnknownDataset {
            name: name.to_string(),
            dir: dir.display().to_string(),
            known: known.join(", "),
        })
    }

    /// The path, directory or glob of a split, made absolute against
    /// `data_dir` or the descriptor's directory; `None` for a missing split.
    pub fn split_pattern(&self, split: Split, data_dir: &Path) -> Option<String> {
        let rel = match split {
            Split::Train => Some(&self.train),
            Split::Heldout => self.heldout.as_ref(),
        }?;
        let base = match self.root {
            Root::DataDir => data_dir.to_path_buf(),
            Root::Descriptor => self.source_dir.clone().unwrap_or_default(),
        };
        Some(base.join(rel).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_parses_and_resolves_splits_against_its_root() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("toy.toml");
        std::fs::write(
            &path,
            "name = \"toy\"\nkind = \"text\"\ninput = \"sentence\"\nlabel = \"label\"\n\
             train = \"toy/train.parquet\"\nroot = \"descriptor\"\n[defaults]\nepochs = 3\n",
        )
        .unwrap();
        let d = DatasetDescriptor::find(tmp.path(), "toy").unwrap();
        assert_eq!(d.kind, InputKind::Text);
        assert_eq!(d.defaults.epochs, Some(3));
        let train = d.split_pattern(Split::Train, Path::new("/data")).unwrap();
        assert_eq!(train, tmp.path().join("toy/train.parquet").to_string_lossy());
        assert!(d.split_pattern(Split::Heldout, Path::new("/data")).is_none());
    }

    #[test]
    fn unknown_dataset_lists_the_known_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.toml"), "").unwrap();
        let err = DatasetDescriptor::find(tmp.path(), "b").unwrap_err().to_string();
        assert!(err.contains("known: a"), "{err}");
    }

    #[test]
    fn the_shipped_descriptors_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let d = DatasetDescriptor::from_file(&path).unwrap();
            assert_eq!(Some(d.name.as_str()), path.file_stem().and_then(|s| s.to_str()));
        }
    }
}
