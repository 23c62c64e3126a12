//! What sieve knows about datasets before it touches a model: dataset
//! descriptors (`schemas/datasets/*.toml`), the resolution of file, directory
//! and glob inputs, the column roles and the Arrow types each role accepts,
//! the columns sieve adds and the scores it ranks by ([`ScoreName`]), and the Hugging Face `huggingface` schema metadata
//! that carries class names in and out, and the layout of an output
//! directory ([`layout`]).

#![deny(missing_docs)]

pub mod columns;
pub mod descriptor;
pub mod error;
pub mod huggingface;
pub mod layout;
pub mod paths;
pub mod row_error;
pub mod score;
pub mod stage;

pub use columns::{InputKind, OutputColumns};
pub use descriptor::{DatasetDescriptor, Split};
pub use error::SchemaError;
pub use row_error::{ErrorColumn, RowErrorReason};
pub use score::{ScoreName, ScoreSource};
pub use stage::Stage;
