//! Balancing quality: a discrete-event simulation of workers of different sizes and speeds,
//! Poisson clients and the balancer's stale view of them, comparing how well each policy
//! spreads requests at 50, 80 and 95 % of the fleet's total service rate.
//!
//!     cargo bench -p quaestor-core --bench balancing [-- [QUICK] [PROBE_INTERVAL_MS]]
//!
//! Policies, all over the same arrivals and service demands (one seed):
//! - random (what `discover` does) and round robin;
//! - the C# ranking without anti-herding: [`QuaestorRanking`] over the last load reports only;
//! - quaestor's default: the same ranking with anti-herding, as `Balancer::discover_top` does it
//!   (hand-outs counted until the next report or `recently_used_timeout`, and the service's
//!   ranking kept between requests);
//! - power of two choices over the reported current/capacity;
//! - a join-shortest-queue oracle that sees every worker's true queue, normalised by capacity.
//!
//! Time is simulated (no sleeping); the run is deterministic. It prints p50/p99 latency
//! (queueing + service) and worker utilisation per policy and load, each p99 against the
//! oracle's at 80 %, and draws a figure (p99 against offered load) to `bench/balancing.svg`
//! and, with `rsvg-convert` (Debian `librsvg2-bin`, which `make bench` installs), to
//! `bench/balancing.png` (QUICK or another probe interval than the balancer's default: to the
//! temporary directory). Assumptions and results: `bench/balancing.md`.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::balancer::monitor::{CLIENT_ALLOWANCE, RequestTime};
use quaestor_core::balancer::ranking::QuaestorRanking;
use quaestor_core::balancer::standings::{HostLoad, Located, Standing, Standings};
use quaestor_core::balancer::{
    BalancerOptions, RANKING_MAX_AGE, RERANK_AFTER, ranking_is_fresh, rerank_after,
};
use quaestor_core::load::LOAD_RATE_NOT_SET;
use quaestor_core::registry::ServiceLocation;

const SEED: u64 = 0x5155_4145_5354_4f52;
const LOADS: [f64; 3] = [0.50, 0.80, 0.95];
/// The load level the p99 ratios are taken at.
const REFERENCE_LOAD: f64 = 0.80;
/// As `monitor::MAX_HANDOUTS` (private there): hand-outs counted at most per location.
const MAX_HANDOUTS: usize = 1024;

/// One worker: where it is, how many requests it serves at once (the capacity it reports),
/// and its mean service time in seconds.
struct WorkerSpec {
    host: &'static str,
    port: u16,
    capacity: u32,
    mean_service: f64,
}

const FAST: f64 = 0.050;
const SLOW: f64 = 0.100;

/// 8 workers on 3 hosts: capacities 2, 4 and 8, mean service times 50 or 100 ms, so service
/// rates (capacity / mean) from 20 to 160 requests/s. The ranking sees capacities, not speeds.
const WORKERS: [WorkerSpec; 8] = [
    worker("host-a", 5001, 2, FAST),
    worker("host-a", 5002, 4, SLOW),
    worker("host-a", 5003, 8, FAST),
    worker("host-b", 5001, 2, SLOW),
    worker("host-b", 5002, 4, FAST),
    worker("host-b", 5003, 8, SLOW),
    worker("host-c", 5001, 4, FAST),
    worker("host-c", 5002, 8, SLOW),
];

