//! One monitor per known location: what the balancer knows of it (health, the latest load,
//! whether it answers at all, its hand-outs) and the task that keeps that current (see
//! [`super::probe`]: load pushed by quaestor reporters, else health Watch and load polls).
//! Requests read this state; they never call workers themselves.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::BalancerOptions;
use super::connections::Lease;
pub use super::connections::{Connections, LOCATIONS_PER_CONNECTION};
use super::probe;
pub use super::request_time::RequestTime;
use crate::proto::push::LoadUpdate;
use crate::registry::ServiceLocation;
use crate::server::health::ServingStatus;

/// Hand-outs counted at most per location between two reports: more would not change its
/// place (it already weighs as that many requests), and the count stays cheap to keep.
const MAX_HANDOUTS: usize = 1024;

/// How long after a hand-out a load report must have been taken to include the client's call
/// to the worker: the client's round trip to the balancer and on to the worker.
pub const CLIENT_ALLOWANCE: Duration = Duration::from_millis(25);

/// The last load report of a location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    pub known_load_rate: f64,
    pub capacity: i32,
    pub current_requests: i32,
    pub server_utilization: f64,
    /// When it was taken, as near as the balancer knows: the probe's sending, or a pushed
    /// update's arrival.
    pub sent_at: Instant,
}

