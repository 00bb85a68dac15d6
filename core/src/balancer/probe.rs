//! The task that keeps one location's [`ProbeState`] current, over the connection to its
//! control endpoint.
//!
//! - A quaestor reporter pushes: one `quaestor.push.v1.LoadPush/WatchLoad` stream carries the
//!   service's health and load as they change (coalesced by the reporter) plus keep-alives, so
//!   a location costs one stream and no timer here.
//! - A worker that answers UNIMPLEMENTED (the C# ones) is followed as before: `Health.Watch`
//!   (or `Check` polls where Watch is not served) and `ReportLoad` every probe interval.
//! - A backend that answers UNIMPLEMENTED to `ReportLoad` too (a stock grpc-go or grpc-java
//!   server with ORCA enabled) is asked for `xds.service.orca.v3.OpenRcaService/
//!   StreamCoreMetrics` with the probe interval as `report_interval`, and its reports are its
//!   load ([`Feed::Orca`](super::monitor::Feed::Orca)). Health is still followed as above, and
//!   the `ReportLoad` polls go on as its liveness check (the server may report far less often
//!   than asked: grpc-go never under 30 s). A broken stream leaves the location without load
//!   until a new one reports; a backend serving neither stays without load.
//!
//! An ORCA report becomes a load sample ([`orca_sample`]) thus:
//! - with quaestor's own named metrics (`NAME.current_requests` for the location's service,
//!   else the worker's `current_requests`, with `capacity` and `known_load_rate` beside them),
//!   those, exactly: such a backend ranks as its `ReportLoad` would;
//! - else from utilization, `application_utilization` if above 0, else `cpu_utilization`, over
//!   [`ORCA_CAPACITY`] synthetic slots: current requests = round(utilization × 100), load rate
//!   unknown. Its utilization then compares with a quaestor worker's in-flight/capacity as
//!   like with like (both 0 to 1, 1 = full), at a resolution of 1 %, and the hand-outs counted
//!   on it (anti-herding) weigh 1 % each until a report takes them in.
//!
//! A broken stream or a silent worker marks the location unhealthy at once; it is tried again
//! with backoff.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::codec::{BufferSettings, Codec};
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use super::BalancerOptions;
use super::monitor::{LoadSample, Monitored};
use crate::backoff::Backoff;
use crate::proto::health::health_client::HealthClient;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::load_reporting::LoadReportRequest;
use crate::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;
use crate::proto::push::{LoadUpdate, WatchLoadRequest};
use crate::proto::xds::data::orca::v3::OrcaLoadReport;
use crate::proto::xds::service::orca::v3::OrcaLoadReportRequest;
use crate::proto::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;
use crate::server::health::ServingStatus;

/// The gRPC path of quaestor's load push.
const WATCH_LOAD_PATH: &str = "/quaestor.push.v1.LoadPush/WatchLoad";

