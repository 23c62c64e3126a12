//! Turns command-line flags into a `Plan` the stages run: descriptor read,
//! files resolved and checked, column roles and class names known, defaults
//! filled in and every value validated. Stages never see clap types.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use serde::{Deserialize, Serialize};
use sieve_proxy::device::{DeviceChoice, Precision};
use sieve_proxy::recipe::{Overrides, Recipe, DEFAULT_IMAGE_PRESET, FASTTEXT};
use sieve_schemas::columns::{check_label, require};
use sieve_schemas::descriptor::Defaults;
use sieve_schemas::{huggingface, DatasetDescriptor, InputKind, ScoreName, Split};

use crate::choices::{Balance, IssueCount, OnError, Order, Prototypes, Strategy};
use crate::error::{PipelineError, Result};
use crate::input::InputFiles;

/// The dataset a job reads, resolved.
#[derive(Clone, Debug)]
pub struct DatasetPlan {
    /// Its name (the descriptor's, or the input's file stem).
    pub name: String,
    /// Image or text.
    pub kind: InputKind,
    /// The column the proxy reads.
    pub input_column: String,
    /// The integer label column.
    pub label_column: String,
    /// The id column, if the dataset has one.
    pub id_column: Option<String>,
    /// The rows to score and prune.
    pub train: Arc<InputFiles>,
    /// Rows for the proxy's held-out accuracy.
    pub heldout: Option<Arc<InputFiles>>,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Per-dataset defaults from the descriptor.
    pub defaults: Defaults,
    /// Where the `embedding` column comes from.
    pub embedding: Embedding,
    /// The training rows, when a proxy trains on only some of `train`
    /// (active learning's labeled set); `None` = all.
    pub subset: Option<Arc<RowSet>>,
    /// Score without labels, as if the rows had none (active learning's pool).
    pub hide_labels: bool,
}

/// A set of input positions, one bit per row of the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowSet {
    bits: Vec<u64>,
    len: u64,
}

impl RowSet {
    /// An empty set over `rows` positions.
    pub fn new(rows: u64) -> Self {
        Self { bits: vec![0; rows.div_ceil(64) as usize], len: 0 }
    }

