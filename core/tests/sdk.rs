//! The worker-facing facade, `quaestor_core::sdk`, as the bindings use it: a `Worker`
//! registered in a real etcd, a real balancer over that etcd (in process), and a
//! `DiscoveryClient` asking it from plain threads (the blocking calls, several at once) and from
//! async code; errors carry the kinds the bindings map.

use std::time::Duration;

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::error::ErrorKind;
use quaestor_core::registry::etcd::{EtcdOptions, EtcdRegistry};
use quaestor_core::sdk::{DiscoveryClient, EtcdAccess, Worker};
use quaestor_core::server::health::HealthState;
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{free_port, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_worker_registers_and_a_kept_client_finds_it() {
    let etcd = EtcdCluster::single();
    let endpoint = etcd.endpoint(0);
    let worker = Worker::start_blocking("127.0.0.1", 0, None).expect("worker");
    worker.add_service("SdkWorker", 4).expect("service");
    let access = || EtcdAccess {
        endpoints: vec![endpoint.clone()],
        ..EtcdAccess::default()
    };
    worker
        .register_blocking(access(), "", "127.0.0.1", None)
        .expect("register");
    let twice = worker.register_blocking(access(), "", "127.0.0.1", None);
    assert_eq!(
        twice.expect_err("registered twice").kind(),
        ErrorKind::InvalidState
    );

    // A balancer over that etcd, on a runtime of its own.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (balancer, server) = runtime.block_on(async {
        let registry = EtcdRegistry::start(EtcdOptions::new([endpoint.clone()])).expect("registry");
        let balancer = Balancer::start(registry, BalancerOptions::default());
        let server = balancer
            .server(HealthState::new())
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("balancer");
        (balancer, server)
    });
    let client =
        DiscoveryClient::new(&server.local_addr().to_string(), None, TIMEOUT).expect("client");
    let found = wait_for("the worker offered", TIMEOUT, || {
        let found = client.discover_top_blocking("", "SdkWorker", 1).ok()?;
        (found.len() == 1).then_some(found)
    });
    assert_eq!(found[0].port, worker.port());
    assert_eq!(found[0].service, "SdkWorker");

    // Several threads at once on one client's blocking calls.
    std::thread::scope(|threads| {
        for _ in 0..4 {
            threads.spawn(|| {
                for _ in 0..25 {
                    let found = client
                        .discover_blocking("", "SdkWorker", 0)
                        .expect("discover");
                    assert_eq!(found.len(), 1);
                }
            });
        }
    });

    // The async calls, from async code; a blocking call there is refused, not a panic.
    runtime.block_on(async {
        let found = client.discover("", "SdkWorker", 0).await.expect("async");
        assert_eq!(found[0].port, worker.port());
        let inside = client.discover_blocking("", "SdkWorker", 0);
        assert_eq!(
            inside.expect_err("blocking inside a runtime").kind(),
            ErrorKind::InvalidState
        );
        let bad = client.discover("", "Sdk/Worker", 0).await;
        assert_eq!(
            bad.expect_err("bad name").kind(),
            ErrorKind::InvalidArgument
        );
    });

    worker.close_blocking().expect("close");
    wait_for("the worker withdrawn", TIMEOUT, || {
        etcd.get_prefix_keys("services/").is_empty().then_some(())
    });
    assert!(worker.is_closed());
    assert_eq!(
        worker.add_service("Late", 1).expect_err("closed").kind(),
        ErrorKind::InvalidState
    );
    // Dropped inside the runtime (as the Python module may): no panic.
    runtime.block_on(async move { drop(client) });
    drop((balancer, server));
}

#[test]
fn an_unreachable_balancer_fails_each_call_and_is_found_once_it_listens() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let client = DiscoveryClient::new(&address, None, Duration::from_secs(5)).expect("client");
    for _ in 0..2 {
        let error = client
            .discover_blocking("", "Nobody", 0)
            .expect_err("nothing listens");
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _server = runtime.block_on(async {
        let balancer = Balancer::start(
            quaestor_core::registry::memory::MemoryRegistry::new(),
            BalancerOptions::default(),
        );
        let server = balancer
            .server(HealthState::new())
            .bind(address.parse().expect("addr"))
            .await
            .expect("bind the port the client knows");
        (balancer, server)
    });
    let found = client
        .discover_blocking("", "Nobody", 0)
        .expect("answered once it listens");
    assert!(found.is_empty());
    assert_eq!(
        DiscoveryClient::new("no port", None, TIMEOUT)
            .expect_err("bad address")
            .kind(),
        ErrorKind::InvalidArgument
    );
}

/// Between blocking calls nobody waits on the client's runtime, yet its kept connection still
/// answers the server: a balancer stopping gracefully (GOAWAY, then a PING the client must
/// answer) is done long before its grace period would cut the connection.
#[test]
fn an_idle_kept_connection_lets_its_balancer_stop_gracefully() {
    const GRACE: Duration = Duration::from_secs(120);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (_balancer, server) = runtime.block_on(async {
        let balancer = Balancer::start(
            quaestor_core::registry::memory::MemoryRegistry::new(),
            BalancerOptions::default(),
        );
        let server = balancer
            .server(HealthState::new())
            .with_grace_period(GRACE)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("balancer");
        (balancer, server)
    });
    let client =
        DiscoveryClient::new(&server.local_addr().to_string(), None, TIMEOUT).expect("client");
    assert!(
        client
            .discover_blocking("", "Idle", 0)
            .expect("answered")
            .is_empty()
    );
    // The client now sits idle; the server stops.
    let stopped =
        runtime.block_on(async { tokio::time::timeout(GRACE / 4, server.shutdown()).await });
    assert!(
        stopped.is_ok(),
        "the balancer waited for the idle client's connection instead of closing it"
    );
    drop(client);
}
