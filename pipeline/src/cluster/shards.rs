//! Score shards written where the scoring runs. The client wraps the
//! scoring query in a [`WriteShards`] node; the scheduler plans it (through
//! [`SieveQueryPlanner`]) as a [`ShardSinkExec`] above the scoring
//! projection, and every partition (one row group) writes its scores to
//! `<dir>/<shard>` under a temporary name, renamed when complete, then
//! answers one row: the shard and its rows. A partition finds its task by
//! the position of its first row, as Ballista renumbers the partitions it
//! hands each executor task. The client reads only those
//! rows; the scores stay on the shared storage for the select stage.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

use super::scan::Task;
use crate::error::{PipelineError, Result};
use crate::parquet_io;
use crate::score::{flatten_scores, ROW};

/// The schema of what a shard writer answers: one row per shard.
fn answer_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("shard", DataType::Utf8, false), Field::new("rows", DataType::Int64, false)]))
}

/// The logical node: each partition of `input` (the scoring query over an
/// [`super::scan::InputTable`] of `tasks`) is written to its task's shard
/// in `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteShards {
    /// The scoring query.
    pub input: LogicalPlan,
    /// Where the shards go: a directory every executor can write.
    pub dir: PathBuf,
    /// The row groups, in input order.
    pub tasks: Vec<Task>,
    schema: DFSchemaRef,
}

impl WriteShards {
    /// The node writing `input`'s partitions to `dir`.
    pub fn new(input: LogicalPlan, dir: PathBuf, tasks: Vec<Task>) -> DfResult<Self> {
        let schema = Arc::new(DFSchema::try_from(answer_schema().as_ref().clone())?);
        Ok(Self { input, dir, tasks, schema })
    }
}

impl PartialOrd for WriteShards {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.dir, &self.tasks).partial_cmp(&(&other.dir, &other.tasks))
    }
}

impl UserDefinedLogicalNodeCore for WriteShards {
    fn name(&self) -> &str {
        "SieveWriteShards"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SieveWriteShards: {} shards to {}", self.tasks.len(), self.dir.display())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = super::only_input(&inputs, "SieveWriteShards")?;
        Self::new(input, self.dir.clone(), self.tasks.clone())
    }
}

/// The physical node: executes each partition of `input` into the shard
/// of the task its rows belong to.
#[derive(Debug)]
pub struct ShardSinkExec {
    /// The scoring projection.
    pub input: Arc<dyn ExecutionPlan>,
    /// Where the shards go.
    pub dir: PathBuf,
    /// The row groups, in input order.
    pub tasks: Arc<[Task]>,
    properties: Arc<PlanProperties>,
}

impl ShardSinkExec {
    /// The writer of `input`'s partitions, one row group of `tasks` each.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, dir: PathBuf, tasks: Vec<Task>) -> DfResult<Self> {
        let partitions = input.output_partitioning().partition_count();
        let tasks: Arc<[Task]> = tasks.into();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(answer_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self { input, dir, tasks, properties })
    }
}

impl DisplayAs for ShardSinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SieveShardSink: {} shards to {}", self.tasks.len(), self.dir.display())
    }
}

impl ExecutionPlan for ShardSinkExec {
    fn name(&self) -> &str {
        "SieveShardSink"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::UnspecifiedDistribution]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = super::only_input(&children, "SieveShardSink")?;
        Ok(Arc::new(Self::try_new(input, self.dir.clone(), self.tasks.to_vec())?))
    }

    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, ctx)?;
        let (dir, tasks) = (self.dir.clone(), self.tasks.clone());
        let written = async move {
            let (shard, rows) =
                write_shard(input, &dir, &tasks).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
            let answer: Vec<Arc<dyn datafusion::arrow::array::Array>> =
                vec![Arc::new(StringArray::from(vec![shard])), Arc::new(Int64Array::from(vec![rows as i64]))];
            Ok(RecordBatch::try_new(answer_schema(), answer)?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(answer_schema(), futures::stream::once(written))))
    }
}

/// A shard being written: its task and its temporary file.
struct Open<'a> {
    task: &'a Task,
    tmp: PathBuf,
    writer: datafusion::parquet::arrow::ArrowWriter<std::fs::File>,
    next: i64,
}

/// Writes one partition of the scoring stream to the shard of the task
/// whose first row it starts with: a temporary file renamed when complete,
/// after checking that it holds exactly the task's rows, in order; returns
/// the shard's name and its rows.
async fn write_shard(mut input: SendableRecordBatchStream, dir: &Path, tasks: &[Task]) -> Result<(String, u64)> {
    let schema = flatten_scores(RecordBatch::new_empty(input.schema()))?.schema();
    let mut open: Option<Open> = None;
    let bad = |open: &Option<Open>, why: String| {
        if let Some(open) = open {
            let _ = std::fs::remove_file(&open.tmp);
        }
        PipelineError::Internal(format!("score shard: {why}"))
    };
    while let Some(batch) = input.next().await {
        let batch = flatten_scores(batch?)?;
        let rows = batch.column_by_name(ROW).expect("scores have row").as_primitive::<Int64Type>().clone();
        if rows.is_empty() {
            continue;
        }
        let shard = match &mut open {
            Some(shard) => shard,
            None => {
                let first = rows.value(0) as u64;
                let Some(task) = tasks.iter().find(|t| t.first == first) else {
                    return Err(bad(&open, format!("no row group starts at row {first}")));
                };
                let tmp = dir.join(format!(".{}.tmp-{}", task.shard_name(), std::process::id()));
                let writer = parquet_io::create(&tmp, schema.clone())?;
                open.insert(Open { task, tmp, writer, next: first as i64 })
            }
        };
        let end = (shard.task.first + shard.task.rows) as i64;
        let in_order = rows.values().iter().all(|&row| {
            let here = row == shard.next && row < end;
            shard.next += 1;
            here
        });
        if !in_order {
            let name = shard.task.shard_name();
            return Err(bad(&open, format!("{name}: rows out of order or from another row group")));
        }
        parquet_io::write(&mut shard.writer, &batch, &shard.tmp)?;
    }
    let Some(shard) = open else { return Err(bad(&None, "a partition without rows".into())) };
    parquet_io::close(shard.writer, &shard.tmp)?;
    let (task, written) = (shard.task, shard.next as u64 - shard.task.first);
    if written != task.rows {
        let _ = std::fs::remove_file(&shard.tmp);
        return Err(PipelineError::Internal(format!(
            "score shard {}: {written} rows scored of the row group's {}",
            task.shard_name(),
            task.rows
        )));
    }
    let dest = dir.join(task.shard_name());
    crate::resume::publish(&shard.tmp, &dest)?;
    crate::log::info("executor", "shard written", serde_json::json!({"shard": dest, "rows": written}));
    crate::fault::point("cluster:shard-written");
    Ok((task.shard_name(), written))
}

/// Plans [`WriteShards`] as a [`ShardSinkExec`].
struct ShardPlanner;

#[async_trait]
impl ExtensionPlanner for ShardPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<WriteShards>() else { return Ok(None) };
        let input = super::only_input(physical_inputs, "SieveWriteShards")?;
        Ok(Some(Arc::new(ShardSinkExec::try_new(input, node.dir.clone(), node.tasks.clone())?)))
    }
}

/// DataFusion's planner, which also plans [`WriteShards`]: the scheduler's.
#[derive(Debug)]
pub struct SieveQueryPlanner;

#[async_trait]
impl QueryPlanner for SieveQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ShardPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}