    /// Adds `pos` (which must be below the row count given to `new`).
    pub fn insert(&mut self, pos: u64) {
        let (word, bit) = ((pos / 64) as usize, 1u64 << (pos % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.len += 1;
        }
    }

    /// Whether `pos` is in the set.
    pub fn contains(&self, pos: u64) -> bool {
        self.bits.get((pos / 64) as usize).is_some_and(|w| w & (1u64 << (pos % 64)) != 0)
    }

    /// Positions in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A hash of the positions in the set (and the row count it is over),
    /// naming a job's result on exactly these rows.
    pub fn fingerprint(&self) -> u64 {
        let bytes: Vec<u8> = self.bits.iter().flat_map(|w| w.to_le_bytes()).collect();
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

/// Where a dataset's rows come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetSource {
    /// A dataset descriptor: built in, or in `datasets_dir`; its split
    /// patterns are relative to `data_dir`.
    Named {
        /// The descriptor's name.
        name: String,
        /// A directory of descriptors of the user's own.
        datasets_dir: Option<PathBuf>,
        /// Where the descriptor's splits live.
        data_dir: PathBuf,
    },
    /// Files, a directory or a glob, with the column roles spelled out.
    Files {
        /// The training split.
        train: String,
        /// A held-out split, for the proxy's accuracy.
        heldout: Option<String>,
        /// What the input column holds.
        kind: InputKind,
        /// The input column.
        input_column: String,
        /// The label column.
        label_column: String,
    },
}

impl DatasetPlan {
    /// The dataset `source` names, its files opened and their columns checked;
    /// `id_column` (else the descriptor's) names the example ids.
    pub fn new(source: &DatasetSource, id_column: Option<String>) -> Result<Self> {
        let (name, kind, input_column, label_column, id_column, train, heldout, defaults) = match source {
            DatasetSource::Named { name, datasets_dir, data_dir } => {
                let d = DatasetDescriptor::find(datasets_dir.as_deref(), name)?;
                let train = d.split_pattern(Split::Train, data_dir).expect("train is required");
                let heldout = d.split_pattern(Split::Heldout, data_dir);
                let id = id_column.or(d.id);
                (d.name, d.kind, d.input, d.label, id, train, heldout, d.defaults)
            }
            DatasetSource::Files { train, heldout, kind, input_column, label_column } => {
                let name = std::path::Path::new(train.trim_end_matches(['/', '*']))
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("dataset")
                    .to_string();
                let (input, label) = (input_column.clone(), label_column.clone());
                (name, *kind, input, label, id_column, train.clone(), heldout.clone(), Defaults::default())
            }
        };
        let train = Arc::new(InputFiles::open(&train)?);
        if train.total_rows() == 0 {
            return Err(PipelineError::Data {
                path: train.files[0].path.clone(),
                reason: "the training split has no rows".into(),
            });
        }
        let heldout = heldout.map(|h| InputFiles::open(&h).map(Arc::new)).transpose()?;
        for files in std::iter::once(&train).chain(heldout.as_ref()) {
            check_columns(files, kind, &input_column, Some(&label_column))?;
        }
        if let Some(id) = &id_column {
            require(&train.schema, id, "id", &train.files[0].path.display().to_string())?;
        }
        let classes = match huggingface::class_names(train.schema.metadata(), &label_column)? {
            Some(names) => names,
            None => (0..max_label(&train, &label_column)? + 1).map(|k| k.to_string()).collect(),
        };
        Ok(Self {
            name,
            kind,
            input_column,
            label_column,
            id_column,
            train,
            heldout,
            classes,
            defaults,
            embedding: Embedding::Proxy,
            subset: None,
            hide_labels: false,
        })
    }
}

/// The largest label in the files, for datasets without class names.
/// Where the embeddings that prototypes, k-center and SemDeDup work on come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Embedding {
    /// The proxy's penultimate features.
    Proxy,
    /// A pretrained text encoder in this directory.
    Encoder(PathBuf),
}

/// The encoder `--embedding auto` uses for text when `make models` fetched it.
pub const DEFAULT_ENCODER: &str = "models/all-MiniLM-L6-v2";

/// The static model `--embedding static` reads: [`DEFAULT_ENCODER`]
/// distilled by `make models` (`sieve distill`).
pub const DEFAULT_STATIC: &str = "models/all-MiniLM-L6-v2-static";

impl Embedding {
    /// Resolves `--embedding auto|proxy|DIR`. `auto` takes the default
    /// encoder for text when it is present and `needed` (a method of this run
    /// reads embeddings); otherwise the proxy's features.
    pub fn resolve(choice: &str, kind: InputKind, needed: bool) -> Result<Self> {
        match choice {
            "proxy" => Ok(Self::Proxy),
            "static" if kind == InputKind::Text => Self::resolve(DEFAULT_STATIC, kind, needed),
            "auto" => {
                let dir = PathBuf::from(DEFAULT_ENCODER);
                let use_it = needed && kind == InputKind::Text && dir.join("model.safetensors").is_file();
                Ok(if use_it { Self::Encoder(dir) } else { Self::Proxy })
            }
            dir if kind == InputKind::Text => {
                let dir = PathBuf::from(dir);
                if !dir.join("model.safetensors").is_file() {
                    return Err(PipelineError::Usage(format!(
                        "--embedding {}: no model.safetensors there (`make models` fetches all-MiniLM-L6-v2 into {DEFAULT_ENCODER} and distils it into {DEFAULT_STATIC})",
                        dir.display()
                    )));
                }
                Ok(Self::Encoder(dir))
            }
            _ => Err(PipelineError::Usage(
                "--embedding DIR names a text encoder; image datasets use the proxy's features (auto or proxy)".into(),
            )),
        }
    }
}

/// Checks that `files` have the input column, of a type `kind` reads, and
/// (when given) an integer label column.
pub fn check_columns(files: &InputFiles, kind: InputKind, input: &str, label: Option<&str>) -> Result<()> {
    let file = files.files[0].path.display().to_string();
    kind.check(input, require(&files.schema, input, "input", &file)?.data_type())?;
    if let Some(label) = label {
        check_label(label, require(&files.schema, label, "label", &file)?.data_type())?;
    }
    Ok(())
}

impl DatasetPlan {
    /// The same dataset with its training split replaced by `pattern`'s
    /// files (checked for the input and label columns).
    pub fn with_train(self, pattern: &str) -> Result<Self> {
        let train = Arc::new(InputFiles::open(pattern)?);
        check_columns(&train, self.kind, &self.input_column, Some(&self.label_column))?;
        Ok(Self { train, subset: None, ..self })
    }

