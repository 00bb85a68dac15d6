//! The balancer against real workers over loopback (in-process reporters, real gRPC): the
//! discovery contract, ranking by reported load, exclusion of unhealthy and dead workers,
//! anti-herding, registry changes and control endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::load::ServiceLoad;
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::HealthState;
use quaestor_test_support::wait_for_async;
use tonic::Code;

mod common;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn options() -> BalancerOptions {
    BalancerOptions {
        probe_interval: Duration::from_millis(100),
        response_timeout: Duration::from_secs(1),
        ..BalancerOptions::default()
    }
}

/// Waits until `discover_top` (all, no hand-out counted twice matters here) gives `expected`.
async fn until_top(balancer: &Balancer, what: &str, expected: impl Fn(&[u16]) -> bool) -> Vec<u16> {
    wait_for_async(what, TIMEOUT, || async {
        let top = ports(&balancer.ranked("", "Worker"));
        expected(&top).then_some(top)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovery_contract_over_grpc() {
    let pool = workers(3, 4).await;
    let mut locations: Vec<ServiceLocation> = pool.iter().map(|w| w.location.clone()).collect();
    // The same worker also registered in another scope, which must not leak into "".
    locations.push(
        ServiceLocation::new("prod", "Worker", "127.0.0.1", pool[0].location.port).expect("valid"),
    );
    let balancer = Balancer::start(MemoryRegistry::from_locations(locations), options());
    let server = balancer
        .server(HealthState::new())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let mut client = ServiceDiscoveryGrpcClient::connect(format!("http://{}", server.local_addr()))
        .await
        .expect("connect");
    let all = ask(&mut client, false, "", "Worker", 0).await;
    assert_eq!(
        all.len(),
        3,
        "the first question waits for the first probes"
    );
    let first = &all[0];
    assert_eq!(
        (
            first.scope.as_str(),
            first.service_name.as_str(),
            first.host_name.as_str()
        ),
        ("", "Worker", "127.0.0.1")
    );
    assert_eq!(
        ask(&mut client, true, "", "Worker", -1).await.len(),
        3,
        "max_count < 0 means all"
    );
    assert_eq!(ask(&mut client, true, "", "Worker", 1).await.len(), 1);
    assert_eq!(ask(&mut client, false, "", "Worker", 2).await.len(), 2);
    let scoped = ask(&mut client, false, "prod", "Worker", 0).await;
    assert_eq!(scoped.len(), 1);
    assert_eq!(scoped[0].scope, "prod");
    assert!(
        ask(&mut client, true, "", "Nope", 0).await.is_empty(),
        "an unknown service is an empty answer"
    );
    let request = |scope: &str, service: &str, max_count: i32| DiscoverServicesRequest {
        scope: scope.into(),
        service_name: service.into(),
        max_count,
    };
    for call in [true, false] {
        let empty = request("", "", 0);
        let error = if call {
            client
                .discover_services(empty)
                .await
                .expect_err("empty name")
        } else {
            client
                .discover_top_services(empty)
                .await
                .expect_err("empty name")
        };
        assert_eq!(error.code(), Code::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_follows_reported_load() {
    let pool = workers(3, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    let port = |i: usize| pool[i].location.port;
    pool[0].load.reset_current_requests(3);
    pool[1].load.reset_current_requests(1);
    pool[2].load.reset_current_requests(2);
    until_top(&balancer, "the order 1, 2, 0", |top| {
        top == [port(1), port(2), port(0)]
    })
    .await;

    // A known load rate, when every worker has one, outranks requests.
    pool[0].load.set_known_load_rate(0.1);
    pool[1].load.set_known_load_rate(0.9);
    pool[2].load.set_known_load_rate(0.5);
    until_top(&balancer, "the order by load rate", |top| {
        top == [port(0), port(2), port(1)]
    })
    .await;

    // Capacity 0: never offered on top, still healthy for plain discovery.
    pool[0].load.set_capacity(0);
    until_top(&balancer, "capacity 0 to drop out", |top| {
        top == [port(2), port(1)]
    })
    .await;
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("discover")
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_and_dead_workers_leave_the_answers() {
    let mut pool = workers(3, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("discover")
            .len(),
        3
    );

    pool[0].reporter.set_serving("Worker", false);
    until_top(&balancer, "the NOT_SERVING worker to leave", |top| {
        top.len() == 2
    })
    .await;
    assert!(
        !ports(&balancer.discover("", "Worker", 0).await.expect("discover"))
            .contains(&pool[0].location.port)
    );

    pool[0].reporter.set_serving("Worker", true);
    until_top(&balancer, "the worker to come back", |top| top.len() == 3).await;

    pool[1].stop().await;
    until_top(&balancer, "the dead worker to leave", |top| top.len() == 2).await;
    let status = balancer.status("", "Worker");
    let dead = status
        .iter()
        .find(|s| s.location.port == pool[1].location.port)
        .expect("still registered");
    assert!(!dead.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_clients_spread_over_equal_workers() {
    let pool = workers(10, 4).await;
    let balancer = Balancer::start(
        registry_of(&pool),
        BalancerOptions {
            // Long enough that no load report clears the hand-outs during the burst.
            probe_interval: Duration::from_secs(30),
            ..options()
        },
    );
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("probed")
            .len(),
        10
    );
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let balancer = balancer.clone();
            tokio::spawn(async move { balancer.discover_top("", "Worker", 1).await })
        })
        .collect();
    let mut handed: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let chosen = call.await.expect("task").expect("discover");
        assert_eq!(chosen.len(), 1);
        *handed.entry(chosen[0].port).or_default() += 1;
    }
    assert_eq!(handed.values().sum::<usize>(), 50);
    let most = handed.values().copied().max().unwrap_or_default();
    assert!(most <= 10, "no worker may get more than 20 %: {handed:?}");
    assert_eq!(handed.len(), 10, "every equal worker is used: {handed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_start_and_stop_monitoring() {
    let pool = workers(2, 4).await;
    let registry = MemoryRegistry::from_locations([pool[0].location.clone()]);
    let balancer = Balancer::start(registry.clone(), options());
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("discover")
            .len(),
        1
    );
    registry.register(pool[1].location.clone());
    until_top(&balancer, "the added worker", |top| top.len() == 2).await;
    registry.deregister(&pool[0].location);
    until_top(&balancer, "the removed worker to go", |top| {
        top == [pool[1].location.port]
    })
    .await;
    assert_eq!(
        balancer.status("", "Worker").len(),
        1,
        "no monitor left for a removed location"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_go_to_the_control_endpoint() {
    // The "worker" serves traffic on a port nobody answers on; its reporter is elsewhere.
    let reporter = TestWorker::start(4).await;
    let traffic = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let traffic_port = traffic.local_addr().expect("addr").port();
    let location = ServiceLocation::new("", "Worker", "127.0.0.1", traffic_port)
        .expect("valid")
        .with_control(reporter.location.address());
    let balancer = Balancer::start(MemoryRegistry::from_locations([location]), options());
    let top = balancer.discover_top("", "Worker", 0).await.expect("top");
    assert_eq!(
        ports(&top),
        [traffic_port],
        "the traffic port is handed out, probed via control"
    );
    reporter.load.reset_current_requests(2);
    wait_for_async("the control endpoint's load", TIMEOUT, || async {
        let status = balancer.status("", "Worker");
        (status[0].state.load.map(|l| l.current_requests) == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_behind_one_control_endpoint_share_its_connections() {
    // One reporter stands for 40 workers (a sidecar): 40 locations, one control endpoint.
    let reporter = TestWorker::start(4).await;
    let behind = |port: u16| {
        ServiceLocation::new("", "Worker", "127.0.0.1", port)
            .expect("valid")
            .with_control(reporter.location.address())
    };
    let locations: Vec<ServiceLocation> = (0..40).map(|i| behind(20_000 + i)).collect();
    let registry = MemoryRegistry::from_locations(locations.clone());
    let balancer = Balancer::start(registry.clone(), options());
    wait_for_async("all 40 healthy with a load report", TIMEOUT, || async {
        let status = balancer.status("", "Worker");
        let ready = status
            .iter()
            .filter(|s| s.healthy && s.state.load.is_some())
            .count();
        (ready == 40).then_some(())
    })
    .await;
    assert_eq!(
        balancer.connection_count(),
        2,
        "{} locations per connection, so 40 need two",
        quaestor_core::balancer::monitor::LOCATIONS_PER_CONNECTION
    );
    // The first 32 (in registry order) share the first connection.
    for location in &locations[..32] {
        registry.deregister(location);
    }
    until_top(&balancer, "8 left", |top| top.len() == 8).await;
    assert_eq!(
        balancer.connection_count(),
        1,
        "an emptied connection is closed"
    );
    for location in &locations[32..] {
        registry.deregister(location);
    }
    wait_for_async("every connection closed", TIMEOUT, || async {
        (balancer.connection_count() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_load_reporting_is_found_but_not_ranked() {
    // Health only: the standard health service, no LoadReportingGrpc.
    let health = HealthState::new();
    health.set_serving("Worker", true);
    let server = quaestor_core::server::GrpcServer::new(health)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let location =
        ServiceLocation::new("", "Worker", "127.0.0.1", server.local_addr().port()).expect("valid");
    let balancer = Balancer::start(MemoryRegistry::from_locations([location]), options());
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("discover")
            .len(),
        1
    );
    assert!(
        balancer
            .discover_top("", "Worker", 0)
            .await
            .expect("top")
            .is_empty()
    );
}

mod grpclb {
    use super::*;
    use quaestor_core::proto::grpclb::load_balance_request::LoadBalanceRequestType;
    use quaestor_core::proto::grpclb::load_balance_response::LoadBalanceResponseType;
    use quaestor_core::proto::grpclb::load_balancer_client::LoadBalancerClient;
    use quaestor_core::proto::grpclb::{
        InitialLoadBalanceRequest, LoadBalanceRequest, LoadBalanceResponse, Server,
    };
    use tokio_stream::StreamExt;

    fn initial(name: &str) -> LoadBalanceRequest {
        LoadBalanceRequest {
            load_balance_request_type: Some(LoadBalanceRequestType::InitialRequest(
                InitialLoadBalanceRequest { name: name.into() },
            )),
        }
    }

    async fn next(lists: &mut tonic::Streaming<LoadBalanceResponse>) -> LoadBalanceResponseType {
        let message = tokio::time::timeout(TIMEOUT, lists.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("message");
        message.load_balance_response_type.expect("a response type")
    }

    /// Ports in a server list, each as often as it is listed.
    fn counts(servers: &[Server]) -> HashMap<u16, usize> {
        let mut counts = HashMap::new();
        for server in servers {
            assert_eq!(
                server.ip_address,
                vec![127, 0, 0, 1],
                "IPv4 in network byte order"
            );
            *counts.entry(server.port as u16).or_default() += 1;
        }
        counts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_lists_follow_health_and_load() {
        let pool = workers(2, 8).await;
        let balancer = Balancer::start(registry_of(&pool), options());
        let server = balancer
            .server(HealthState::new())
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let mut client = LoadBalancerClient::connect(format!("http://{}", server.local_addr()))
            .await
            .expect("connect");
        // The client keeps its side of the stream open for as long as it wants lists.
        let (requests, outgoing) = tokio::sync::mpsc::channel(4);
        requests.send(initial("Worker:5000")).await.expect("send");
        let mut lists = client
            .balance_load(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .expect("stream")
            .into_inner();
        assert!(matches!(
            next(&mut lists).await,
            LoadBalanceResponseType::InitialResponse(_)
        ));
        let LoadBalanceResponseType::ServerList(first) = next(&mut lists).await else {
            panic!("a server list")
        };
        let (a, b) = (pool[0].location.port, pool[1].location.port);
        assert_eq!(
            counts(&first.servers),
            HashMap::from([(a, 8), (b, 8)]),
            "idle: weight = free capacity, capped"
        );

        // Load on a: it is listed less often.
        pool[0].load.reset_current_requests(6);
        let loaded = loop {
            let LoadBalanceResponseType::ServerList(list) = next(&mut lists).await else {
                panic!("a server list")
            };
            let counts = counts(&list.servers);
            if counts.get(&a) == Some(&2) {
                break counts;
            }
        };
        assert_eq!(loaded, HashMap::from([(a, 2), (b, 8)]));

        // NOT_SERVING: gone from the list.
        pool[1].reporter.set_serving("Worker", false);
        loop {
            let LoadBalanceResponseType::ServerList(list) = next(&mut lists).await else {
                panic!("a server list")
            };
            if counts(&list.servers) == HashMap::from([(a, 2)]) {
                break;
            }
        }
        drop(requests);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_message_must_be_an_initial_request() {
        let balancer = Balancer::start(MemoryRegistry::new(), options());
        let server = balancer
            .server(HealthState::new())
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let mut client = LoadBalancerClient::connect(format!("http://{}", server.local_addr()))
            .await
            .expect("connect");
        let stats = LoadBalanceRequest {
            load_balance_request_type: None,
        };
        let error = client
            .balance_load(tokio_stream::iter([stats]))
            .await
            .expect_err("no initial request");
        assert_eq!(error.code(), Code::InvalidArgument);
        let error = client
            .balance_load(tokio_stream::iter([initial(":80")]))
            .await
            .expect_err("no service name");
        assert_eq!(error.code(), Code::InvalidArgument);
    }
}

/// A health service that answers `Check` but not `Watch`, as some workers do.
#[derive(Clone)]
struct CheckOnly(HealthState);

#[tonic::async_trait]
impl quaestor_core::proto::health::health_server::Health for CheckOnly {
    async fn check(
        &self,
        request: tonic::Request<quaestor_core::proto::health::HealthCheckRequest>,
    ) -> Result<tonic::Response<quaestor_core::proto::health::HealthCheckResponse>, tonic::Status>
    {
        let status = self
            .0
            .status(&request.get_ref().service)
            .ok_or_else(|| tonic::Status::not_found("unknown"))?;
        Ok(tonic::Response::new(
            quaestor_core::proto::health::HealthCheckResponse {
                status: status.into(),
            },
        ))
    }

    type WatchStream = tokio_stream::Empty<
        Result<quaestor_core::proto::health::HealthCheckResponse, tonic::Status>,
    >;

    async fn watch(
        &self,
        _: tonic::Request<quaestor_core::proto::health::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("no Watch here"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_without_watch_are_polled_with_check() {
    let health = HealthState::new();
    health.set_serving("Worker", true);
    let reporter = Reporter::new();
    reporter.add_service("Worker", 4).expect("add");
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(
        quaestor_core::proto::health::health_server::HealthServer::new(CheckOnly(health.clone())),
    );
    routes.add_service(reporter.load_reporting_service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes.routes())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let location = ServiceLocation::new("", "Worker", "127.0.0.1", port).expect("valid");
    let balancer = Balancer::start(MemoryRegistry::from_locations([location]), options());
    assert_eq!(
        ports(&balancer.discover_top("", "Worker", 0).await.expect("top")),
        [port]
    );
    health.set_serving("Worker", false);
    until_top(&balancer, "Check polls to see NOT_SERVING", |top| {
        top.is_empty()
    })
    .await;
    health.set_serving("Worker", true);
    until_top(&balancer, "Check polls to see SERVING again", |top| {
        top == [port]
    })
    .await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_is_probed_until_it_returns() {
    let mut worker = TestWorker::start(4).await;
    let location = worker.location.clone();
    let balancer = Balancer::start(
        MemoryRegistry::from_locations([location.clone()]),
        options(),
    );
    assert_eq!(
        balancer
            .discover("", "Worker", 0)
            .await
            .expect("discover")
            .len(),
        1
    );
    worker.stop().await;
    until_top(&balancer, "the dead worker to leave", |top| top.is_empty()).await;
    // A new worker on the same port: the backed-off probes find it again.
    let reporter = Reporter::new();
    reporter.add_service("Worker", 4).expect("add");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], location.port));
    let _back = reporter.serve(addr, None).await.expect("same port again");
    until_top(&balancer, "the worker to return", |top| {
        top == [location.port]
    })
    .await;
}
