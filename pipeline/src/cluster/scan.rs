//! The input as a table Ballista can ship. Locally the input is one ordered
//! stream ([`InputFiles::table`]); on a cluster every row group of every
//! input file is one task, and the task names its file, its row group and
//! the input position of its first row, so each row's `__pos` is computed
//! where the row is read and travels as data. The table ([`InputTable`])
//! and its scan ([`RowGroupReadExec`]) cross the wire through
//! [`super::codec::SieveCodec`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::input::{reader_stream, Chunk, InputFiles, POS};
use crate::resume::file_identity;

/// One row group of one input file, and where its rows sit in the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Hash, Serialize, Deserialize)]
pub struct Task {
    /// The file: a path every node sees, or an `s3://` URL.
    pub path: String,
    /// The file's identity when the job was planned ([`file_identity`]),
    /// which names its shards as a local run's.
    pub identity: String,
    /// The file's version when the job was planned (its size and footer's
    /// hash, or the object's entity tag): a node that sees another file
    /// there refuses to read it.
    pub version: String,
    /// Input position of the file's first row.
    pub file_first: u64,
    /// The row group.
    pub row_group: usize,
    /// Input position of the row group's first row.
    pub first: u64,
    /// Rows of the row group.
    pub rows: u64,
}

impl Task {
    /// Every row group of `input`, in input order.
    pub fn all(input: &InputFiles) -> Vec<Task> {
        input
            .files
            .iter()
            .flat_map(|file| {
                let identity = file_identity(file);
                // Every node resolves the path itself: it must not depend on
                // the client's working directory.
                let path = match std::path::absolute(&file.path) {
                    Ok(path) if !crate::store::is_remote(&file.path) => path,
                    _ => file.path.clone(),
                };
                let mut first = file.first_pos;
                file.row_groups.iter().enumerate().filter(|(_, &rows)| rows > 0).map(move |(row_group, &rows)| {
                    let task = Task {
                        path: path.to_string_lossy().into_owned(),
                        identity: identity.clone(),
                        version: file.version.clone(),
                        file_first: file.first_pos,
                        row_group,
                        first,
                        rows,
                    };
                    first += rows;
                    task
                })
            })
            .collect()
    }

    /// The name of the scores shard this task's rows are written to.
    pub fn shard_name(&self) -> String {
        format!("part-{}-rg{:05}.parquet", self.identity, self.row_group)
    }

    /// Reads the task's rows, projected to `columns` (which may name
    /// `__pos`), into `send`, after checking that the file is the one the
    /// job was planned with.
    fn read(&self, columns: &[String], send: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let mut input = InputFiles::open(&self.path)?;
        let changed = |reason: String| PipelineError::Data { path: self.path.clone().into(), reason };
        if input.files.len() != 1 {
            return Err(changed(format!(
                "names {} files on this node, one when the job was planned",
                input.files.len()
            )));
        }
        input.files[0].first_pos = self.file_first;
        if input.files[0].version != self.version {
            return Err(changed(
                "is not the file the job was planned with (it changed, or this node sees another file at that path)"
                    .into(),
            ));
        }
        let read: Vec<String> = columns.iter().filter(|c| *c != POS).cloned().collect();
        let schema = input.read_schema(Some(&read))?;
        let order: Vec<usize> = columns.iter().map(|c| schema.index_of(c)).collect::<std::result::Result<_, _>>()?;
        input.for_each_batch(&[Chunk { file: 0, row_group: self.row_group }], Some(&read), |batch| {
            send(batch.project(&order)?)
        })
    }
}

/// The input of a cluster job: its tasks, scanned one partition each.
#[derive(Debug)]
pub struct InputTable {
    /// Every input column, and `__pos`.
    pub schema: SchemaRef,
    /// The row groups to read, one partition each.
    pub tasks: Vec<Task>,
}

impl InputTable {
    /// The table of `tasks` of `input`.
    pub fn new(input: &InputFiles, tasks: Vec<Task>) -> Result<Self> {
        Ok(Self { schema: input.read_schema(None)?, tasks })
    }
}

#[async_trait]
impl TableProvider for InputTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(RowGroupReadExec::new(schema, descriptors(&self.tasks)?)))
    }
}

/// Name of the one column of a task descriptor: the task as JSON.
const TASK: &str = "task";

/// The tasks as an in-memory scan of one partition per task, each a
/// one-row batch describing it. Ballista hands each executor task only its
/// own partitions of a scan it knows (it cannot restrict a custom one), so
/// the row groups travel as this scan's rows.
fn descriptors(tasks: &[Task]) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(TASK, DataType::Utf8, false)]));
    let partitions = tasks
        .iter()
        .map(|task| {
            let json = serde_json::to_string(task).map_err(|e| DataFusionError::Internal(e.to_string()))?;
            Ok(vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![json]))])?])
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(DataSourceExec::from_data_source(MemorySourceConfig::try_new(&partitions, schema, None)?))
}

/// The tasks a batch of descriptors describes.
fn tasks_of(batch: &RecordBatch) -> DfResult<Vec<Task>> {
    let column = batch
        .column_by_name(TASK)
        .map(|c| c.as_string::<i32>())
        .ok_or_else(|| DataFusionError::Internal("SieveRowGroupRead: its input is not a task descriptor".into()))?;
    column
        .iter()
        .flatten()
        .map(|json| serde_json::from_str(json).map_err(|e| DataFusionError::Internal(format!("task descriptor: {e}"))))
        .collect()
}

/// The scan of an [`InputTable`]: reads, for each task descriptor of its
/// input (partition `i`: task `i`), the task's row group.
#[derive(Debug)]
pub struct RowGroupReadExec {
    /// The columns read, `__pos` among them when asked for.
    pub schema: SchemaRef,
    /// The task descriptors.
    pub input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl RowGroupReadExec {
    /// The scan producing `schema` from the task descriptors `input`.
    pub fn new(schema: SchemaRef, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { schema, input, properties }
    }
}

impl DisplayAs for RowGroupReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SieveRowGroupRead: {} row groups", self.properties.output_partitioning().partition_count())
    }
}

impl ExecutionPlan for RowGroupReadExec {
    fn name(&self) -> &str {
        "SieveRowGroupRead"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::UnspecifiedDistribution]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = super::only_input(&children, "SieveRowGroupRead")?;
        Ok(Arc::new(Self::new(self.schema.clone(), input)))
    }

    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let descriptors = self.input.execute(partition, ctx)?;
        let schema = self.schema.clone();
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let tasks = async move {
            let batches = datafusion::physical_plan::common::collect(descriptors).await?;
            Ok::<_, DataFusionError>(batches.iter().map(tasks_of).collect::<DfResult<Vec<_>>>()?.concat())
        };
        let out = schema.clone();
        let rows = futures::stream::once(tasks)
            .map(move |tasks| match tasks {
                Ok(tasks) => {
                    let columns = columns.clone();
                    reader_stream(out.clone(), move |send| tasks.iter().try_for_each(|t| t.read(&columns, send)))
                }
                Err(e) => Box::pin(RecordBatchStreamAdapter::new(out.clone(), futures::stream::once(async { Err(e) }))),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}
