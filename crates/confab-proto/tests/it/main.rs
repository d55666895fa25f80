//! Integration tests of the wire contract: the error table against the seed, and
//! frame encoding/decoding.

mod error_table;
mod frames;

use std::path::PathBuf;

/// The test data kept in the repository (`tests/data/`: the seed's ZIM 1.x
/// error table).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}
