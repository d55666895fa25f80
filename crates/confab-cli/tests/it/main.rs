//! Runs the real `confab` binary the way a user or script would.

mod bench;
mod client;
mod failover;
mod serve;
mod token;
mod web;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's root (test data and the bench peers live in it).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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
