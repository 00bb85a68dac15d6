//! What the CLI suites share: the binary under test, a `quaestor cluster` whose log is read,
//! and its status over the control socket.
#![allow(dead_code)] // each suite uses its own part

use std::path::{Path, PathBuf};
use std::time::Duration;

use quaestor_core::supervisor::control::ClusterReport;
use quaestor_test_support::{ChildProcess, Finished, OutputLines, quaestor_bin, run};

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

pub fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// `quaestor cluster` with its stdout echoed and its log (stderr, at INFO) to read.
pub fn start_logged(config: &Path, socket: &Path) -> (ChildProcess, OutputLines) {
    let mut command = std::process::Command::new(bin());
    command
        .args(["cluster", "--config"])
        .arg(config)
        .arg("--control")
        .arg(socket)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut process = ChildProcess::spawn("quaestor cluster", command);
    OutputLines::of(&mut process).drain();
    let log = OutputLines::of_stderr(&mut process);
    (process, log)
}

/// The status, as `quaestor cluster status --json` gives it, or None while no cluster answers
/// at `socket` (exit 2).
pub fn try_status(socket: &Path) -> Option<ClusterReport> {
    let out = quaestor(&[
        "cluster",
        "status",
        "--json",
        "--control",
        socket.to_str().expect("utf-8"),
    ]);
    if out.code == Some(2) {
        return None;
    }
    assert_eq!(out.code, Some(0), "{out:?}");
    Some(serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout)))
}
