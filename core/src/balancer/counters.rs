//! What the balancer counts as it serves, for metrics: plain atomics bumped on the hot paths
//! (a discovery request costs two clock reads and a few relaxed additions), read at scrape
//! time by [`crate::http`]. Nothing here knows of any exposition format.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The discovery methods, as they are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMethod {
    DiscoverServices = 0,
    DiscoverTopServices = 1,
}

impl DiscoveryMethod {
    pub const ALL: [DiscoveryMethod; 2] = [Self::DiscoverServices, Self::DiscoverTopServices];

    /// The gRPC method name (the `method` label).
    pub fn name(self) -> &'static str {
        match self {
            Self::DiscoverServices => "DiscoverServices",
            Self::DiscoverTopServices => "DiscoverTopServices",
        }
    }
}

/// The canonical names of the gRPC status codes, by number (the `code` label).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Upper bounds of the discovery latency buckets, in seconds: from a cached answer (tens of
/// microseconds) to the first request of a service, which waits for its first probes (up to
/// `serviceResponseTimeoutSeconds`).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// A histogram of durations over [`LATENCY_BUCKETS`], lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as read: `(upper bound, count in that bucket alone)` pairs ending with `+Inf`
/// (not cumulative: encoders add them up), the sum in seconds and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, count)| count).sum(),
            buckets,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Streams of one kind: open now, and opened in all by the status of their opening.
#[derive(Debug, Default)]
pub struct StreamCounters {
    open: AtomicI64,
    opened: [AtomicU64; CODE_NAMES.len()],
}

impl StreamCounters {
    /// Counts a stream as opened with `code` (0 for OK).
    pub fn opened(&self, code: i32) {
        self.opened[code_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream as open until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(self))
    }

    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Opened streams by status code, for the codes seen.
    pub fn by_code(&self) -> Vec<(&'static str, u64)> {
        read_codes(&self.opened)
    }
}

/// One open stream; dropping it counts the stream as closed.
#[derive(Debug)]
pub struct OpenStream(Arc<StreamCounters>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the balancer counts (see the module doc).
#[derive(Debug, Default)]
pub struct BalancerCounters {
    /// Discovery requests by method, then by status code.
    requests: [[AtomicU64; CODE_NAMES.len()]; 2],
    latency: [LatencyHistogram; 2],
    /// `grpc.lb.v1.LoadBalancer/BalanceLoad` streams.
    pub grpclb: Arc<StreamCounters>,
    /// ADS (`StreamAggregatedResources`) streams.
    pub ads: Arc<StreamCounters>,
    /// Locations handed out by `DiscoverTopServices`, by (scope, service). A service gets an
    /// entry on its first hand-out, so only services with locations in the registry appear.
    hand_outs: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
    /// Registry views the balancer applied (the first load and every change after it).
    registry_updates: AtomicU64,
    /// Whether the last view applied was stale (its backend unreachable, or not loaded yet).
    registry_stale: AtomicBool,
}

impl BalancerCounters {
    /// Counts one discovery request answered with `code` after `took`.
    pub fn discovery(&self, method: DiscoveryMethod, code: i32, took: Duration) {
        self.requests[method as usize][code_index(code)].fetch_add(1, Ordering::Relaxed);
        self.latency[method as usize].observe(took);
    }

    /// Discovery requests of `method` by status code, for the codes seen; OK always.
    pub fn requests(&self, method: DiscoveryMethod) -> Vec<(&'static str, u64)> {
        read_codes(&self.requests[method as usize])
    }

    pub fn latency(&self, method: DiscoveryMethod) -> HistogramSnapshot {
        self.latency[method as usize].snapshot()
    }

    /// The hand-out counter of a service (made on first use).
    pub fn hand_out_counter(&self, scope: &str, service: &str) -> Arc<AtomicU64> {
        let mut counters = self
            .hand_outs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            counters
                .entry((scope.to_owned(), service.to_owned()))
                .or_default(),
        )
    }

    /// Hand-outs so far by (scope, service), sorted.
    pub fn hand_outs(&self) -> Vec<((String, String), u64)> {
        let counters = self
            .hand_outs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = counters
            .iter()
            .map(|(key, count)| (key.clone(), count.load(Ordering::Relaxed)))
            .collect();
        all.sort();
        all
    }

    pub(crate) fn registry_applied(&self, stale: bool) {
        self.registry_updates.fetch_add(1, Ordering::Relaxed);
        self.registry_stale.store(stale, Ordering::Relaxed);
    }

    /// Registry views applied so far.
    pub fn registry_updates(&self) -> u64 {
        self.registry_updates.load(Ordering::Relaxed)
    }

    /// Whether the registry the balancer follows is stale now.
    pub fn registry_stale(&self) -> bool {
        self.registry_stale.load(Ordering::Relaxed)
    }
}

fn code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|&c| c < CODE_NAMES.len())
        .unwrap_or(2) // UNKNOWN
}

fn read_codes(counts: &[AtomicU64; CODE_NAMES.len()]) -> Vec<(&'static str, u64)> {
    counts
        .iter()
        .zip(CODE_NAMES)
        .enumerate()
        .map(|(i, (count, name))| (i, name, count.load(Ordering::Relaxed)))
        .filter(|&(i, _, count)| i == 0 || count > 0)
        .map(|(_, name, count)| (name, count))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_each_bound_once_and_end_at_infinity() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(30));
        histogram.observe(Duration::from_micros(50)); // on a bound: counts in it
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let read = histogram.snapshot();
        assert_eq!(read.count, 4);
        assert_eq!(read.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(read.buckets[0], (0.00005, 2));
        assert_eq!(read.buckets[6], (0.005, 1));
        assert_eq!(read.buckets[14], (2.5, 0));
        assert_eq!(read.buckets[15], (f64::INFINITY, 1));
        assert!((read.sum - 10.00308).abs() < 1e-9, "{}", read.sum);
    }

    #[test]
    fn codes_seen_are_listed_ok_always_and_unknown_numbers_as_unknown() {
        let counters = BalancerCounters::default();
        let m = DiscoveryMethod::DiscoverTopServices;
        assert_eq!(counters.requests(m), [("OK", 0)]);
        counters.discovery(m, 3, Duration::ZERO);
        counters.discovery(m, 99, Duration::ZERO);
        counters.discovery(m, 0, Duration::ZERO);
        assert_eq!(
            counters.requests(m),
            [("OK", 1), ("UNKNOWN", 1), ("INVALID_ARGUMENT", 1)]
        );
        assert_eq!(
            counters.requests(DiscoveryMethod::DiscoverServices),
            [("OK", 0)]
        );
    }

    #[test]
    fn open_streams_are_counted_until_dropped() {
        let streams = Arc::new(StreamCounters::default());
        let first = streams.track();
        let second = streams.track();
        assert_eq!(streams.open(), 2);
        drop(first);
        assert_eq!(streams.open(), 1);
        drop(second);
        assert_eq!(streams.open(), 0);
    }
}
