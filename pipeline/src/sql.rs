//! `sieve sql`: ad-hoc SQL over a dataset and sieve's outputs, with sieve's
//! functions registered. Tables: `input` (the dataset, with `__pos`),
//! `scores` (every row's scores and `keep`) and `kept` (the pruned rows).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

use crate::cli::{Format, SqlArgs};
use crate::error::{io_err, Result};
use crate::plan::DatasetPlan;

/// Lists sieve's SQL functions: signature, description and arguments.
pub fn functions_help() -> String {
    let mut out = String::new();
    for f in sieve_udfs::all_functions() {
        let Some(doc) = f.documentation() else { continue };
        out.push_str(&format!("{}\n    {}\n", doc.syntax_example, doc.description));
        for (name, text) in doc.arguments.iter().flatten() {
            out.push_str(&format!("    {name}: {text}\n"));
        }
        out.push('\n');
    }
    out
}

/// Registers the tables `sieve sql` offers in `ctx`.
pub async fn register_tables(ctx: &SessionContext, args: &SqlArgs) -> Result<()> {
    if args.input.dataset.is_some() || args.input.input.is_some() {
        let dataset = DatasetPlan::resolve(&args.input)?;
        ctx.register_table("input", Arc::new(dataset.train.table()?))?;
    }
    if let Some(out) = &args.out {
        // A remote output is complete when its manifest exists (see crate::store).
        let remote = crate::store::is_remote(out);
        let scores = out.join("scores.parquet");
        if remote || scores.is_file() {
            ctx.register_parquet("scores", scores.to_string_lossy().as_ref(), ParquetReadOptions::default()).await?;
        }
        let data = out.join("data");
        if remote || data.is_dir() {
            let data = format!("{}/", data.to_string_lossy());
            ctx.register_parquet("kept", &data, ParquetReadOptions::default()).await?;
        }
    }
    Ok(())
}

/// Runs `query` and writes its rows to `out` in `format`, batch by batch.
pub async fn run(ctx: &SessionContext, query: &str, format: Format, out: &mut dyn Write) -> Result<()> {
    let df = ctx.sql(query).await?;
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
            let mut writer = datafusion::arrow::csv::Writer::new(out);
            while let Some(b) = stream.next().await {
                writer.write(&b?)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(out);
            while let Some(b) = stream.next().await {
                writer.write(&b?)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
