//! `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`: a reporter's load as ORCA
//! out-of-band reports (gRFC A51), for gRPC clients that balance by backend metrics
//! (`weighted_round_robin`) and for balancers that read ORCA.
//!
//! One report at once, then one every `report_interval` (at least [`MIN_REPORT_INTERVAL`]):
//! - `cpu_utilization`: the process's CPU use (as `ReportLoad` measures it, or as set);
//! - `mem_utilization`: the host's memory in use, 0 to 1;
//! - `application_utilization`: requests in flight over capacity, every service together; in a
//!   stream, their mean over the interval (sampled 20 times), in a per-call report the
//!   number at the call's end;
//! - `rps_fractional`: requests started per second since the stream's previous report;
//! - `named_metrics`: `current_requests`, `capacity` (of the services that know theirs) and
//!   `known_load_rate` (the highest set), and the same per service as `NAME.current_requests`…
//!
//! The same report, taken as each call ends, can go back in that call's trailers too
//! (per-call ORCA): see [`crate::reporter::percall`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::load::ServiceLoad;
use crate::proto::xds::data::orca::v3::OrcaLoadReport;
use crate::proto::xds::service::orca::v3::OrcaLoadReportRequest;
use crate::proto::xds::service::orca::v3::open_rca_service_server::{
    OpenRcaService, OpenRcaServiceServer,
};
use crate::server::health::HealthState;

/// The tonic server of [`OrcaService`].
pub type OpenRcaServiceServerOf = OpenRcaServiceServer<OrcaService>;

/// The shortest interval a client gets, whatever it asks (and what it gets asking none).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// `OpenRcaService` over a reporter's services.
#[derive(Debug, Clone)]
pub struct OrcaService {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
    health: HealthState,
}

impl OrcaService {
    pub(crate) fn new(
        loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
        health: HealthState,
    ) -> Self {
        OrcaService { loads, health }
    }

    pub fn into_server(self) -> OpenRcaServiceServer<Self> {
        OpenRcaServiceServer::new(self)
    }
}

/// What a report is made of, and what the next one compares with.
pub(crate) struct Reading {
    pub(crate) report: OrcaLoadReport,
    /// Requests started so far, every service together.
    pub(crate) started: u64,
}

/// The report of every service together as it stands now, without `rps_fractional` (a rate
/// needs a reading before it), and the requests started so far, to compute it from. The
/// per-call trailer is made of it too.
pub(crate) fn read(loads: &RwLock<HashMap<String, Arc<ServiceLoad>>>) -> Reading {
    let loads: Vec<(String, Arc<ServiceLoad>)> = loads
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(name, load)| (name.clone(), Arc::clone(load)))
        .collect();
    let mut report = OrcaLoadReport::default();
    let (mut current, mut capacity, mut started) = (0.0, 0.0, 0u64);
    let mut known_load_rate: Option<f64> = None;
    for (name, load) in &loads {
        let s = load.snapshot();
        report.cpu_utilization = report.cpu_utilization.max(s.server_utilization.max(0.0));
        report.mem_utilization = (s.memory_usage_percent / 100.0).clamp(0.0, 1.0);
        let metrics = &mut report.named_metrics;
        metrics.insert(
            format!("{name}.current_requests"),
            f64::from(s.current_requests),
        );
        current += f64::from(s.current_requests);
        if s.capacity > 0 {
            metrics.insert(format!("{name}.capacity"), f64::from(s.capacity));
            capacity += f64::from(s.capacity);
        }
        if s.known_load_rate >= 0.0 {
            metrics.insert(format!("{name}.known_load_rate"), s.known_load_rate);
            known_load_rate =
                Some(known_load_rate.map_or(s.known_load_rate, |k| k.max(s.known_load_rate)));
        }
        started += u64::from(s.requests_started);
    }
    report
        .named_metrics
        .insert("current_requests".to_owned(), current);
    if capacity > 0.0 {
        report.named_metrics.insert("capacity".to_owned(), capacity);
        report.application_utilization = current / capacity;
    }
    if let Some(rate) = known_load_rate {
        report
            .named_metrics
            .insert("known_load_rate".to_owned(), rate);
    }
    Reading { report, started }
}

/// Samples of the requests in flight per report of a stream: its `application_utilization` is
/// their mean.
const SAMPLES_PER_REPORT: u32 = 20;

/// Requests in flight now, every service together (cheap: no /proc reads).
fn current_requests(loads: &RwLock<HashMap<String, Arc<ServiceLoad>>>) -> f64 {
    loads
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .map(|load| f64::from(load.current_requests()))
        .sum()
}

/// A running mean.
#[derive(Debug, Default)]
struct Mean {
    sum: f64,
    count: u32,
}

impl Mean {
    fn add(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
    }

    /// The mean since the last take, if anything was added.
    fn take(&mut self) -> Option<f64> {
        let mean = (self.count > 0).then(|| self.sum / f64::from(self.count));
        *self = Mean::default();
        mean
    }
}

/// The interval a request asks for, at least the floor.
fn interval(request: &OrcaLoadReportRequest) -> Duration {
    let asked = request
        .report_interval
        .as_ref()
        .and_then(|d| Duration::try_from(*d).ok())
        .unwrap_or_default();
    asked.max(MIN_REPORT_INTERVAL)
}

type ReportStream = Pin<Box<dyn Stream<Item = Result<OrcaLoadReport, Status>> + Send>>;

#[tonic::async_trait]
impl OpenRcaService for OrcaService {
    type StreamCoreMetricsStream = ReportStream;

    /// Reports at once and then every interval, each with the request rate since the one
    /// before, until the client goes away or the server stops (then the stream ends, as the
    /// health and load-push streams do).
    async fn stream_core_metrics(
        &self,
        request: Request<OrcaLoadReportRequest>,
    ) -> Result<Response<Self::StreamCoreMetricsStream>, Status> {
        let every = interval(request.get_ref());
        let loads = Arc::clone(&self.loads);
        let health = self.health.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut samples = tokio::time::interval(every / SAMPLES_PER_REPORT);
            samples.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut in_flight = Mean::default();
            let mut previous: Option<(u64, Instant)> = None;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = samples.tick() => {
                        in_flight.add(current_requests(&loads));
                        continue;
                    }
                    () = tx.closed() => return,
                    () = health.stopped() => return,
                }
                let now = Instant::now();
                let Reading {
                    mut report,
                    started,
                } = read(&loads);
                if let Some((before, at)) = previous {
                    let seconds = now.saturating_duration_since(at).as_secs_f64();
                    if seconds > 0.0 {
                        report.rps_fractional = started.saturating_sub(before) as f64 / seconds;
                    }
                }
                previous = Some((started, now));
                // Utilization over the interval, not at its last instant: a client that
                // weighs by rate ÷ utilization (weighted_round_robin) needs both over the same
                // time.
                if let (Some(mean), Some(capacity)) = (
                    in_flight.take(),
                    report.named_metrics.get("capacity").copied(),
                ) {
                    report.application_utilization = mean / capacity;
                }
                if tx.send(Ok(report)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
