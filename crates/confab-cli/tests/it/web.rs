//! The web SDK's own tests (`web/`, run by npm): unit tests in Node, and browser
//! tests in Debian's Chromium against this crate's `confab` binary.
//!
//! Needs Node/npm and `/usr/bin/chromium` (or `CHROMIUM`). Without them the test
//! is skipped with a message, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("CONFAB_BIN", env!("CARGO_BIN_EXE_confab"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run npm {args:?}: {e}"));
    assert!(status.success(), "npm {args:?} failed in {}", dir.display());
}

#[test]
fn web_sdk_unit_and_browser_tests() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (!have("node")).then_some("node"),
        (!have("npm")).then_some("npm"),
        (!Path::new(&chromium).exists()).then_some("chromium (apt-get install -y chromium)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "the web tests need {missing:?}; CI must provide them (.ci/run installs chromium)"
        );
        eprintln!("skipping the web SDK tests: {missing:?} not found");
        return;
    }
    let dir = web_dir();
    if !dir.join("node_modules").exists() {
        npm(&dir, &["ci", "--no-audit", "--no-fund"]);
    }
    // The committed bundle (served by the binary) must be what the sources build.
    npm(&dir, &["run", "check-dist"]);
    npm(&dir, &["test"]);
}
