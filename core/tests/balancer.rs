//! The balancer against real workers over loopback (in-process reporters, real gRPC): the
//! discovery contract, ranking by reported load, exclusion of unhealthy and dead workers,
//! anti-herding, registry changes and control endpoints.

use std::collections::HashMap;
use std::time::Duration;

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::HealthState;
use quaestor_test_support::wait_for_async;
use tonic::Code;

mod common;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(20);

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
            HashMap::from([(a, 10), (b, 10)]),
            "idle and alike: both at the most weight"
        );

        // Load on a: it is listed less often.
        pool[0].load.reset_current_requests(6);
        let loaded = loop {
            let LoadBalanceResponseType::ServerList(list) = next(&mut lists).await else {
                panic!("a server list")
            };
            let counts = counts(&list.servers);
            if counts.get(&a) == Some(&3) {
                break counts;
            }
        };
        assert_eq!(
            loaded,
            HashMap::from([(a, 3), (b, 10)]),
            "2 free slots against 8: a quarter of the weight, rounded"
        );

        // NOT_SERVING: gone from the list.
        pool[1].reporter.set_serving("Worker", false);
        loop {
            let LoadBalanceResponseType::ServerList(list) = next(&mut lists).await else {
                panic!("a server list")
            };
            if counts(&list.servers) == HashMap::from([(a, 10)]) {
                break;
            }
        }
        // The stream is counted (for metrics) as opened OK and open until the client leaves.
        let counters = balancer.counters();
        assert_eq!(counters.grpclb.by_code(), [("OK", 1)]);
        assert_eq!(counters.grpclb.open(), 1);
        drop(requests);
        drop(lists);
        wait_for_async("the stream counted as closed", TIMEOUT, || async {
            (counters.grpclb.open() == 0).then_some(())
        })
        .await;
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
        // Counted for metrics by the status of their opening; none stays open.
        assert_eq!(
            balancer.counters().grpclb.by_code(),
            [("OK", 0), ("INVALID_ARGUMENT", 2)]
        );
        assert_eq!(balancer.counters().grpclb.open(), 0);
    }
    /// How a BalanceLoad stream ends up: the status it ends with, or its first server list.
    /// Whichever way the server refuses (at once, or as the stream's first item), it counts.
    async fn first_list_or_status(
        client: &mut LoadBalancerClient<tonic::transport::Channel>,
        outgoing: tokio::sync::mpsc::Receiver<LoadBalanceRequest>,
        within: Duration,
    ) -> Result<Vec<Server>, tonic::Status> {
        let outcome = async {
            let mut lists = client
                .balance_load(tokio_stream::wrappers::ReceiverStream::new(outgoing))
                .await?
                .into_inner();
            loop {
                match lists.next().await {
                    None => return Err(tonic::Status::unknown("the stream ended with OK")),
                    Some(Err(status)) => return Err(status),
                    Some(Ok(message)) => {
                        if let Some(LoadBalanceResponseType::ServerList(list)) =
                            message.load_balance_response_type
                        {
                            return Ok(list.servers);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(within, outcome)
            .await
            .unwrap_or_else(|_| {
                panic!("the stream neither ended nor sent a list within {within:?}")
            })
    }

    // Issue 14, finding 2, for grpclb.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_with_a_slash_is_an_invalid_argument() {
        let pool = workers(2, 4).await;
        let balancer = Balancer::start(registry_of(&pool), options());
        assert_eq!(
            balancer
                .discover("", "Worker", 0)
                .await
                .expect("discover")
                .len(),
            2
        );
        let server = serve(&balancer).await;
        let mut client = LoadBalancerClient::connect(format!("http://{}", server.local_addr()))
            .await
            .expect("connect");
        let mut wrong = Vec::new();
        for name in [
            "Worker/127.0.0.1".to_owned(),
            format!("Worker/127.0.0.1/{}", pool[0].location.port),
            format!("Worker/127.0.0.1:{}", pool[0].location.port),
        ] {
            let (requests, outgoing) = tokio::sync::mpsc::channel(4);
            requests.send(initial(&name)).await.expect("send");
            match first_list_or_status(&mut client, outgoing, TIMEOUT).await {
                Err(status) if status.code() == Code::InvalidArgument => {}
                Err(status) => wrong.push(format!(
                    "name {name:?}: {:?} {}",
                    status.code(),
                    status.message()
                )),
                Ok(servers) => wrong.push(format!(
                    "name {name:?}: a list of {} server(s) {:?}",
                    servers.len(),
                    counts(&servers)
                )),
            }
            drop(requests);
        }
        assert!(
            wrong.is_empty(),
            "grpclb names with '/' must get INVALID_ARGUMENT:\n{}",
            wrong.join("\n")
        );
    }

    /// How long the server must wait for an initial request (issue 14: 10 s).
    const INITIAL_REQUEST_WAIT: Duration = Duration::from_secs(10);

    // Issue 14, finding 8. Takes the server's full 10 s wait; it runs beside the other tests
    // of this file, so the suite takes no longer than its slowest test needs anyway.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_without_an_initial_request_ends_with_invalid_argument() {
        let balancer = Balancer::start(MemoryRegistry::new(), options());
        let server = serve(&balancer).await;
        let mut client = LoadBalancerClient::connect(format!("http://{}", server.local_addr()))
            .await
            .expect("connect");
        // The client's side stays open and silent.
        let (requests, outgoing) = tokio::sync::mpsc::channel(4);
        let outcome = first_list_or_status(
            &mut client,
            outgoing,
            INITIAL_REQUEST_WAIT + Duration::from_secs(5),
        )
        .await;
        let status = outcome.expect_err("no list for a stream that named no service");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "a silent stream ends with INVALID_ARGUMENT: {}",
            status.message()
        );
        drop(requests);
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

// Issue 14, finding 2: a `/` in a requested name must not read other registry keys.

/// Requests whose names contain `/`, so that the registry prefix they make covers keys of
/// other names: `services//Worker/127.0.0.1/…` are the Worker keys on that host.
fn names_with_a_slash(port: u16) -> Vec<(String, String)> {
    vec![
        (String::new(), "Worker/127.0.0.1".into()),
        (String::new(), format!("Worker/127.0.0.1/{port}")),
        ("/Worker/127.0.0.1".into(), port.to_string()),
        ("/Worker".into(), "127.0.0.1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_names_with_a_slash_are_invalid_arguments() {
    let pool = workers(2, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    let server = serve(&balancer).await;
    let mut client = discovery_client(&server).await;
    assert_eq!(
        ask(&mut client, false, "", "Worker", 0).await.len(),
        2,
        "both workers probed"
    );
    let mut wrong = Vec::new();
    for (scope, service) in names_with_a_slash(pool[0].location.port) {
        for top in [false, true] {
            let rpc = if top {
                "DiscoverTopServices"
            } else {
                "DiscoverServices"
            };
            match call(&mut client, top, request(&scope, &service, 0)).await {
                Err(status) if status.code() == Code::InvalidArgument => {}
                Err(status) => wrong.push(format!(
                    "{rpc}(scope {scope:?}, service_name {service:?}): {:?} {}",
                    status.code(),
                    status.message()
                )),
                Ok(locations) => wrong.push(format!(
                    "{rpc}(scope {scope:?}, service_name {service:?}): {} location(s) {:?}",
                    locations.len(),
                    locations
                        .iter()
                        .map(|l| format!(
                            "{}/{}/{}:{}",
                            l.scope, l.service_name, l.host_name, l.port
                        ))
                        .collect::<Vec<_>>()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "names with '/' must get INVALID_ARGUMENT:\n{}",
        wrong.join("\n")
    );
}

// Issue 14, finding 3: hand-outs as the C# balancer counts them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_location_of_a_top_answer_counts_as_handed_out() {
    let pool = workers(10, 4).await;
    let balancer = Balancer::start(
        registry_of(&pool),
        BalancerOptions {
            // Long enough that no load report clears the hand-outs between the two questions.
            probe_interval: Duration::from_secs(30),
            ..options()
        },
    );
    let server = serve(&balancer).await;
    let mut client = discovery_client(&server).await;
    let port_of = |m: &quaestor_core::proto::service_discovery::ServiceLocationMsg| {
        u16::try_from(m.port).expect("a port")
    };
    let six: Vec<u16> = ask(&mut client, true, "", "Worker", 6)
        .await
        .iter()
        .map(port_of)
        .collect();
    assert_eq!(six.len(), 6, "ten idle workers: {six:?}");
    let four: Vec<u16> = ask(&mut client, true, "", "Worker", 4)
        .await
        .iter()
        .map(port_of)
        .collect();
    assert_eq!(four.len(), 4, "{four:?}");
    let repeated: Vec<u16> = four.iter().copied().filter(|p| six.contains(p)).collect();
    assert!(
        repeated.is_empty(),
        "a top 4 right after a top 6 (of 10 idle equal workers) repeats {repeated:?}: top 6 {six:?}, top 4 {four:?}"
    );
    let mut all: Vec<u16> = six.iter().chain(&four).copied().collect();
    all.sort_unstable();
    let mut expected = ports(&pool.iter().map(|w| w.location.clone()).collect::<Vec<_>>());
    expected.sort_unstable();
    assert_eq!(all, expected, "together the two answers name every worker");
}

/// Between a hand-out and the question that must still count it.
const ASKED_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// When a location's load was last reported.
fn reported_at(balancer: &Balancer, port: u16) -> Option<std::time::Instant> {
    balancer
        .status("", "Worker")
        .iter()
        .find(|s| s.location.port == port)
        .and_then(|s| s.state.load.map(|l| l.sent_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_out_does_not_end_with_a_short_estimated_request_time() {
    // Two idle workers that report 0 in flight: A (the lower port, first on a tie) and B.
    let mut pool = workers(2, 4).await;
    pool.sort_by_key(|w| w.location.port);
    let (a, b) = (pool[0].location.port, pool[1].location.port);
    let options = BalancerOptions {
        // Hand-outs from the first phase have stopped counting by the time the second begins.
        recently_used_timeout: Duration::from_secs(2),
        ..BalancerOptions::default()
    };
    let balancer = Balancer::start(registry_of(&pool), options.clone());
    let top = |balancer: Balancer| async move {
        let chosen = tokio::time::timeout(TIMEOUT, balancer.discover_top("", "Worker", 1))
            .await
            .expect("an answer in time")
            .expect("discover_top");
        assert_eq!(chosen.len(), 1, "{chosen:?}");
        chosen[0].port
    };

    // Many hand-outs over several load reports (the default probe interval), none of which
    // sees a request in flight: the requests these locations get look very short.
    let busy_until = std::time::Instant::now() + options.probe_interval * 9 / 2;
    while std::time::Instant::now() < busy_until {
        top(balancer.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut attempts = 0;
    loop {
        attempts += 1;
        // Nothing handed out for longer than hand-outs count at all.
        tokio::time::sleep(options.recently_used_timeout + Duration::from_millis(500)).await;
        let before = reported_at(&balancer, a);
        let first = top(balancer.clone()).await;
        assert_eq!(
            first, a,
            "two idle workers, nothing counted: the lower port first"
        );
        tokio::time::sleep(ASKED_AGAIN_AFTER).await;
        let second = top(balancer.clone()).await;
        if reported_at(&balancer, a) != before && attempts < 3 {
            // A report of A came in between, which may rightly end the hand-out: again.
            continue;
        }
        assert_eq!(
            second, b,
            "A was handed out {ASKED_AGAIN_AFTER:?} before, with no report of A since, yet ranks first again"
        );
        break;
    }
}

// Issue 14, finding 5: monitors end with their locations; unknown names cost nothing lasting.

/// Reads `probe` until its value is `done` or `deadline` passes; the last value either way
/// (for the caller to assert on, with the figure in the message).
async fn settle<T>(
    deadline: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let until = std::time::Instant::now() + deadline;
    loop {
        let value = probe();
        if done(&value) || std::time::Instant::now() >= until {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How soon a removed location's connection must be closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistered_locations_close_their_connections_whatever_is_cached() {
    // 24 workers, each its own reporter: one connection each.
    let pool = workers(24, 4).await;
    let registry = registry_of(&pool);
    let balancer = Balancer::start(registry.clone(), options());
    assert_eq!(
        tokio::time::timeout(TIMEOUT, balancer.discover_top("", "Worker", 0))
            .await
            .expect("an answer in time")
            .expect("discover_top")
            .len(),
        24,
        "all probed and ranked (the ranking is now cached)"
    );
    assert_eq!(balancer.cached_rankings(), 1);
    assert_eq!(
        balancer.connection_count(),
        24,
        "one connection per reporter"
    );
    for worker in &pool {
        registry.deregister(&worker.location);
    }
    wait_for_async("the balancer to see the removals", TIMEOUT, || async {
        balancer.status("", "Worker").is_empty().then_some(())
    })
    .await;
    // Nobody asks for Worker again: its cached ranking must not keep the monitors alive.
    let open = settle(CLOSED_WITHIN, || balancer.connection_count(), |n| *n == 0).await;
    assert_eq!(
        open, 0,
        "connections still open {CLOSED_WITHIN:?} after all 24 locations were deregistered"
    );
}

/// The most rankings the test accepts as a bounded cache after 1000 unknown names.
const RANKING_CACHE_BOUND: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_names_do_not_grow_the_ranking_cache() {
    let pool = workers(1, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    assert_eq!(
        balancer
            .discover_top("", "Worker", 0)
            .await
            .expect("top")
            .len(),
        1
    );
    for i in 0..1000 {
        let answer = tokio::time::timeout(
            TIMEOUT,
            balancer.discover_top("", &format!("Unknown{i}"), 1),
        )
        .await
        .expect("an answer in time")
        .expect("a valid name");
        assert!(answer.is_empty(), "Unknown{i} has no locations");
    }
    let cached = settle(
        CLOSED_WITHIN,
        || balancer.cached_rankings(),
        |n| *n <= RANKING_CACHE_BOUND,
    )
    .await;
    assert!(
        cached <= RANKING_CACHE_BOUND,
        "{cached} rankings cached after asking for 1000 unknown service names (bound {RANKING_CACHE_BOUND})"
    );
}
