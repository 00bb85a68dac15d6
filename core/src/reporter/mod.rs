//! The worker side: `LoadReportingGrpc`, quaestor's own `LoadPush` ([`push`]),
//! `ProcessAdministrationGrpc` (request cancellation, [`admin`]) and `grpc.health.v1.Health`
//! for the services of one worker process.
//!
//! Two ways to use it:
//! - inside the worker's own tonic server, on the worker's port: [`Reporter::add_to`];
//! - standalone, on a port of its own: [`Reporter::server`] then `bind` / `spawn`.

pub mod admin;
pub mod orca;
pub mod percall;
pub mod push;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status};

use crate::load::ServiceLoad;
use crate::proto::load_reporting::load_reporting_grpc_server::{
    LoadReportingGrpc, LoadReportingGrpcServer,
};
use crate::proto::load_reporting::{LoadReportRequest, LoadReportResponse};
use crate::proto::process_admin::process_administration_grpc_server::ProcessAdministrationGrpcServer;
use crate::server::health::{HealthState, OVERALL, ServingStatus};
use crate::server::{GrpcServer, ServerError, ServerHandle};
use crate::tls::ServerTls;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReporterError {
    #[error("a service name must not be empty")]
    EmptyServiceName,
    #[error("service {0:?} is already reported")]
    DuplicateService(String),
}

/// The load and health of a worker's services. Cheap to clone; clones share everything.
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
    health: HealthState,
}

impl Reporter {
    /// No services yet; overall health SERVING.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports a new service with `capacity` (see [`ServiceLoad::new`]) and marks it SERVING.
    /// Returns the handle the worker counts its requests on.
    pub fn add_service(
        &self,
        name: &str,
        capacity: i32,
    ) -> Result<Arc<ServiceLoad>, ReporterError> {
        let load = Arc::new(ServiceLoad::new(capacity));
        self.add_service_load(name, Arc::clone(&load))?;
        Ok(load)
    }

    /// Reports an existing [`ServiceLoad`] under `name` and marks it SERVING.
    pub fn add_service_load(
        &self,
        name: &str,
        load: Arc<ServiceLoad>,
    ) -> Result<(), ReporterError> {
        if name.is_empty() {
            return Err(ReporterError::EmptyServiceName);
        }
        let mut loads = self.loads.write().unwrap_or_else(PoisonError::into_inner);
        if loads.contains_key(name) {
            return Err(ReporterError::DuplicateService(name.to_owned()));
        }
        loads.insert(name.to_owned(), load);
        drop(loads);
        self.health.set(name, ServingStatus::Serving);
        Ok(())
    }

