//! The reference worker as a process: turns NOT_SERVING and exits on cue, stops gracefully on
//! SIGTERM, fails cleanly on a port in use.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_test_support::{Finished, quaestor_bin, run, spawn_worker, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

#[test]
fn turns_not_serving_after_the_given_time() {
    let worker = spawn_worker(
        &bin(),
        &[
            "--unhealthy-after",
            "1s",
            "--service",
            "A",
            "--service",
            "B",
        ],
    );
    let addr = worker.addr.to_string();
    let not_serving = |service: &str| {
        let out = quaestor(&["health", &addr, service]);
        (out.code == Some(1) && out.stdout.trim() == "NOT_SERVING").then_some(())
    };
    wait_for("A to turn NOT_SERVING", TIMEOUT, || not_serving("A"));
    not_serving("B").expect("every service flips");
    not_serving("").expect("the worker as a whole flips too");
}

#[test]
fn exits_with_the_given_code_after_the_given_time() {
    let mut worker = spawn_worker(&bin(), &["--exit-after", "500ms", "--exit-code", "7"]);
    let status = worker.process.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(7));
}

#[test]
fn sigterm_stops_gracefully_with_0() {
    let mut worker = spawn_worker(&bin(), &[]);
    let addr = worker.addr.to_string();
    assert_eq!(quaestor(&["health", &addr]).code, Some(0));
    worker.process.signal(Signal::SIGTERM);
    let status = worker.process.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let after = quaestor(&["health", &addr, "--timeout", "2s"]);
    assert_eq!(
        after.code,
        Some(2),
        "nothing listens after the stop: {after:?}"
    );
}

#[test]
fn port_in_use_fails_with_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = quaestor(&["worker", "--port", &port]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot listen on"), "{out:?}");
}
