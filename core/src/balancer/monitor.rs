//! One monitor per known location: its health (followed through `Health.Watch`, or polled
//! with `Check` where Watch is not served), its latest load report (polled every probe
//! interval) and whether it answers at all. Probes go to the location's control endpoint.
//! Requests read this state; they never call workers themselves.
//!
//! Locations behind one control endpoint (a worker serving several services, a sidecar
//! reporting for several workers) share its connection, as gRPC clients share subchannels by
//! address: a connection costs about 35 KB, a location on a shared one about 10 KB.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::codec::{BufferSettings, Codec};
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::BalancerOptions;
use crate::proto::health::health_client::HealthClient;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::load_reporting::LoadReportRequest;
use crate::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;
use crate::registry::ServiceLocation;
use crate::server::health::ServingStatus;

/// Hand-outs counted at most per location between two reports: more would not change its
/// place (it already weighs as that many requests), and the count stays cheap to keep.
const MAX_HANDOUTS: usize = 1024;

/// Locations monitored over one connection at most. Each keeps a health Watch stream open
/// and polls load, and servers limit the streams of a connection (Kestrel to 100 by default).
pub const LOCATIONS_PER_CONNECTION: usize = 32;

/// The balancer's connections to control endpoints, shared by the locations behind them.
#[derive(Debug, Default)]
pub struct Connections {
    /// By endpoint URI: the connections and how many locations use each.
    open: Mutex<HashMap<String, Vec<Shared>>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Shared {
    id: u64,
    channel: Channel,
    users: usize,
}

/// A location's use of a shared connection; given back when dropped.
#[derive(Debug)]
struct Lease {
    connections: Arc<Connections>,
    uri: String,
    id: u64,
}

impl Connections {
    /// Open connections (for status and tests).
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// A channel to `location`'s control endpoint: one with room for another location, or a
    /// new one.
    fn lease(
        self: &Arc<Self>,
        location: &ServiceLocation,
        options: &BalancerOptions,
    ) -> Result<(Channel, Lease), String> {
        let scheme = if location.tls { "https" } else { "http" };
        let uri = format!("{scheme}://{}", location.control_endpoint());
        let mut open = self.lock();
        let shared = open.entry(uri.clone()).or_default();
        let slot = match shared
            .iter_mut()
            .find(|s| s.users < LOCATIONS_PER_CONNECTION)
        {
            Some(slot) => slot,
            None => {
                let channel = channel(&uri, location.tls, options)?;
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.push(Shared {
                    id,
                    channel,
                    users: 0,
                });
                shared.last_mut().expect("just pushed")
            }
        };
        slot.users += 1;
        let lease = Lease {
            connections: Arc::clone(self),
            uri,
            id: slot.id,
        };
        Ok((slot.channel.clone(), lease))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Shared>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        let Some(shared) = open.get_mut(&self.uri) else {
            return;
        };
        if let Some(index) = shared.iter().position(|s| s.id == self.id) {
            shared[index].users -= 1;
            if shared[index].users == 0 {
                shared.swap_remove(index);
            }
        }
        if shared.is_empty() {
            open.remove(&self.uri);
        }
    }
}

/// The last load report of a location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    pub known_load_rate: f64,
    pub capacity: i32,
    pub current_requests: i32,
    pub server_utilization: f64,
    /// When the probe that got it was sent.
    pub sent_at: Instant,
}

/// What the balancer knows of one location.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// `None` until the first health answer.
    pub health: Option<ServingStatus>,
    /// `None` while the location reports no load (or has not yet answered).
    pub load: Option<LoadSample>,
    /// When the location last answered anything.
    pub last_answer: Option<Instant>,
    /// Round trip of the last load probe.
    pub latency: Option<Duration>,
    /// Probes in a row without an answer.
    pub failures: u32,
    /// When it was handed out since its last load report (anti-herding).
    handouts: VecDeque<Instant>,
}

impl ProbeState {
    /// Both probes have had a first answer (or a failure): health is known, and the load
    /// probe answered (a latency) or failed.
    pub fn probed(&self) -> bool {
        self.health.is_some() && (self.latency.is_some() || self.failures > 0)
    }

    /// Serving, and answering within `timeout`.
    pub fn is_healthy(&self, now: Instant, timeout: Duration) -> bool {
        self.health == Some(ServingStatus::Serving)
            && self.failures == 0
            && self
                .last_answer
                .is_some_and(|at| now.saturating_duration_since(at) <= timeout)
    }

    /// Hand-outs still counted: since the last load report and within `window`. They are
    /// kept in time order, so this is a binary search, not a walk.
    pub fn recent_handouts(&self, now: Instant, window: Duration) -> usize {
        let expired = self
            .handouts
            .partition_point(|at| now.saturating_duration_since(*at) > window);
        self.handouts.len() - expired
    }
}

