//! libquaestor from C: a test program that feeds every function bad input, a worker whose
//! requests are cancelled over real gRPC, and the C sample worker, compiled with `-Wall -Wextra -Werror` against the shared library (found through
//! the pkg-config file) and the static one, run under AddressSanitizer (leaks included).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    SampleWorker, build, drive_sample, include_dir, lib_dir, registered_and_discovered, repo,
};

const WARNINGS: &[&str] = &["-Wall", "-Wextra", "-Werror", "-std=c11", "-g", "-pthread"];
const ASAN: &[&str] = &["-fsanitize=address", "-fno-omit-frame-pointer"];

/// `quaestor.pc` (from `ffi/quaestor.pc.in`) in `dir`, pointing at this build's library.
fn pkg_config_file(dir: &Path) {
    let template = std::fs::read_to_string(repo().join("ffi/quaestor.pc.in")).expect("template");
    let pc = template
        .replace("@LIBDIR@", &lib_dir().display().to_string())
        .replace("@INCLUDEDIR@", &include_dir().display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(dir.join("quaestor.pc"), pc).expect("write quaestor.pc");
}

/// `pkg-config ARGS quaestor` with `dir` on the search path, split into words.
fn pkg_config(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut command = Command::new("pkg-config");
    command
        .args(args)
        .arg("quaestor")
        .env("PKG_CONFIG_PATH", dir);
    let out = common::run(command);
    assert_eq!(out.code, Some(0), "pkg-config: {out:?}");
    out.stdout.split_whitespace().map(str::to_owned).collect()
}

/// Compiles `source` into `dir/name`: against the shared library (`cc $(pkg-config --cflags
/// --libs quaestor)`) or the static one, with AddressSanitizer when `asan`.
fn compile(dir: &Path, source: &Path, name: &str, shared: bool, asan: bool) -> PathBuf {
    let exe = dir.join(name);
    let mut command = Command::new("cc");
    command.args(WARNINGS).arg("-D_POSIX_C_SOURCE=200809L");
    if asan {
        command.args(ASAN);
    }
    command.arg("-o").arg(&exe).arg(source);
    if shared {
        pkg_config_file(dir);
        command.args(pkg_config(dir, &["--cflags", "--libs"]));
    } else {
        command
            .arg(format!("-I{}", include_dir().display()))
            .arg(lib_dir().join("libquaestor.a"))
            .args(common::STATIC_SYSTEM_LIBS);
    }
    build(command);
    exe
}

/// A command running `exe` with the shared library found and leaks reported.
fn command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.env("LD_LIBRARY_PATH", lib_dir()).env(
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:exitcode=86",
    );
    command
}

fn closed_port() -> u16 {
    quaestor_test_support::free_port()
}

fn bad_input_gives_documented_codes(shared: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let source = repo().join("ffi/tests/c/test_api.c");
    let exe = compile(dir.path(), &source, "test_api", shared, true);
    let mut run = command(&exe);
    run.arg(closed_port().to_string());
    common::passes(run, "test_api", "all checks passed");
}

#[test]
fn bad_input_gives_documented_codes_shared() {
    bad_input_gives_documented_codes(true);
}

#[test]
fn bad_input_gives_documented_codes_static() {
    bad_input_gives_documented_codes(false);
}

/// Requests started as users in environments, cancelled through the reporter's `Cancel`.
#[test]
fn cancel_marks_the_requests_of_that_user_and_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let source = repo().join("ffi/tests/c/cancel_worker.c");
    let exe = compile(dir.path(), &source, "cancel_worker", true, true);
    common::cancel::drive_cancel(SampleWorker::start(command(&exe)));
}

fn sample(shared: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let source = repo().join("sdk-examples/c/hello_worker.c");
    let exe = compile(dir.path(), &source, "hello_worker", shared, true);
    (dir, exe)
}

#[test]
fn the_c_sample_reports_load_and_health_shared() {
    let (_dir, exe) = sample(true);
    let mut run = command(&exe);
    run.arg("0");
    drive_sample(SampleWorker::start(run));
}

#[test]
fn the_c_sample_reports_load_and_health_static() {
    let (_dir, exe) = sample(false);
    let mut run = command(&exe);
    run.arg("0");
    drive_sample(SampleWorker::start(run));
}

#[test]
fn the_c_sample_registers_and_a_balancer_offers_it() {
    let (_dir, exe) = sample(true);
    registered_and_discovered(|etcd, host| {
        let mut run = command(&exe);
        run.args(["0", etcd, host]);
        SampleWorker::start(run)
    });
}

/// `quaestor cluster` runs the C sample as a member (as `sdk-examples/native` configures it):
/// it becomes Ready on its health, the in-process balancer offers it, and it stops with the
/// cluster.
#[test]
fn quaestor_cluster_runs_the_c_sample() {
    let (dir, _exe) = sample(true);
    let [port, balancer] = quaestor_test_support::free_ports(2)[..] else {
        unreachable!()
    };
    let config = dir.path().join("quaestor.config.yml");
    std::fs::write(
        &config,
        format!(
            "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberMaxShutdownTimeSeconds: 10\n\
             loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {balancer}\n  probeIntervalMs: 100\n\
             agents:\n  - agentType: Worker\n    executablePath: ./hello_worker\n    \
             commandLineArguments: \"{{Port}}\"\n    clusterShutdownAction: Kill\n    ports: [ {port} ]\n    \
             serviceNames: [ Worker ]\n    environmentVariables:\n      LD_LIBRARY_PATH: {lib}\n      \
             ASAN_OPTIONS: detect_leaks=1\n",
            lib = lib_dir().display()
        ),
    )
    .expect("write");
    let mut cluster = quaestor_test_support::spawn_listening(
        &common::quaestor_bin(),
        &["cluster", "--config", config.to_str().expect("utf-8")],
    );
    let offered = quaestor_test_support::wait_for(
        "the balancer to offer the C worker",
        common::TIMEOUT,
        || {
            let out = quaestor_test_support::run(
                &common::quaestor_bin(),
                &["discover", "--top", &cluster.addr.to_string(), "Worker"],
                common::TIMEOUT,
            );
            (out.code == Some(0)).then(|| out.stdout.trim().to_owned())
        },
    );
    assert_eq!(offered, format!("127.0.0.1:{port}"));
    assert_eq!(common::current_requests(port), Some(0));
    cluster.process.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cluster.process.wait_exit(common::TIMEOUT).code(), Some(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
