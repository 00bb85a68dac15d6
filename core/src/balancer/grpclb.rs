//! `grpc.lb.v1.LoadBalancer/BalanceLoad`: the standard grpclb protocol, so that stock gRPC
//! clients using the grpclb policy balance over quaestor's workers without quaestor code.
//!
//! The client opens a stream and names the service (`Worker`, or `Worker:443`: the port is
//! dropped); the balancer answers with an initial response and then a server list whenever
//! the healthy set or the weights change (at most every [`COALESCE`]). Load is expressed by
//! repetition: a location appears in proportion to its expected service rate (capacity ÷
//! request time, see [`super::weights`]), and a saturated one leaves the list until it has room
//! again. Host names are resolved to IP addresses. A name that no registration may have (a
//! `/` in it) is refused with INVALID_ARGUMENT, as is a stream without an initial request
//! within 10 s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Balancer, check_request};
use crate::proto::grpclb::load_balance_request::LoadBalanceRequestType;
use crate::proto::grpclb::load_balance_response::LoadBalanceResponseType;
use crate::proto::grpclb::load_balancer_server::{LoadBalancer, LoadBalancerServer};
use crate::proto::grpclb::{
    InitialLoadBalanceResponse, LoadBalanceRequest, LoadBalanceResponse, Server, ServerList,
};
use crate::registry::ServiceLocation;
use crate::server::health::HealthState;

/// The full gRPC name of the service (a health status of its own).
pub const SERVICE_NAME: &str = "grpc.lb.v1.LoadBalancer";

/// How long a client may take to send its initial request.
const INITIAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes closer together than this go out as one list.
pub const COALESCE: Duration = Duration::from_millis(20);

pub type GrpclbServer = LoadBalancerServer<GrpclbService>;

pub(super) fn service(balancer: Balancer, health: HealthState) -> GrpclbServer {
    LoadBalancerServer::new(GrpclbService { balancer, health })
}