/// A location and what is known of it. Dropping it stops its probes.
#[derive(Debug)]
pub struct Monitored {
    pub location: ServiceLocation,
    state: Mutex<ProbeState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Its share of the connection to its control endpoint (none when it cannot be probed).
    lease: Mutex<Option<Lease>>,
}

impl Monitored {
    /// Starts probing `location` over a connection from `connections`; `changed` is bumped
    /// whenever what it knows changes.
    pub fn start(
        location: ServiceLocation,
        options: &BalancerOptions,
        connections: &Arc<Connections>,
        changed: watch::Sender<u64>,
    ) -> Arc<Self> {
        let monitored = Arc::new(Monitored {
            location,
            state: Mutex::new(ProbeState::default()),
            tasks: Mutex::new(Vec::new()),
            lease: Mutex::new(None),
        });
        match connections.lease(&monitored.location, options) {
            Ok((channel, lease)) => {
                *monitored
                    .lease
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(lease);
                let health = tokio::spawn(follow_health(
                    Arc::downgrade(&monitored),
                    channel.clone(),
                    options.clone(),
                    changed.clone(),
                ));
                let load = tokio::spawn(poll_load(
                    Arc::downgrade(&monitored),
                    channel,
                    options.clone(),
                    changed,
                ));
                *monitored
                    .tasks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = vec![health, load];
            }
            Err(reason) => {
                tracing::warn!(location = %monitored.location, %reason, "cannot probe this location");
                monitored.update(&changed, |s| s.failures = 1);
            }
        }
        monitored
    }

    pub fn state(&self) -> ProbeState {
        self.lock().clone()
    }

    /// Reads the state under its lock.
    pub fn with_state<T>(&self, read: impl FnOnce(&ProbeState) -> T) -> T {
        read(&self.lock())
    }

    /// Counts one hand-out (it weighs as a request until the next load report).
    pub fn handed_out(&self, now: Instant, window: Duration) {
        let mut state = self.lock();
        let handouts = &mut state.handouts;
        while handouts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > window)
        {
            handouts.pop_front();
        }
        if handouts.len() == MAX_HANDOUTS {
            handouts.pop_front();
        }
        handouts.push_back(now);
    }

    fn update(&self, changed: &watch::Sender<u64>, change: impl FnOnce(&mut ProbeState)) {
        let mut state = self.lock();
        let health_before = (state.health, state.failures == 0);
        let load_before = state
            .load
            .map(|l| (l.known_load_rate, l.capacity, l.current_requests));
        change(&mut state);
        let moved = health_before != (state.health, state.failures == 0)
            || load_before
                != state
                    .load
                    .map(|l| (l.known_load_rate, l.capacity, l.current_requests));
        drop(state);
        if moved {
            changed.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

fn channel(uri: &str, tls: bool, options: &BalancerOptions) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(options.response_timeout)
        .tcp_nodelay(true);
    if tls {
        let tls = options.client_tls.clone().unwrap_or_default();
        endpoint = endpoint
            .tls_config(tls.load().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    // Connected on first use and reconnected by tonic after failures: one channel for life.
    Ok(endpoint.connect_lazy())
}

/// Follows `Health.Watch` of the location's service; falls back to `Check` polls when the
/// worker does not serve Watch. A broken stream marks the location unhealthy at once.
async fn follow_health(
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
async fn poll_load(
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
                m.update(&changed, |s| {
                    s.load = Some(LoadSample {
                        known_load_rate: report.known_load_rate,
                        capacity: stats.request_capacity,
                        current_requests: stats.current_requests,
                        server_utilization: stats.server_utilization,
                        sent_at,
                    });
                    answered(s, sent_at);
                });
                0
            }
            Ok(Err(status)) if answered_without_load(status.code()) => {
                m.update(&changed, |s| {
                    s.load = None;
                    answered(s, sent_at);
                });
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

fn answered(state: &mut ProbeState, sent_at: Instant) {
    let now = Instant::now();
    state.last_answer = Some(now);
    state.latency = Some(now.saturating_duration_since(sent_at));
    state.failures = 0;
    // The report counts the requests that began before it was asked for.
    while state.handouts.front().is_some_and(|at| *at <= sent_at) {
        state.handouts.pop_front();
    }
}

/// Answers from a live server that has no load to report for this service.
fn answered_without_load(code: Code) -> bool {
    matches!(
        code,
        Code::OutOfRange | Code::Unimplemented | Code::NotFound
    )
}

/// Backoff for a location that does not answer: doubling from the probe interval, at most
/// 30 s, with jitter.
fn retry_delay(failures: u32, options: &BalancerOptions) -> Duration {
    let doubled = options.probe_interval.saturating_mul(1 << failures.min(5));
    doubled
        .min(Duration::from_secs(30))
        .mul_f64(0.75 + fastrand::f64() / 2.0)
}
