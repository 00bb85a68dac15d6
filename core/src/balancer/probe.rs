//! The task that keeps one location's [`ProbeState`] current, over the connection to its
//! control endpoint.
//!
//! - A quaestor reporter pushes: one `quaestor.push.v1.LoadPush/WatchLoad` stream carries the
//!   service's health and load as they change (coalesced by the reporter) plus keep-alives, so
//!   a location costs one stream and no timer here.
//! - A worker that answers UNIMPLEMENTED (the C# ones) is followed as before: `Health.Watch`
//!   (or `Check` polls where Watch is not served) and `ReportLoad` every probe interval.
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

/// Polls `ReportLoad` every probe interval. Any answer (even "no load for this service")
/// shows the location is alive; no answer within the timeout counts as a failure, and the
/// location is probed with backoff until it answers again.
pub(super) async fn poll_load(
    monitored: std::sync::Weak<Monitored>,
    channel: Channel,
    options: BalancerOptions,
    changed: watch::Sender<u64>,
) {
    let mut client = LoadReportingGrpcClient::new(channel);
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
                m.update(&changed, |s| s.polled(sent_at, Some(sample)));
                0
            }
            Ok(Err(status)) if answered_without_load(status.code()) => {
                m.update(&changed, |s| s.polled(sent_at, None));
                0
            }
            _ => {
                let mut failures = 0;
                m.update(&changed, |s| {
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
            retry_delay(failures, &options)
        };
        tokio::time::sleep(pause).await;
    }
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