/// How a location's load reaches the balancer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Feed {
    /// Not known yet (no answer so far).
    #[default]
    Unknown,
    /// Pushed by a quaestor reporter (`quaestor.push.v1.LoadPush`): a report is current for as
    /// long as the stream lives.
    Pushed,
    /// Polled every probe interval (`ReportLoad`), the health followed separately.
    Polled,
    /// Streamed as ORCA out-of-band reports (`xds.service.orca.v3.OpenRcaService`) by a
    /// backend that does not serve `ReportLoad`: a report is current for as long as the stream
    /// lives; health and liveness are followed separately (see [`super::probe`]).
    Orca,
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
    /// Round trip of the last load probe (for a pushed feed: until its first update).
    pub latency: Option<Duration>,
    /// Probes in a row without an answer.
    pub failures: u32,
    pub feed: Feed,
    /// When it was handed out, oldest first, for hand-outs no report has taken in yet
    /// (anti-herding).
    handouts: VecDeque<Instant>,
    /// How long its requests take.
    request_time: RequestTime,
    /// `requests_started` of the last pushed update.
    started: Option<u32>,
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

    /// Hand-outs still counted: those no report has taken in yet, younger than `window`
    /// (`recentlyUsedTimeoutSeconds`). They are kept in time order, so this is a binary
    /// search, not a walk.
    pub fn recent_handouts(&self, now: Instant, window: Duration) -> usize {
        let expired = self
            .handouts
            .partition_point(|at| now.saturating_duration_since(*at) > window);
        self.handouts.len() - expired
    }

    /// Requests believed in flight now: the last report's plus the hand-outs still counted.
    /// A polled report, up to a probe interval old, fades as its requests end (see
    /// [`RequestTime`]); a pushed one is current. `None` without a load report.
    pub fn current_requests(&self, now: Instant, window: Duration) -> Option<i64> {
        let load = self.load?;
        let reported = i64::from(load.current_requests);
        let reported = match self.feed {
            // A pushed report is current; an ORCA one is a level (utilization), not requests
            // that end.
            Feed::Pushed | Feed::Orca => reported,
            _ => {
                let age = now.saturating_duration_since(load.sent_at);
                self.request_time.still_running(reported, age)
            }
        };
        Some(reported + self.recent_handouts(now, window) as i64)
    }

    /// How long a request takes here, once estimated.
    pub fn request_time(&self) -> Option<Duration> {
        self.request_time.life()
    }

    /// Counts one hand-out at `now`; it weighs as a request until a report takes it in or
    /// `window` passes.
    pub fn hand_out(&mut self, now: Instant, window: Duration) {
        while self
            .handouts
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > window)
        {
            self.handouts.pop_front();
        }
        if self.handouts.len() == MAX_HANDOUTS {
            self.handouts.pop_front();
        }
        self.handouts.push_back(now);
    }

    /// Drops the hand-outs that a report taken at `taken_at` includes (those at least
    /// [`CLIENT_ALLOWANCE`] older), after the `arrived` oldest ones that it saw begin.
    /// Returns how many were dropped.
    fn take_in_handouts(&mut self, taken_at: Instant, arrived: u64) -> usize {
        let before = self.handouts.len();
        let arrived = usize::try_from(arrived).unwrap_or(usize::MAX).min(before);
        self.handouts.drain(..arrived);
        while self
            .handouts
            .front()
            .is_some_and(|at| *at + CLIENT_ALLOWANCE <= taken_at)
        {
            self.handouts.pop_front();
        }
        before - self.handouts.len()
    }

    /// A polled report sent at `sent_at` (the previous one at `previous`), or a failure.
    pub(super) fn polled(&mut self, sent_at: Instant, report: Option<LoadSample>) {
        let now = Instant::now();
        let previous = self.load.map(|l| l.sent_at);
        self.feed = Feed::Polled;
        self.last_answer = Some(now);
        self.latency = Some(now.saturating_duration_since(sent_at));
        self.failures = 0;
        self.started = None;
        let taken_in = self.take_in_handouts(sent_at, 0);
        match (report, previous) {
            (Some(report), Some(previous)) => {
                // Arrivals: our own hand-outs over the interval (a poll says nothing of others').
                self.request_time.observe(
                    sent_at.saturating_duration_since(previous),
                    taken_in as u64,
                    f64::from(report.current_requests),
                );
            }
            (None, _) => self.handouts.clear(),
            _ => {}
        }
        self.load = report;
    }

    /// A polled `ReportLoad` that answered without load (sent at `sent_at`): the location is
    /// alive; it has no load, unless an ORCA stream feeds it.
    pub(super) fn polled_without_load(&mut self, sent_at: Instant) {
        if self.feed != Feed::Orca {
            return self.polled(sent_at, None);
        }
        let now = Instant::now();
        self.last_answer = Some(now);
        self.latency = Some(now.saturating_duration_since(sent_at));
        self.failures = 0;
    }

    /// An ORCA report, as a load sample, arrived at `now`. It takes in the hand-outs it
    /// can include; it says nothing of arrivals, so the request time stays as it was.
    pub(super) fn orca(&mut self, sample: LoadSample, now: Instant) {
        self.feed = Feed::Orca;
        self.last_answer = Some(now);
        self.failures = 0;
        self.started = None;
        self.take_in_handouts(now, 0);
        self.load = Some(sample);
    }

    /// The ORCA stream ended: its last report is no longer current, and the location has no
    /// load until a new stream reports.
    pub(super) fn orca_ended(&mut self) {
        if self.feed == Feed::Orca {
            self.feed = Feed::Polled;
            self.load = None;
            self.handouts.clear();
        }
    }

    /// A pushed update, arrived at `now`.
    pub(super) fn pushed(&mut self, update: &LoadUpdate, now: Instant) {
        self.feed = Feed::Pushed;
        self.health =
            Some(ServingStatus::try_from(update.health).unwrap_or(ServingStatus::Unknown));
        self.last_answer = Some(now);
        self.failures = 0;
        let Some(load) = update.load else {
            self.load = None;
            self.started = None;
            self.handouts.clear();
            return;
        };
        let arrived = self.started.map_or(0, |before| {
            u64::from(load.requests_started.wrapping_sub(before))
        });
        self.started = Some(load.requests_started);
        self.take_in_handouts(now, arrived);
        self.request_time
            .pushed(now, arrived, i64::from(load.current_requests));
        self.load = Some(LoadSample {
            known_load_rate: load.known_load_rate,
            capacity: load.request_capacity,
            current_requests: load.current_requests,
            server_utilization: load.server_utilization,
            sent_at: now,
        });
    }

    /// What moves a location in a ranking: health, load and hand-outs.
    fn ranking_inputs(&self) -> RankingInputs {
        (
            self.health,
            self.failures == 0,
            self.load
                .map(|l| (l.known_load_rate, l.capacity, l.current_requests)),
            self.handouts.len(),
        )
    }
}

/// Health, answering, (load rate, capacity, current requests) and hand-outs.
type RankingInputs = (Option<ServingStatus>, bool, Option<(f64, i32, i32)>, usize);

