//! `sieve sql`: ad-hoc SQL over a dataset and sieve's outputs, with sieve's
//! functions registered. Tables: `input` (the dataset, with `__pos`),
//! `scores` (every row's scores and `keep`) and `kept` (the pruned rows).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use sieve_schemas::layout;

use crate::cli::{Format, SqlArgs};
use crate::error::{io_err, PipelineError, Result};
use crate::session::Runtime;

/// Lists sieve's SQL functions: signature, description and arguments.
pub fn functions_help() -> Result<String> {
    let mut out = String::new();
    for f in sieve_udfs::all_functions(&Runtime::cpu()?.models) {
        let Some(doc) = f.documentation() else { continue };
        out.push_str(&format!("{}\n    {}\n", doc.syntax_example, doc.description));
        for (name, text) in doc.arguments.iter().flatten() {
            out.push_str(&format!("    {name}: {text}\n"));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Registers the tables `sieve sql` offers in `ctx`.
pub async fn register_tables(ctx: &SessionContext, args: &SqlArgs) -> Result<()> {
    if args.input.dataset.is_some() || args.input.input.is_some() {
        let dataset = args.input.plan()?;
        // On a cluster, a table of row groups the executors read themselves.
        let input: Arc<dyn datafusion::catalog::TableProvider> = match &args.cluster {
            Some(_) => {
                let tasks = crate::cluster::scan::Task::all(&dataset.train);
                Arc::new(crate::cluster::scan::InputTable::new(&dataset.train, tasks)?)
            }
            None => Arc::new(dataset.train.table()?),
        };
        ctx.register_table("input", input)?;
    }
    if let Some(out) = &args.out {
        // A remote output is complete when its manifest exists (see crate::store).
        let remote = crate::store::is_remote(out);
        let scores = layout::scores(out);
        if remote || scores.is_file() {
            ctx.register_parquet("scores", scores.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
        }
        let data = layout::data(out);
        if remote || data.is_dir() {
            let data = format!("{}/", data.to_string_lossy());
            ctx.register_parquet("kept", &data, ParquetReadOptions::default()).await?;
        }
    }
    Ok(())
}

/// Runs `query` and writes its rows to `out` in `format`, batch by batch.
/// A reader that stops reading (`| head`) ends it with an I/O error of kind
/// `BrokenPipe`, whichever writer met it (the CSV writer keeps only the
/// message of the errors it meets).
pub async fn run(ctx: &SessionContext, query: &str, format: Format, out: &mut dyn Write) -> Result<()> {
    let mut out = PipeWatch { inner: out, broken: false };
    let result = write_rows(ctx, query, format, &mut out).await;
    match result {
        Err(_) if out.broken => Err(io_err("<stdout>")(std::io::ErrorKind::BrokenPipe.into())),
        other => other,
    }
}

async fn write_rows(ctx: &SessionContext, query: &str, format: Format, out: &mut dyn Write) -> Result<()> {
    // The query is the user's: one that does not parse or plan is a usage error.
    let df = ctx.sql(query).await.map_err(|e| PipelineError::Usage(format!("the query: {e}")))?;
    let mut stream = df.execute_stream().await?;
    let stdout = std::path::PathBuf::from("<stdout>");
    match format {
        Format::Table => {
            // A table needs every row to size its columns.
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(b) = stream.next().await {
                batches.push(b?);
            }
            let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
            writeln!(out, "{table}").map_err(io_err(&stdout))?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::Writer::new(&mut *out);
            while let Some(b) = stream.next().await {
                writer.write(&b?)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(b) = stream.next().await {
                writer.write(&b?)?;
            }
            writer.finish()?;
        }
    }
    out.flush().map_err(io_err(&stdout))
}

/// A writer that remembers whether a write met a closed pipe.
struct PipeWatch<'a> {
    inner: &'a mut dyn Write,
    broken: bool,
}

impl PipeWatch<'_> {
    fn watch<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        if result.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.broken = true;
        }
        result
    }
}

impl Write for PipeWatch<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        self.watch(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        self.watch(result)
    }
}
