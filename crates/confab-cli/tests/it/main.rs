//! Runs the real `confab` binary the way a user or script would.

mod bench;
mod client;
mod failover;
mod serve;
mod token;
mod web;

use std::path::PathBuf;
use std::process::{Command, Output};

/// `shared/` beside the repository (or `CONFAB_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONFAB_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn confab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(args)
        .env_remove("CONFAB_SECRET")
        .output()
        .expect("run confab")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
