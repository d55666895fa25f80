//! Integration tests of the wire contract: the error table against the seed, and
//! frame encoding/decoding.

mod error_table;
mod frames;

use std::path::PathBuf;

/// `shared/` beside the repository (or `CONFAB_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONFAB_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}
