//! `envoy.service.discovery.v3.AggregatedDiscoveryService`: quaestor as an xDS management
//! server, so that stock gRPC clients with an `xds:///SERVICE` target and a bootstrap naming
//! the balancer balance over the registry with no quaestor code (gRFC A27).
//!
//! Every registered service is four resources, all named after it: `Worker` in the default
//! scope, `SCOPE/Worker` in another (a scope never contains `/`, so the form is unambiguous):
//!
//! - **LDS**: an API listener whose HttpConnectionManager carries the route table inline
//!   (the router filter last, as gRPC requires);
//! - **RDS**: the same route table, for clients that ask for it: one virtual host for every
//!   domain, one route sending everything to the cluster;
//! - **CDS**: an EDS cluster fed over this stream (ADS), with the service's LB policy
//!   ([`LbPolicy`]) under `wrr_locality`, falling back to `round_robin` for clients without
//!   the chosen one;
//! - **EDS**: every location, grouped by host (one locality each, weighted by the sum of its
//!   locations' weights; under `round_robin`, one locality per location, weighted by its own
//!   weight, so that round-robin clients spread by the balancer's weights), with its health (HEALTHY; DRAINING when it answers NOT_SERVING;
//!   UNHEALTHY when it does not answer or was not probed yet) and a `load_balancing_weight`
//!   from its expected service rate (see [`super::weights`]; 1 to [`super::MAX_WEIGHT`]).
//!
//! State of the world only: `DeltaAggregatedResources` answers UNIMPLEMENTED. A response
//! holds every subscribed resource of its type that exists; a name the registry does not
//! know is left out, so the client reports "does not exist". An empty subscription (or `*`)
//! of LDS or CDS is a wildcard: every registered service. A name that no registration may
//! have ends the stream with INVALID_ARGUMENT, as does a first request without `node.id`.
//!
//! Pushes: a change of the set of services, of a location's health or of the endpoints
//! goes out at most [`COALESCE`] later; a change of weights only, at most every
//! [`WEIGHTS_EVERY`]. Each response has a version of its own (counted per type and stream)
//! and a nonce; ACKs need no answer, NACKs are logged with the client's error detail and
//! kept for [`XdsService::nacks`]. Requests carrying a stale nonce are ignored, as the
//! protocol prescribes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::load_balancing_policies as policies;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration, UInt32Value};
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Balancer, check_request, lock};
use crate::registry::ServiceLocation;
use crate::server::health::HealthState;

/// The full gRPC name of the service (a health status of its own).
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// The four resource types served.
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Changes closer together than this go out as one response.
pub const COALESCE: Duration = Duration::from_millis(20);
/// A change of endpoint weights alone goes out at most this often.
pub const WEIGHTS_EVERY: Duration = Duration::from_millis(20);
/// NACKs kept for [`XdsService::nacks`], the newest last.
const KEPT_NACKS: usize = 64;
/// Host names are looked up again after this long.
const ADDRESS_TTL: Duration = Duration::from_secs(30);

/// How a gRPC client picks among a service's endpoints (`xdsLbPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum LbPolicy {
    /// Each endpoint in turn (`round_robin`, every gRPC client has it).
    #[default]
    RoundRobin,
    /// The less busy of two random endpoints, by the client's own in-flight calls
    /// (`least_request`, gRFC A48, choice count 2).
    LeastRequest,
    /// Round robin weighted by the ORCA reports every quaestor reporter serves
    /// (`weighted_round_robin`, gRFC A58; out-of-band reports every second).
    WeightedRoundRobin,
    /// The first endpoint that connects (`pick_first`).
    PickFirst,
}

impl LbPolicy {
    /// Every policy, by its config name.
    pub const ALL: [LbPolicy; 4] = [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::WeightedRoundRobin,
        LbPolicy::PickFirst,
    ];

