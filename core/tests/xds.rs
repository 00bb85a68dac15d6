//! The balancer's ADS server over real gRPC, against real in-process workers: which resources
//! it answers, how it refuses bad streams, and how it pushes changes, takes ACKs and NACKs
//! and ignores stale nonces (the xDS state-of-the-world protocol as gRPC clients speak it).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use quaestor_core::balancer::xds::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, LbPolicies, LbPolicy, Rewrite, XdsService,
};
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::HealthState;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

mod common;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(20);

/// [`common::options`], with `least_request` for `Worker`.
fn options() -> BalancerOptions {
    let mut lb_policies = LbPolicies::default();
    lb_policies
        .services
        .insert("Worker".into(), LbPolicy::LeastRequest);
    BalancerOptions {
        lb_policies,
        ..common::options()
    }
}

/// One ADS stream of a client.
struct Ads {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Ads {
    async fn open(server: &ServerHandle) -> Self {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.local_addr()))
                .await
                .expect("connect");
        let (tx, requests) = mpsc::channel(8);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(requests))
            .await
            .expect("stream")
            .into_inner();
        Ads { tx, rx }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("send");
    }

    async fn ask(&self, type_url: &str, names: &[&str], nonce: &str, version: &str) {
        self.send(DiscoveryRequest {
            node: Some(Node {
                id: "test-node".into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.into(),
            version_info: version.into(),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(TIMEOUT, self.rx.next())
            .await
            .expect("a response in time")
            .expect("the stream goes on")
            .expect("a response, not an error")
    }

    async fn status(&mut self) -> tonic::Status {
        match tokio::time::timeout(TIMEOUT, self.rx.next())
            .await
            .expect("an answer in time")
        {
            Some(Err(status)) => status,
            other => panic!("expected the stream to end with an error, got {other:?}"),
        }
    }

    /// The next response that satisfies `done`, ACKing every one before it.
    async fn until(
        &mut self,
        names: &[&str],
        done: impl Fn(&DiscoveryResponse) -> bool,
    ) -> DiscoveryResponse {
        loop {
            let response = self.next().await;
            if done(&response) {
                return response;
            }
            self.ack(&response, names).await;
        }
    }

    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.ask(
            &response.type_url,
            names,
            &response.nonce,
            &response.version_info,
        )
        .await;
    }
}

fn decode<M: Message + Default>(response: &DiscoveryResponse) -> Vec<M> {
    response
        .resources
        .iter()
        .map(|any| M::decode(any.value.as_slice()).expect("decodes"))
        .collect()
}

/// (port, health, weight) of every endpoint.
fn endpoints(response: &DiscoveryResponse) -> Vec<(u16, HealthStatus, u32)> {
    let mut found = Vec::new();
    for assignment in decode::<ClusterLoadAssignment>(response) {
        for locality in assignment.endpoints {
            for e in locality.lb_endpoints {
                let Some(HostIdentifier::Endpoint(endpoint)) = e.host_identifier else {
                    panic!("an endpoint without address");
                };
                let address = endpoint.address.and_then(|a| a.address);
                let Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                        socket,
                    ),
                ) = address
                else {
                    panic!("not a socket address");
                };
                assert_eq!(socket.address, "127.0.0.1");
                let port = match socket.port_specifier {
                    Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                    other => panic!("no port: {other:?}"),
                };
                found.push((
                    u16::try_from(port).expect("a port"),
                    HealthStatus::try_from(e.health_status).expect("a status"),
                    e.load_balancing_weight.map_or(0, |w| w.value),
                ));
            }
        }
    }
    found.sort_unstable();
    found
}

