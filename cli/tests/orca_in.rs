//! ORCA in, end to end: stock grpc-go servers with ORCA enabled (tests/orca-go, no quaestor
//! code; they serve health and OpenRcaService, neither quaestor's load push nor ReportLoad),
//! registered in a real etcd, are ranked by a real `quaestor load-balancer` by their ORCA
//! reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_core::client::Target;
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{Worker, quaestor_bin, spawn_listening, spawn_registration};

const TIMEOUT: Duration = Duration::from_secs(30);

/// grpc-go's ORCA service reports when a stream opens and then at most every 30 s (its
/// floor, whatever the balancer asks), so a change of load takes up to that long to show.
const GRPC_GO_REPORT_FLOOR: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

/// Builds the stock grpc-go server of tests/orca-go (its modules are fetched by
/// scripts/setup.sh); fails if Go is missing.
fn build_orca_server(out: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/orca-go");
    let binary = out.join("orca-server");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` (install Go; the ORCA test needs it): {e}"));
    assert!(built.success(), "go build of {} failed", source.display());
    binary
}

/// A load-balancer config over the etcd registry, a load probe every 100 ms.
fn write_config(dir: &Path, etcd: &EtcdCluster) -> PathBuf {
    let endpoint = etcd.endpoint(0);
    let port = endpoint.rsplit(':').next().expect("port");
    let path = dir.join("quaestor.loadbalancer.config.yml");
    let text = format!(
        "# written by the test\nloadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 5150\n  probeIntervalMs: 100\n  serviceResponseTimeoutSeconds: 1\nagents:\n  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {port} ]\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_servers_with_orca_are_ranked_by_their_orca_load() {
    let dir = tempfile::tempdir().expect("dir");
    let server_bin = build_orca_server(dir.path());
    let etcd = EtcdCluster::single();
    // Busy (0.9, then 0.05 after SIGUSR1) and idle (0.1, then 1.0).
    let busy: Worker = spawn_listening(&server_bin, &["-utilization", "0.9", "-on-usr1", "0.05"]);
    let idle: Worker = spawn_listening(&server_bin, &["-utilization", "0.1", "-on-usr1", "1.0"]);
    let registrations: Vec<_> = [&busy, &idle]
        .iter()
        .map(|w| spawn_registration(&bin(), &etcd.endpoint(0), "127.0.0.1", w.addr.port(), &[]))
        .collect();
    let balancer = spawn_listening(
        &bin(),
        &[
            "load-balancer",
            "--config",
            write_config(dir.path(), &etcd).to_str().expect("utf-8"),
            "--port",
            "0",
        ],
    );
    let target = Target::new(&balancer.addr.to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");
    let (busy_port, idle_port) = (i32::from(busy.addr.port()), i32::from(idle.addr.port()));

    // Both are found; only a load report makes a location a DiscoverTopServices answer (a
    // backend without one is never in it), so the idle one on top is ranked by ORCA.
    let top = |channel| {
        let target = target.clone();
        async move {
            let chosen = target
                .discover(channel, "", "Worker", 1, true)
                .await
                .expect("discover top");
            chosen.first().map(|l| l.port)
        }
    };
    quaestor_test_support::wait_for_async("both found", TIMEOUT, || async {
        let all = target
            .discover(channel.clone(), "", "Worker", 0, false)
            .await
            .expect("discover");
        (all.len() == 2).then_some(())
    })
    .await;
    quaestor_test_support::wait_for_async("the idle ORCA server on top", TIMEOUT, || async {
        (top(channel.clone()).await == Some(idle_port)).then_some(())
    })
    .await;
    // It stays on top: its 10 % against 90 % is load, not a chance order.
    for _ in 0..5 {
        assert_eq!(top(channel.clone()).await, Some(idle_port));
    }

    // The loads swap: the ranking follows grpc-go's next reports.
    busy.process.signal(Signal::SIGUSR1);
    idle.process.signal(Signal::SIGUSR1);
    quaestor_test_support::wait_for_async(
        "the ranking to follow the swapped ORCA loads",
        GRPC_GO_REPORT_FLOOR + TIMEOUT,
        || async { (top(channel.clone()).await == Some(busy_port)).then_some(()) },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(top(channel.clone()).await, Some(busy_port));
    }
    drop(registrations);
}