    /// The load of a reported service.
    pub fn service_load(&self, name: &str) -> Option<Arc<ServiceLoad>> {
        self.loads
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The names of the reported services, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .loads
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub fn health(&self) -> &HealthState {
        &self.health
    }

    /// Flips one service between SERVING and NOT_SERVING; `""` is the whole worker.
    pub fn set_serving(&self, service: &str, serving: bool) {
        self.health.set_serving(service, serving);
    }

    /// Flips every service and the overall status at once.
    pub fn set_all_serving(&self, serving: bool) {
        self.health
            .set_all(crate::server::health::serving_status(serving));
    }

    /// `true` when the worker as a whole (the `""` status) is SERVING.
    pub fn is_serving(&self) -> bool {
        self.health.status(OVERALL) == Some(ServingStatus::Serving)
    }

    /// The `LoadReportingGrpc` service alone.
    pub fn load_reporting_service(&self) -> LoadReportingGrpcServer<LoadReportingService> {
        LoadReportingGrpcServer::new(LoadReportingService {
            loads: Arc::clone(&self.loads),
        })
    }

    /// The `quaestor.push.v1.LoadPush` service alone.
    pub fn load_push_service(&self) -> push::LoadPushService {
        push::LoadPushService::new(Arc::clone(&self.loads), self.health.clone())
    }

    /// The `Quaestor.ProcessAdministration.ProcessAdministrationGrpc` service alone.
    pub fn process_admin_service(
        &self,
    ) -> ProcessAdministrationGrpcServer<admin::ProcessAdministrationService> {
        admin::ProcessAdministrationService::new(Arc::clone(&self.loads)).into_server()
    }

    /// Cancels every running request started as `user_name` in `environment` (matched
    /// exactly) in every reported service, as `Cancel` does; how many matched.
    pub fn cancel_requests(&self, user_name: &str, environment: &str) -> usize {
        admin::cancel_in(&self.loads, user_name, environment)
    }

    /// Adds health, load reporting, load push and process administration to a worker's own
    /// tonic server. Call
    /// `reporter.health().shutdown()` when that server begins to stop, so that health
    /// watchers and load pushes see NOT_SERVING, end, and let the stop finish.
    pub fn add_to(&self, routes: &mut RoutesBuilder) {
        routes.add_service(self.health.service());
        routes.add_service(self.load_reporting_service());
        routes.add_service(self.load_push_service());
        routes.add_service(self.process_admin_service());
        routes.add_service(self.orca_service());
    }

    /// A server with health, load reporting, load push, process administration and
    /// reflection; add more services or serve it.
    pub fn server(&self) -> GrpcServer {
        GrpcServer::new(self.health.clone())
            .add_service(self.load_reporting_service())
            .add_service(self.load_push_service())
            .add_service(self.process_admin_service())
            .add_service(self.orca_service())
    }

    /// `xds.service.orca.v3.OpenRcaService` over the reporter's services (see [`orca`]).
    pub fn orca_service(&self) -> orca::OpenRcaServiceServerOf {
        orca::OrcaService::new(Arc::clone(&self.loads), self.health.clone()).into_server()
    }

    /// A layer that adds the per-call ORCA report (the `endpoint-load-metrics-bin` trailer)
    /// to the responses of the services it wraps (see [`percall`]); opt-in.
    pub fn per_call_orca(&self) -> percall::PerCallLayer {
        percall::PerCallLayer::new(Arc::clone(&self.loads))
    }

    /// Serves health and load on `addr` (port 0: any free port) in the background.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        tls: Option<ServerTls>,
    ) -> Result<ServerHandle, ServerError> {
        self.server().with_tls(tls).bind(addr).await
    }
}

/// `Quaestor.LoadReporting.LoadReportingGrpc` over the reporter's services.
///
/// The request's scope is not checked: a worker serves one scope, as in the C# version.
#[derive(Debug, Clone)]
pub struct LoadReportingService {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
}

#[tonic::async_trait]
impl LoadReportingGrpc for LoadReportingService {
    async fn report_load(
        &self,
        request: Request<LoadReportRequest>,
    ) -> Result<Response<LoadReportResponse>, Status> {
        let load = reported(&self.loads, &request.get_ref().service_name)?;
        Ok(Response::new(load.snapshot().into()))
    }
}

/// The load of a reported service, or the status a request for an unknown one gets:
/// OUT_OF_RANGE, not NOT_FOUND (what the C# Quaestor answers, and what its balancer expects).
pub(crate) fn reported(
    loads: &RwLock<HashMap<String, Arc<ServiceLoad>>>,
    name: &str,
) -> Result<Arc<ServiceLoad>, Status> {
    loads
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .cloned()
        .ok_or_else(|| Status::out_of_range(format!("service {name:?} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_checked() {
        let reporter = Reporter::new();
        assert_eq!(
            reporter.add_service("", 1).err(),
            Some(ReporterError::EmptyServiceName)
        );
        let load = reporter.add_service("Worker", 3).expect("first add");
        assert_eq!(
            reporter.add_service("Worker", 3).err(),
            Some(ReporterError::DuplicateService("Worker".into()))
        );
        assert!(Arc::ptr_eq(
            &load,
            &reporter.service_load("Worker").expect("known")
        ));
        assert_eq!(
            reporter.health().status("Worker"),
            Some(ServingStatus::Serving)
        );
        assert_eq!(reporter.service_names(), vec!["Worker".to_owned()]);
    }

    #[test]
    fn flipping_all_services() {
        let reporter = Reporter::new();
        reporter.add_service("A", 1).expect("A");
        reporter.add_service("B", 1).expect("B");
        reporter.set_all_serving(false);
        assert!(!reporter.is_serving());
        assert_eq!(
            reporter.health().status("B"),
            Some(ServingStatus::NotServing)
        );
        reporter.set_serving("A", true);
        assert_eq!(reporter.health().status("A"), Some(ServingStatus::Serving));
    }
}