const fn worker(host: &'static str, port: u16, capacity: u32, mean_service: f64) -> WorkerSpec {
    WorkerSpec {
        host,
        port,
        capacity,
        mean_service,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Random,
    RoundRobin,
    /// `QuaestorRanking` over the last reports, nothing counted in between.
    Ranking,
    /// `QuaestorRanking` with anti-herding and the kept ranking, as `discover_top`, over
    /// polled reports (workers that only answer `ReportLoad`, as the C# ones).
    Quaestor,
    /// The same over pushed load (quaestor's reporters): a report on every change, coalesced
    /// to one per 10 ms, and a keep-alive every probe interval.
    QuaestorPushed,
    /// Anti-herding, but ranked afresh for every request (not what quaestor does: a
    /// diagnostic that separates the kept ranking's effect from anti-herding's).
    QuaestorFresh,
    TwoChoices,
    Oracle,
}

const POLICIES: [Policy; 8] = [
    Policy::Random,
    Policy::RoundRobin,
    Policy::Ranking,
    Policy::Quaestor,
    Policy::QuaestorPushed,
    Policy::QuaestorFresh,
    Policy::TwoChoices,
    Policy::Oracle,
];

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round robin",
            Policy::Ranking => "ranking, no anti-herding",
            Policy::Quaestor => "quaestor, polled load",
            Policy::QuaestorPushed => "quaestor, pushed load",
            Policy::QuaestorFresh => "quaestor, re-ranked each (diag.)",
            Policy::TwoChoices => "two choices (reported)",
            Policy::Oracle => "JSQ oracle",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Policy::Random => "#7f7f7f",
            Policy::RoundRobin => "#bcbd22",
            Policy::Ranking => "#d62728",
            Policy::Quaestor => "#1f77b4",
            Policy::QuaestorPushed => "#9467bd",
            Policy::QuaestorFresh => "#17becf",
            Policy::TwoChoices => "#2ca02c",
            Policy::Oracle => "#000000",
        }
    }
}

/// How long to simulate, in seconds of simulated time.
#[derive(Debug, Clone, Copy)]
struct Length {
    /// Requests arriving before this are not measured (the fleet starts empty).
    warm_up: f64,
    /// Arrivals stop here; requests in the system still finish and are measured.
    end: f64,
}

// The balancer, rebuilt around core's own pieces: `Standings` (the kept ranking, its hand-outs
// counted on the location and its host), `QuaestorRanking` (the order), `RequestTime` (how
// long a worker's requests take, so reports fade and hand-outs stop counting),
// `ranking_is_fresh`, the default `recently_used_timeout` and `LOAD_RATE_NOT_SET`. The rest is
// bound to real time and real probes (`Monitored` exists only with its gRPC probe tasks,
// `ProbeState`'s hand-out list is private, `host_load` reads `Instant`s), so it is
// reimplemented below over simulated time; each piece names what it mirrors. Keep them in step
// when the balancer changes.

/// What the balancer's monitors know: the last load report of each worker and the hand-outs
/// since (`monitor::ProbeState`).
struct View {
    reports: Vec<Option<Report>>,
    handouts: Vec<VecDeque<f64>>,
    /// The balancer's change counter: bumped when a report differs from the one before.
    generation: u64,
    /// Worker indices by host, for host utilisation.
    by_host: Vec<Vec<usize>>,
    window: f64,
    /// When each worker's last report was asked for.
    reported_at: Vec<Option<f64>>,
    /// `ProbeState::request_time`: core's estimate, fed the same way.
    request_time: Vec<RequestTime>,
    /// Reports are pushed (`Feed::Pushed`): they carry the requests started so far and do not
    /// fade.
    pushed: bool,
    /// `requests_started` of each worker's last pushed report.
    started: Vec<Option<u32>>,
    /// Simulated time 0 as an `Instant` (`RequestTime::pushed` takes those).
    epoch: std::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Report {
    known_load_rate: f64,
    capacity: i64,
    current_requests: i64,
}

impl View {
    fn new(window: f64, pushed: bool) -> Self {
        let mut hosts: Vec<&str> = Vec::new();
        let mut host_of = Vec::new();
        for spec in &WORKERS {
            let index = hosts
                .iter()
                .position(|h| *h == spec.host)
                .unwrap_or_else(|| {
                    hosts.push(spec.host);
                    hosts.len() - 1
                });
            host_of.push(index);
        }
        let mut by_host = vec![Vec::new(); hosts.len()];
        for (worker, host) in host_of.iter().enumerate() {
            by_host[*host].push(worker);
        }
        View {
            reports: vec![None; WORKERS.len()],
            handouts: vec![VecDeque::new(); WORKERS.len()],
            generation: 0,
            by_host,
            window,
            reported_at: vec![None; WORKERS.len()],
            request_time: vec![RequestTime::default(); WORKERS.len()],
            pushed,
            started: vec![None; WORKERS.len()],
            epoch: std::time::Instant::now(),
        }
    }