/// A location and what is known of it. Stopped when it leaves the registry (whoever still
/// holds it), or when dropped.
#[derive(Debug)]
pub struct Monitored {
    pub location: ServiceLocation,
    state: Mutex<ProbeState>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Its share of the connection to its control endpoint (none when it cannot be probed).
    lease: Mutex<Option<Lease>>,
    stopped: AtomicBool,
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
            task: Mutex::new(None),
            lease: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        match connections.lease(&monitored.location, options) {
            Ok((channel, lease)) => {
                *lock(&monitored.lease) = Some(lease);
                let task = tokio::spawn(probe::follow(
                    Arc::downgrade(&monitored),
                    channel,
                    options.clone(),
                    changed,
                ));
                *lock(&monitored.task) = Some(task);
            }
            Err(reason) => {
                tracing::warn!(location = %monitored.location, %reason, "cannot probe this location");
                monitored.update(&changed, |s| s.failures = 1);
            }
        }
        monitored
    }

    /// Stops probing and gives back its share of the connection, at once; it is never
    /// healthy again.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        lock(&self.lease).take();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn state(&self) -> ProbeState {
        self.lock().clone()
    }

    /// Reads the state under its lock.
    pub fn with_state<T>(&self, read: impl FnOnce(&ProbeState) -> T) -> T {
        read(&self.lock())
    }

    /// Counts one hand-out (it weighs as a request until a report takes it in).
    pub fn handed_out(&self, now: Instant, window: Duration) {
        self.lock().hand_out(now, window);
    }

    /// Changes the state; bumps `changed` when what moves it in a ranking changed.
    pub(super) fn update(
        &self,
        changed: &watch::Sender<u64>,
        change: impl FnOnce(&mut ProbeState),
    ) {
        let mut state = self.lock();
        let before = state.ranking_inputs();
        change(&mut state);
        let moved = before != state.ranking_inputs();
        drop(state);
        if moved {
            changed.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        lock(&self.state)
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::push::Load;

    fn update(current: i32, started: u32) -> LoadUpdate {
        LoadUpdate {
            load: Some(Load {
                timestamp_ticks: 0,
                known_load_rate: -1.0,
                request_capacity: 8,
                current_requests: current,
                server_utilization: 0.0,
                server_memory_usage_percent: 0.0,
                requests_started: started,
            }),
            health: ServingStatus::Serving as i32,
            sequence: 1,
            keepalive: false,
        }
    }

    #[test]
    fn hand_outs_count_until_a_report_takes_them_in() {
        let window = Duration::from_secs(5);
        let start = Instant::now();
        let mut state = ProbeState::default();
        state.pushed(&update(0, 100), start);
        // Three hand-outs at once (a top-3 answer counts each of its locations).
        for _ in 0..3 {
            state.hand_out(start, window);
        }
        assert_eq!(state.current_requests(start, window), Some(3));
        // However short the requests, the hand-outs still count 200 ms later with no report.
        for _ in 0..5 {
            state
                .request_time
                .observe(Duration::from_secs(1), 1000, 0.0);
        }
        assert_eq!(state.request_time(), Some(RequestTime::SHORTEST));
        let later = start + Duration::from_millis(200);
        assert_eq!(state.current_requests(later, window), Some(3));
        // One call arrives (pushed at once): it replaces one hand-out, the others still count.
        let arrival = start + Duration::from_millis(2);
        state.pushed(&update(1, 101), arrival);
        assert_eq!(state.current_requests(arrival, window), Some(3));
        // A keep-alive taken long enough after the hand-outs: the unused ones are gone.
        let keepalive = start + CLIENT_ALLOWANCE + Duration::from_millis(1);
        state.pushed(&update(1, 101), keepalive);
        assert_eq!(state.current_requests(keepalive, window), Some(1));
        // The window bounds a hand-out too.
        state.hand_out(keepalive, window);
        let past = keepalive + window + Duration::from_millis(1);
        assert_eq!(state.recent_handouts(past, window), 0);
    }

    #[test]
    fn polled_reports_take_in_hand_outs_sent_before_them_and_fade() {
        let window = Duration::from_secs(5);
        let start = Instant::now();
        let mut state = ProbeState::default();
        let sample = |current, sent_at| LoadSample {
            known_load_rate: -1.0,
            capacity: 8,
            current_requests: current,
            server_utilization: 0.0,
            sent_at,
        };
        state.polled(start, Some(sample(0, start)));
        state.hand_out(start, window);
        // A probe sent right after the hand-out may not include the call yet.
        let early = start + Duration::from_millis(1);
        state.polled(early, Some(sample(0, early)));
        assert_eq!(state.current_requests(early, window), Some(1));
        let late = start + CLIENT_ALLOWANCE;
        state.polled(late, Some(sample(1, late)));
        assert_eq!(state.current_requests(late, window), Some(1));
        assert_eq!(state.feed, Feed::Polled);
    }
}
