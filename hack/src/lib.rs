//! Empty: this crate only exists for its dependency features (see Cargo.toml).

#![deny(missing_docs)]
