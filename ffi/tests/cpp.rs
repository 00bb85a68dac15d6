//! The C++ wrapper `bindings/cpp/quaestor.hpp` and the C++ sample worker
//! `sdk-examples/cpp/hello_worker.cpp`, compiled with g++ (warnings as errors) against the
//! libquaestor this test run built, shared and static, and run for real: the sample through
//! the protocol every sample worker speaks (see `common`), the wrapper's own checks through
//! `bindings/cpp/tests/test_quaestor.cpp`, request cancellation through
//! `bindings/cpp/tests/cancel_worker.cpp` (see `common::cancel`). The shared-library builds run under
//! AddressSanitizer (leak detection included).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    STATIC_SYSTEM_LIBS, SampleWorker, TIMEOUT, build, drive_sample, health, include_dir, lib_dir,
    registered_and_discovered, repo, run,
};
use quaestor_test_support::{ChildProcess, OutputLines};

/// How a program is linked with libquaestor.
#[derive(Clone, Copy)]
enum Link {
    /// `-lquaestor` (libquaestor.so, found at run time through an rpath), under ASan.
    SharedWithAsan,
    /// `libquaestor.a` and the system libraries it needs.
    Static,
}

/// Compiles the C++ program `source` (relative to the repository) into `dir`; its path.
fn compile(source: &str, dir: &Path, link: Link) -> PathBuf {
    let source = repo().join(source);
    let stem = source.file_stem().expect("a file name");
    let exe = dir.join(stem);
    let lib = lib_dir();
    let mut command = Command::new("g++");
    command
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(format!("-I{}", include_dir().display()))
        .arg(format!("-I{}", repo().join("bindings/cpp").display()));
    if let Link::SharedWithAsan = link {
        command.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
    }
    command.arg(&source).arg("-o").arg(&exe);
    match link {
        Link::SharedWithAsan => {
            command
                .arg(format!("-L{}", lib.display()))
                .arg("-lquaestor")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        Link::Static => {
            command
                .arg(lib.join("libquaestor.a"))
                .args(STATIC_SYSTEM_LIBS);
        }
    }
    build(command);
    exe
}

/// The sample worker `exe` with `args`, under ASan's leak checker and with its errors
/// going to this test's stderr.
fn sample_command(exe: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .stderr(Stdio::inherit());
    command
}

fn hello_worker(link: Link) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let exe = compile("sdk-examples/cpp/hello_worker.cpp", dir.path(), link);
    (dir, exe)
}

#[test]
fn the_sample_worker_linked_with_the_shared_library_reports_requests_and_health() {
    let (_dir, exe) = hello_worker(Link::SharedWithAsan);
    drive_sample(SampleWorker::start(sample_command(&exe, &["0"])));
}

#[test]
fn the_sample_worker_registers_in_etcd_and_a_balancer_offers_it() {
    let (_dir, exe) = hello_worker(Link::SharedWithAsan);
    registered_and_discovered(|etcd, host| {
        SampleWorker::start(sample_command(&exe, &["0", etcd, host]))
    });
}

#[test]
fn the_sample_worker_linked_with_the_static_library_reports_requests_and_health() {
    let (_dir, exe) = hello_worker(Link::Static);
    drive_sample(SampleWorker::start(sample_command(&exe, &["0"])));
}

#[test]
fn the_sample_worker_serves_after_the_end_of_stdin_until_sigterm() {
    let (_dir, exe) = hello_worker(Link::SharedWithAsan);
    let mut command = sample_command(&exe, &["0"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut process = ChildProcess::spawn("sample worker", command);
    let lines = OutputLines::of(&mut process);
    let addr: std::net::SocketAddr = lines.expect("`listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("listening on ")?.trim().parse().ok()
    });
    // Its stdin ended at once; it still serves.
    assert_eq!(
        health(addr.port()),
        Some(0),
        "SERVING after the end of stdin"
    );
    assert!(
        quaestor_test_support::process_running(process.pid() as i32),
        "still running"
    );
    let kill = run({
        let mut kill = Command::new("kill");
        kill.args(["-TERM", &process.pid().to_string()]);
        kill
    });
    assert_eq!(kill.code, Some(0), "kill: {}", kill.stderr);
    assert_eq!(
        process.wait_exit(TIMEOUT).code(),
        Some(0),
        "exit 0 on SIGTERM"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the reporter stopped with the worker"
    );
}

#[test]
fn cancel_marks_the_requests_of_that_user_and_environment() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let exe = compile(
        "bindings/cpp/tests/cancel_worker.cpp",
        dir.path(),
        Link::SharedWithAsan,
    );
    common::cancel::drive_cancel(SampleWorker::start(sample_command(&exe, &[])));
}

#[test]
fn the_wrapper_turns_failures_into_errors_with_their_codes() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let exe = compile(
        "bindings/cpp/tests/test_quaestor.cpp",
        dir.path(),
        Link::SharedWithAsan,
    );
    let mut command = Command::new(&exe);
    command.env("ASAN_OPTIONS", "detect_leaks=1");
    common::passes(command, "test_quaestor", " checks, 0 failed");
}