/// Follows the location: pushed where the reporter offers it, else polled.
pub(super) async fn follow(
    monitored: Weak<Monitored>,
    channel: Channel,
    options: BalancerOptions,
    changed: watch::Sender<u64>,
) {
    if follow_push(&monitored, &channel, &options, &changed).await == Pushing::Unimplemented {
        tokio::join!(
            follow_health(
                monitored.clone(),
                channel.clone(),
                options.clone(),
                changed.clone()
            ),
            poll_load(monitored, channel, options, changed),
        );
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Pushing {
    /// The reporter does not offer the push.
    Unimplemented,
    /// The location is gone.
    Ended,
}

/// Keep-alives the balancer asks for: one per probe interval, so that a pushing location is
/// seen alive as often as a polled one is probed.
fn keepalive(options: &BalancerOptions) -> u32 {
    u32::try_from(options.probe_interval.as_millis()).unwrap_or(u32::MAX)
}

/// Follows the push stream, reconnecting with backoff, until the location is gone or the
/// reporter turns out not to offer it.
async fn follow_push(
    monitored: &Weak<Monitored>,
    channel: &Channel,
    options: &BalancerOptions,
    changed: &watch::Sender<u64>,
) -> Pushing {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let Some(request) = monitored.upgrade().map(|m| WatchLoadRequest {
        scope: m.location.scope.clone(),
        service_name: m.location.service.clone(),
        keepalive_interval_ms: keepalive(options),
        min_interval_ms: 0,
    }) else {
        return Pushing::Ended;
    };
    // Longest silence of a live stream: a keep-alive is due every probe interval.
    let silence = options.probe_interval + options.response_timeout;
    let mut failures = 0u32;
    loop {
        let sent_at = Instant::now();
        let call = Box::pin(watch_load(&mut grpc, request.clone()));
        let pause = match tokio::time::timeout(options.response_timeout, call).await {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                let mut first = true;
                while let Ok(Some(Ok(update))) = tokio::time::timeout(silence, stream.next()).await
                {
                    let Some(m) = monitored.upgrade() else {
                        return Pushing::Ended;
                    };
                    let now = Instant::now();
                    m.update(changed, |s| {
                        if first {
                            s.latency = Some(now.saturating_duration_since(sent_at));
                        }
                        s.pushed(&update, now);
                    });
                    first = false;
                    failures = 0;
                }
                // Ended, broken or silent: the worker stopped, went away or hangs.
                let Some(m) = monitored.upgrade() else {
                    return Pushing::Ended;
                };
                m.update(changed, |s| s.health = Some(ServingStatus::Unknown));
                if first {
                    failures = failures.saturating_add(1);
                    retry_delay(failures, options)
                } else {
                    Duration::ZERO
                }
            }
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                return Pushing::Unimplemented;
            }
            Ok(Err(status)) if answered_without_load(status.code()) => {
                // A live reporter that does not know the service.
                let Some(m) = monitored.upgrade() else {
                    return Pushing::Ended;
                };
                m.update(changed, |s| {
                    s.health = Some(ServingStatus::ServiceUnknown);
                    s.polled(sent_at, None);
                });
                options.probe_interval
            }
            _ => {
                let Some(m) = monitored.upgrade() else {
                    return Pushing::Ended;
                };
                m.update(changed, |s| {
                    s.health = Some(ServingStatus::Unknown);
                    s.failures = s.failures.saturating_add(1);
                });
                failures = failures.saturating_add(1);
                retry_delay(failures, options)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// `LoadPush.WatchLoad`, with small decode buffers (see [`SmallCodec`]).
async fn watch_load(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: WatchLoadRequest,
) -> Result<tonic::Response<tonic::Streaming<LoadUpdate>>, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = SmallCodec::<WatchLoadRequest, LoadUpdate>(std::marker::PhantomData);
    grpc.server_streaming(
        tonic::Request::new(request),
        tonic::codegen::http::uri::PathAndQuery::from_static(WATCH_LOAD_PATH),
        codec,
    )
    .await
}

/// Follows `Health.Watch` of the location's service; falls back to `Check` polls when the
/// worker does not serve Watch. A broken stream marks the location unhealthy at once.
pub(super) async fn follow_health(
    monitored: std::sync::Weak<Monitored>,
    channel: Channel,
    options: BalancerOptions,
    changed: watch::Sender<u64>,
) {
    let mut client = HealthClient::new(channel.clone());
    let mut watcher = tonic::client::Grpc::new(channel);
    let service = match monitored.upgrade() {
        Some(m) => m.location.service.clone(),
        None => return,
    };
    let request = || HealthCheckRequest {
        service: service.clone(),
    };
    let mut failures = 0u32;
    let mut watch_served = true;
    loop {
        if watch_served {
            // The calls' futures are boxed: they are large and short-lived, and the task's own
            // size is what every location keeps for as long as it is monitored.
            let call = Box::pin(watch(&mut watcher, request()));
            match tokio::time::timeout(options.response_timeout, call).await {
                Ok(Ok(response)) => {
                    let mut stream = response.into_inner();
                    while let Some(message) = stream.next().await {
                        let Ok(message) = message else { break };
                        let status = ServingStatus::try_from(message.status)
                            .unwrap_or(ServingStatus::Unknown);
                        let Some(m) = monitored.upgrade() else { return };
                        m.update(&changed, |s| {
                            s.health = Some(status);
                            s.last_answer = Some(Instant::now());
                        });
                        failures = 0;
                    }
                    // The stream ended: the worker stopped or went away.
                    let Some(m) = monitored.upgrade() else { return };
                    m.update(&changed, |s| s.health = Some(ServingStatus::Unknown));
                }
                Ok(Err(status)) if status.code() == Code::Unimplemented => watch_served = false,
                Ok(Err(status)) if status.code() == Code::NotFound => {
                    let Some(m) = monitored.upgrade() else { return };
                    m.update(&changed, |s| s.health = Some(ServingStatus::ServiceUnknown));
                }
                _ => {
                    let Some(m) = monitored.upgrade() else { return };
                    m.update(&changed, |s| s.health = Some(ServingStatus::Unknown));
                }
            }
        } else {
            let answer =
                tokio::time::timeout(options.response_timeout, Box::pin(client.check(request())))
                    .await;
            let status = match answer {
                Ok(Ok(response)) => {
                    failures = 0;
                    ServingStatus::try_from(response.into_inner().status)
                        .unwrap_or(ServingStatus::Unknown)
                }
                Ok(Err(status)) if status.code() == Code::NotFound => ServingStatus::ServiceUnknown,
                _ => ServingStatus::Unknown,
            };
            let Some(m) = monitored.upgrade() else { return };
            m.update(&changed, |s| s.health = Some(status));
            if status != ServingStatus::Unknown {
                tokio::time::sleep(options.probe_interval).await;
                continue;
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(retry_delay(failures, &options)).await;
    }
}

/// Bytes a Watch stream's decoder starts with: health messages are a few bytes, and tonic's
/// default (8 KiB) held by every open stream is most of what a monitored location costs.
const WATCH_BUFFER_BYTES: usize = 64;

/// `Health.Watch`, as the generated client calls it but with a small decode buffer.
async fn watch(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: HealthCheckRequest,
) -> Result<tonic::Response<tonic::Streaming<HealthCheckResponse>>, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = SmallCodec::<HealthCheckRequest, HealthCheckResponse>(std::marker::PhantomData);
    grpc.server_streaming(
        tonic::Request::new(request),
        tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Watch"),
        codec,
    )
    .await
}

/// tonic's default yield threshold (32 KiB): when a decoder with much buffered yields.
const WATCH_YIELD_THRESHOLD: usize = 32 * 1024;

/// The prost codec with [`WATCH_BUFFER_BYTES`] buffers.
struct SmallCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(small_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(small_buffers())
    }
}

fn small_buffers() -> BufferSettings {
    BufferSettings::new(WATCH_BUFFER_BYTES, WATCH_YIELD_THRESHOLD)
}

/// Polls `ReportLoad` every probe interval, and follows ORCA reports instead once it
/// answers UNIMPLEMENTED. Any answer (even "no load for this service") shows the location is
/// alive; no answer within the timeout counts as a failure, and the location is probed with
/// backoff until it answers again.
pub(super) async fn poll_load(
    monitored: std::sync::Weak<Monitored>,
    channel: Channel,
    options: BalancerOptions,
    changed: watch::Sender<u64>,
) {
    let unimplemented = tokio::sync::Notify::new();
    // Both end only when the location is gone (its task is then aborted) or, for ORCA, when
    // the backend does not serve it either.
    tokio::join!(
        poll_report_load(
            &monitored,
            channel.clone(),
            &options,
            &changed,
            &unimplemented
        ),
        async {
            unimplemented.notified().await;
            // Boxed: only backends without `ReportLoad` pay for the ORCA stream's state.
            Box::pin(follow_orca(&monitored, channel, &options, &changed)).await;
        },
    );
}

/// The `ReportLoad` polls of [`poll_load`]; notifies `unimplemented` at the first
/// UNIMPLEMENTED answer.
async fn poll_report_load(
    monitored: &std::sync::Weak<Monitored>,
    channel: Channel,
    options: &BalancerOptions,
    changed: &watch::Sender<u64>,
    unimplemented: &tokio::sync::Notify,
) {
    let mut client = LoadReportingGrpcClient::new(channel);
    let mut orca_asked = false;
    let Some(location) = monitored.upgrade().map(|m| m.location.clone()) else {
        return;
    };
    loop {
        let request = LoadReportRequest {
            scope: location.scope.clone(),
            service_name: location.service.clone(),
        };
        let sent_at = Instant::now();
        let answer = tokio::time::timeout(
            options.response_timeout,
            Box::pin(client.report_load(request)),
        )
        .await;
        let Some(m) = monitored.upgrade() else { return };
        let failures = match answer {
            Ok(Ok(response)) => {
                let report = response.into_inner();
                let stats = report.server_stats.unwrap_or_default();
                let sample = LoadSample {
                    known_load_rate: report.known_load_rate,
                    capacity: stats.request_capacity,
                    current_requests: stats.current_requests,
                    server_utilization: stats.server_utilization,
                    sent_at,
                };
                m.update(changed, |s| s.polled(sent_at, Some(sample)));
                0
            }
            Ok(Err(status)) if answered_without_load(status.code()) => {
                if status.code() == Code::Unimplemented && !orca_asked {
                    orca_asked = true;
                    unimplemented.notify_one();
                }
                m.update(changed, |s| s.polled_without_load(sent_at));
                0
            }
            _ => {
                let mut failures = 0;
                m.update(changed, |s| {
                    s.failures = s.failures.saturating_add(1);
                    failures = s.failures;
                });
                failures
            }
        };
        drop(m);
        let pause = if failures == 0 {
            options.probe_interval
        } else {
            retry_delay(failures, options)
        };
        tokio::time::sleep(pause).await;
    }
}

/// The synthetic capacity of a backend whose ORCA reports carry only utilization: 100 slots,
/// so that its current requests are its utilization in per cent.
pub(super) const ORCA_CAPACITY: i32 = 100;

/// Follows `OpenRcaService.StreamCoreMetrics`, asking for a report every probe interval,
/// reconnecting with backoff, until the location is gone or the backend turns out not to
/// serve it. No silence limit: the server chooses its interval (at least the one asked for),
/// and liveness is the `ReportLoad` polls' business.
async fn follow_orca(
    monitored: &std::sync::Weak<Monitored>,
    channel: Channel,
    options: &BalancerOptions,
    changed: &watch::Sender<u64>,
) {
    let mut client = OpenRcaServiceClient::new(channel);
    let Some(location) = monitored.upgrade().map(|m| m.location.clone()) else {
        return;
    };
    let request = OrcaLoadReportRequest {
        report_interval: prost_types::Duration::try_from(options.probe_interval).ok(),
        request_cost_names: Vec::new(),
    };
    let mut failures = 0u32;
    loop {
        let sent_at = Instant::now();
        let call = Box::pin(client.stream_core_metrics(request.clone()));
        match tokio::time::timeout(options.response_timeout, call).await {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                let mut first = true;
                while let Some(Ok(report)) = stream.next().await {
                    let Some(m) = monitored.upgrade() else { return };
                    let now = Instant::now();
                    m.update(changed, |s| {
                        if first {
                            s.latency = Some(now.saturating_duration_since(sent_at));
                        }
                        s.orca(orca_sample(&report, &location.service, now), now);
                    });
                    first = false;
                    failures = 0;
                }
                // Ended or broken: the backend stopped, went away or restarts.
                let Some(m) = monitored.upgrade() else { return };
                m.update(changed, |s| s.orca_ended());
            }
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                tracing::debug!(%location, "serves neither ReportLoad nor ORCA: no load");
                return;
            }
            _ => {}
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(retry_delay(failures, options)).await;
    }
}

/// The load sample of an ORCA report for `service`, received at `now` (see the module doc).
pub(super) fn orca_sample(report: &OrcaLoadReport, service: &str, now: Instant) -> LoadSample {
    let metrics = &report.named_metrics;
    let own = format!("{service}.current_requests");
    let prefix = if metrics.contains_key(&own) {
        format!("{service}.")
    } else {
        String::new()
    };
    let metric = |name: &str| {
        metrics
            .get(&format!("{prefix}{name}"))
            .copied()
            .filter(|v| v.is_finite())
    };
    let cpu = finite_or_zero(report.cpu_utilization);
    if let Some(current) = metric("current_requests") {
        return LoadSample {
            known_load_rate: metric("known_load_rate")
                .filter(|rate| *rate >= 0.0)
                .unwrap_or(-1.0),
            capacity: metric("capacity").map_or(-1, |c| to_count(c).max(1)),
            current_requests: to_count(current),
            server_utilization: cpu,
            sent_at: now,
        };
    }
    let application = finite_or_zero(report.application_utilization);
    let utilization = if application > 0.0 { application } else { cpu };
    LoadSample {
        known_load_rate: -1.0,
        capacity: ORCA_CAPACITY,
        current_requests: to_count(utilization * f64::from(ORCA_CAPACITY)),
        server_utilization: cpu,
        sent_at: now,
    }
}

fn finite_or_zero(value: f64) -> f64 {
    if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    }
}

/// A count from a reported figure: rounded, 0 to `i32::MAX`.
fn to_count(value: f64) -> i32 {
    value.round().clamp(0.0, f64::from(i32::MAX)) as i32
}

/// Answers from a live server that has no load to report for this service.
fn answered_without_load(code: Code) -> bool {
    matches!(
        code,
        Code::OutOfRange | Code::Unimplemented | Code::NotFound
    )
}

/// Backoff for a location that does not answer: twice the probe interval after the first
/// failure, doubling up to 32 intervals and at most 30 s, ± 25 %.
fn retry_delay(failures: u32, options: &BalancerOptions) -> Duration {
    let interval = options.probe_interval;
    let max = interval.saturating_mul(32).min(Duration::from_secs(30));
    Backoff::new(interval.saturating_mul(2), max)
        .with_jitter(0.25)
        .jittered(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::monitor::{Feed, ProbeState};

    fn report(application: f64, cpu: f64, named: &[(&str, f64)]) -> OrcaLoadReport {
        OrcaLoadReport {
            application_utilization: application,
            cpu_utilization: cpu,
            named_metrics: named.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..OrcaLoadReport::default()
        }
    }

    #[test]
    fn utilization_maps_to_synthetic_slots() {
        let now = Instant::now();
        let load = |r: &OrcaLoadReport| {
            let s = orca_sample(r, "Worker", now);
            (s.current_requests, s.capacity, s.known_load_rate)
        };
        // Application utilization first; CPU when the application sets none.
        assert_eq!(load(&report(0.3, 0.9, &[])), (30, 100, -1.0));
        assert_eq!(load(&report(0.0, 0.456, &[])), (46, 100, -1.0));
        // Over 1 stays over capacity; nonsense is 0.
        assert_eq!(load(&report(1.5, 0.0, &[])), (150, 100, -1.0));
        assert_eq!(load(&report(f64::NAN, -1.0, &[])), (0, 100, -1.0));
        assert_eq!(
            orca_sample(&report(0.1, 0.7, &[]), "Worker", now).server_utilization,
            0.7
        );
    }

    #[test]
    fn quaestor_named_metrics_are_taken_exactly() {
        let now = Instant::now();
        let load = |r: &OrcaLoadReport| {
            let s = orca_sample(r, "Worker", now);
            (s.current_requests, s.capacity, s.known_load_rate)
        };
        let worker = [
            ("current_requests", 5.0),
            ("capacity", 12.0),
            ("known_load_rate", 0.25),
        ];
        assert_eq!(load(&report(0.9, 0.9, &worker)), (5, 12, 0.25));
        // The service's own figures before the worker's.
        let mut both = worker.to_vec();
        both.extend([("Worker.current_requests", 2.0), ("Worker.capacity", 4.0)]);
        assert_eq!(load(&report(0.9, 0.9, &both)), (2, 4, -1.0));
        // Capacity and rate unknown when not reported.
        assert_eq!(
            load(&report(0.0, 0.0, &[("current_requests", 3.0)])),
            (3, -1, -1.0)
        );
    }

    #[test]
    fn a_poll_without_load_keeps_the_orca_load_until_the_stream_ends() {
        let now = Instant::now();
        let mut state = ProbeState::default();
        state.orca(orca_sample(&report(0.4, 0.0, &[]), "Worker", now), now);
        state.polled_without_load(now);
        assert_eq!(state.feed, Feed::Orca);
        assert_eq!(state.load.map(|l| l.current_requests), Some(40));
        state.orca_ended();
        assert_eq!(state.load, None);
        state.polled_without_load(now);
        assert_eq!((state.feed, state.load), (Feed::Polled, None));
    }
}