    /// A load report of `worker` at `now` (answered at once): as `ProbeState::polled`, or
    /// `ProbeState::pushed` with the requests `started` so far, which also feed the
    /// request-time estimate.
    fn report(&mut self, worker: usize, now: f64, current_requests: i64, started: u32) {
        let report = Report {
            known_load_rate: LOAD_RATE_NOT_SET,
            capacity: i64::from(WORKERS[worker].capacity),
            current_requests,
        };
        if self.reports[worker] != Some(report) {
            self.generation += 1;
        }
        self.reports[worker] = Some(report);
        let handouts = &mut self.handouts[worker];
        let mut reported = 0;
        if self.pushed {
            // `ProbeState::take_in_handouts`: first the hand-outs seen arriving.
            let arrived = self.started[worker].map_or(0, |before| started.wrapping_sub(before));
            self.request_time[worker].pushed(
                self.epoch + seconds(now),
                u64::from(arrived),
                current_requests,
            );
            let arrived = (arrived as usize).min(handouts.len());
            handouts.drain(..arrived);
            self.started[worker] = Some(started);
        }
        let allowance = CLIENT_ALLOWANCE.as_secs_f64();
        while handouts.front().is_some_and(|at| *at + allowance <= now) {
            handouts.pop_front();
            reported += 1;
        }
        if self.pushed {
            // Pushed reports are current: no fading (the estimate came from the update).
        } else if let Some(previous) = self.reported_at[worker] {
            self.request_time[worker].observe(
                seconds(now - previous),
                reported,
                current_requests as f64,
            );
        }
        self.reported_at[worker] = Some(now);
    }

    /// `ProbeState::recent_handouts`.
    fn recent_handouts(&self, worker: usize, now: f64) -> i64 {
        let handouts = &self.handouts[worker];
        let expired = handouts.partition_point(|at| now - *at > self.window);
        (handouts.len() - expired) as i64
    }

    /// `Monitored::handed_out`.
    fn handed_out(&mut self, worker: usize, now: f64) {
        let handouts = &mut self.handouts[worker];
        while handouts.front().is_some_and(|at| now - *at > self.window) {
            handouts.pop_front();
        }
        if handouts.len() == MAX_HANDOUTS {
            handouts.pop_front();
        }
        handouts.push_back(now);
    }

    /// Reported current requests; with `count_handouts`, as `ProbeState::current_requests`:
    /// the report fading as its requests end, plus the hand-outs still counted.
    fn current(&self, worker: usize, now: f64, count_handouts: bool) -> Option<i64> {
        let report = self.reports[worker]?;
        if !count_handouts {
            return Some(report.current_requests);
        }
        let reported = if self.pushed {
            report.current_requests
        } else {
            let age = seconds(now - self.reported_at[worker].unwrap_or(now));
            self.request_time[worker].still_running(report.current_requests, age)
        };
        Some(reported + self.recent_handouts(worker, now))
    }

    /// `host_load`: Σ current and Σ capacity over the host's workers that report load.
    fn host_load(&self, host: usize, now: f64, count_handouts: bool) -> HostLoad {
        let mut total = HostLoad::default();
        for &worker in &self.by_host[host] {
            if let Some(report) = self.reports[worker].filter(|r| r.capacity > 0) {
                total.current_requests += self.current(worker, now, count_handouts).unwrap_or(0);
                total.capacity += report.capacity;
            }
        }
        total
    }