    /// The same dataset with training limited to `rows` (all rows when `None`).
    pub fn with_subset(&self, rows: Option<&RowSet>) -> Self {
        Self { subset: rows.map(|r| Arc::new(r.clone())), ..self.clone() }
    }

    /// Rows the proxy trains on: the subset's, else every training row.
    pub fn train_rows(&self) -> u64 {
        self.subset.as_ref().map_or(self.train.total_rows(), |s| s.len())
    }
}

fn max_label(files: &InputFiles, label: &str) -> Result<usize> {
    let mut best = 0i64;
    files.for_each_batch(&files.chunks(), Some(&[label.to_string()]), |batch| {
        let labels = cast(batch.column(0), &DataType::Int64)?;
        best = best.max(max(labels.as_primitive::<Int64Type>()).unwrap_or(0));
        Ok(())
    })?;
    Ok(best.max(0) as usize)
}

/// How to train the proxy: a preset, what the user changed about it, and
/// the recipe the two make ([`Recipe`], recorded in `proxy.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainPlan {
    /// Architecture preset.
    pub preset: String,
    /// The user's changes to the preset's recipe (`None`: the recipe's).
    #[serde(flatten)]
    pub overrides: Overrides,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// The preset's recipe with the overrides applied.
    pub recipe: Recipe,
}

impl TrainPlan {
    /// The plan for `preset` (default: the dataset's, else the input kind's)
    /// with `overrides` (where `None`, the dataset descriptor's defaults).
    pub fn new(preset: Option<String>, overrides: Overrides, seed: u64, dataset: &DatasetPlan) -> Result<Self> {
        let d = &dataset.defaults;
        let preset = preset.or_else(|| d.proxy.clone()).unwrap_or_else(|| {
            match dataset.kind {
                InputKind::Image => DEFAULT_IMAGE_PRESET,
                InputKind::Text => FASTTEXT,
            }
            .to_string()
        });
        if (preset == FASTTEXT) != (dataset.kind == InputKind::Text) {
            return Err(PipelineError::Usage(format!("proxy '{preset}' cannot read {:?} input", dataset.kind)));
        }
        let overrides = Overrides {
            epochs: overrides.epochs.or(d.epochs),
            batch_size: overrides.batch_size.or(d.batch_size),
            ..overrides
        };
        let recipe =
            Recipe::new(&preset, dataset.classes.len(), &overrides).map_err(|e| PipelineError::Usage(e.to_string()))?;
        Ok(Self { preset, overrides, seed, recipe })
    }

    /// This plan with other overrides or another seed (the recipe rebuilt).
    pub fn with(&self, overrides: Overrides, seed: u64, dataset: &DatasetPlan) -> Result<Self> {
        Self::new(Some(self.preset.clone()), overrides, seed, dataset)
    }
}

