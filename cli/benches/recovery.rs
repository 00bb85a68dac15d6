//! Recovery times, with real processes (and real etcd for the last):
//! - a supervised worker crashes → restarted and SERVING again (the supervisor's runner, the
//!   default 0.5 s first backoff plus jitter);
//! - a worker turns NOT_SERVING → no longer in a balancer's answers (health Watch);
//! - a registering node is killed (SIGKILL) → its etcd registration expired (lease TTL 2 s).
//!
//!     cargo bench -p quaestor-cli --bench recovery [-- ROUNDS]
//!
//! Each is measured ROUNDS times (default 5); the median and the maximum are printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::supervisor::member::{Policy, State};
use quaestor_core::supervisor::runner::{MemberSpec, Runner};
use quaestor_core::supervisor::spawn::{MemberCommand, Spawner};
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{free_port, quaestor_bin, spawn_registration, spawn_worker};

const DEADLINE: Duration = Duration::from_secs(60);

fn bin() -> std::path::PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

/// Polls `done` every millisecond until it holds; the time it took.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not happen within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// A crash of a supervised worker until it serves again.
async fn crash_to_serving() -> Duration {
    let port = free_port();
    let spec = MemberSpec {
        tag: "Worker[0]".into(),
        command: MemberCommand {
            program: bin(),
            args: ["worker", "--port", &port.to_string(), "--exit-after", "1s"]
                .map(str::to_owned)
                .to_vec(),
            env: vec![],
            working_dir: None,
        },
        health_address: format!("127.0.0.1:{port}"),
        services: vec!["Worker".into()],
        locations: vec![],
        policy: Policy::default(),
        heartbeat: Duration::from_secs(30),
        response_timeout: Duration::from_secs(2),
        stop_signal: Signal::SIGTERM,
        die_with_supervisor: true,
        check_health: true,
    };
    let spawner = Spawner {
        shim: Some(bin()),
        sink: Arc::new(|_, _, _, _| {}),
    };
    let runner = Runner::start(spec, spawner, Arc::new(MemoryRegistry::new()));
    let status = runner.status.clone();
    until("the first start", || {
        matches!(status.borrow().state, State::Ready { .. })
    })
    .await;
    // From the exit (the runner sees it at once) to Ready again.
    until("the crash", || status.borrow().pid.is_none()).await;
    let took = until("serving again", || {
        let s = status.borrow();
        s.starts >= 2 && matches!(s.state, State::Ready { .. })
    })
    .await;
    runner.stop().await;
    took
}

/// NOT_SERVING (SIGUSR1 to the worker) until a balancer no longer offers it.
async fn not_serving_to_excluded() -> Duration {
    let worker = spawn_worker(&bin(), &[]);
    let location =
        ServiceLocation::new("", "Worker", "127.0.0.1", worker.addr.port()).expect("location");
    let registry = MemoryRegistry::from_locations(vec![location]);
    let balancer = Balancer::start(registry, BalancerOptions::default());
    let offered = || async {
        !balancer
            .discover("", "Worker", 0)
            .await
            .unwrap_or_default()
            .is_empty()
    };
    let start = Instant::now();
    while !offered().await {
        assert!(start.elapsed() < DEADLINE, "never offered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worker.process.signal(Signal::SIGUSR1);
    let start = Instant::now();
    while offered().await {
        assert!(start.elapsed() < DEADLINE, "still offered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

/// SIGKILL of a node holding a registration (lease TTL 2 s) until its key is gone.
async fn killed_to_expired(etcd: &EtcdCluster) -> Duration {
    let port = free_port();
    let node = spawn_registration(
        &bin(),
        &etcd.endpoint(0),
        "127.0.0.1",
        port,
        &["--ttl", "2s"],
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.pid() as i32),
        Signal::SIGKILL,
    )
    .expect("kill");
    let key = format!("services//Worker/127.0.0.1/{port}/http");
    let start = Instant::now();
    while etcd.get_prefix_keys("services/").contains(&key) {
        assert!(start.elapsed() < DEADLINE, "the registration never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(node);
    start.elapsed()
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} {:>10.1} {:>10.1}",
        ms(times[times.len() / 2]),
        ms(*times.last().expect("rounds"))
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .map_or(5, |a| a.parse().expect("ROUNDS is a number"));
    println!("recovery times, {rounds} rounds each, real processes");
    println!("{:<44} {:>10} {:>10}", "case", "median ms", "max ms");
    let mut crash = Vec::new();
    let mut excluded = Vec::new();
    for _ in 0..rounds {
        crash.push(crash_to_serving().await);
        excluded.push(not_serving_to_excluded().await);
    }
    summary("crash -> restarted and SERVING (backoff 0.5 s)", crash);
    summary("NOT_SERVING -> excluded from answers", excluded);
    let etcd = EtcdCluster::single();
    let mut expired = Vec::new();
    for _ in 0..rounds {
        expired.push(killed_to_expired(&etcd).await);
    }
    summary("node killed -> registration expired (TTL 2 s)", expired);
}
