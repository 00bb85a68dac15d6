//! `Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc` over a [`Balancer`], exactly per the
//! contract: an empty service name is INVALID_ARGUMENT, an unknown service an empty answer.

use std::time::Instant;

use tonic::{Request, Response, Status};

use super::counters::DiscoveryMethod;
use super::{Balancer, DiscoveryError};
use crate::proto::service_discovery::service_discovery_grpc_server::{
    ServiceDiscoveryGrpc, ServiceDiscoveryGrpcServer,
};
use crate::proto::service_discovery::{
    DiscoverServicesRequest, DiscoverServicesResponse, ServiceLocationMsg,
};
use crate::registry::ServiceLocation;

/// The full gRPC name of the discovery service (a health status of its own).
pub const SERVICE_NAME: &str = "Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc";

/// The short name the C# Quaestor's configs check the balancer's health under
/// (`serviceNames: [ ServiceDiscoveryGrpc ]`); reported SERVING too.
pub const SHORT_SERVICE_NAME: &str = "ServiceDiscoveryGrpc";

pub type ServiceDiscoveryServer = ServiceDiscoveryGrpcServer<DiscoveryService>;

pub(super) fn service(balancer: Balancer) -> ServiceDiscoveryServer {
    ServiceDiscoveryGrpcServer::new(DiscoveryService { balancer })
}

#[derive(Debug, Clone)]
pub struct DiscoveryService {
    balancer: Balancer,
}

#[tonic::async_trait]
impl ServiceDiscoveryGrpc for DiscoveryService {
    async fn discover_services(
        &self,
        request: Request<DiscoverServicesRequest>,
    ) -> Result<Response<DiscoverServicesResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let answer = answer(
            self.balancer
                .discover(&r.scope, &r.service_name, r.max_count)
                .await,
        );
        self.count(DiscoveryMethod::DiscoverServices, &answer, started);
        answer
    }

    async fn discover_top_services(
        &self,
        request: Request<DiscoverServicesRequest>,
    ) -> Result<Response<DiscoverServicesResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let answer = answer(
            self.balancer
                .discover_top(&r.scope, &r.service_name, r.max_count)
                .await,
        );
        self.count(DiscoveryMethod::DiscoverTopServices, &answer, started);
        answer
    }
}

impl DiscoveryService {
    /// Counts a request and its latency (its handling here; not the transport's).
    fn count<T>(&self, method: DiscoveryMethod, answer: &Result<T, Status>, started: Instant) {
        let code = answer.as_ref().map_or_else(|s| s.code() as i32, |_| 0);
        self.balancer
            .counters()
            .discovery(method, code, started.elapsed());
    }
}

fn answer(
    found: Result<Vec<ServiceLocation>, DiscoveryError>,
) -> Result<Response<DiscoverServicesResponse>, Status> {
    let locations = found.map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Response::new(DiscoverServicesResponse {
        service_locations: locations.into_iter().map(to_message).collect(),
    }))
}

fn to_message(location: ServiceLocation) -> ServiceLocationMsg {
    ServiceLocationMsg {
        scope: location.scope,
        service_name: location.service,
        host_name: location.host,
        port: i32::from(location.port),
    }
}
