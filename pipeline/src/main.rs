//! The `sieve` binary: parses the command line, runs the job, and maps the
//! outcome to an exit code.
//!
//! Exit codes follow the error's kind ([`ErrorKind::exit_code`]): 0 success,
//! or a reader of the output that stopped reading (`sieve sql ... | head`: a
//! broken pipe ends the job quietly); 1 bad data or a machine that cannot run
//! the job; 2 a usage error (bad flags, as clap reports them, or an invalid
//! value or combination of values); 3 a bug in sieve. Errors are written as
//! log lines with their `kind` (`--log-format json` makes them JSON).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sieve::cli::{Cli, ClusterRole, Command};
use sieve::error::ErrorKind;
use sieve::{commands, eval, log, session, sql, PipelineError};

fn main() -> ExitCode {
    let args = match sieve::config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sieve: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    // Before any thread starts: what the libraries read once, process-wide.
    session::configure_process(cli.command.threads());
    if let Some(opts) = cli.command.log() {
        log::init(opts.log_format, opts.quiet);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sieve: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors raised outside the library (the runtime, clap) are the machine's.
            let kind = e.downcast_ref::<PipelineError>().map_or(ErrorKind::Environment, PipelineError::kind);
            log::error(&format!("{e:#}"), serde_json::json!({"kind": kind.name()}));
            ExitCode::from(kind.exit_code())
        }
    }
}

/// Whether the job ended because the reader of its standard output went
/// away (`| head`): not a failure of the job.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = match cli.command {
        Command::Prune(args) => commands::prune::run(args).await.context("prune")?,
        Command::Train(args) => commands::train::run(args).await.context("train")?,
        Command::Score(args) => commands::score::run(args).await.context("score")?,
        Command::Select(args) => commands::select::run(args).await.context("select")?,
        Command::Eval(args) => eval::run(args).await.context("eval")?,
        Command::Distill(args) => commands::distill::run(args).context("distill")?,
        Command::Import(args) => {
            if args.shard_rows == 0 {
                return Err(PipelineError::Usage("--shard-rows must be at least 1".into()).into());
            }
            let rows = match (&args.images, &args.text) {
                (Some(dir), None) => sieve::import::images(dir, &args.out, args.shard_rows)?,
                (None, Some(file)) => {
                    sieve::import::text(file, &args.text_column, &args.label_column, &args.out, args.shard_rows).await?
                }
                _ => return Err(PipelineError::Usage("give --images DIR or --text FILE".into()).into()),
            };
            log::info("import", &format!("{rows} rows"), serde_json::json!({"rows": rows}));
            args.out
        }
        Command::Cluster(args) => {
            match args.role {
                ClusterRole::Scheduler(flags) => sieve::cluster::scheduler::run(flags.ballista).await?,
                ClusterRole::Executor(flags) => {
                    sieve::cluster::executor::run(flags.ballista, flags.placement.device, flags.placement.precision)
                        .await?
                }
            }
            return Ok(());
        }
        Command::Sql(args) => {
            let mut stdout = std::io::stdout().lock();
            if args.functions {
                write!(stdout, "{}", sql::functions_help()?)?;
                return Ok(());
            }
            let Some(query) = &args.query else {
                return Err(PipelineError::Usage("give a query, or --functions".into()).into());
            };
            let runtime = session::Runtime::cpu()?;
            let ctx = match &args.cluster {
                Some(url) => sieve::cluster::connect(url, &runtime).await?,
                None => runtime.session(None)?,
            };
            sql::register_tables(&ctx, &args).await?;
            sql::run(&ctx, query, args.format, &mut stdout).await?;
            return Ok(());
        }
    };
    log::info("done", &format!("wrote {}", out.display()), serde_json::json!({"out": out}));
    Ok(())
}