    /// `Balancer::rank`: workers that report load, ranked by core's [`Standings`].
    fn rank_into(
        &self,
        standings: &mut Standings<SimWorker>,
        locations: &[SimWorker],
        now: f64,
        count_handouts: bool,
    ) {
        let ranked = locations.iter().filter_map(|worker| {
            let report = self.reports[worker.index]?;
            Some(Standing {
                key: worker.clone(),
                known_load_rate: report.known_load_rate,
                current_requests: self.current(worker.index, now, count_handouts)?,
                capacity: report.capacity,
                request_time: self.request_time[worker.index].life(),
            })
        });
        standings.rebuild(ranked, |host| {
            let host = self
                .by_host
                .iter()
                .position(|workers| WORKERS[workers[0]].host == host)
                .expect("a known host");
            self.host_load(host, now, count_handouts)
        });
    }
}

/// A worker as the ranking sees it: its index and its location.
#[derive(Debug, Clone)]
struct SimWorker {
    index: usize,
    location: Rc<ServiceLocation>,
}

impl Located for SimWorker {
    fn location(&self) -> &ServiceLocation {
        &self.location
    }
}

/// A service's ranking as `discover_top` keeps it between requests (`ServiceRanking`).
struct KeptRanking {
    /// The balancer's probe interval, in seconds.
    probe_interval: f64,
    generation: Option<u64>,
    computed_at: Option<f64>,
    standings: Standings<SimWorker>,
}

impl KeptRanking {
    fn new(probe_interval: f64) -> Self {
        KeptRanking {
            probe_interval,
            generation: None,
            computed_at: None,
            standings: Standings::new(Arc::new(QuaestorRanking)),
        }
    }

    /// `ServiceRanking::is_fresh`.
    fn is_fresh(&self, generation: u64, now: f64) -> bool {
        let Some(computed_at) = self.computed_at else {
            return false;
        };
        ranking_is_fresh(
            seconds(now - computed_at),
            self.generation == Some(generation),
            seconds(self.probe_interval),
            // Ranking 8 workers takes microseconds: the shortest wait.
            rerank_after(Duration::ZERO),
        )
    }

    /// `Balancer::discover_top` with `max_count` 1: re-ranks if stale, then hands out the best
    /// (core's `Standings::hand_out` counts it on the worker and on its host).
    fn discover_top(
        &mut self,
        view: &mut View,
        locations: &[SimWorker],
        now: f64,
    ) -> Option<usize> {
        if !self.is_fresh(view.generation, now) {
            view.rank_into(&mut self.standings, locations, now, true);
            self.generation = Some(view.generation);
            self.computed_at = Some(now);
        }
        let chosen = self.standings.hand_out()?.index;
        view.handed_out(chosen, now);
        Some(chosen)
    }
}

/// One worker as it really is.
struct Worker {
    in_service: u32,
    /// Waiting requests, first come first served: (arrival time, unit service demand).
    queue: VecDeque<(f64, f64)>,
    /// ∫ in_service dt over the measured window.
    busy_area: f64,
    last_change: f64,
    /// Requests that arrived so far (`requests_started`).
    started: u32,
    /// When its last pushed update went out, and whether one is due.
    last_push: f64,
    push_due: bool,
}

/// The reporter's coalescing: at most one pushed update per this many seconds.
const PUSH_MIN_INTERVAL: f64 = 0.010;

/// After a change of `worker`'s load with pushed load: its next update, unless one is due.
fn push_after_change(workers: &mut [Worker], worker: usize, now: f64, events: &mut Events) {
    let w = &mut workers[worker];
    if !w.push_due {
        w.push_due = true;
        events.push(
            now.max(w.last_push + PUSH_MIN_INTERVAL),
            Kind::Push { worker },
        );
    }
}

impl Worker {
    fn current_requests(&self) -> u32 {
        self.in_service + self.queue.len() as u32
    }

    /// Accounts for the time since the last change, within [warm_up, end].
    fn advance(&mut self, now: f64, length: Length) {
        let from = self.last_change.max(length.warm_up);
        let to = now.min(length.end);
        if to > from {
            self.busy_area += f64::from(self.in_service) * (to - from);
        }
        self.last_change = now;
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Arrival,
    Completion {
        worker: usize,
        arrival: f64,
    },
    Poll {
        worker: usize,
    },
    /// A pushed update of the worker's load, due after a change.
    Push {
        worker: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    time: f64,
    /// Ties broken by scheduling order, so the run is deterministic.
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .total_cmp(&other.time)
            .then(self.seq.cmp(&other.seq))
    }
}

struct Events {
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
}

impl Events {
    fn push(&mut self, time: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            time,
            seq: self.seq,
            kind,
        }));
    }

    fn pop(&mut self) -> Option<Event> {
        self.heap.pop().map(|Reverse(event)| event)
    }
}

