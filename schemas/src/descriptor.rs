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

/// The descriptors built into the binary, so `--dataset NAME` works from
/// any directory: name and TOML text of each file of `schemas/datasets/`.
pub const BUILTIN: [(&str, &str); 4] = [
    ("cifar10", include_str!("../datasets/cifar10.toml")),
    ("reviews", include_str!("../datasets/reviews.toml")),
    ("shapes", include_str!("../datasets/shapes.toml")),
    ("sst2", include_str!("../datasets/sst2.toml")),
];

/// Where the built-in descriptors live in the source tree: the fixtures'
/// descriptors name their files relative to it.
const BUILTIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets");

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
        let text = std::fs::read_to_string(path)
            .map_err(|source| SchemaError::ReadDescriptor { path: path.to_path_buf(), source })?;
        let mut d = Self::parse(&text, path)?;
        d.source_dir = path.parent().map(Path::to_path_buf);
        Ok(d)
    }

    /// Parses a descriptor's TOML text; `path` names it in errors.
    fn parse(text: &str, path: &Path) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| SchemaError::InvalidDescriptor { path: path.to_path_buf(), message: e.to_string() })
    }

    /// The built-in descriptor `name`, if sieve ships one. Its files resolve
    /// against `--data-dir`, or (the fixtures) against the descriptor
    /// directory of the source tree this binary was built from.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let dir = Path::new(BUILTIN_DIR);
        Some(Self::parse(text, &dir.join(format!("{name}.toml"))).map(|mut d| {
            d.source_dir = Some(dir.to_path_buf());
            d
        }))
    }

    /// Finds the descriptor `name`: `<user_dir>/<name>.toml` when the user
    /// gave a directory of their own and it holds one, else the built-in
    /// one; lists every known name when neither exists.
    pub fn find(user_dir: Option<&Path>, name: &str) -> Result<Self> {
        if let Some(dir) = user_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                return Self::from_file(&path);
            }
        }
        if let Some(d) = Self::builtin(name) {
            return d;
        }
        let mut known: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        let listed = user_dir.and_then(|dir| std::fs::read_dir(dir).ok()).into_iter().flatten().flatten();
        known.extend(listed.filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        }));
        known.sort();
        known.dedup();
        let searched = match user_dir {
            Some(dir) => format!("not built in, and no {}/{name}.toml", dir.display()),
            None => "not built in (--datasets-dir adds a directory of your own)".to_string(),
        };
        Err(SchemaError::UnknownDataset { name: name.to_string(), searched, known: known.join(", ") })
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
        let d = DatasetDescriptor::find(Some(tmp.path()), "toy").unwrap();
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
        let err = DatasetDescriptor::find(Some(tmp.path()), "b").unwrap_err().to_string();
        assert!(err.contains("known: a, cifar10, reviews, shapes, sst2"), "{err}");
    }

    #[test]
    fn a_users_descriptor_comes_before_the_built_in_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("sst2.toml"),
            "name = \"sst2\"\nkind = \"text\"\ninput = \"text\"\nlabel = \"y\"\ntrain = \"mine.parquet\"\n",
        )
        .unwrap();
        assert_eq!(DatasetDescriptor::find(Some(tmp.path()), "sst2").unwrap().input, "text");
        assert_eq!(DatasetDescriptor::find(None, "sst2").unwrap().input, "sentence");
        assert_eq!(DatasetDescriptor::find(Some(tmp.path()), "cifar10").unwrap().input, "img");
    }

    #[test]
    fn every_shipped_descriptor_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let d = DatasetDescriptor::from_file(&path).unwrap();
            assert_eq!(Some(d.name.as_str()), path.file_stem().and_then(|s| s.to_str()));
            let builtin = DatasetDescriptor::builtin(&d.name).expect("built in").unwrap();
            assert_eq!(builtin, d, "the built-in {} equals its file", d.name);
            names.push(d.name);
        }
        names.sort();
        assert_eq!(names, BUILTIN.map(|(n, _)| n.to_string()));
    }
}