#[derive(Debug, Clone)]
pub struct GrpclbService {
    balancer: Balancer,
    /// Streams end when the server stops.
    health: HealthState,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<LoadBalanceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LoadBalancer for GrpclbService {
    type BalanceLoadStream = ResponseStream;

    async fn balance_load(
        &self,
        request: Request<Streaming<LoadBalanceRequest>>,
    ) -> Result<Response<Self::BalanceLoadStream>, Status> {
        let opened = self.open(request).await;
        let streams = &self.balancer.counters().grpclb;
        streams.opened(opened.as_ref().map_or_else(|s| s.code() as i32, |_| 0));
        opened
    }
}

impl GrpclbService {
    /// Opens a BalanceLoad stream (counted by [`LoadBalancer::balance_load`]).
    async fn open(
        &self,
        request: Request<Streaming<LoadBalanceRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(INITIAL_REQUEST_TIMEOUT, incoming.next())
            .await
            .map_err(|_| {
                Status::invalid_argument(format!(
                    "no initial request within {INITIAL_REQUEST_TIMEOUT:?}"
                ))
            })?;
        let name = match first {
            Some(Ok(LoadBalanceRequest {
                load_balance_request_type: Some(LoadBalanceRequestType::InitialRequest(initial)),
            })) => initial.name,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be an initial request",
                ));
            }
        };
        let service = service_of(&name)
            .ok_or_else(|| Status::invalid_argument(format!("{name:?} names no service")))?
            .to_owned();
        check_request("", &service).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::debug!(%service, "grpclb client connected");

        let (tx, rx) = mpsc::channel(4);
        let balancer = self.balancer.clone();
        let health = self.health.clone();
        let open = self.balancer.counters().grpclb.track();
        tokio::spawn(async move {
            let _open = open;
            let stopped = health.stopped();
            tokio::pin!(stopped);
            tokio::select! {
                () = serve_lists(balancer, service, incoming, tx) => {}
                () = &mut stopped => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the initial response, then a list on every change, until the client goes away.
async fn serve_lists(
    balancer: Balancer,
    service: String,
    mut incoming: Streaming<LoadBalanceRequest>,
    tx: mpsc::Sender<Result<LoadBalanceResponse, Status>>,
) {
    let initial = LoadBalanceResponse {
        load_balance_response_type: Some(LoadBalanceResponseType::InitialResponse(
            // No client stats wanted: the workers report their own load.
            InitialLoadBalanceResponse {
                client_stats_report_interval: None,
            },
        )),
    };
    if tx.send(Ok(initial)).await.is_err() {
        return;
    }
    // The first answer waits for the first probes of the service, as discovery does.
    let _ = balancer.discover("", &service, 0).await;
    let mut changes = balancer.subscribe_changes();
    let mut addresses = HashMap::new();
    let mut last: Option<Vec<Server>> = None;
    loop {
        changes.borrow_and_update();
        let servers = server_list(&balancer, &service, &mut addresses).await;
        if last.as_ref() != Some(&servers) {
            let list = LoadBalanceResponse {
                load_balance_response_type: Some(LoadBalanceResponseType::ServerList(ServerList {
                    servers: servers.clone(),
                })),
            };
            if tx.send(Ok(list)).await.is_err() {
                return;
            }
            last = Some(servers);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            message = incoming.next() => match message {
                // Client stats, if a client sends them anyway: nothing to do with them.
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            },
            () = tx.closed() => return,
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// The weighted list: each location repeated by its weight, interleaved round by round so
/// that a client picking in order spreads its calls.
async fn server_list(
    balancer: &Balancer,
    service: &str,
    addresses: &mut HashMap<String, Option<IpAddr>>,
) -> Vec<Server> {
    let weighted = balancer.weighted("", service);
    let mut resolved: Vec<(Server, u32)> = Vec::with_capacity(weighted.len());
    for (location, weight) in weighted {
        if let Some(ip) = resolve(&location, addresses).await {
            let server = Server {
                ip_address: match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                },
                port: i32::from(location.port),
                load_balance_token: String::new(),
                drop: false,
            };
            resolved.push((server, weight));
        }
    }
    let rounds = resolved.iter().map(|(_, w)| *w).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|round| {
            resolved
                .iter()
                .filter(move |(_, w)| *w > round)
                .map(|(s, _)| s.clone())
        })
        .collect()
}

/// The location's IP address (IPv4 preferred), looked up once per stream.
async fn resolve(
    location: &ServiceLocation,
    cache: &mut HashMap<String, Option<IpAddr>>,
) -> Option<IpAddr> {
    if let Ok(ip) = location.host.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(known) = cache.get(&location.host) {
        return *known;
    }
    let found = lookup(location).await;
    cache.insert(location.host.clone(), found);
    found
}

/// Looks the location's host up (IPv4 preferred); `None`, with a warning, if it has none.
pub(super) async fn lookup(location: &ServiceLocation) -> Option<IpAddr> {
    match tokio::net::lookup_host((location.host.as_str(), location.port)).await {
        Ok(addresses) => {
            let all: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
            all.iter().find(|ip| ip.is_ipv4()).or(all.first()).copied()
        }
        Err(error) => {
            tracing::warn!(host = %location.host, %error, "cannot resolve a worker's host; leaving it out");
            None
        }
    }
}

/// `Worker:443` → `Worker`; `Worker` → `Worker`; an empty name → `None`.
fn service_of(name: &str) -> Option<&str> {
    let service = match name.rsplit_once(':') {
        Some((service, port)) if port.chars().all(|c| c.is_ascii_digit()) => service,
        _ => name,
    };
    (!service.is_empty()).then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_services() {
        assert_eq!(service_of("Worker"), Some("Worker"));
        assert_eq!(service_of("Worker:443"), Some("Worker"));
        assert_eq!(service_of("Worker:"), Some("Worker"));
        assert_eq!(service_of(""), None);
        assert_eq!(service_of(":80"), None);
    }
}
