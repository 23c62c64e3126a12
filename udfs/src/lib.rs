//! sieve's DataFusion functions: decoding the input column ([`decode`]),
//! batched proxy inference over Arrow arrays ([`infer`]) and the SQL functions
//! themselves ([`functions`]), with libjpeg-turbo's JPEG decoding for the
//! hashes that must equal Pillow-based ones ([`pillow_jpeg`]). The models
//! they run live in `sieve-proxy`, the score math in `sieve-selection`.
//! [`register_all`] puts every UDF into a `SessionContext`.

#![deny(missing_docs)]

pub mod decode;
pub mod error;
pub mod functions;
pub mod infer;
pub mod models;
pub mod pillow_jpeg;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use error::{Result, UdfError};
pub use models::Models;

/// Every SQL function sieve provides, for registration and for
/// `sieve sql --functions`.
pub fn all_functions(models: &Models) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(functions::proxy_scores::ProxyScores::new(models.clone())),
        ScalarUDF::from(functions::proxy_embedding::ProxyEmbedding::new(models.clone())),
        ScalarUDF::from(functions::content_hash::ContentHash::new()),
        ScalarUDF::from(functions::seeded_random::SeededRandom::new()),
        ScalarUDF::from(functions::text_embedding::TextEmbedding::new(models.clone())),
        ScalarUDF::from(functions::minhash::MinHash::new()),
        ScalarUDF::from(functions::minhash::MinHashJaccard::new()),
        ScalarUDF::from(functions::image_hash::ImageHash::new(functions::image_hash::Kind::Phash)),
        ScalarUDF::from(functions::image_hash::ImageHash::new(functions::image_hash::Kind::Dhash)),
        ScalarUDF::from(functions::image_hash::Hamming::new()),
        ScalarUDF::from(functions::band_keys::BandKeys::new()),
    ]
}

/// Registers every sieve UDF in `ctx`, the model-running ones loading
/// through `models`.
pub fn register_all(ctx: &SessionContext, models: &Models) {
    for f in all_functions(models) {
        ctx.register_udf(f);
    }
}
