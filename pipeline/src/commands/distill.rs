//! `sieve distill`: a static embedding from a sentence encoder.

use std::path::PathBuf;
use std::time::Instant;

use sieve_proxy::static_embedding::distill;
use sieve_proxy::text_encoder::TextEncoder;

use crate::cli::DistillArgs;
use crate::error::{PipelineError, Result};
use crate::log;
use crate::staging::Staging;

/// `sieve distill`: the static model's directory.
pub fn run(args: DistillArgs) -> Result<PathBuf> {
    let started = Instant::now();
    let encoder = TextEncoder::load(&args.encoder)?;
    if encoder.is_static() {
        return Err(PipelineError::Usage(format!("--encoder {}: already a static model", args.encoder.display())));
    }
    if args.dims == 0 || args.dims > encoder.dim() {
        return Err(PipelineError::Usage(format!(
            "--dims {}: between 1 and the encoder's width, {}",
            args.dims,
            encoder.dim()
        )));
    }
    let vectors = encoder.token_vectors()?;
    let staging = Staging::new(&args.out)?;
    let tokenizer = args.encoder.join("tokenizer.json");
    let made = distill(&vectors, encoder.dim(), args.dims, &tokenizer, encoder.name(), staging.path())?;
    staging.commit()?;
    let seconds = started.elapsed().as_secs_f64();
    log::info(
        "distill",
        &format!(
            "{} tokens, {} -> {} dims ({:.1}% of the variance), {seconds:.1} s",
            made.vocabulary,
            made.encoder_dim,
            made.dims,
            100.0 * made.explained_variance
        ),
        serde_json::json!({"distilled": made, "seconds": seconds}),
    );
    Ok(args.out)
}