    /// Its name in config files.
    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::WeightedRoundRobin => "weighted_round_robin",
            LbPolicy::PickFirst => "pick_first",
        }
    }

    /// The policy of a config name.
    pub fn from_name(name: &str) -> Option<LbPolicy> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The policy as a typed extension config of `Cluster.load_balancing_policy`.
    fn typed_config(self) -> core::TypedExtensionConfig {
        let (name, config) = match self {
            LbPolicy::RoundRobin => (
                "envoy.load_balancing_policies.round_robin",
                any(&policies::round_robin::v3::RoundRobin::default()),
            ),
            LbPolicy::LeastRequest => (
                "envoy.load_balancing_policies.least_request",
                any(&policies::least_request::v3::LeastRequest {
                    choice_count: Some(UInt32Value { value: 2 }),
                    ..Default::default()
                }),
            ),
            LbPolicy::WeightedRoundRobin => (
                "envoy.load_balancing_policies.client_side_weighted_round_robin",
                any(
                    &policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin {
                        enable_oob_load_report: Some(
                            envoy_types::pb::google::protobuf::BoolValue { value: true },
                        ),
                        // Every second: the floor of quaestor's reporters.
                        oob_reporting_period: Some(proto_duration(Duration::from_secs(1))),
                        // Weights count one second after a backend's first report (the
                        // default, 10 s, leaves a new worker unweighted for long).
                        blackout_period: Some(proto_duration(Duration::from_secs(1))),
                        weight_update_period: Some(proto_duration(Duration::from_secs(1))),
                        ..Default::default()
                    },
                ),
            ),
            LbPolicy::PickFirst => (
                "envoy.load_balancing_policies.pick_first",
                any(&policies::pick_first::v3::PickFirst::default()),
            ),
        };
        core::TypedExtensionConfig {
            name: name.to_owned(),
            typed_config: Some(config),
        }
    }
}

impl std::fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The LB policy of every service: a default, and exceptions by service name (any scope).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbPolicies {
    pub default: LbPolicy,
    pub services: HashMap<String, LbPolicy>,
}

impl LbPolicies {
    pub fn of(&self, service: &str) -> LbPolicy {
        self.services.get(service).copied().unwrap_or(self.default)
    }
}

fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// The resource name of a service: `Worker`, or `SCOPE/Worker` outside the default scope.
pub fn resource_name(scope: &str, service: &str) -> String {
    if scope.is_empty() {
        service.to_owned()
    } else {
        format!("{scope}/{service}")
    }
}

/// The (scope, service) a resource name stands for. `None` for names of another form
/// (`xdstp://` names): unknown, so left out of answers. A name that no registration may
/// have is an error.
fn parse_name(name: &str) -> Result<Option<(&str, &str)>, Status> {
    if name.starts_with("xdstp:") {
        return Ok(None);
    }
    let (scope, service) = name.split_once('/').unwrap_or(("", name));
    check_request(scope, service)
        .map_err(|e| Status::invalid_argument(format!("resource {name:?}: {e}")))?;
    Ok(Some((scope, service)))
}

/// A NACK a client sent: it refused a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub node_id: String,
    pub type_url: String,
    /// The version the client refused.
    pub version: String,
    /// The client's error detail.
    pub message: String,
}

/// Something computed as of a change generation of the balancer.
type Generational<T> = (u64, Arc<T>);

/// Rewrites a resource before it is sent (tests make one malformed to see a NACK).
pub type Rewrite = Arc<dyn Fn(&str, &mut Any) + Send + Sync>;

pub type XdsServer = AggregatedDiscoveryServiceServer<XdsService>;

/// The ADS service over a [`Balancer`].
#[derive(Clone)]
pub struct XdsService {
    balancer: Balancer,
    /// Streams end when the server stops.
    health: HealthState,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for XdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsService").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    nacks: Mutex<Vec<Nack>>,
    addresses: Mutex<HashMap<String, (Option<IpAddr>, Instant)>>,
    /// The endpoints of each service as of a change generation, computed once for every
    /// stream that follows it.
    endpoints: Mutex<HashMap<(String, String), Generational<Endpoints>>>,
    rewrite: Option<Rewrite>,
}

impl XdsService {
    pub fn new(balancer: Balancer, health: HealthState) -> Self {
        Self::with_rewrite(balancer, health, None)
    }

