//! The command line as the user types it: clap structs that mirror the flags
//! and validate their syntax only. [`crate::plan`] turns them into a `Plan`;
//! no stage sees a clap type.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sieve_proxy::device::{DeviceChoice, Precision};
use sieve_proxy::recipe::Overrides;
use sieve_schemas::{InputKind, ScoreName};

use crate::choices::{
    Acquisition, Balance, IssueCount, NearDupDrop, OnError, Order, Prototypes, ScheduleOrder, Strategy, TargetBudget,
};
use crate::error::{PipelineError, Result};
use crate::plan::{DatasetPlan, DatasetSource, RunPlan, SelectPlan, TrainPlan};

pub use crate::log::LogFormat;

/// Prune training datasets with a cheap proxy model scored inside DataFusion.
///
/// Every subcommand also takes `--config job.toml`: flags from a TOML file,
/// which the command line's own flags override.
#[derive(Debug, Parser)]
#[command(name = "sieve", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// The stage to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `sieve <command>`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a proxy, score every row, select, and write the pruned dataset.
    Prune(PruneArgs),
    /// Train a proxy on a dataset and save it as a directory.
    Train(TrainArgs),
    /// Score every row of a dataset with a trained proxy (writes scores.parquet).
    Score(ScoreArgs),
    /// Select rows from existing scores and write the pruned dataset.
    Select(SelectArgs),
    /// Run SQL over a dataset and sieve's outputs, with sieve's functions registered.
    Sql(SqlArgs),
    /// Train a larger target model on the full data, on sieve's subsets and on random subsets; report held-out accuracy.
    Eval(EvalArgs),
    /// Turn an image folder (class per subdirectory) or a CSV / JSON Lines text file into Parquet in the Hugging Face layout.
    Import(ImportArgs),
    /// Distil a sentence encoder into a static embedding (model2vec's method), for `--embedding static`.
    Distill(DistillArgs),
    /// Run a node of an Apache Ballista cluster that carries sieve's functions: a scheduler or an executor.
    Cluster(ClusterArgs),
}

/// `sieve cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Which node.
    #[command(subcommand)]
    pub role: ClusterRole,
}

/// `sieve cluster <role>`.
#[derive(Debug, Subcommand)]
pub enum ClusterRole {
    /// Ballista's scheduler: clients submit to it (`--cluster df://HOST:PORT`), executors register with it.
    Scheduler(Box<SchedulerFlags>),
    /// Ballista's executor: runs the tasks, sieve's functions on `--vcores` threads and `--device`.
    Executor(Box<ExecutorFlags>),
}

/// The flags of `sieve cluster scheduler`: Ballista's scheduler's own, and
/// sieve's log flags.
#[derive(Debug, Args)]
pub struct SchedulerFlags {
    /// Ballista's scheduler flags.
    #[command(flatten)]
    pub ballista: ballista_scheduler::config::Config,
    /// Log lines.
    #[command(flatten)]
    pub log: LogOpts,
}

/// The flags of `sieve cluster executor`: Ballista's executor's own, where
/// this executor's models run, and sieve's log flags.
#[derive(Debug, Args)]
pub struct ExecutorFlags {
    /// Ballista's executor flags.
    #[command(flatten)]
    pub ballista: ballista_executor::config::Config,
    /// Where this executor's image proxies run (one executor per GPU).
    #[command(flatten)]
    pub placement: PlacementOpts,
    /// Log lines.
    #[command(flatten)]
    pub log: LogOpts,
}

/// Where the image proxy trains and scores, and in what precision.
#[derive(Debug, Clone, Args)]
pub struct PlacementOpts {
    /// Where the image proxy trains and scores: `auto` (a GPU when this build has CUDA and the machine has one, else the CPU), `cpu` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Floating-point type of image-proxy scoring: f32, f16 or bf16 (half the memory traffic on a GPU; scores move by about 1%).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl Command {
    /// The threads the job runs on: `--threads`, or the machine's cores
    /// (`import` and `sql` have no such flag).
    pub fn threads(&self) -> usize {
        match self {
            Command::Prune(a) => a.common.threads(),
            Command::Train(a) => a.common.threads(),
            Command::Score(a) => a.common.threads(),
            Command::Select(a) => a.common.threads(),
            Command::Eval(a) => a.common.threads(),
            Command::Cluster(ClusterArgs { role: ClusterRole::Executor(e) }) if e.ballista.vcores > 0 => {
                e.ballista.vcores
            }
            Command::Import(_) | Command::Distill(_) | Command::Sql(_) | Command::Cluster(_) => crate::session::cores(),
        }
    }

