//! End-to-end tests of the `sieve` binary, run on the generated fixtures in
//! `fixtures/` (known flipped labels and duplicates). One test binary; each
//! module holds one concern.

/// Helpers: running the binary, reading Parquet, the fixtures' ground truth.
mod util;

/// `sieve import`: image folders and text files into Hugging Face Parquet.
mod import;

/// `sieve prune` on the image and text fixtures: what the output holds.
mod prune;

/// Batch-job guarantees: determinism, untouched inputs, atomic output under
/// SIGKILL, bounded memory, clear errors on broken files and bad rows.
mod reliability;

/// Whether the scores rank the known label noise as hard.
mod ranking;

/// Cross-fitting: out-of-sample probabilities, and the label issues
/// decided from them.
mod crossfit;

/// `sieve select` and `sieve sql` over an existing output.
mod reselect;

/// `sieve eval`: the harness on a noisy fixture.
mod eval;

/// `s3://` inputs and outputs against a local S3-compatible server.
mod s3;

/// Active learning: the next batch to label, and simulated rounds.
mod active;

/// Near-duplicates: planted pairs found, evidence kept, one row kept.
mod near_dups;

/// Rows that cannot be scored: flagged and never kept, or a clear stop.
mod bad_rows;

/// Flags and inputs that must give a clear error, not a panic.
mod usage_errors;

/// `report.html`: its grids, tables and plots, and how a browser draws it.
mod report;

/// A Ballista cluster of `sieve cluster` processes on loopback.
mod cluster;
