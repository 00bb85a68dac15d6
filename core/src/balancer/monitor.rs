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
                let channel = match channel(&uri, location.tls, options) {
                    Ok(channel) => channel,
                    Err(reason) => {
                        if shared.is_empty() {
                            open.remove(&uri);
                        }
                        return Err(reason);
                    }
                };
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
    /// How long its requests take, from its reports and our hand-outs.
    request_time: RequestTime,
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

    /// Hand-outs still counted: since the last load report, younger than the location's
    /// request time (when known) and within `window`. They are kept in time order, so this is
    /// a binary search, not a walk.
    pub fn recent_handouts(&self, now: Instant, window: Duration) -> usize {
        let life = self
            .request_time
            .life()
            .map_or(window, |life| life.min(window));
        let expired = self
            .handouts
            .partition_point(|at| now.saturating_duration_since(*at) > life);
        self.handouts.len() - expired
    }

    /// Requests believed in flight now: the last report's, fading as its requests end (see
    /// [`RequestTime`]), plus the hand-outs still counted. `None` without a load report.
    pub fn current_requests(&self, now: Instant, window: Duration) -> Option<i64> {
        let load = self.load?;
        let age = now.saturating_duration_since(load.sent_at);
        let reported = self
            .request_time
            .still_running(i64::from(load.current_requests), age);
        Some(reported + self.recent_handouts(now, window) as i64)
    }
}

/// How long a location's requests take, estimated by Little's law over this balancer's own
/// traffic: requests in flight (as reported) / hand-outs per second, both smoothed over
/// reports. Reports a probe interval old and hand-outs long past say little about a location
/// whose requests take 50 ms; with the estimate, a report's requests fade as they would end and
/// a hand-out stops counting once it has most likely ended, so a faster location is seen to
/// empty sooner. Other clients' requests make the estimate longer, which only makes the
/// balancer more careful (it counts for longer, as without an estimate).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTime {
    /// Hand-outs per second, smoothed.
    rate: f64,
    /// Requests in flight as reported, smoothed.
    level: f64,
    reports: u32,
}

impl RequestTime {
    /// Weight of the newest report in the smoothed figures.
    const SMOOTHING: f64 = 0.2;
    /// Reports before the estimate is used.
    const SETTLED_AFTER: u32 = 3;
    /// The estimate's bounds.
    pub const SHORTEST: Duration = Duration::from_millis(5);
    pub const LONGEST: Duration = Duration::from_secs(60);

    /// A report of `in_flight` requests, `handed_out` hand-outs over the `interval` since the
    /// report before it.
    pub fn observe(&mut self, interval: Duration, handed_out: usize, in_flight: i64) {
        let seconds = interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let rate = handed_out as f64 / seconds;
        let level = in_flight.max(0) as f64;
        if self.reports == 0 {
            (self.rate, self.level) = (rate, level);
        } else {
            self.rate += Self::SMOOTHING * (rate - self.rate);
            self.level += Self::SMOOTHING * (level - self.level);
        }
        self.reports = self.reports.saturating_add(1);
    }

    /// The estimated time a request takes; `None` until settled or while nothing is handed out.
    pub fn life(&self) -> Option<Duration> {
        if self.reports < Self::SETTLED_AFTER || self.rate <= 0.0 {
            return None;
        }
        let seconds = (self.level / self.rate)
            .clamp(Self::SHORTEST.as_secs_f64(), Self::LONGEST.as_secs_f64());
        Some(Duration::from_secs_f64(seconds))
    }