/// How to select rows from the scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SelectPlan {
    /// Fraction of valid rows kept, in (0, 1].
    pub keep: f64,
    /// Score column ranked by.
    pub score: ScoreName,
    /// Which end is kept.
    pub order: Order,
    /// Per-class quotas or not.
    pub balance: Balance,
    /// Score ranking or the random baseline.
    pub strategy: Strategy,
    /// `ccs`: fraction of the hardest rows dropped before stratifying.
    #[serde(default)]
    pub hard_cutoff: f64,
    /// `ccs`: strata of equal score width.
    #[serde(default = "default_strata")]
    pub strata: usize,
    /// Rows confident learning flags as label errors are never kept.
    #[serde(default)]
    pub drop_label_issues: bool,
    /// How confident learning counts the label errors.
    #[serde(default = "default_issue_count")]
    pub issue_count: IssueCount,
    /// With `--strategy auto`: what its rule chose, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    /// Seed of the random baseline, k-means and k-center.
    pub seed: u64,
    /// Kept rows per output file.
    pub rows_per_file: usize,
    /// k-means clusters for the prototype score.
    pub clusters: Option<usize>,
    /// Prototypes over all rows or per class.
    pub prototypes: Prototypes,
    /// SemDeDup threshold.
    pub dedup: Option<f64>,
    /// Near-duplicates: how near, and whether all of a component are kept.
    #[serde(default)]
    pub near_dup: NearDupPlan,
    /// Leaks: which evaluation rows the training rows are checked against,
    /// and whether a leaking row may be kept.
    #[serde(default)]
    pub leaks: LeakPlan,
    /// Data schedule spec.
    pub schedule: Option<String>,
    /// Order of entry into the schedule.
    pub schedule_order: crate::choices::ScheduleOrder,
    /// Whether `prune` and `select` write report.html.
    pub report: bool,
}

/// How near two rows must be.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearDupPlan {
    /// Text: the least estimated Jaccard similarity of a near-duplicate pair.
    pub jaccard: f64,
    /// Images: the most bits in which a near-duplicate pair's hashes differ.
    pub bits: u32,
    /// Which rows of a component may be kept.
    pub drop: crate::choices::NearDupDrop,
}

/// The evaluation rows training rows must not duplicate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Against {
    /// The dataset's held-out split, when it has one.
    #[default]
    Heldout,
    /// No check.
    None,
    /// These Parquet files (a file, a directory or a glob).
    Files(String),
}

impl std::str::FromStr for Against {
    type Err = std::convert::Infallible;

    /// `heldout`, `none`, or a path.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "heldout" => Self::Heldout,
            "none" => Self::None,
            path => Self::Files(path.to_string()),
        })
    }
}

/// Where leaks are looked for, and what becomes of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeakPlan {
    /// The evaluation rows.
    pub against: Against,
    /// Whether a leaking training row is never kept.
    pub drop: bool,
    /// Semantic leaks: a training row whose embedding has cosine similarity
    /// above `1 - eps` with an evaluation row's (`None`: not looked for).
    #[serde(default)]
    pub semantic: Option<f64>,
}

impl Default for NearDupPlan {
    fn default() -> Self {
        Self { jaccard: 0.8, bits: 6, drop: crate::choices::NearDupDrop::None }
    }
}

impl SelectPlan {
    /// This plan, after checking every value's range.
    pub fn validated(self) -> Result<Self> {
        if !(self.keep > 0.0 && self.keep <= 1.0) {
            return Err(PipelineError::Usage(format!(
                "the kept fraction must be in (0, 1], got {} (--keep F, or --prune F with F in [0, 1))",
                self.keep
            )));
        }
        if !(self.near_dup.jaccard > 0.0 && self.near_dup.jaccard <= 1.0) {
            return Err(PipelineError::Usage(format!(
                "--near-dup must be a Jaccard similarity in (0, 1], got {}",
                self.near_dup.jaccard
            )));
        }
        if self.near_dup.bits > 32 {
            return Err(PipelineError::Usage(format!(
                "--near-dup-bits must be at most 32 of the hash's 64, got {}",
                self.near_dup.bits
            )));
        }
        if self.dedup.is_some_and(|e| !(0.0..=2.0).contains(&e)) {
            return Err(PipelineError::Usage("--dedup EPS must be in [0, 2] (a cosine distance)".into()));
        }
        if self.leaks.semantic.is_some_and(|e| !(0.0..=2.0).contains(&e)) {
            return Err(PipelineError::Usage("--semantic-leaks EPS must be in [0, 2] (a cosine distance)".into()));
        }
        if !(0.0..1.0).contains(&self.hard_cutoff) {
            return Err(PipelineError::Usage(format!("--hard-cutoff must be in [0, 1), got {}", self.hard_cutoff)));
        }
        if self.strata == 0 {
            return Err(PipelineError::Usage("--strata must be at least 1".into()));
        }
        self.check_ccs_cutoff()?;
        if self.clusters == Some(0) {
            return Err(PipelineError::Usage("--clusters must be at least 1".into()));
        }
        if let Some(spec) = &self.schedule {
            spec.parse::<sieve_selection::schedule::Schedule>().map_err(|e| PipelineError::Usage(e.to_string()))?;
        }
        if self.rows_per_file == 0 {
            return Err(PipelineError::Usage("--rows-per-file must be at least 1".into()));
        }
        Ok(self)
    }

