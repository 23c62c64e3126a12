//! `sieve train`: only the proxy.

use std::path::PathBuf;

use crate::cli::TrainArgs;
use crate::error::Result;
use crate::session::init_run;
use crate::staging::Staging;

/// `sieve train`: a proxy directory.
pub async fn run(args: TrainArgs) -> Result<PathBuf> {
    let dataset = args.input.plan()?;
    let plan = args.train.plan(args.common.seed, &dataset)?;
    let run = args.common.run_plan(args.out, format!("{}-proxy", dataset.name))?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    crate::train::run(&dataset, &plan, &run, &rt, staging.path())?;
    staging.commit()?;
    Ok(run.out)
}
