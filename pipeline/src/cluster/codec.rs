//! How sieve's plan nodes cross the wire between client, scheduler and
//! executors: the input table and its scan ([`super::scan`]) and the shard
//! writer ([`super::shards`]). Each is a small JSON message behind a magic
//! prefix, carrying the version of the sieve that planned it; a node
//! running another version refuses it, so a mixed cluster fails when the
//! job starts, naming both versions, instead of scoring with another
//! model code. Everything else goes to Ballista's own codecs.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use base64::Engine;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::only_input;
use super::scan::{InputTable, RowGroupReadExec, Task};
use super::shards::{ShardSinkExec, WriteShards};

/// The version every node of a job must run.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What starts every message of this codec.
const MAGIC: &[u8] = b"sieve-plan\0";

/// One of sieve's plan nodes, as sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
enum Node {
    /// An [`InputTable`] (its schema travels beside it).
    InputTable { tasks: Vec<Task> },
    /// A [`RowGroupReadExec`] (its task descriptors travel beside it); its
    /// schema as Arrow IPC, base64.
    RowGroupRead { schema: String },
    /// A [`WriteShards`] node (its input travels beside it).
    WriteShards { dir: std::path::PathBuf, tasks: Vec<Task> },
    /// A [`ShardSinkExec`] (its input travels beside it).
    ShardSink { dir: std::path::PathBuf, tasks: Vec<Task> },
}

/// A [`Node`] with the version of the sieve that planned it.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    sieve: String,
    #[serde(flatten)]
    node: Node,
}

fn encode(node: Node, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.extend_from_slice(MAGIC);
    serde_json::to_writer(buf, &Message { sieve: VERSION.to_string(), node })
        .map_err(|e| DataFusionError::Internal(format!("sieve plan node: {e}")))
}

/// The node in `buf`, `None` when `buf` is not one of sieve's.
fn decode(buf: &[u8]) -> DfResult<Option<Node>> {
    let Some(json) = buf.strip_prefix(MAGIC) else { return Ok(None) };
    let message: Message = serde_json::from_slice(json)
        .map_err(|e| DataFusionError::Plan(format!("a sieve plan node this sieve {VERSION} cannot read: {e}")))?;
    if message.sieve != VERSION {
        return Err(DataFusionError::Plan(format!(
            "version mismatch: the job was planned by sieve {}, this node runs sieve {VERSION}; run one version on the client, the scheduler and every executor",
            message.sieve
        )));
    }
    Ok(Some(message.node))
}

fn schema_to_ipc(schema: &Schema) -> DfResult<String> {
    let mut bytes = Vec::new();
    datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, schema)?.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn schema_from_ipc(text: &str) -> DfResult<SchemaRef> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| DataFusionError::Plan(format!("sieve input scan: schema: {e}")))?;
    Ok(datafusion::arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)?.schema())
}

/// The codec of client, scheduler and executors: sieve's nodes, then Ballista's.
#[derive(Debug, Default)]
pub struct SieveCodec {
    logical: BallistaLogicalExtensionCodec,
    physical: BallistaPhysicalExtensionCodec,
}

impl SieveCodec {
    /// The codec, shared.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl LogicalExtensionCodec for SieveCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        match decode(buf)? {
            Some(Node::WriteShards { dir, tasks }) => {
                Ok(Extension { node: Arc::new(WriteShards::new(only_input(inputs, "SieveWriteShards")?, dir, tasks)?) })
            }
            Some(other) => Err(DataFusionError::Plan(format!("not a logical plan node: {other:?}"))),
            None => self.logical.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        match node.node.as_any().downcast_ref::<WriteShards>() {
            Some(w) => encode(Node::WriteShards { dir: w.dir.clone(), tasks: w.tasks.clone() }, buf),
            None => self.logical.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        match decode(buf)? {
            Some(Node::InputTable { tasks }) => Ok(Arc::new(InputTable { schema, tasks })),
            Some(other) => Err(DataFusionError::Plan(format!("not a table: {other:?}"))),
            None => self.logical.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        match node.downcast_ref::<InputTable>() {
            Some(table) => encode(Node::InputTable { tasks: table.tasks.clone() }, buf),
            None => self.logical.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.logical.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.logical.try_encode_file_format(buf, node)
    }
}

impl PhysicalExtensionCodec for SieveCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match decode(buf)? {
            Some(Node::RowGroupRead { schema }) => {
                Ok(Arc::new(RowGroupReadExec::new(schema_from_ipc(&schema)?, only_input(inputs, "SieveRowGroupRead")?)))
            }
            Some(Node::ShardSink { dir, tasks }) => {
                Ok(Arc::new(ShardSinkExec::try_new(only_input(inputs, "SieveShardSink")?, dir, tasks)?))
            }
            Some(other) => Err(DataFusionError::Plan(format!("not an execution plan node: {other:?}"))),
            None => self.physical.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(scan) = node.downcast_ref::<RowGroupReadExec>() {
            return encode(Node::RowGroupRead { schema: schema_to_ipc(&scan.schema)? }, buf);
        }
        if let Some(sink) = node.downcast_ref::<ShardSinkExec>() {
            return encode(Node::ShardSink { dir: sink.dir.clone(), tasks: sink.tasks.to_vec() }, buf);
        }
        self.physical.try_encode(node, buf, proto_converter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            path: "/data/a.parquet".into(),
            identity: "0123".into(),
            version: "1|2".into(),
            file_first: 0,
            row_group: 1,
            first: 5,
            rows: 5,
        }
    }

    #[test]
    fn a_node_comes_back_as_sent() {
        let mut buf = Vec::new();
        encode(Node::InputTable { tasks: vec![task()] }, &mut buf).unwrap();
        match decode(&buf).unwrap() {
            Some(Node::InputTable { tasks }) => assert_eq!(tasks, vec![task()]),
            other => panic!("{other:?}"),
        }
        assert!(decode(b"\x0a\x03abc").unwrap().is_none(), "Ballista's messages are passed on");
    }

    #[test]
    fn a_node_planned_by_another_version_is_refused_naming_both() {
        let mut buf = Vec::new();
        encode(Node::InputTable { tasks: vec![task()] }, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap().replace(&format!("\"sieve\":\"{VERSION}\""), "\"sieve\":\"0.0.1\"");
        let err = decode(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("version mismatch") && err.contains("0.0.1") && err.contains(VERSION), "{err}");
    }

    #[test]
    fn a_scan_keeps_its_schema_metadata() {
        use datafusion::arrow::datatypes::{DataType, Field};
        let meta = [("huggingface".to_string(), "{}".to_string())].into();
        let schema = Schema::new_with_metadata(vec![Field::new("__pos", DataType::Int64, false)], meta);
        assert_eq!(*schema_from_ipc(&schema_to_ipc(&schema).unwrap()).unwrap(), schema);
    }
}
