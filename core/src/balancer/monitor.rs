//! One monitor per known location: its health (followed through `Health.Watch`, or polled
//! with `Check` where Watch is not served), its latest load report (polled every probe
//! interval) and whether it answers at all. Probes go to the location's control endpoint.
//! Requests read this state; they never call workers themselves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::BalancerOptions;
use crate::proto::health::HealthCheckRequest;
use crate::proto::health::health_client::HealthClient;
use crate::proto::load_reporting::LoadReportRequest;
use crate::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;
use crate::registry::ServiceLocation;
use crate::server::health::ServingStatus;

/// Hand-outs counted at most per location between two reports: more would not change its
/// place (it already weighs as that many requests), and the count stays cheap to keep.
const MAX_HANDOUTS: usize = 1024;

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
}

impl Monitored {
    /// Starts probing `location`; `changed` is bumped whenever what it knows changes.
    pub fn start(
        location: ServiceLocation,
        options: &BalancerOptions,
        changed: watch::Sender<u64>,
    ) -> Arc<Self> {
        let monitored = Arc::new(Monitored {
            location,
            state: Mutex::new(ProbeState::default()),
            tasks: Mutex::new(Vec::new()),
        });
        match channel(&monitored.location, options) {
            Ok(channel) => {
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

fn channel(location: &ServiceLocation, options: &BalancerOptions) -> Result<Channel, String> {
    let scheme = if location.tls { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", location.control_endpoint()))
        .map_err(|e| e.to_string())?
        .connect_timeout(options.response_timeout)
        .tcp_nodelay(true);
    if location.tls {
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
    let mut client = HealthClient::new(channel);
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
            match tokio::time::timeout(options.response_timeout, client.watch(request())).await {
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
                tokio::time::timeout(options.response_timeout, client.check(request())).await;
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
        let answer =
            tokio::time::timeout(options.response_timeout, client.report_load(request)).await;
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