    /// How the job reports (`sql` prints its result and logs nothing).
    pub fn log(&self) -> Option<&LogOpts> {
        match self {
            Command::Prune(a) => Some(&a.common.log),
            Command::Train(a) => Some(&a.common.log),
            Command::Score(a) => Some(&a.common.log),
            Command::Select(a) => Some(&a.common.log),
            Command::Import(a) => Some(&a.log),
            Command::Distill(a) => Some(&a.log),
            Command::Eval(a) => Some(&a.common.log),
            Command::Cluster(ClusterArgs { role: ClusterRole::Scheduler(s) }) => Some(&s.log),
            Command::Cluster(ClusterArgs { role: ClusterRole::Executor(e) }) => Some(&e.log),
            Command::Sql(_) => None,
        }
    }
}

/// Where the rows come from: a named dataset or explicit files and columns.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// A dataset descriptor's name: built in (cifar10, sst2, shapes, reviews) or in --datasets-dir.
    #[arg(long, conflicts_with = "input")]
    pub dataset: Option<String>,
    /// Directory the descriptor's files are relative to.
    #[arg(long, env = "DATA_DIR", default_value = "../shared/datasets")]
    pub data_dir: PathBuf,
    /// A directory of your own dataset descriptors (`NAME.toml`), looked up before the built-in ones.
    #[arg(long, env = "SIEVE_DATASETS")]
    pub datasets_dir: Option<PathBuf>,
    /// Training rows without a descriptor: a Parquet file, a directory or a glob.
    #[arg(long)]
    pub input: Option<String>,
    /// Held-out rows without a descriptor (only used to report proxy accuracy).
    #[arg(long, requires = "input")]
    pub heldout: Option<String>,
    /// The image column (PNG/JPEG bytes), with --input.
    #[arg(long, requires = "input", conflicts_with = "text_column")]
    pub image_column: Option<String>,
    /// The text column, with --input.
    #[arg(long, requires = "input")]
    pub text_column: Option<String>,
    /// The integer label column, with --input.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// A stable id column; without it a row's position is its id.
    #[arg(long)]
    pub id_column: Option<String>,
}

/// How the proxy is trained.
#[derive(Debug, Clone, Args)]
pub struct TrainOpts {
    /// Proxy architecture preset: resnet8, resnet14, resnet20, resnet32, resnet56 (images), fasttext (text).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Channels of the ResNet's first stage (SVP's narrower proxies), or the fastText embedding width.
    #[arg(long)]
    pub width: Option<usize>,
    /// Training epochs (SVP's "fewer epochs" proxies).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training mini-batch size (images).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (default: 0.2 for ResNets at batch 128, scaled linearly with the batch; 0.5 for fastText).
    #[arg(long)]
    pub lr: Option<f64>,
}

/// `--score`: one of [`ScoreName::ALL`], listed in `--help`.
fn score_parser() -> impl TypedValueParser<Value = ScoreName> {
    PossibleValuesParser::new(ScoreName::ALL.map(ScoreName::column))
        .map(|name| name.parse::<ScoreName>().expect("every listed score parses"))
}

impl TrainOpts {
    /// What these flags change about the preset's recipe.
    pub fn overrides(&self) -> Overrides {
        Overrides { width: self.width, epochs: self.epochs, batch_size: self.batch_size, lr: self.lr }
    }

    /// The training plan these flags ask for on `dataset`.
    pub fn plan(&self, seed: u64, dataset: &DatasetPlan) -> Result<TrainPlan> {
        TrainPlan::new(self.proxy.clone(), self.overrides(), seed, dataset)
    }
}