    /// Of `reported` requests in flight `age` ago, how many still run (exponential request
    /// times, rounded); all of them without an estimate.
    pub fn still_running(&self, reported: i64, age: Duration) -> i64 {
        match self.life() {
            Some(life) => {
                let left = (-age.as_secs_f64() / life.as_secs_f64()).exp();
                (reported as f64 * left).round() as i64
            }
            None => reported,
        }
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
                    let previous = s.load.map(|l| l.sent_at);
                    s.load = Some(LoadSample {
                        known_load_rate: report.known_load_rate,
                        capacity: stats.request_capacity,
                        current_requests: stats.current_requests,
                        server_utilization: stats.server_utilization,
                        sent_at,
                    });
                    answered(s, sent_at, previous);
                });
                0
            }
            Ok(Err(status)) if answered_without_load(status.code()) => {
                m.update(&changed, |s| {
                    s.load = None;
                    answered(s, sent_at, None);
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

/// An answer to a probe sent at `sent_at`; `previous` is when the load report before it was
/// asked for.
fn answered(state: &mut ProbeState, sent_at: Instant, previous: Option<Instant>) {
    let now = Instant::now();
    state.last_answer = Some(now);
    state.latency = Some(now.saturating_duration_since(sent_at));
    state.failures = 0;
    // The report counts the requests that began before it was asked for.
    let mut reported = 0;
    while state.handouts.front().is_some_and(|at| *at <= sent_at) {
        state.handouts.pop_front();
        reported += 1;
    }
    if let (Some(load), Some(previous)) = (state.load, previous) {
        state.request_time.observe(
            sent_at.saturating_duration_since(previous),
            reported,
            i64::from(load.current_requests),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_follows_littles_law_once_settled() {
        let mut time = RequestTime::default();
        let second = Duration::from_secs(1);
        // 40 hand-outs a second, 4 in flight: requests take 100 ms.
        time.observe(second, 40, 4);
        time.observe(second, 40, 4);
        assert_eq!(time.life(), None, "not settled after two reports");
        assert_eq!(
            time.still_running(6, second),
            6,
            "no fading without an estimate"
        );
        time.observe(second, 40, 4);
        assert_eq!(time.life(), Some(Duration::from_millis(100)));
        // A report one request time old: e^-1 of its requests still run.
        assert_eq!(time.still_running(10, Duration::from_millis(100)), 4);
        assert_eq!(time.still_running(10, Duration::ZERO), 10);
        // Slower requests move the estimate, smoothed.
        time.observe(second, 40, 40);
        let life = time.life().expect("settled");
        assert!(
            life > Duration::from_millis(100) && life < Duration::from_secs(1),
            "{life:?}"
        );
    }

    #[test]
    fn request_time_is_bounded_and_needs_hand_outs() {
        let mut idle = RequestTime::default();
        for _ in 0..5 {
            idle.observe(Duration::from_secs(1), 0, 3);
        }
        assert_eq!(idle.life(), None, "nothing handed out: nothing to learn");
        let mut fast = RequestTime::default();
        for _ in 0..5 {
            fast.observe(Duration::from_secs(1), 1000, 0);
        }
        assert_eq!(fast.life(), Some(RequestTime::SHORTEST));
        let mut zero = RequestTime::default();
        zero.observe(Duration::ZERO, 10, 1);
        assert_eq!(zero.reports, 0, "a zero interval is no report");
    }

    #[test]
    fn hand_outs_stop_counting_after_the_request_time() {
        let now = Instant::now();
        let mut state = ProbeState::default();
        for _ in 0..3 {
            state.request_time.observe(Duration::from_secs(1), 20, 1);
        }
        // Requests take 50 ms: of hand-outs 10 ms and 80 ms old, one still counts.
        state.handouts.push_back(now - Duration::from_millis(80));
        state.handouts.push_back(now - Duration::from_millis(10));
        let window = Duration::from_secs(5);
        assert_eq!(state.recent_handouts(now, window), 1);
        assert_eq!(
            state.recent_handouts(now, Duration::from_millis(5)),
            0,
            "the window bounds it too"
        );
        assert_eq!(state.current_requests(now, window), None, "no report yet");
        state.load = Some(LoadSample {
            known_load_rate: -1.0,
            capacity: 8,
            current_requests: 5,
            server_utilization: 0.0,
            sent_at: now,
        });
        assert_eq!(state.current_requests(now, window), Some(6));
    }
}
