//! Fixtures shared by the balancer's integration tests (`balancer.rs`, `csharp_discovery.rs`,
//! `orca_in.rs`, `xds.rs`): in-process workers with real reporters on ports of their own, the
//! balancer's options, a balancer served on port 0, and discovery calls over real gRPC.
// Each test crate uses its own part of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::load::ServiceLoad;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::proto::service_discovery::{DiscoverServicesRequest, ServiceLocationMsg};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::HealthState;

/// The most one discovery call may take: the first waits for the first probes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The balancer's options in these tests: a load probe every 100 ms, a 1 s response timeout,
/// defaults otherwise.
pub fn options() -> BalancerOptions {
    BalancerOptions {
        probe_interval: Duration::from_millis(100),
        response_timeout: Duration::from_secs(1),
        ..BalancerOptions::default()
    }
}

pub type DiscoveryClient = ServiceDiscoveryGrpcClient<tonic::transport::Channel>;

/// An in-process worker: a reporter for one service on a port of its own (bound on
/// 127.0.0.1), registered under some host name that reaches it.
pub struct TestWorker {
    pub reporter: Reporter,
    pub load: Arc<ServiceLoad>,
    pub server: Option<ServerHandle>,
    pub location: ServiceLocation,
}

impl TestWorker {
    /// A `Worker` reporter registered as `127.0.0.1`.
    pub async fn start(capacity: i32) -> Self {
        Self::start_as("Worker", "127.0.0.1", capacity).await
    }

    /// A reporter for `service` with `capacity`, registered as `host` (which must resolve to
    /// 127.0.0.1, e.g. `localhost`).
    pub async fn start_as(service: &str, host: &str, capacity: i32) -> Self {
        let reporter = Reporter::new();
        let load = reporter.add_service(service, capacity).expect("add");
        let server = reporter
            .serve("127.0.0.1:0".parse().expect("addr"), None)
            .await
            .expect("serve");
        let location =
            ServiceLocation::new("", service, host, server.local_addr().port()).expect("location");
        TestWorker {
            reporter,
            load,
            server: Some(server),
            location,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("shutdown");
        }
    }
}

/// `count` `Worker` reporters registered as `127.0.0.1`.
pub async fn workers(count: usize, capacity: i32) -> Vec<TestWorker> {
    let mut started = Vec::new();
    for _ in 0..count {
        started.push(TestWorker::start(capacity).await);
    }
    started
}

pub fn registry_of(workers: &[TestWorker]) -> MemoryRegistry {
    MemoryRegistry::from_locations(workers.iter().map(|w| w.location.clone()))
}

pub fn ports(locations: &[ServiceLocation]) -> Vec<u16> {
    locations.iter().map(|l| l.port).collect()
}

/// The balancer's server (discovery, grpclb, health) on 127.0.0.1, port 0.
pub async fn serve(balancer: &Balancer) -> ServerHandle {
    balancer
        .server(HealthState::new())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve")
}

/// A discovery client of `server` over a real connection.
pub async fn discovery_client(server: &ServerHandle) -> DiscoveryClient {
    ServiceDiscoveryGrpcClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("connect")
}

pub fn request(scope: &str, service: &str, max_count: i32) -> DiscoverServicesRequest {
    DiscoverServicesRequest {
        scope: scope.into(),
        service_name: service.into(),
        max_count,
    }
}

/// One DiscoverServices (or DiscoverTopServices when `top`) call that must succeed.
pub async fn ask(
    client: &mut DiscoveryClient,
    top: bool,
    scope: &str,
    service: &str,
    max_count: i32,
) -> Vec<ServiceLocationMsg> {
    call(client, top, request(scope, service, max_count))
        .await
        .expect("discovery answers")
}

/// One DiscoverServices (or DiscoverTopServices when `top`) call, as it ends; panics if it
/// does not end within [`CALL_TIMEOUT`].
pub async fn call(
    client: &mut DiscoveryClient,
    top: bool,
    request: DiscoverServicesRequest,
) -> Result<Vec<ServiceLocationMsg>, tonic::Status> {
    let what = format!("{request:?}");
    let answer = if top {
        tokio::time::timeout(CALL_TIMEOUT, client.discover_top_services(request)).await
    } else {
        tokio::time::timeout(CALL_TIMEOUT, client.discover_services(request)).await
    };
    answer
        .unwrap_or_else(|_| panic!("no answer to {what} within {CALL_TIMEOUT:?}"))
        .map(|a| a.into_inner().service_locations)
}