impl InputArgs {
    /// Where `--dataset` or `--input` and its column flags say the rows are.
    pub fn source(&self) -> Result<DatasetSource> {
        match (&self.dataset, &self.input) {
            (Some(name), _) => Ok(DatasetSource::Named {
                name: name.clone(),
                datasets_dir: self.datasets_dir.clone(),
                data_dir: self.data_dir.clone(),
            }),
            (None, Some(input)) => {
                let (kind, column) = match (&self.image_column, &self.text_column) {
                    (Some(c), None) => (InputKind::Image, c.clone()),
                    (None, Some(c)) => (InputKind::Text, c.clone()),
                    _ => return Err(PipelineError::Usage("--input needs --image-column or --text-column".into())),
                };
                Ok(DatasetSource::Files {
                    train: input.clone(),
                    heldout: self.heldout.clone(),
                    kind,
                    input_column: column,
                    label_column: self.label_column.clone(),
                })
            }
            (None, None) => Err(PipelineError::Usage("give --dataset NAME or --input PATH".into())),
        }
    }

    /// The dataset these flags name.
    pub fn plan(&self) -> Result<DatasetPlan> {
        DatasetPlan::new(&self.source()?, self.id_column.clone())
    }
}

impl SelectOpts {
    /// The selection these flags ask for, with `seed` for its random parts.
    pub fn plan(&self, seed: u64) -> Result<SelectPlan> {
        let keep = match (self.keep, self.prune) {
            (Some(k), None) => k,
            (None, Some(p)) => 1.0 - p,
            (None, None) => 0.5,
            (Some(_), Some(_)) => unreachable!("clap rejects --keep with --prune"),
        };
        SelectPlan {
            keep,
            score: self.score,
            order: self.order,
            balance: self.balance,
            strategy: self.strategy,
            hard_cutoff: self.hard_cutoff.unwrap_or_else(|| crate::select::ccs::default_cutoff(keep)),
            strata: self.strata,
            drop_label_issues: self.drop_label_issues,
            issue_count: self.issue_count,
            auto: None,
            seed,
            rows_per_file: self.rows_per_file,
            clusters: self.clusters,
            prototypes: self.prototypes,
            dedup: self.dedup,
            near_dup: crate::plan::NearDupPlan {
                jaccard: self.near_dup,
                bits: self.near_dup_bits,
                drop: self.drop_near_dups,
            },
            leaks: crate::plan::LeakPlan {
                against: self.against.clone(),
                drop: self.drop_leaks,
                semantic: self.semantic_leaks,
            },
            schedule: self.schedule.clone(),
            schedule_order: self.schedule_order,
            report: !self.no_report,
        }
        .validated()
    }
}

impl CommonOpts {
    /// The threads a job runs on: `--threads`, or the machine's cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(crate::session::cores)
    }

    /// The run settings these flags ask for, writing to `out` (default:
    /// `out/<default_out>`); threads default to the machine's cores.
    pub fn run_plan(&self, out: Option<PathBuf>, default_out: String) -> Result<RunPlan> {
        RunPlan {
            threads: self.threads(),
            device: self.placement.device,
            precision: self.placement.precision,
            quiet: self.log.quiet,
            on_error: self.on_error,
            memory_limit: self.memory_limit,
            out: out.unwrap_or_else(|| PathBuf::from("out").join(default_out)),
            cluster: None,
        }
        .validated()
    }
}

/// Flags every stage shares.
#[derive(Debug, Clone, Args)]
pub struct CommonOpts {
    /// Random seed: same input + seed = same output on CPU.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads for the model and decoding (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the image proxy runs.
    #[command(flatten)]
    pub placement: PlacementOpts,
    /// Progress bars and log lines.
    #[command(flatten)]
    pub log: LogOpts,
    /// Memory for DataFusion's operators (sorts, windows), e.g. `512M`, `4G`; beyond it they spill to disk or stop with an error (the near-duplicate and leak queries take at least 64M). Default: no limit.
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// What a bad row does: `skip` gives it null scores and an `error`, `fail` stops the job naming file, row and column.
    #[arg(long, value_enum, default_value_t = OnError::Skip)]
    pub on_error: OnError,
}

