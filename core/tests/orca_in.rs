//! ORCA in: backends that serve health and `xds.service.orca.v3.OpenRcaService` but neither
//! quaestor's load push nor `ReportLoad` are ranked by their ORCA reports (real gRPC over
//! loopback; the stock grpc-go server is in cli/tests/orca_in.rs).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quaestor_core::balancer::Balancer;
use quaestor_core::balancer::monitor::Feed;
use quaestor_core::proto::xds::data::orca::v3::OrcaLoadReport;
use quaestor_core::proto::xds::service::orca::v3::OrcaLoadReportRequest;
use quaestor_core::proto::xds::service::orca::v3::open_rca_service_server::{
    OpenRcaService, OpenRcaServiceServer,
};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::HealthState;
use quaestor_core::server::{GrpcServer, ServerHandle};
use quaestor_test_support::wait_for_async;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

mod common;
use common::options;

const TIMEOUT: Duration = Duration::from_secs(20);

/// An ORCA service that reports `application_utilization` (and a CPU figure) every interval
/// asked for, as a stock server with ORCA enabled does.
#[derive(Clone)]
struct Utilization(Arc<Mutex<f64>>);

impl Utilization {
    fn set(&self, value: f64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

type Reports = Pin<Box<dyn Stream<Item = Result<OrcaLoadReport, Status>> + Send>>;

#[tonic::async_trait]
impl OpenRcaService for Utilization {
    type StreamCoreMetricsStream = Reports;

    async fn stream_core_metrics(
        &self,
        request: Request<OrcaLoadReportRequest>,
    ) -> Result<Response<Reports>, Status> {
        let every = request
            .get_ref()
            .report_interval
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(1));
        let utilization = Arc::clone(&self.0);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let value = *utilization.lock().unwrap_or_else(PoisonError::into_inner);
                let report = OrcaLoadReport {
                    application_utilization: value,
                    cpu_utilization: 0.5,
                    ..OrcaLoadReport::default()
                };
                if tx.send(Ok(report)).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A backend with health (`Worker` SERVING) and the given ORCA service, nothing else.
async fn orca_backend<S: OpenRcaService>(orca: S) -> (ServerHandle, ServiceLocation) {
    let health = HealthState::new();
    health.set_serving("Worker", true);
    let server = GrpcServer::new(health)
        .add_service(OpenRcaServiceServer::new(orca))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let location =
        ServiceLocation::new("", "Worker", "127.0.0.1", server.local_addr().port()).expect("ok");
    (server, location)
}

fn ports(locations: &[ServiceLocation]) -> Vec<u16> {
    locations.iter().map(|l| l.port).collect()
}

/// Waits until the ranked locations (no hand-out counted) satisfy `expected`.
async fn until_ranked(balancer: &Balancer, what: &str, expected: impl Fn(&[u16]) -> bool) {
    wait_for_async(what, TIMEOUT, || async {
        let ranked = ports(&balancer.ranked("", "Worker"));
        expected(&ranked).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_with_only_orca_are_ranked_by_their_utilization() {
    let (busy_load, idle_load) = (
        Utilization(Arc::new(Mutex::new(0.9))),
        Utilization(Arc::new(Mutex::new(0.1))),
    );
    let (busy_server, busy) = orca_backend(busy_load.clone()).await;
    let (idle_server, idle) = orca_backend(idle_load.clone()).await;
    let (b, i) = (busy.port, idle.port);
    let balancer = Balancer::start(MemoryRegistry::from_locations([busy, idle]), options());

    until_ranked(&balancer, "the idle ORCA backend first", |r| r == [i, b]).await;
    let status = balancer.status("", "Worker");
    let of = |port: u16| {
        status
            .iter()
            .find(|s| s.location.port == port)
            .expect("known")
            .state
            .clone()
    };
    let (idle_state, busy_state) = (of(i), of(b));
    assert_eq!(idle_state.feed, Feed::Orca);
    let load = idle_state.load.expect("load from ORCA");
    assert_eq!(
        (load.current_requests, load.capacity, load.known_load_rate),
        (10, 100, -1.0),
        "0.1 of 100 synthetic slots: {load:?}"
    );
    assert_eq!(load.server_utilization, 0.5);
    assert_eq!(busy_state.load.map(|l| l.current_requests), Some(90));
    // grpclb's weights come from the same load: the idle one weighs more.
    let weights: std::collections::HashMap<u16, u32> = balancer
        .weighted("", "Worker")
        .into_iter()
        .map(|(l, w)| (l.port, w))
        .collect();
    assert!(weights[&i] > weights[&b], "weights {weights:?}");
    assert_eq!(
        ports(&balancer.discover_top("", "Worker", 1).await.expect("top")),
        [i]
    );

    // The loads swap: the ranking follows the next reports.
    busy_load.set(0.05);
    idle_load.set(0.7);
    until_ranked(&balancer, "the ranking to follow the ORCA reports", |r| {
        r == [b, i]
    })
    .await;

    // A backend that stops: out of the ranking.
    drop(busy_server);
    until_ranked(&balancer, "the stopped backend to leave", |r| r == [i]).await;
    drop(idle_server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quaestor_named_metrics_in_orca_are_used_exactly() {
    // Quaestor reporters' ORCA service alone (no push, no ReportLoad): its named metrics carry
    // the service's own current requests and capacity.
    let reporters: Vec<Reporter> = (0..2)
        .map(|_| {
            let reporter = Reporter::new();
            reporter.add_service("Worker", 4).expect("add");
            reporter.set_serving("Worker", true);
            reporter
        })
        .collect();
    let mut servers = Vec::new();
    let mut locations = Vec::new();
    for reporter in &reporters {
        let server = GrpcServer::new(reporter.health().clone())
            .add_service(reporter.orca_service())
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        locations.push(
            ServiceLocation::new("", "Worker", "127.0.0.1", server.local_addr().port())
                .expect("ok"),
        );
        servers.push(server);
    }
    let (first, second) = (locations[0].port, locations[1].port);
    let loads: Vec<_> = reporters
        .iter()
        .map(|r| r.service_load("Worker").expect("load"))
        .collect();
    // Three of four busy on the first.
    let _busy: Vec<_> = (0..3).map(|_| loads[0].request()).collect();
    let balancer = Balancer::start(MemoryRegistry::from_locations(locations), options());
    until_ranked(&balancer, "the idle reporter first", |r| {
        r == [second, first]
    })
    .await;
    wait_for_async("the exact load of the busy reporter", TIMEOUT, || async {
        balancer
            .status("", "Worker")
            .iter()
            .find(|s| s.location.port == first)
            .and_then(|s| s.state.load)
            .filter(|l| (l.current_requests, l.capacity) == (3, 4))
    })
    .await;
}