    /// With every resource passed through `rewrite` before it is sent (for tests).
    pub fn with_rewrite(balancer: Balancer, health: HealthState, rewrite: Option<Rewrite>) -> Self {
        XdsService {
            balancer,
            health,
            shared: Arc::new(Shared {
                rewrite,
                ..Shared::default()
            }),
        }
    }

    /// The health the service follows (streams end when it stops).
    pub fn health(&self) -> &HealthState {
        &self.health
    }

    pub fn into_server(self) -> XdsServer {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// The NACKs received lately, the newest last.
    pub fn nacks(&self) -> Vec<Nack> {
        lock(&self.shared.nacks).clone()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsService {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let stream = AdsStream {
            service: self.clone(),
            node_id: None,
            subscriptions: BTreeMap::new(),
            nonces: 0,
            tx,
        };
        let health = self.health.clone();
        let counters = self.balancer.counters();
        counters.ads.opened(0);
        let open = counters.ads.track();
        tokio::spawn(async move {
            let _open = open;
            let stopped = health.stopped();
            tokio::pin!(stopped);
            tokio::select! {
                () = stream.serve(incoming) => {}
                () = &mut stopped => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental xDS is not served: use state of the world (StreamAggregatedResources)",
        ))
    }
}

/// What a stream knows of one resource type.
#[derive(Debug, Default)]
struct Subscription {
    /// Subscribed names; empty (or `*`) is a wildcard for LDS and CDS.
    names: BTreeSet<String>,
    /// Versions sent so far.
    versions: u64,
    /// The nonce of the last response.
    nonce: String,
    /// The resources last sent, encoded, by name.
    sent: Option<BTreeMap<String, Any>>,
    /// The weights-free form of the last EDS answer, and when it went out.
    sent_shape: Option<Vec<u8>>,
    sent_at: Option<Instant>,
}

impl Subscription {
    fn wildcard(&self) -> bool {
        self.names.is_empty() || self.names.contains("*")
    }
}

struct AdsStream {
    service: XdsService,
    node_id: Option<String>,
    subscriptions: BTreeMap<String, Subscription>,
    nonces: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

impl AdsStream {
    /// Answers requests and pushes changes until the client goes away.
    async fn serve(mut self, mut incoming: Streaming<DiscoveryRequest>) {
        let mut changes = self.service.balancer.subscribe_changes();
        changes.borrow_and_update();
        // When a deferred weights-only push is due.
        let mut deferred: Option<Instant> = None;
        loop {
            let due = deferred;
            tokio::select! {
                message = incoming.next() => match message {
                    Some(Ok(request)) => {
                        if let Err(status) = self.on_request(request).await {
                            let _ = self.tx.send(Err(status)).await;
                            return;
                        }
                    }
                    Some(Err(_)) | None => return,
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(COALESCE).await;
                    changes.borrow_and_update();
                    deferred = match self.push_changes(false).await {
                        Ok(next) => next.or(deferred),
                        Err(()) => return,
                    };
                }
                () = sleep_until(due) => {
                    deferred = match self.push_changes(true).await {
                        Ok(next) => next,
                        Err(()) => return,
                    };
                }
                () = self.tx.closed() => return,
            }
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if self.node_id.is_none() {
            let id = request
                .node
                .as_ref()
                .map(|n| n.id.clone())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    Status::invalid_argument("the first request must name its node (node.id)")
                })?;
            tracing::debug!(node = %id, "xDS client connected");
            self.node_id = Some(id);
        }
        let type_url = request.type_url.clone();
        if ![LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE].contains(&type_url.as_str()) {
            tracing::debug!(%type_url, "xDS: a resource type that is not served; ignored");
            return Ok(());
        }
        for name in &request.resource_names {
            if name != "*" {
                parse_name(name)?;
            }
        }
        let subscription = self.subscriptions.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() && request.response_nonce != subscription.nonce {
            // Stale: the client has not seen the latest response yet.
            return Ok(());
        }
        if let Some(error) = &request.error_detail {
            let nack = Nack {
                node_id: self.node_id.clone().unwrap_or_default(),
                type_url: type_url.clone(),
                version: request.version_info.clone(),
                message: error.message.clone(),
            };
            tracing::warn!(node = %nack.node_id, type_url = %nack.type_url, version = %nack.version,
                error = %nack.message, "xDS: the client refused (NACK) a response");
            let mut nacks = lock(&self.service.shared.nacks);
            if nacks.len() >= KEPT_NACKS {
                nacks.remove(0);
            }
            nacks.push(nack);
        }
        let names: BTreeSet<String> = request.resource_names.into_iter().collect();
        let first = subscription.sent.is_none();
        let changed = names != subscription.names;
        subscription.names = names;
        if first || changed {
            self.respond(&type_url)
                .await
                .map_err(|()| Status::cancelled("client gone"))?;
        }
        Ok(())
    }

    /// Sends what changed for every subscribed type. With `weights`, weights-only changes
    /// of EDS go out too; else they wait for [`WEIGHTS_EVERY`]: returns when they are due.
    async fn push_changes(&mut self, weights: bool) -> Result<Option<Instant>, ()> {
        let mut next = None;
        let types: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.sent.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        for type_url in types {
            let (resources, shape) = self.resources(&type_url).await;
            let subscription = &self.subscriptions[&type_url];
            if subscription.sent.as_ref() == Some(&resources) {
                continue;
            }
            let weights_only = shape.is_some() && shape == subscription.sent_shape;
            if weights_only && !weights {
                let due = subscription.sent_at.map(|at| at + WEIGHTS_EVERY);
                if due.is_some_and(|due| due > Instant::now()) {
                    next = next.min(due).or(due);
                    continue;
                }
            }
            self.send(&type_url, resources, shape).await?;
        }
        Ok(next)
    }

    async fn respond(&mut self, type_url: &str) -> Result<(), ()> {
        let (resources, shape) = self.resources(type_url).await;
        self.send(type_url, resources, shape).await
    }

    async fn send(
        &mut self,
        type_url: &str,
        resources: BTreeMap<String, Any>,
        shape: Option<Vec<u8>>,
    ) -> Result<(), ()> {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let subscription = self
            .subscriptions
            .get_mut(type_url)
            .expect("a subscription for every type answered");
        subscription.versions += 1;
        subscription.nonce.clone_from(&nonce);
        let response = DiscoveryResponse {
            version_info: subscription.versions.to_string(),
            resources: resources.values().cloned().collect(),
            type_url: type_url.to_owned(),
            nonce,
            ..Default::default()
        };
        subscription.sent = Some(resources);
        subscription.sent_shape = shape;
        subscription.sent_at = Some(Instant::now());
        self.tx.send(Ok(response)).await.map_err(|_| ())
    }

    /// The resources of a type for the stream's subscription, by name; for EDS also their
    /// form without weights (to tell weights-only changes).
    async fn resources(&self, type_url: &str) -> (BTreeMap<String, Any>, Option<Vec<u8>>) {
        let Some(subscription) = self.subscriptions.get(type_url) else {
            return (BTreeMap::new(), None);
        };
        let balancer = &self.service.balancer;
        let wildcard = subscription.wildcard() && [LISTENER_TYPE, CLUSTER_TYPE].contains(&type_url);
        let services: Vec<(String, String)> = if wildcard {
            balancer.services().into_iter().collect()
        } else {
            subscription
                .names
                .iter()
                .filter_map(|name| parse_name(name).ok().flatten())
                .map(|(scope, service)| (scope.to_owned(), service.to_owned()))
                .collect()
        };
        let mut resources = BTreeMap::new();
        let mut shapes = Vec::new();
        for (scope, service) in services {
            if !balancer.has_service(&scope, &service) {
                continue;
            }
            let name = resource_name(&scope, &service);
            let policy = balancer.options().lb_policies.of(&service);
            let mut resource = match type_url {
                LISTENER_TYPE => any(&listener_of(&name)),
                ROUTE_TYPE => any(&route_of(&name)),
                CLUSTER_TYPE => any(&cluster_of(&name, policy)),
                _ => {
                    let endpoints = self.endpoints(&scope, &service).await;
                    shapes.push(endpoints.shape.clone());
                    any(&endpoints.assignment)
                }
            };
            if let Some(rewrite) = &self.service.shared.rewrite {
                rewrite(type_url, &mut resource);
            }
            resources.insert(name, resource);
        }
        let shape = (type_url == ENDPOINT_TYPE).then(|| shapes.concat());
        (resources, shape)
    }

    /// The service's endpoints as of the balancer's current change generation (computed
    /// once for all streams).
    async fn endpoints(&self, scope: &str, service: &str) -> Arc<Endpoints> {
        let balancer = &self.service.balancer;
        let generation = *balancer.subscribe_changes().borrow();
        let key = (scope.to_owned(), service.to_owned());
        if let Some((at, known)) = lock(&self.service.shared.endpoints).get(&key) {
            if *at == generation {
                return Arc::clone(known);
            }
        }
        // The first answer waits for the first probes of the service, as discovery does.
        let _ = balancer.discover(scope, service, 0).await;
        // Under round_robin, each location is a locality of its own, so that the locality
        // weights (which every gRPC client honours) carry the balancer's weights.
        let own_localities = balancer.options().lb_policies.of(service) == LbPolicy::RoundRobin;
        let mut localities: BTreeMap<String, Vec<endpoint::LbEndpoint>> = BTreeMap::new();
        for (location, status, weight) in balancer.endpoints(scope, service) {
            let Some(ip) = self.address(&location).await else {
                continue;
            };
            let locality = if own_localities {
                format!("{}:{}", location.host, location.port)
            } else {
                location.host.clone()
            };
            localities
                .entry(locality)
                .or_default()
                .push(lb_endpoint(&location, ip, status, weight));
        }
        let name = resource_name(scope, service);
        let computed = Arc::new(Endpoints::new(&name, localities));
        let mut cache = lock(&self.service.shared.endpoints);
        // Services no longer asked for fall out with the next generation's first lookups.
        cache.retain(|_, (at, _)| *at == generation);
        cache.insert(key, (generation, Arc::clone(&computed)));
        computed
    }

    /// The location's IP address (IPv4 preferred); clients need addresses, not names.
    async fn address(&self, location: &ServiceLocation) -> Option<IpAddr> {
        if let Ok(ip) = location.host.parse::<IpAddr>() {
            return Some(ip);
        }
        let now = Instant::now();
        if let Some((known, at)) = lock(&self.service.shared.addresses).get(&location.host) {
            if now.duration_since(*at) < ADDRESS_TTL {
                return *known;
            }
        }
        let found = super::grpclb::lookup(location).await;
        lock(&self.service.shared.addresses).insert(location.host.clone(), (found, now));
        found
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// A service's EDS resource and its form without weights.
#[derive(Debug)]
struct Endpoints {
    assignment: endpoint::ClusterLoadAssignment,
    shape: Vec<u8>,
}

impl Endpoints {
    fn new(name: &str, localities: BTreeMap<String, Vec<endpoint::LbEndpoint>>) -> Self {
        let assignment = endpoint::ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: localities
                .into_iter()
                .map(|(sub_zone, lb_endpoints)| {
                    let weight: u32 = lb_endpoints
                        .iter()
                        .filter(|e| e.health_status == core::HealthStatus::Healthy as i32)
                        .filter_map(|e| e.load_balancing_weight.as_ref().map(|w| w.value))
                        .sum();
                    endpoint::LocalityLbEndpoints {
                        locality: Some(core::Locality {
                            sub_zone,
                            ..Default::default()
                        }),
                        lb_endpoints,
                        load_balancing_weight: Some(UInt32Value {
                            value: weight.max(1),
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        };
        let mut unweighted = assignment.clone();
        for locality in &mut unweighted.endpoints {
            locality.load_balancing_weight = None;
            for e in &mut locality.lb_endpoints {
                e.load_balancing_weight = None;
            }
        }
        Endpoints {
            assignment,
            shape: unweighted.encode_to_vec(),
        }
    }
}

/// How a location shows in EDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    /// Serving and answering.
    Healthy,
    /// Answering NOT_SERVING: no new calls.
    Draining,
    /// Not answering, or not probed yet.
    Unhealthy,
}

fn lb_endpoint(
    location: &ServiceLocation,
    ip: IpAddr,
    status: EndpointStatus,
    weight: u32,
) -> endpoint::LbEndpoint {
    let health = match status {
        EndpointStatus::Healthy => core::HealthStatus::Healthy,
        EndpointStatus::Draining => core::HealthStatus::Draining,
        EndpointStatus::Unhealthy => core::HealthStatus::Unhealthy,
    };
    endpoint::LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value {
            value: weight.max(1),
        }),
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
            endpoint::Endpoint {
                address: Some(core::Address {
                    address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                        address: ip.to_string(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                            u32::from(location.port),
                        )),
                        ..Default::default()
                    })),
                }),
                hostname: location.host.clone(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn route_of(name: &str) -> route::RouteConfiguration {
    route::RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![route::VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        name.to_owned(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listener_of(name: &str) -> listener::Listener {
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            route_of(name),
        )),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    listener::Listener {
        name: name.to_owned(),
        api_listener: Some(listener::ApiListener {
            api_listener: Some(any(&manager)),
        }),
        ..Default::default()
    }
}

fn cluster_of(name: &str, policy: LbPolicy) -> cluster::Cluster {
    let mut endpoint_picking = vec![policy];
    if policy != LbPolicy::RoundRobin {
        endpoint_picking.push(LbPolicy::RoundRobin);
    }
    let picking = cluster::LoadBalancingPolicy {
        policies: endpoint_picking
            .into_iter()
            .map(|p| cluster::load_balancing_policy::Policy {
                typed_extension_config: Some(p.typed_config()),
            })
            .collect(),
    };
    let locality = policies::wrr_locality::v3::WrrLocality {
        endpoint_picking_policy: Some(picking),
    };
    cluster::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    core::AggregatedConfigSource::default(),
                )),
                resource_api_version: core::ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: name.to_owned(),
        }),
        lb_policy: match policy {
            LbPolicy::LeastRequest => cluster::cluster::LbPolicy::LeastRequest,
            _ => cluster::cluster::LbPolicy::RoundRobin,
        } as i32,
        load_balancing_policy: Some(cluster::LoadBalancingPolicy {
            policies: vec![cluster::load_balancing_policy::Policy {
                typed_extension_config: Some(core::TypedExtensionConfig {
                    name: "envoy.load_balancing_policies.wrr_locality".to_owned(),
                    typed_config: Some(any(&locality)),
                }),
            }],
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_services() {
        assert_eq!(parse_name("Worker").unwrap(), Some(("", "Worker")));
        assert_eq!(parse_name("prod/Worker").unwrap(), Some(("prod", "Worker")));
        assert_eq!(parse_name("xdstp://authority/x/y").unwrap(), None);
        assert_eq!(
            parse_name("a/b/c").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            parse_name("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(resource_name("", "Worker"), "Worker");
        assert_eq!(resource_name("prod", "Worker"), "prod/Worker");
    }

    #[test]
    fn policies_round_trip_their_names() {
        for policy in LbPolicy::ALL {
            assert_eq!(LbPolicy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(LbPolicy::from_name("ring_hash"), None);
    }

    #[test]
    fn clusters_fall_back_to_round_robin() {
        let cluster = cluster_of("Worker", LbPolicy::LeastRequest);
        let outer = &cluster.load_balancing_policy.unwrap().policies[0];
        let config = outer.typed_extension_config.as_ref().unwrap();
        let locality = policies::wrr_locality::v3::WrrLocality::decode(
            config.typed_config.as_ref().unwrap().value.as_slice(),
        )
        .unwrap();
        let names: Vec<String> = locality
            .endpoint_picking_policy
            .unwrap()
            .policies
            .iter()
            .map(|p| p.typed_extension_config.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.load_balancing_policies.least_request",
                "envoy.load_balancing_policies.round_robin"
            ]
        );
    }
}