    /// Replaces `--strategy auto` and `--order auto` by what
    /// [`crate::auto`]'s rule chooses for a job over `rows` rows of
    /// `classes` classes, recording why in `auto`. `auto` also drops the
    /// label issues, where the scores can decide them.
    pub fn resolve_auto(&mut self, rows: u64, classes: usize) -> Result<()> {
        if self.strategy == Strategy::Auto {
            let choice = match self.order {
                // An end asked for is a ranking by the score.
                Order::Hard | Order::Easy => crate::auto::Choice {
                    strategy: Strategy::Score,
                    order: self.order,
                    reason: format!("--order {:?} given: ranked by {}", self.order, self.score).to_lowercase(),
                },
                Order::Auto => crate::auto::choose(self.keep),
            };
            self.strategy = choice.strategy;
            self.order = choice.order;
            self.drop_label_issues = true;
            self.auto = Some(choice.reason);
            self.check_ccs_cutoff()?;
        }
        if self.order == Order::Auto {
            let kept = (self.keep * rows as f64).round() as usize;
            self.order = crate::auto::order(self.keep, kept, classes);
        }
        Ok(())
    }

    /// CCS cannot keep more than the rows its hard cutoff leaves.
    fn check_ccs_cutoff(&self) -> Result<()> {
        if self.strategy == Strategy::Ccs && self.keep > 1.0 - self.hard_cutoff {
            return Err(PipelineError::Usage(format!(
                "--strategy ccs keeps {} of the rows, but --hard-cutoff {} leaves only {}: lower the cutoff",
                self.keep,
                self.hard_cutoff,
                1.0 - self.hard_cutoff
            )));
        }
        Ok(())
    }
}

/// `--issue-count`'s default, for plans recorded before it existed.
fn default_issue_count() -> IssueCount {
    IssueCount::Heldout
}

/// `--strata`'s default, for plans recorded before it existed.
fn default_strata() -> usize {
    50
}

/// Shared run settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunPlan {
    /// Threads for model and decoding.
    pub threads: usize,
    /// The device asked for.
    pub device: DeviceChoice,
    /// The image proxy's inference precision.
    pub precision: Precision,
    /// No progress bars.
    pub quiet: bool,
    /// Bad-row policy.
    pub on_error: OnError,
    /// Bytes DataFusion's operators may hold before spilling; `None` = no limit.
    pub memory_limit: Option<usize>,
    /// The output directory.
    pub out: PathBuf,
    /// The cluster the scoring runs on (`df://HOST:PORT`); `None` = here.
    #[serde(default)]
    pub cluster: Option<String>,
}

impl RunPlan {
    /// This plan, after checking its thread count.
    pub fn validated(self) -> Result<Self> {
        if self.threads == 0 {
            return Err(PipelineError::Usage("--threads must be at least 1".into()));
        }
        Ok(self)
    }

    /// This plan, scoring on `cluster` when one is given. The executors
    /// write the score shards beside the output, so it must be a path
    /// every node sees.
    pub fn on_cluster(self, cluster: Option<String>) -> Result<Self> {
        if cluster.is_some() && crate::store::is_remote(&self.out) {
            return Err(PipelineError::Usage(format!(
                "--cluster with --out {}: the executors write their scores beside the output, so it must be a path every node sees (a shared file system), not object storage",
                self.out.display()
            )));
        }
        Ok(Self { cluster, ..self })
    }
}
