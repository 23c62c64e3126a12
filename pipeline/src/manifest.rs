//! `manifest.json`: everything needed to know what an output is and how it
//! was made: the command line, the effective configuration, versions, input
//! files and row counts, the proxy's metrics, per-class kept counts, skipped
//! rows by reason and the seconds of each stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sieve_proxy::artifact::ProxyMeta;
use sieve_schemas::{layout, Stage};

use crate::error::{io_err, PipelineError, Result};
use crate::input::InputFiles;
use crate::plan::{DatasetPlan, RunPlan, SelectPlan, TrainPlan};
use crate::score::ScoreOutcome;
use crate::select::SelectOutcome;

/// Versions of what made the output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versions {
    /// sieve.
    pub sieve: String,
    /// DataFusion (and so Arrow and Parquet).
    pub datafusion: String,
    /// candle.
    pub candle: String,
}

impl Default for Versions {
    fn default() -> Self {
        Self {
            sieve: env!("CARGO_PKG_VERSION").into(),
            datafusion: env!("SIEVE_DATAFUSION_VERSION").into(),
            candle: env!("SIEVE_CANDLE_VERSION").into(),
        }
    }
}

/// One input file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputFile {
    /// Its path as resolved.
    pub path: PathBuf,
    /// Its rows.
    pub rows: u64,
}

/// The dataset as the job read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Name.
    pub name: String,
    /// `image` or `text`.
    pub kind: sieve_schemas::InputKind,
    /// Input column.
    pub input_column: String,
    /// Label column.
    pub label_column: String,
    /// Id column, if any (else ids are input positions).
    pub id_column: Option<String>,
    /// Class names.
    pub classes: Vec<String>,
    /// Training files.
    pub train: Vec<InputFile>,
    /// Held-out files.
    pub heldout: Vec<InputFile>,
    /// Where the `embedding` column came from.
    pub embedding: crate::plan::Embedding,
}

fn files(input: &InputFiles) -> Vec<InputFile> {
    input.files.iter().map(|f| InputFile { path: f.path.clone(), rows: f.rows }).collect()
}

impl From<&DatasetPlan> for DatasetRecord {
    fn from(d: &DatasetPlan) -> Self {
        Self {
            name: d.name.clone(),
            kind: d.kind,
            input_column: d.input_column.clone(),
            label_column: d.label_column.clone(),
            id_column: d.id_column.clone(),
            classes: d.classes.clone(),
            train: files(&d.train),
            heldout: d.heldout.as_deref().map(files).unwrap_or_default(),
            embedding: d.embedding.clone(),
        }
    }
}

/// The proxy used: where it is and its `proxy.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyRecord {
    /// Its directory (inside the output when trained by this job).
    pub dir: PathBuf,
    /// Its metadata, including `heldout_accuracy`.
    #[serde(flatten)]
    pub meta: ProxyMeta,
}

/// The effective configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// Proxy training, when this job trained one.
    pub train: Option<TrainPlan>,
    /// Selection, when this job selected.
    pub select: Option<SelectPlan>,
    /// Threads, error policy, output.
    pub run: Option<RunPlan>,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The command line, as typed.
    pub command_line: Vec<String>,
    /// Versions.
    pub versions: Versions,
    /// The dataset.
    pub dataset: DatasetRecord,
    /// The configuration.
    pub config: Config,
    /// The proxy.
    pub proxy: Option<ProxyRecord>,
    /// Whether the proxy came from an interrupted earlier run of this job.
    pub resumed_proxy: bool,
    /// Scoring: rows, skipped rows by reason, proxy accuracy on them.
    pub scoring: Option<ScoreOutcome>,
    /// Cross-fitting (`--folds K`): the fold proxies and what they cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_fit: Option<crate::crossfit::CrossFit>,
    /// Confident learning's label issues, when the scores have probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_issues: Option<crate::label_issues::LabelIssues>,
    /// What the near-duplicate stage found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_dups: Option<crate::near_dup::NearDups>,
    /// The leak stage's counts, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaks: Option<crate::leaks::Leaks>,
    /// Embedding methods (prototype, k-center, SemDeDup, schedules), when used.
    pub global: Option<crate::global::GlobalOutcome>,
    /// Active learning: the pick, or the simulated rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<crate::active::ActiveOutcome>,
    /// Selection: kept rows, per class.
    pub selection: Option<SelectOutcome>,
    /// Files written under `data/`, relative to the output directory.
    pub data_files: Vec<PathBuf>,
    /// Seconds per stage, in pipeline order.
    pub seconds: BTreeMap<Stage, f64>,
}

impl Manifest {
    /// A manifest for a job over `dataset`, filled in as the stages run.
    pub fn new(dataset: &DatasetPlan) -> Self {
        Self {
            command_line: std::env::args().collect(),
            versions: Versions::default(),
            dataset: dataset.into(),
            config: Config::default(),
            proxy: None,
            resumed_proxy: false,
            scoring: None,
            cross_fit: None,
            label_issues: None,
            near_dups: None,
            leaks: None,
            global: None,
            active: None,
            selection: None,
            data_files: Vec::new(),
            seconds: BTreeMap::new(),
        }
    }

    /// Reads `dir/manifest.json` as a job of this version wrote it.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = layout::manifest(dir);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| PipelineError::Data { path, reason: e.to_string() })
    }

    /// Writes `dir/manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = layout::manifest(dir);
        let text = serde_json::to_string_pretty(self).expect("the manifest serializes");
        std::fs::write(&path, text).map_err(io_err(&path))
    }
}