async fn serve_ads(balancer: &Balancer) -> (ServerHandle, XdsService) {
    let ads = XdsService::new(balancer.clone(), HealthState::new());
    let server = balancer
        .server_with(ads.clone())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    (server, ads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_answers_what_exists_and_leaves_unknown_names_out() {
    let pool = workers(2, 4).await;
    let mut locations: Vec<ServiceLocation> = pool.iter().map(|w| w.location.clone()).collect();
    locations.push(
        ServiceLocation::new("prod", "Worker", "127.0.0.1", pool[0].location.port).expect("valid"),
    );
    let registry = quaestor_core::registry::memory::MemoryRegistry::from_locations(locations);
    let balancer = Balancer::start(registry, options());
    let (server, _ads) = serve_ads(&balancer).await;
    let mut ads = Ads::open(&server).await;

    ads.ask(
        LISTENER_TYPE,
        &["Worker", "Nope", "prod/Worker", "xdstp://a/b"],
        "",
        "",
    )
    .await;
    let response = ads.next().await;
    assert_eq!(response.type_url, LISTENER_TYPE);
    assert_eq!(response.version_info, "1");
    assert!(!response.nonce.is_empty());
    let listeners = decode::<Listener>(&response);
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["Worker", "prod/Worker"],
        "unknown names are left out"
    );
    let manager = HttpConnectionManager::decode(
        listeners[0]
            .api_listener
            .as_ref()
            .and_then(|a| a.api_listener.as_ref())
            .expect("an API listener")
            .value
            .as_slice(),
    )
    .expect("an HttpConnectionManager");
    assert_eq!(
        manager.http_filters.last().map(|f| f.name.as_str()),
        Some("envoy.filters.http.router")
    );
    let Some(RouteSpecifier::RouteConfig(routes)) = manager.route_specifier else {
        panic!("the route table inline");
    };
    let action = routes.virtual_hosts[0].routes[0].action.clone();
    let Some(Action::Route(route)) = action else {
        panic!("a route action");
    };
    assert_eq!(
        route.cluster_specifier,
        Some(ClusterSpecifier::Cluster("Worker".into()))
    );

    ads.ack(&response, &["Worker", "Nope", "prod/Worker", "xdstp://a/b"])
        .await;
    ads.ask(CLUSTER_TYPE, &["Worker"], "", "").await;
    let response = ads.next().await;
    assert_eq!(response.type_url, CLUSTER_TYPE, "the ACK had no answer");
    let clusters = decode::<Cluster>(&response);
    assert_eq!(clusters.len(), 1);
    let cluster = &clusters[0];
    assert_eq!(cluster.name, "Worker");
    assert_eq!(
        cluster
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str()),
        Some("Worker")
    );
    let policy = &cluster
        .load_balancing_policy
        .as_ref()
        .expect("a policy")
        .policies[0];
    assert_eq!(
        policy
            .typed_extension_config
            .as_ref()
            .map(|c| c.name.as_str()),
        Some("envoy.load_balancing_policies.wrr_locality")
    );

    ads.ask(ENDPOINT_TYPE, &["Worker"], "", "").await;
    let response = ads.next().await;
    assert_eq!(response.type_url, ENDPOINT_TYPE);
    let found = endpoints(&response);
    let mut expected: Vec<u16> =
        ports(&pool.iter().map(|w| w.location.clone()).collect::<Vec<_>>());
    expected.sort_unstable();
    assert_eq!(
        found.iter().map(|e| e.0).collect::<Vec<_>>(),
        expected,
        "every location of the service"
    );
    assert!(
        found
            .iter()
            .all(|(_, health, weight)| *health == HealthStatus::Healthy && *weight >= 1),
        "{found:?}"
    );
    // Counted for metrics: opened OK, open until the client leaves.
    let counters = balancer.counters();
    assert_eq!(counters.ads.by_code(), [("OK", 1)]);
    assert_eq!(counters.ads.open(), 1);
    drop(ads);
    quaestor_test_support::wait_for_async("the ADS stream counted as closed", TIMEOUT, || async {
        (counters.ads.open() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_refuses_streams_without_a_node_and_names_no_registration_may_have() {
    let pool = workers(1, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    let (server, _ads) = serve_ads(&balancer).await;

    let mut ads = Ads::open(&server).await;
    ads.send(DiscoveryRequest {
        type_url: LISTENER_TYPE.into(),
        resource_names: vec!["Worker".into()],
        ..Default::default()
    })
    .await;
    let status = ads.status().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node.id"), "{status:?}");

    let mut ads = Ads::open(&server).await;
    ads.ask(LISTENER_TYPE, &["Worker", "a/b/c"], "", "").await;
    let status = ads.status().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("a/b/c"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_pushes_changes_takes_nacks_and_ignores_stale_nonces() {
    let mut pool = workers(2, 4).await;
    let registry = registry_of(&pool);
    let other =
        ServiceLocation::new("prod", "Worker", "127.0.0.1", pool[0].location.port).expect("valid");
    registry.register(other.clone());
    let balancer = Balancer::start(registry.clone(), options());
    let (server, service) = serve_ads(&balancer).await;
    let mut ads = Ads::open(&server).await;
    let names = ["Worker"];

    ads.ask(ENDPOINT_TYPE, &names, "", "").await;
    let first = ads.next().await;
    assert_eq!(endpoints(&first).len(), 2);

    // A NACK is kept (and logged) and needs no answer.
    ads.send(DiscoveryRequest {
        node: None,
        type_url: ENDPOINT_TYPE.into(),
        resource_names: vec!["Worker".into()],
        response_nonce: first.nonce.clone(),
        version_info: String::new(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "malformed, says the client".into(),
            details: Vec::new(),
        }),
        ..Default::default()
    })
    .await;
    let nack = quaestor_test_support::wait_for_async("the NACK is kept", TIMEOUT, || async {
        service.nacks().pop()
    })
    .await;
    assert_eq!(nack.node_id, "test-node");
    assert_eq!(nack.type_url, ENDPOINT_TYPE);
    assert_eq!(nack.message, "malformed, says the client");

    // A request with a stale nonce is ignored: its names do not count.
    ads.ask(ENDPOINT_TYPE, &["Worker", "prod/Worker"], "stale", "1")
        .await;

    // A worker flipped NOT_SERVING is pushed as DRAINING.
    let flipped = pool[0].location.port;
    pool[0].reporter.set_all_serving(false);
    let next = ads.next().await;
    assert_eq!(
        decode::<ClusterLoadAssignment>(&next).len(),
        1,
        "the stale request's names did not count"
    );
    let draining = |r: &DiscoveryResponse| {
        endpoints(r)
            .iter()
            .any(|(port, health, _)| *port == flipped && *health == HealthStatus::Draining)
    };
    let response = if draining(&next) {
        next
    } else {
        ads.ack(&next, &names).await;
        ads.until(&names, draining).await
    };
    assert_ne!(response.version_info, first.version_info, "a new version");
    assert_ne!(response.nonce, first.nonce, "a new nonce");

    // A worker registered later is pushed.
    let late = TestWorker::start(4).await;
    registry.register(late.location.clone());
    ads.until(&names, |r| {
        endpoints(r).iter().any(|(port, health, _)| {
            *port == late.location.port && *health == HealthStatus::Healthy
        })
    })
    .await;

    // A worker that stops answering is pushed UNHEALTHY.
    let stopped = pool[1].location.port;
    pool[1].stop().await;
    ads.until(&names, |r| {
        endpoints(r)
            .iter()
            .any(|(port, health, _)| *port == stopped && *health == HealthStatus::Unhealthy)
    })
    .await;

    // A service that loses its last location leaves LDS: the client sees it deleted.
    let mut lds = Ads::open(&server).await;
    lds.ask(LISTENER_TYPE, &names, "", "").await;
    assert_eq!(decode::<Listener>(&lds.next().await).len(), 1);
    for worker in &pool {
        registry.deregister(&worker.location);
    }
    registry.deregister(&late.location);
    registry.deregister(&other);
    lds.until(&names, |r| r.resources.is_empty()).await;
}

/// A stock client (grpc-go, tests/go-client) refuses a malformed cluster (STATIC, with no
/// endpoints: not a type gRPC takes) with a NACK carrying its reason, which the balancer keeps
/// and logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_grpc_client_nacks_a_malformed_cluster() {
    let pool = workers(1, 4).await;
    let balancer = Balancer::start(registry_of(&pool), options());
    let rewrite: Rewrite = Arc::new(|type_url, resource| {
        if type_url == CLUSTER_TYPE {
            let mut cluster = Cluster::decode(resource.value.as_slice()).expect("a cluster");
            cluster.cluster_discovery_type = Some(
                envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                    envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Static
                        as i32,
                ),
            );
            cluster.eds_cluster_config = None;
            resource.value = cluster.encode_to_vec();
        }
    });
    let ads = XdsService::with_rewrite(balancer.clone(), HealthState::new(), Some(rewrite));
    let server = balancer
        .server_with(ads.clone())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("dir");
    let client =
        tokio::task::block_in_place(|| quaestor_test_support::go_build("go-client", dir.path()));
    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        format!(
            r#"{{"xds_servers":[{{"server_uri":"{}","channel_creds":[{{"type":"insecure"}}],"server_features":["xds_v3"]}}],"node":{{"id":"nack-test"}}}}"#,
            server.local_addr()
        ),
    )
    .expect("write the bootstrap");
    let mut command = Command::new(&client);
    command
        .args(["-target", "xds:///Worker"])
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _client = quaestor_test_support::ChildProcess::spawn("go-client", command);
    let nack = quaestor_test_support::wait_for_async("the client's NACK", TIMEOUT, || async {
        ads.nacks().into_iter().find(|n| n.type_url == CLUSTER_TYPE)
    })
    .await;
    assert_eq!(nack.node_id, "nack-test");
    assert!(
        nack.message.to_lowercase().contains("static") || nack.message.contains("type"),
        "the client's reason: {nack:?}"
    );
    assert!(
        ads.nacks().iter().all(|n| n.type_url == CLUSTER_TYPE),
        "only the malformed type is refused: {:?}",
        ads.nacks()
    );
}
