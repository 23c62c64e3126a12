//! sieve prunes training datasets: it trains a small proxy model, scores
//! every example with it inside DataFusion, keeps the most useful examples
//! and writes a pruned Parquet dataset with the scores added.
//!
//! The stages are modules named by verb ([`train`], [`score`], [`select`],
//! [`write`]); [`commands`] runs them, a module per subcommand, from a [`plan`] that
//! [`cli`] flags resolve to.

#![deny(missing_docs)]

pub mod active;
pub mod auto;
pub mod choices;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod crossfit;
pub mod dynamics;
pub mod error;
pub mod eval;
pub mod examples;
pub mod fault;
pub mod global;
pub mod import;
pub mod input;
pub mod label_issues;
pub mod leaks;
pub mod log;
pub mod manifest;
pub mod near_dup;
pub mod parquet_io;
pub mod plan;
pub(crate) mod plot;
pub mod progress;
pub mod report;
pub mod resume;
pub mod score;
pub mod select;
pub mod session;
pub mod sql;
pub mod sqlgen;
pub mod staging;
pub mod store;
pub mod train;
pub mod write;

pub use error::{PipelineError, Result};