/// `--cluster`: where a job's scoring runs.
#[derive(Debug, Clone, Args)]
pub struct ClusterOpt {
    /// Run the scoring on the Ballista cluster whose scheduler this names (`df://HOST:PORT`, see `sieve cluster`); the input, the output and the proxy must be where every node reads them.
    #[arg(long, env = "SIEVE_CLUSTER", value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

/// Parses a byte size: a number with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in '{text}': use K, M, G or T")),
    };
    let n: f64 = digits.trim().parse().map_err(|_| format!("'{text}' is not a size like 512M or 2G"))?;
    if n.is_nan() || n <= 0.0 {
        return Err(format!("'{text}': the size must be positive"));
    }
    Ok((n * (1u64 << shift) as f64) as usize)
}

/// How a job reports as it runs.
#[derive(Debug, Clone, Args)]
pub struct LogOpts {
    /// No progress bars and no informational log lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Log lines as text, or as JSON objects (one a line) for batch schedulers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How rows are chosen.
#[derive(Debug, Clone, Args)]
pub struct SelectOpts {
    /// Fraction of rows to keep, in (0, 1].
    #[arg(long, conflicts_with = "prune")]
    pub keep: Option<f64>,
    /// Fraction of rows to remove, in [0, 1): same as --keep 1-F.
    #[arg(long)]
    pub prune: Option<f64>,
    /// Score to rank by (every score: higher = harder).
    #[arg(long, default_value = "el2n", value_parser = score_parser())]
    pub score: ScoreName,
    /// Keep the hardest (abundant data) or the easiest (scarce data) rows; `auto` (default) keeps the hard end when keeping at least 60% of the rows and 1,000 per class. Giving hard or easy with `--strategy auto` ranks by --score.
    #[arg(long, value_enum, default_value_t = Order::Auto)]
    pub order: Order,
    /// `class` keeps the same fraction of every class; `none` ranks all rows together.
    #[arg(long, value_enum, default_value_t = Balance::Class)]
    pub balance: Balance,
    /// `score` ranks by --score; `random` is the seeded random-subset baseline; `kcenter` is SVP's greedy k-center core-set on the proxy's embeddings; `ccs` is coverage-centric selection over --score (Zheng et al. 2023): the hardest --hard-cutoff dropped, the budget spread evenly over --strata score strata, seeded random within each; `auto` (default) keeps the easiest by --score when keeping at most 15%, else runs ccs, and drops the label issues (the rule and its measurements are in the README).
    #[arg(long, value_enum, default_value_t = Strategy::Auto)]
    pub strategy: Strategy,
    /// `--strategy ccs`: fraction of the hardest rows dropped first, in [0, 1) (default by the kept fraction, Zheng et al.'s CIFAR-10 values: 0 when keeping more than 40%, 0.1 down to 15%, 0.3 below).
    #[arg(long, value_name = "BETA")]
    pub hard_cutoff: Option<f64>,
    /// `--strategy ccs`: strata of equal score width.
    #[arg(long, value_name = "K", default_value_t = 50)]
    pub strata: usize,
    /// Never keep the rows confident learning flags as label errors (`label_issue`), whatever the strategy; the quotas count the remaining rows.
    #[arg(long)]
    pub drop_label_issues: bool,
    /// How many label issues confident learning flags: the rows with the highest `label_quality`, as many as the held-out estimate of the label errors, or as the confident joint counts per class.
    #[arg(long, value_enum, default_value_t = IssueCount::Heldout)]
    pub issue_count: IssueCount,
    /// k-means clusters for `--score prototype` (default: the number of classes; with `--prototypes class`, clusters per class, default 1).
    #[arg(long)]
    pub clusters: Option<usize>,
    /// `global` clusters all embeddings together (Sorscher et al.'s self-supervised prototypes); `class` clusters each class on its own (distance to its own class's prototypes).
    #[arg(long, value_enum, default_value_t = Prototypes::Global)]
    pub prototypes: Prototypes,
    /// Semantic de-duplication before pruning (SemDeDup): rows whose embedding has cosine similarity above 1 - EPS with an earlier kept row of their cluster are marked (`dup_of`) and never kept.
    #[arg(long, value_name = "EPS")]
    pub dedup: Option<f64>,
    /// Text near-duplicates: rows whose MinHash signatures (word 3-gram shingles, 128 permutations) estimate a Jaccard similarity of at least J with another are one component; every row but its first gets `near_dup_of` and `near_dup_jaccard`.
    #[arg(long, value_name = "J", default_value_t = 0.8)]
    pub near_dup: f64,
    /// Image near-duplicates: rows whose perceptual hashes (`phash`) differ in at most D bits are one component; every row but its first gets `near_dup_of` and `near_dup_bits`.
    #[arg(long, value_name = "D", default_value_t = 6)]
    pub near_dup_bits: u32,
    /// Leave near-duplicates out of the selection: `all` (the flag alone) keeps at most the first row of each component (rows with `near_dup_of` are never kept); `label` keeps at most the first row of each label in a component, so near-duplicates that disagree on the label stay; `none` (the default) only flags them. The quotas count the remaining rows.
    #[arg(long, value_enum, value_name = "all|label|none", num_args = 0..=1, default_missing_value = "all", default_value_t = NearDupDrop::None)]
    pub drop_near_dups: NearDupDrop,
    /// Evaluation rows the training rows must not duplicate: `heldout` (the dataset's held-out split, or --heldout), `none`, or Parquet files (a file, a directory or a glob) with the same input column. Training rows that are exact copies (same content hash) or near-duplicates (at --near-dup / --near-dup-bits) of one get `leak_kind`, `leak_of` (its id) and `leak_distance`.
    #[arg(long, value_name = "heldout|none|PATH", default_value = "heldout")]
    pub against: crate::plan::Against,
    /// Never keep a training row that leaks an evaluation row (`leak_kind` set); the quotas count the remaining rows.
    #[arg(long)]
    pub drop_leaks: bool,
    /// Semantic leaks as well: a training row with no exact or near copy whose embedding (the `embedding` column: the proxy's features or the text encoder's) has cosine similarity above 1 - EPS with an evaluation row's gets `leak_kind` 'semantic' and `leak_distance` 1 - the similarity. The evaluation rows are embedded as the training rows were.
    #[arg(long, value_name = "EPS")]
    pub semantic_leaks: Option<f64>,
    /// A data schedule written as a `stage` column: `step:F1,F2,...`, `increment:START,STEP,STAGES` or `cut:F1,F2,...`.
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,
    /// The order in which rows enter the schedule: easiest first by --score, or random.
    #[arg(long, value_enum, default_value_t = ScheduleOrder::Easy)]
    pub schedule_order: ScheduleOrder,
    /// Kept rows per output Parquet file.
    #[arg(long, default_value_t = 100_000)]
    pub rows_per_file: usize,
    /// Do not write report.html (summary, plots, hardest and easiest examples) into the output of `prune` or `select`.
    #[arg(long)]
    pub no_report: bool,
}

/// Where embeddings come from.
#[derive(Debug, Clone, Args)]
pub struct EmbeddingOpts {
    /// The `embedding` column: `proxy` (the proxy's penultimate features), a text encoder directory (a BERT checkpoint, or a static model: `sieve distill`'s or model2vec's), `static` (text: models/all-MiniLM-L6-v2-static, which `make models` distils; about 100x faster than the encoder, agreeing with it less), or `auto`: for text, models/all-MiniLM-L6-v2 when `make models` fetched it and a method of the run reads embeddings (prototype, kcenter, dedup, schedule); else the proxy's.
    #[arg(long, env = "SIEVE_EMBEDDING", default_value = "auto", value_name = "auto|proxy|static|DIR")]
    pub embedding: String,
}

/// `sieve prune`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct PruneArgs {
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// How the proxy is trained.
    #[command(flatten)]
    pub train: TrainOpts,
    /// What is kept.
    #[command(flatten)]
    pub select: SelectOpts,
    /// Where the `embedding` column comes from.
    #[command(flatten)]
    pub embedding: EmbeddingOpts,
    /// Seed, threads, device, logging, memory and bad-row policy.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Where the scoring runs.
    #[command(flatten)]
    pub cluster: ClusterOpt,
    /// Use this trained proxy directory instead of training one.
    #[arg(long)]
    pub proxy_dir: Option<PathBuf>,
    /// Cross-fit the class probabilities over K folds: K more proxies, each
    /// trained on the other folds, give every row out-of-sample `probs`, and
    /// the label issues are decided from them. 1: in-sample, from the proxy.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub folds: usize,
    /// Output directory (default: out/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `sieve train`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// How the proxy is trained.
    #[command(flatten)]
    pub train: TrainOpts,
    /// Seed, threads, device, logging, memory and bad-row policy.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Directory to write the proxy to (default: out/<dataset>-proxy).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `sieve score`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct ScoreArgs {
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// Where the `embedding` column comes from.
    #[command(flatten)]
    pub embedding: EmbeddingOpts,
    /// Seed, threads, device, logging, memory and bad-row policy.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Where the scoring runs.
    #[command(flatten)]
    pub cluster: ClusterOpt,
    /// The trained proxy directory.
    #[arg(long)]
    pub proxy_dir: PathBuf,
    /// Output directory: scores.parquet and manifest.json (default: out/<dataset>-scores).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `sieve select`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct SelectArgs {
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// What is kept.
    #[command(flatten)]
    pub select: SelectOpts,
    /// Active learning: the next rows to label.
    #[command(flatten)]
    pub active: ActiveOpts,
    /// How the proxy is trained.
    #[command(flatten)]
    pub train: TrainOpts,
    /// Seed, threads, device, logging, memory and bad-row policy.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Where active learning scores its pool (re-selecting from --scores scores nothing and runs here).
    #[command(flatten)]
    pub cluster: ClusterOpt,
    /// Existing scores: a scores.parquet or an output directory holding one.
    #[arg(long, required_unless_present_any = ["labeled", "rounds"], conflicts_with_all = ["labeled", "rounds"])]
    pub scores: Option<PathBuf>,
    /// Output directory (default: out/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Active learning, SVP's other half: the proxy trains on the labeled rows
/// and picks the unlabeled rows worth labeling next.
#[derive(Debug, Clone, Args)]
pub struct ActiveOpts {
    /// Labeled rows (Parquet file, directory or glob; columns as --dataset or --input describe): the proxy trains on them.
    #[arg(long, requires_all = ["unlabeled", "budget"])]
    pub labeled: Option<String>,
    /// The unlabeled pool to pick the next batch from (a label column there is ignored).
    #[arg(long, requires = "labeled")]
    pub unlabeled: Option<String>,
    /// Rows to pick (per round with --rounds).
    #[arg(long)]
    pub budget: Option<usize>,
    /// Simulate R rounds on the fully labeled --dataset/--input, labels hidden: a random start of --budget rows, then --budget more per round, picked by --acquisition and, for reference, at random; reports the proxy's held-out accuracy after each.
    #[arg(long, requires = "budget", conflicts_with = "labeled")]
    pub rounds: Option<usize>,
    /// How the next batch is picked: the most uncertain rows by a score, or k-center on the proxy's embeddings against the labeled set.
    #[arg(long, value_enum, default_value_t = Acquisition::LeastConfidence)]
    pub acquisition: Acquisition,
}

/// `sieve eval`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct EvalArgs {
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// The proxy (when eval trains it).
    #[command(flatten)]
    pub train: TrainOpts,
    /// Selection settings; the sweep sets --keep, --score, --strategy and --order itself.
    #[command(flatten)]
    pub select: SelectOpts,
    /// Where the `embedding` column comes from.
    #[command(flatten)]
    pub embedding: EmbeddingOpts,
    /// Seed, threads, device, logging, memory and bad-row policy.
    #[command(flatten)]
    pub common: CommonOpts,
    /// Scores of an earlier `sieve prune` or `sieve score` (its directory or scores.parquet); default: train the proxy and score here.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Kept fractions to sweep.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7,0.9")]
    pub fractions: Vec<f64>,
    /// Strategies to sweep: score names (el2n, entropy, forgetting, aum, prototype, ...), `kcenter`, `ccs` (over --score) and `random`.
    #[arg(long, value_delimiter = ',', default_value = "el2n,entropy,forgetting,prototype,kcenter,random")]
    pub strategies: Vec<String>,
    /// Orders for the score strategies.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "hard,easy")]
    pub orders: Vec<Order>,
    /// Target trainings per cell, with seeds --seed, --seed + 1, ...
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Target architecture (default: resnet20 for images, fasttext for text).
    #[arg(long)]
    pub target: Option<String>,
    /// Target width (ResNet channels or fastText dim; default: the preset's, 64 for fastText).
    #[arg(long)]
    pub target_width: Option<usize>,
    /// Target epochs on the full data (default: the preset's).
    #[arg(long)]
    pub target_epochs: Option<usize>,
    /// What a subset's target gets: the same epochs as on the full data (SVP's setting: fewer steps, the speed-up), or the same SGD steps (epochs ÷ kept fraction: data quality at equal compute).
    #[arg(long, value_enum, default_value_t = TargetBudget::Epochs)]
    pub target_budget: TargetBudget,
    /// Also train proxies with the next seed and half the width and report Spearman rank agreement with the first.
    #[arg(long)]
    pub agreement: bool,
    /// Output directory (default: out/<dataset>-eval).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Output format of `sieve sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// One JSON object per line.
    Json,
}