/// Simulated seconds as a `Duration` (negative: zero).
fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// A unit exponential draw.
fn exponential(rng: &mut fastrand::Rng) -> f64 {
    -(1.0 - rng.f64()).ln()
}

/// Σ capacity / mean service time: requests per second the fleet serves when saturated.
fn total_service_rate() -> f64 {
    WORKERS
        .iter()
        .map(|w| f64::from(w.capacity) / w.mean_service)
        .sum()
}

#[derive(Debug, Clone)]
struct Outcome {
    policy: Policy,
    load: f64,
    p50: f64,
    p99: f64,
    utilization_max: f64,
    utilization_mean: f64,
    measured: usize,
}

fn simulate(
    policy: Policy,
    load: f64,
    length: Length,
    probe_interval: f64,
    locations: &[SimWorker],
) -> Outcome {
    let options = BalancerOptions::default();
    let arrival_rate = load * total_service_rate();
    // The same arrivals and demands for every policy (and, scaled, every load).
    let mut arrivals = fastrand::Rng::with_seed(SEED);
    // The same poll phases for every policy.
    let mut phases = fastrand::Rng::with_seed(SEED ^ 0x9e37_79b9_7f4a_7c15);
    // Choices of random, two choices and oracle ties.
    let mut choices = fastrand::Rng::with_seed(SEED.rotate_left(17));

    let pushed = policy == Policy::QuaestorPushed;
    let mut view = View::new(options.recently_used_timeout.as_secs_f64(), pushed);
    let mut kept = KeptRanking::new(probe_interval);
    let mut next_round_robin = 0usize;
    let mut workers: Vec<Worker> = WORKERS
        .iter()
        .map(|_| Worker {
            in_service: 0,
            queue: VecDeque::new(),
            busy_area: 0.0,
            last_change: 0.0,
            started: 0,
            last_push: f64::NEG_INFINITY,
            push_due: false,
        })
        .collect();
    let mut events = Events {
        heap: BinaryHeap::new(),
        seq: 0,
    };
    // Monitors start at different moments and poll every interval from then on.
    for worker in 0..WORKERS.len() {
        events.push(phases.f64() * probe_interval, Kind::Poll { worker });
    }
    // Clients start once every worker has reported (discover_top waits for first probes).
    events.push(
        probe_interval + exponential(&mut arrivals) / arrival_rate,
        Kind::Arrival,
    );

    let mut latencies: Vec<f64> = Vec::new();
    while let Some(event) = events.pop() {
        let now = event.time;
        match event.kind {
            Kind::Arrival => {
                let demand = exponential(&mut arrivals);
                let next = now + exponential(&mut arrivals) / arrival_rate;
                if next < length.end {
                    events.push(next, Kind::Arrival);
                }
                let worker = match policy {
                    Policy::Random => choices.usize(..WORKERS.len()),
                    Policy::RoundRobin => {
                        next_round_robin = (next_round_robin + 1) % WORKERS.len();
                        next_round_robin
                    }
                    Policy::Ranking => {
                        // The C# order over the last reports, ranked afresh, nothing counted.
                        let mut standings = Standings::new(Arc::new(QuaestorRanking));
                        view.rank_into(&mut standings, locations, now, false);
                        standings.best(Some(1))[0].key.index
                    }
                    Policy::Quaestor | Policy::QuaestorPushed => kept
                        .discover_top(&mut view, locations, now)
                        .expect("every worker has reported"),
                    Policy::QuaestorFresh => {
                        // As above, but the kept ranking never outlives this request.
                        let mut fresh = KeptRanking::new(probe_interval);
                        fresh
                            .discover_top(&mut view, locations, now)
                            .expect("every worker has reported")
                    }
                    Policy::TwoChoices => two_choices(&view, &mut choices),
                    Policy::Oracle => shortest_queue(&workers, &mut choices),
                };
                let w = &mut workers[worker];
                w.started = w.started.wrapping_add(1);
                if w.in_service < WORKERS[worker].capacity {
                    w.advance(now, length);
                    w.in_service += 1;
                    let service = demand * WORKERS[worker].mean_service;
                    events.push(
                        now + service,
                        Kind::Completion {
                            worker,
                            arrival: now,
                        },
                    );
                } else {
                    w.queue.push_back((now, demand));
                }
                if pushed {
                    push_after_change(&mut workers, worker, now, &mut events);
                }
            }
            Kind::Completion { worker, arrival } => {
                if arrival >= length.warm_up && arrival < length.end {
                    latencies.push(now - arrival);
                }
                let w = &mut workers[worker];
                w.advance(now, length);
                w.in_service -= 1;
                if let Some((arrival, demand)) = w.queue.pop_front() {
                    w.in_service += 1;
                    let service = demand * WORKERS[worker].mean_service;
                    events.push(now + service, Kind::Completion { worker, arrival });
                }
                if pushed {
                    push_after_change(&mut workers, worker, now, &mut events);
                }
            }
            Kind::Push { worker } => {
                let w = &mut workers[worker];
                w.push_due = false;
                w.last_push = now;
                let (current, started) = (i64::from(w.current_requests()), w.started);
                view.report(worker, now, current, started);
            }
            // With pushed load, the keep-alive.
            Kind::Poll { worker } => {
                let w = &workers[worker];
                view.report(worker, now, i64::from(w.current_requests()), w.started);
                if now + probe_interval < length.end {
                    events.push(now + probe_interval, Kind::Poll { worker });
                }
            }
        }
    }

    let window = length.end - length.warm_up;
    let utilizations: Vec<f64> = workers
        .iter_mut()
        .zip(&WORKERS)
        .map(|(w, spec)| {
            w.advance(length.end, length);
            w.busy_area / (f64::from(spec.capacity) * window)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        policy,
        load,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        utilization_max: utilizations.iter().copied().fold(0.0, f64::max),
        utilization_mean: utilizations.iter().sum::<f64>() / utilizations.len() as f64,
        measured: latencies.len(),
    }
}

/// Two distinct workers at random; the one with the lower reported current/capacity (the
/// first drawn on a tie).
fn two_choices(view: &View, rng: &mut fastrand::Rng) -> usize {
    let a = rng.usize(..WORKERS.len());
    let b = (a + 1 + rng.usize(..WORKERS.len() - 1)) % WORKERS.len();
    let utilization = |w: usize| {
        view.reports[w].map_or(f64::INFINITY, |r| {
            r.current_requests as f64 / r.capacity.max(1) as f64
        })
    };
    if utilization(b) < utilization(a) {
        b
    } else {
        a
    }
}

/// The worker with the fewest requests (queued + in service) per unit of capacity, right now;
/// ties broken at random.
fn shortest_queue(workers: &[Worker], rng: &mut fastrand::Rng) -> usize {
    let mut best = 0;
    let mut ties = 0u32;
    for (index, worker) in workers.iter().enumerate() {
        // a/ca < b/cb ⇔ a·cb < b·ca, in integers.
        let ours = u64::from(worker.current_requests()) * u64::from(WORKERS[best].capacity);
        let theirs =
            u64::from(workers[best].current_requests()) * u64::from(WORKERS[index].capacity);
        if index == 0 || ours < theirs {
            best = index;
            ties = 1;
        } else if ours == theirs {
            ties += 1;
            if rng.u32(..ties) == 0 {
                best = index;
            }
        }
    }
    best
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut quick = false;
    // Between two load reports of one worker, unless given on the command line: the
    // balancer's default.
    let default_probe_ms = BalancerOptions::default().probe_interval.as_millis() as u64;
    let mut probe_ms = default_probe_ms;
    for arg in std::env::args().skip(1).filter(|a| a != "--bench") {
        match arg.parse::<u64>() {
            _ if arg.eq_ignore_ascii_case("quick") => quick = true,
            Ok(ms) if ms > 0 => probe_ms = ms,
            _ => {
                return Err(format!(
                    "unknown argument {arg:?} (expected QUICK or a probe interval in ms)"
                )
                .into());
            }
        }
    }
    let probe_interval = probe_ms as f64 / 1e3;
    let length = if quick {
        Length {
            warm_up: 10.0,
            end: 70.0,
        }
    } else {
        Length {
            warm_up: 30.0,
            end: 930.0,
        }
    };
    let locations: Vec<SimWorker> = WORKERS
        .iter()
        .enumerate()
        .map(|(index, w)| {
            Ok(SimWorker {
                index,
                location: Rc::new(ServiceLocation::new("", "Worker", w.host, w.port)?),
            })
        })
        .collect::<Result<_, quaestor_core::registry::LocationError>>()?;

    let options = BalancerOptions::default();
    println!(
        "balancing simulation{}: {} workers on 3 hosts (capacity/mean service: {}), \
         total service rate {:.0} requests/s",
        if quick { " (QUICK)" } else { "" },
        WORKERS.len(),
        WORKERS
            .iter()
            .map(|w| format!("{}/{:.0}ms", w.capacity, w.mean_service * 1e3))
            .collect::<Vec<_>>()
            .join(" "),
        total_service_rate(),
    );
    println!(
        "probe interval {:.0} ms, recently-used timeout {} s, re-rank after {} ms (at most {} ms \
         old), {:.0} s simulated per case after {:.0} s warm-up, seed {SEED:#x}",
        probe_interval * 1e3,
        options.recently_used_timeout.as_secs_f64(),
        RERANK_AFTER.as_millis(),
        RANKING_MAX_AGE.as_millis(),
        length.end - length.warm_up,
        length.warm_up,
    );

    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for &load in &LOADS {
        for &policy in &POLICIES {
            outcomes.push(simulate(policy, load, length, probe_interval, &locations));
        }
    }

    println!();
    println!(
        "{:<34} {:>5} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "policy", "load", "p50 ms", "p99 ms", "util max", "util mean", "requests"
    );
    for &policy in &POLICIES {
        for outcome in outcomes.iter().filter(|o| o.policy == policy) {
            println!(
                "{:<34} {:>4.0}% {:>10.1} {:>10.1} {:>8.1}% {:>9.1}% {:>9}",
                policy.name(),
                outcome.load * 100.0,
                outcome.p50 * 1e3,
                outcome.p99 * 1e3,
                outcome.utilization_max * 100.0,
                outcome.utilization_mean * 100.0,
                outcome.measured,
            );
        }
    }

    let at_reference = |policy: Policy| {
        outcomes
            .iter()
            .find(|o| o.policy == policy && o.load == REFERENCE_LOAD)
            .map_or(f64::NAN, |o| o.p99)
    };
    let oracle = at_reference(Policy::Oracle);
    println!();
    println!("p99 / oracle p99 at {:.0}% load:", REFERENCE_LOAD * 100.0);
    for &policy in &POLICIES {
        println!(
            "  {:<34} {:>8.2}x",
            policy.name(),
            at_reference(policy) / oracle
        );
    }
    let quaestor = at_reference(Policy::QuaestorPushed);
    let random = at_reference(Policy::Random);
    let ranking = at_reference(Policy::Ranking);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!(
        "targets at {:.0}%: quaestor (pushed load) p99 ≤ 1.5x oracle: {:.2}x ({}); \
         ≥ 2x better than random: {:.1}x ({}); better than plain ranking: {:.2}x ({})",
        REFERENCE_LOAD * 100.0,
        quaestor / oracle,
        verdict(quaestor / oracle <= 1.5),
        random / quaestor,
        verdict(random / quaestor >= 2.0),
        ranking / quaestor,
        verdict(ranking > quaestor),
    );

    // Only the default full run replaces the committed figure.
    let path = if quick || probe_ms != default_probe_ms {
        std::env::temp_dir().join(format!(
            "quaestor-balancing-{probe_ms}ms{}.svg",
            if quick { "-quick" } else { "" }
        ))
    } else {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../bench/balancing.svg"
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, svg(&outcomes, quick, probe_ms))?;
    let path = path.canonicalize().unwrap_or(path);
    println!();
    println!("figure: {}", path.display());
    let png = path.with_extension("png");
    match std::process::Command::new("rsvg-convert")
        .args(["--width", "960", "--background-color", "white", "--output"])
        .arg(&png)
        .arg(&path)
        .status()
    {
        Ok(status) if status.success() => println!("figure: {}", png.display()),
        Ok(status) => println!("rsvg-convert failed ({status}): no PNG"),
        Err(_) => println!("no rsvg-convert (Debian librsvg2-bin; make bench installs it): no PNG"),
    }
    println!(
        "({:.1} s of computing for {} cases)",
        started.elapsed().as_secs_f64(),
        outcomes.len()
    );
    Ok(())
}

/// p99 latencies above this (ms) mean a queue that grew for the whole run: drawn at the top
/// edge of the figure, so that they do not squash the lines that matter.
const OFF_SCALE_MS: f64 = 60_000.0;

/// Latency ticks: 1, 2 and 5 times powers of ten.
fn ticks(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor() - 1.0);
    while ticks.last().is_none_or(|&t| t < high) {
        for step in [1.0, 2.0, 5.0] {
            ticks.push(decade * step);
        }
        decade *= 10.0;
    }
    let first = ticks.iter().rposition(|&t| t <= low).unwrap_or(0);
    let last = ticks
        .iter()
        .position(|&t| t >= high)
        .unwrap_or(ticks.len() - 1);
    ticks[first..=last].to_vec()
}

