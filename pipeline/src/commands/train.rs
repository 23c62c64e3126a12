//! `sieve train`: only the proxy.

use std::path::PathBuf;

use crate::cli::TrainArgs;
use crate::error::Result;
use crate::plan::{DatasetPlan, RunPlan, TrainPlan};
use crate::session::init_run;
use crate::staging::Staging;

/// `sieve train`: a proxy directory.
pub async fn run(args: TrainArgs) -> Result<PathBuf> {
    let dataset = DatasetPlan::resolve(&args.input)?;
    let plan = TrainPlan::new(args.train.proxy.clone(), args.train.overrides(), args.common.seed, &dataset)?;
    let run = RunPlan::resolve(&args.common, args.out, format!("{}-proxy", dataset.name))?;
    let rt = init_run(&run)?;
    let staging = Staging::new(&run.out)?;
    crate::train::run(&dataset, &plan, &run, &rt.placement, staging.path())?;
    staging.commit()?;
    Ok(run.out)
}