/// `sieve sql`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct SqlArgs {
    /// The query. Tables: `input` (the dataset, with --dataset/--input), and
    /// from --out: `scores` (every row) and `kept` (the pruned rows).
    pub query: Option<String>,
    /// The dataset: by name or by files and column roles.
    #[command(flatten)]
    pub input: InputArgs,
    /// An output directory of `sieve prune` whose tables to register.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// List sieve's SQL functions with their signatures and descriptions.
    #[arg(long)]
    pub functions: bool,
    /// Run the query on the Ballista cluster whose scheduler this names (`df://HOST:PORT`, see `sieve cluster`).
    #[arg(long, env = "SIEVE_CLUSTER", value_name = "df://HOST:PORT")]
    pub cluster: Option<String>,
}

/// `sieve import`.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct ImportArgs {
    /// An image folder: one subdirectory per class holding PNG or JPEG files.
    #[arg(long, conflicts_with = "text")]
    pub images: Option<PathBuf>,
    /// A CSV (with a header) or JSON Lines file of text rows.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// The text column of --text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// The label column of --text (class names or integers).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Rows per output Parquet file.
    #[arg(long, default_value_t = 50_000)]
    pub shard_rows: usize,
    /// Log lines.
    #[command(flatten)]
    pub log: LogOpts,
    /// The output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// `sieve distill`.
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// The sentence encoder: a directory of config.json, model.safetensors and tokenizer.json (a BERT checkpoint as sentence-transformers saves it).
    #[arg(long, default_value = crate::plan::DEFAULT_ENCODER)]
    pub encoder: PathBuf,
    /// Components the PCA keeps: the static vectors' width (model2vec's default).
    #[arg(long, default_value_t = 256)]
    pub dims: usize,
    /// Log lines.
    #[command(flatten)]
    pub log: LogOpts,
    /// The output directory (`--embedding static` reads models/all-MiniLM-L6-v2-static).
    #[arg(long)]
    pub out: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4gib").unwrap(), 4 << 30);
        assert!(parse_size("0").is_err() && parse_size("12Q").is_err() && parse_size("x").is_err());
    }

    /// `--help` states the recipe's defaults; this keeps the two from drifting.
    #[test]
    fn the_learning_rate_help_states_the_recipes_defaults() {
        use clap::CommandFactory;
        use sieve_proxy::recipe::{Recipe, FASTTEXT};
        let cmd = Cli::command();
        let train = cmd.find_subcommand("train").expect("a train subcommand");
        let lr = train.get_arguments().find(|a| a.get_id() == "lr").expect("--lr");
        let help = lr.get_help().expect("--lr has help").to_string();
        let none = Overrides::default();
        let (Recipe::Resnet(image), Recipe::Fasttext(text)) =
            (Recipe::new("resnet8", 10, &none).unwrap(), Recipe::new(FASTTEXT, 2, &none).unwrap())
        else {
            unreachable!("the presets' kinds")
        };
        let image_default = format!("{} for ResNets at batch {}", image.peak_lr, image.batch_size);
        let text_default = format!("{} for fastText", text.schedule.lr);
        assert!(help.contains(&image_default) && help.contains(&text_default), "{help}");
    }
}
