//! sieve's DataFusion functions: decoding the input column ([`decode`]),
//! batched proxy inference over Arrow arrays ([`infer`]) and the SQL functions
//! themselves ([`functions`]). The models they run live in `sieve-proxy`, the
//! score math in `sieve-selection`. [`register_all`] puts every UDF into a
//! `SessionContext`.

#![deny(missing_docs)]

pub mod decode;
pub mod error;
pub mod functions;
pub mod infer;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use error::{Result, UdfError};

/// Every SQL function sieve provides, for registration and for
/// `sieve sql --functions`.
pub fn all_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(functions::proxy_scores::ProxyScores::new()),
        ScalarUDF::from(functions::proxy_embedding::ProxyEmbedding::new()),
        ScalarUDF::from(functions::content_hash::ContentHash::new()),
        ScalarUDF::from(functions::seeded_random::SeededRandom::new()),
        ScalarUDF::from(functions::text_embedding::TextEmbedding::new()),
    ]
}

/// Registers every sieve UDF in `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for f in all_functions() {
        ctx.register_udf(f);
    }
}
