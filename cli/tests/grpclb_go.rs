//! A stock grpc-go client with the grpclb policy (tests/grpclb-go, no quaestor code) balances
//! over real `quaestor worker` processes through quaestor's balancer, and moves off a worker
//! that turns NOT_SERVING.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::server::health::HealthState;
use quaestor_test_support::{ChildProcess, OutputLines, quaestor_bin, spawn_worker};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the Go client (its modules are fetched by scripts/setup.sh); fails if Go is missing.
fn build_go_client(out: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/grpclb-go");
    let binary = out.join("grpclb-client");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` (install Go; the grpclb test needs it): {e}"));
    assert!(built.success(), "go build of {} failed", source.display());
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_go_grpclb_client_balances_and_moves_off_a_not_serving_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client_bin = build_go_client(dir.path());
    let bin = quaestor_bin(env!("CARGO_BIN_EXE_quaestor"));
    let workers: Vec<_> = (0..3)
        .map(|_| spawn_worker(&bin, &["--capacity", "4"]))
        .collect();
    let addresses: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    let registry = MemoryRegistry::from_locations(workers.iter().map(|w| {
        ServiceLocation::new("", "Worker", "127.0.0.1", w.addr.port()).expect("location")
    }));
    let balancer = Balancer::start(
        registry,
        BalancerOptions {
            probe_interval: Duration::from_millis(200),
            ..BalancerOptions::default()
        },
    );
    let server = balancer
        .server(HealthState::new())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("balancer");

    let mut command = Command::new(&client_bin);
    command
        .args([
            "-balancer",
            &server.local_addr().to_string(),
            "-service",
            "Worker",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut client = ChildProcess::spawn("grpclb-client", command);
    let lines = OutputLines::of(&mut client);
    let next_worker = || {
        lines
            .next(TIMEOUT)
            .strip_prefix("worker ")
            .map(str::to_owned)
    };

    // Every worker gets calls.
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        if let Some(worker) = next_worker() {
            assert!(
                addresses.contains(&worker),
                "served by an unknown worker {worker}"
            );
            seen.insert(worker);
        }
    }

    // Worker 0 turns NOT_SERVING: the balancer drops it and the client moves off.
    workers[0].process.signal(Signal::SIGUSR1);
    let mut in_a_row = 0;
    while in_a_row < 30 {
        match next_worker() {
            Some(worker) if worker == addresses[0] => in_a_row = 0,
            Some(_) => in_a_row += 1,
            None => {}
        }
    }
    // And back when it serves again.
    workers[0].process.signal(Signal::SIGUSR2);
    while next_worker().as_deref() != Some(addresses[0].as_str()) {}
    drop(client);
    drop(server);
}