/// p99 against offered load, one line per policy, log-scaled latency; plain SVG text, so no
/// plotting dependency has to be built.
fn svg(outcomes: &[Outcome], quick: bool, probe_ms: u64) -> String {
    let (width, height) = (780.0, 460.0);
    let (left, right, top, bottom) = (70.0, 270.0, 40.0, 50.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let (x_min, x_max) = (0.45, 1.0);
    let on_scale = || {
        outcomes
            .iter()
            .map(|o| o.p99 * 1e3)
            .filter(|v| v.is_finite() && *v <= OFF_SCALE_MS)
    };
    let low = on_scale().fold(f64::INFINITY, f64::min).clamp(1e-3, 1e3);
    let high = on_scale().fold(0.0, f64::max).max(low * 2.0);
    let ticks = ticks(low, high);
    let (y_min, y_max) = (ticks[0], ticks[ticks.len() - 1]);
    let x = |load: f64| left + (load - x_min) / (x_max - x_min) * plot_w;
    let y = |ms: f64| {
        let ms = ms.clamp(y_min, y_max);
        top + plot_h - (ms / y_min).log10() / (y_max / y_min).log10() * plot_h
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">p99 latency against offered load (simulated, probe interval {probe_ms} ms{})</text>"#,
        left + plot_w / 2.0,
        if quick { ", QUICK" } else { "" }
    );
    // Grid and ticks.
    for &tick in &ticks {
        let py = y(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#dddddd"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{tick}</text>"#,
            left - 6.0,
            py + 4.0,
        );
    }
    for load in LOADS {
        let px = x(load);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#dddddd"/>"##,
            top + plot_h
        );
        let _ = writeln!(
            out,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{:.0}%</text>"#,
            top + plot_h + 18.0,
            load * 100.0
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (share of total service rate)</text>"#,
        left + plot_w / 2.0,
        height - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">p99 latency, ms (log scale)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    // One line per policy, and the legend.
    for (index, &policy) in POLICIES.iter().enumerate() {
        let colour = policy.colour();
        let ours: Vec<&Outcome> = outcomes.iter().filter(|o| o.policy == policy).collect();
        let points: Vec<(f64, f64)> = ours.iter().map(|o| (x(o.load), y(o.p99 * 1e3))).collect();
        let off_scale = ours.iter().any(|o| o.p99 * 1e3 > y_max);
        let dash = if policy == Policy::QuaestorFresh {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let line: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            line.join(" ")
        );
        for (px, py) in &points {
            let _ = writeln!(
                out,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{colour}"/>"#
            );
        }
        let ly = top + 10.0 + index as f64 * 20.0;
        let lx = left + plot_w + 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            policy.name(),
            if off_scale { " (off scale)" } else { "" }
        );
    }
    let note_y = top + 10.0 + POLICIES.len() as f64 * 20.0 + 10.0;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{note_y}" font-size="11">off scale: p99 above {y_max} ms,</text>"#,
        left + plot_w + 16.0,
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11">drawn at the top edge</text>"#,
        left + plot_w + 16.0,
        note_y + 14.0,
    );
    out.push_str("</svg>\n");
    out
}
