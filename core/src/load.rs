//! The load of one service inside a worker: what `ReportLoad` answers for it.
//!
//! [`ServiceLoad`] is shared by the worker's request handlers (which count requests) and the
//! reporter (which reads snapshots). The request path is one atomic read-modify-write and no
//! lock: [`ServiceLoad::start_request`] and [`ServiceLoad::end_request`] each touch a single
//! `AtomicU64`. Everything that costs more (reading the clock, the process CPU time, the host's
//! memory) happens when a report is taken, not when a request starts or ends.
//!
//! # Change notification
//!
//! Pushed load ([`crate::reporter::push`]) waits for changes with [`ServiceLoad::changed`]
//! instead of polling. The request path pays for that with one relaxed load of an `armed`
//! flag after its read-modify-write; only when a watcher is waiting (the flag is set) does a
//! request clear the flag and wake every watcher, so a busy service wakes its watchers at most
//! once per wait, however many requests it serves meanwhile.
//!
//! Why no wake-up is lost: a watcher registers its waker, sets `armed` with a
//! read-modify-write, then reads the `requests` word and the setters' generation with
//! read-modify-writes too (`fetch_add(0)`, release). A request's read-modify-write (acquire)
//! either comes later in that word's modification order, and then synchronises with the
//! watcher's and must see `armed` set (or cleared by another waker, which woke everyone); or
//! it comes earlier, and the watcher's read sees its change and does not wait. Every write to
//! `armed` is a read-modify-write, so this also holds with several watchers.

use std::fs;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::error::{Error, ErrorKind};
use crate::proto::load_reporting::{LoadReportResponse, ServerStats};
use crate::reporter::admin::{CancellableRequest, RequestAdmin};

/// .NET ticks (100 ns since 0001-01-01 UTC) at the Unix epoch.
pub const UNIX_EPOCH_DOTNET_TICKS: i64 = 621_355_968_000_000_000;

/// The "not set" value of a known load rate (any negative value means the same).
pub const LOAD_RATE_NOT_SET: f64 = -1.0;

/// A time as .NET ticks, as `LoadReportResponse.timestamp_ticks` carries it.
pub fn dotnet_ticks(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => UNIX_EPOCH_DOTNET_TICKS.saturating_add(ticks_of(after)),
        Err(before) => UNIX_EPOCH_DOTNET_TICKS.saturating_sub(ticks_of(before.duration())),
    }
}

/// The time that .NET ticks stand for; `None` for 0 ("no change yet") and out-of-range values.
pub fn time_from_dotnet_ticks(ticks: i64) -> Option<SystemTime> {
    if ticks <= 0 {
        return None;
    }
    let since_epoch = ticks.checked_sub(UNIX_EPOCH_DOTNET_TICKS)?;
    let magnitude = Duration::from_nanos(since_epoch.unsigned_abs().checked_mul(100)?);
    if since_epoch >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

fn ticks_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos() / 100).unwrap_or(i64::MAX)
}

fn now_ticks() -> i64 {
    dotnet_ticks(SystemTime::now())
}

/// One start adds 1 to the low half (current requests) and 1 to the high half (a count of
/// starts), so that a start followed by an end still changes the word and is seen as a change.
const START: u64 = (1 << 32) | 1;
const END: u64 = 1;

/// Reports closer together than this reuse the previous CPU figure instead of dividing
/// by a tiny interval.
const MIN_CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// The load of one service, as its worker reports it.
///
/// Thread-safe; share it as `Arc<ServiceLoad>`. Request counting is lock-free.
#[derive(Debug)]
pub struct ServiceLoad {
    /// Low 32 bits: current requests (an `i32`); high 32 bits: starts so far (wrapping).
    requests: AtomicU64,
    capacity: AtomicI32,
    known_load_rate: AtomicF64,
    /// NaN: sampled from the process's CPU time at each report.
    utilization: AtomicF64,
    /// NaN: sampled from the host's memory at each report.
    memory_percent: AtomicF64,
    /// Ticks of the last change made through a setter (0: none).
    set_ticks: AtomicI64,
    /// Counts the changes made through setters (so that equal ticks still count as a change).
    set_generation: AtomicU64,
    /// Set by a watcher about to wait in [`ServiceLoad::changed`]; the next change clears it
    /// and wakes every watcher.
    armed: AtomicBool,
    changes: Notify,
    /// State of the report path only (never touched by requests).
    report: Mutex<ReportState>,
    /// The running requests started with a user name and an environment (never touched by
    /// plain requests).
    admin: RequestAdmin,
}

/// Where a [`ServiceLoad`] stood at one moment, for [`ServiceLoad::changed`]: two versions
/// differ when a request started or ended, or a setter was called, in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadVersion {
    requests: u64,
    set_generation: u64,
}

#[derive(Debug)]
struct ReportState {
    /// The `requests` word as the previous snapshot saw it.
    seen_requests: u64,
    /// Ticks at which a snapshot first saw the `requests` word change (0: never).
    requests_changed_ticks: i64,
    cpu: Option<CpuSample>,
    last_utilization: f64,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    cpu_time: Duration,
}

/// What one load report says, read from a [`ServiceLoad`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSnapshot {
    /// .NET ticks of the last load change; 0 if none.
    pub timestamp_ticks: i64,
    /// < 0: not set.
    pub known_load_rate: f64,
    pub capacity: i32,
    pub current_requests: i32,
    /// CPU use of the process, 1.0 = every core busy.
    pub server_utilization: f64,
    /// Host memory in use, 0–100.
    pub memory_usage_percent: f64,
    /// Requests started since the load was made (wrapping at 2^32; not changed by
    /// [`ServiceLoad::reset_current_requests`]). Pushed load carries it; `ReportLoad` does not.
    pub requests_started: u32,
}

impl From<LoadSnapshot> for LoadReportResponse {
    fn from(s: LoadSnapshot) -> Self {
        LoadReportResponse {
            timestamp_ticks: s.timestamp_ticks,
            known_load_rate: s.known_load_rate,
            server_stats: Some(ServerStats {
                request_capacity: s.capacity,
                current_requests: s.current_requests,
                server_utilization: s.server_utilization,
                server_memory_usage_percent: s.memory_usage_percent,
            }),
        }
    }
}

impl ServiceLoad {
    /// A service that takes `capacity` requests at once (< 0: unknown, as the C# default −1;
    /// 0: a balancer does not offer it). No request in flight, no known load rate,
    /// utilisation and memory sampled automatically. Its first report's utilisation is 0 (as
    /// a fresh C# `ServiceLoad`'s): CPU use is measured between one report and the next.
    pub fn new(capacity: i32) -> Self {
        ServiceLoad {
            requests: AtomicU64::new(0),
            capacity: AtomicI32::new(capacity),
            known_load_rate: AtomicF64::new(LOAD_RATE_NOT_SET),
            utilization: AtomicF64::new(f64::NAN),
            memory_percent: AtomicF64::new(f64::NAN),
            set_ticks: AtomicI64::new(0),
            set_generation: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            changes: Notify::new(),
            report: Mutex::new(ReportState {
                seen_requests: 0,
                requests_changed_ticks: 0,
                // No interval measured yet: the first report says 0, as a fresh C# load
                // does, and starts the first interval.
                cpu: None,
                last_utilization: 0.0,
            }),
            admin: RequestAdmin::default(),
        }
    }

    /// One more request in flight. Pair it with [`end_request`](Self::end_request), or use
    /// [`request`](Self::request) to have the end called on drop.
    #[inline]
    pub fn start_request(&self) {
        // Acquire (the same instruction as relaxed on x86-64): see the module's docs.
        self.requests.fetch_add(START, Ordering::Acquire);
        self.wake_if_armed();
    }

    /// One request fewer in flight.
    #[inline]
    pub fn end_request(&self) {
        self.requests.fetch_sub(END, Ordering::Acquire);
        self.wake_if_armed();
    }

    /// Starts a request and returns a guard that ends it when dropped, also on panic.
    #[inline]
    pub fn request(&self) -> RequestGuard<&Self> {
        self.start_request();
        RequestGuard { load: self }
    }

    /// Like [`request`](Self::request), for a guard that must own its load (e.g. moved into
    /// a spawned task).
    #[inline]
    pub fn request_owned(self: &Arc<Self>) -> RequestGuard<Arc<Self>> {
        self.start_request();
        RequestGuard {
            load: Arc::clone(self),
        }
    }

    /// Starts a request on behalf of `user_name` in `environment` that a
    /// `ProcessAdministrationGrpc/Cancel` of that same user name and environment (matched
    /// exactly) cancels. It counts as one request in flight until it is dropped or ended; see
    /// [`crate::reporter::admin`]. Costs a lock and an allocation more than
    /// [`request`](Self::request).
    pub fn start_request_as(
        self: &Arc<Self>,
        user_name: &str,
        environment: &str,
    ) -> CancellableRequest {
        CancellableRequest::start(Arc::clone(self), user_name, environment)
    }

    /// Cancels this service's running requests of exactly `user_name` and `environment` (what
    /// `Cancel` does for every service of a reporter); how many matched.
    pub fn cancel_requests(&self, user_name: &str, environment: &str) -> usize {
        self.admin.cancel(user_name, environment)
    }

    /// The registry of this service's cancellable requests.
    pub fn request_admin(&self) -> &RequestAdmin {
        &self.admin
    }

    /// Requests in flight now.
    #[inline]
    pub fn current_requests(&self) -> i32 {
        current_of(self.requests.load(Ordering::Relaxed))
    }

    /// Sets the number of requests in flight (the C# `ResetCurrentProcessCount`), e.g. for a
    /// worker that is busy with work it did not receive as requests.
    pub fn reset_current_requests(&self, count: i32) {
        // The count of starts stays: it counts requests only. The change is stamped and
        // counted by `touch` even if `count` equals the old value.
        let _ = self
            .requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                Some((word & !u64::from(u32::MAX)) | u64::from(count as u32))
            });
        self.touch();
    }

    pub fn capacity(&self) -> i32 {
        self.capacity.load(Ordering::Relaxed)
    }

    pub fn set_capacity(&self, capacity: i32) {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.touch();
    }

    /// The known load rate; negative means "not set".
    pub fn known_load_rate(&self) -> f64 {
        self.known_load_rate.load()
    }

    /// Sets a load figure the worker computes itself; balancers rank by it when every
    /// candidate has one. A negative value, NaN or infinity means "not set".
    pub fn set_known_load_rate(&self, rate: f64) {
        let rate = if rate.is_finite() && rate >= 0.0 {
            rate
        } else {
            LOAD_RATE_NOT_SET
        };
        self.known_load_rate.store(rate);
        self.touch();
    }

    /// Fixes the reported server utilisation (1.0 = all cores busy); `None` goes back to
    /// sampling this process's CPU time between two reports. NaN counts as `None`.
    pub fn set_server_utilization(&self, utilization: Option<f64>) {
        self.utilization.store(utilization.unwrap_or(f64::NAN));
        self.touch();
    }

    /// The server utilisation set with [`Self::set_server_utilization`], if one is set.
    pub fn fixed_server_utilization(&self) -> Option<f64> {
        Some(self.utilization.load()).filter(|u| !u.is_nan())
    }

    /// Fixes the reported host memory usage in percent; `None` goes back to reading it
    /// from the host at each report. NaN counts as `None`.
    pub fn set_memory_usage_percent(&self, percent: Option<f64>) {
        self.memory_percent.store(percent.unwrap_or(f64::NAN));
        self.touch();
    }

    /// [`Self::set_known_load_rate`] for a figure from outside (the bindings): `None` unsets
    /// it; anything but a finite number ≥ 0 is refused, and nothing changes.
    pub fn try_set_known_load_rate(&self, rate: Option<f64>) -> Result<(), Error> {
        match rate {
            Some(r) if !(r.is_finite() && r >= 0.0) => {
                Err(refused("known load rate", "a finite number >= 0", r))
            }
            _ => {
                self.set_known_load_rate(rate.unwrap_or(LOAD_RATE_NOT_SET));
                Ok(())
            }
        }
    }

    /// [`Self::set_server_utilization`] for a figure from outside: `None` measures again;
    /// anything but a finite number ≥ 0 is refused, and nothing changes.
    pub fn try_set_server_utilization(&self, utilization: Option<f64>) -> Result<(), Error> {
        match utilization {
            Some(u) if !(u.is_finite() && u >= 0.0) => {
                Err(refused("server utilization", "a finite number >= 0", u))
            }
            _ => {
                self.set_server_utilization(utilization);
                Ok(())
            }
        }
    }

    /// [`Self::set_memory_usage_percent`] for a figure from outside: `None` measures again;
    /// anything but a number from 0 to 100 is refused, and nothing changes.
    pub fn try_set_memory_usage_percent(&self, percent: Option<f64>) -> Result<(), Error> {
        match percent {
            Some(p) if !(0.0..=100.0).contains(&p) => {
                Err(refused("memory usage percent", "a number from 0 to 100", p))
            }
            _ => {
                self.set_memory_usage_percent(percent);
                Ok(())
            }
        }
    }

    /// The memory usage set with [`Self::set_memory_usage_percent`], if one is set.
    pub fn fixed_memory_usage_percent(&self) -> Option<f64> {
        Some(self.memory_percent.load()).filter(|p| !p.is_nan())
    }

    /// Reads the load as a report states it. Samples CPU and memory where they are not fixed.
    pub fn snapshot(&self) -> LoadSnapshot {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        let requests = self.requests.load(Ordering::Relaxed);
        if requests != report.seen_requests {
            report.seen_requests = requests;
            report.requests_changed_ticks = now_ticks();
        }

        let utilization = match self.utilization.load() {
            fixed if !fixed.is_nan() => fixed,
            _ => report.sample_cpu(),
        };
        let memory_usage_percent = match self.memory_percent.load() {
            fixed if !fixed.is_nan() => fixed,
            _ => host_memory_usage_percent().unwrap_or(0.0),
        };

        LoadSnapshot {
            timestamp_ticks: report
                .requests_changed_ticks
                .max(self.set_ticks.load(Ordering::Relaxed)),
            known_load_rate: self.known_load_rate(),
            capacity: self.capacity(),
            // A worker that ended more requests than it started must not look infinitely idle.
            current_requests: current_of(requests).max(0),
            server_utilization: utilization,
            memory_usage_percent,
            requests_started: (requests >> 32) as u32,
        }
    }

    /// Where the load stands now; pass it to [`changed`](Self::changed) to wait for the next
    /// change. Read it before taking the [`snapshot`](Self::snapshot) that it stands for, so
    /// that a change in between is seen as one.
    pub fn version(&self) -> LoadVersion {
        LoadVersion {
            requests: self.requests.load(Ordering::Acquire),
            set_generation: self.set_generation.load(Ordering::Acquire),
        }
    }

    /// Waits until the load is no longer at `seen` and returns where it stands then. Returns
    /// at once if it already moved on. Any number of tasks may wait at once; a change wakes
    /// them all. Cancel-safe.
    pub async fn changed(&self, seen: LoadVersion) -> LoadVersion {
        loop {
            // Registered before arming: a wake-up from here on is not lost (notify_waiters
            // completes every `Notified` created before it, polled or not).
            let notified = self.changes.notified();
            self.armed.swap(true, Ordering::AcqRel);
            // Read-modify-writes on purpose: they order this read against every request's
            // read-modify-write (see the module's docs).
            let now = LoadVersion {
                requests: self.requests.fetch_add(0, Ordering::AcqRel),
                set_generation: self.set_generation.fetch_add(0, Ordering::AcqRel),
            };
            if now != seen {
                return now;
            }
            notified.await;
        }
    }

    /// The request path's whole cost of change notification: one relaxed load while nobody
    /// waits.
    #[inline]
    fn wake_if_armed(&self) {
        if self.armed.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake(&self) {
        if self.armed.swap(false, Ordering::AcqRel) {
            self.changes.notify_waiters();
        }
    }

    /// After every setter: stamps the change, counts it, and wakes watchers.
    fn touch(&self) {
        self.set_ticks.store(now_ticks(), Ordering::Relaxed);
        self.set_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_if_armed();
    }
}

impl ReportState {
    fn sample_cpu(&mut self) -> f64 {
        let Some(cpu_time) = process_cpu_time() else {
            return self.last_utilization;
        };
        let now = Instant::now();
        let sample = CpuSample { at: now, cpu_time };
        let Some(previous) = self.cpu.replace(sample) else {
            return self.last_utilization;
        };
        let wall = now.saturating_duration_since(previous.at);
        if wall < MIN_CPU_SAMPLE_INTERVAL {
            self.cpu = Some(previous);
            return self.last_utilization;
        }
        let busy = cpu_time.saturating_sub(previous.cpu_time);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        self.last_utilization = busy.as_secs_f64() / wall.as_secs_f64() / cores;
        self.last_utilization
    }
}

fn current_of(word: u64) -> i32 {
    word as u32 as i32
}

/// Ends its request when dropped (also while unwinding from a panic).
#[must_use = "the request ends when the guard is dropped"]
#[derive(Debug)]
pub struct RequestGuard<L: Deref<Target = ServiceLoad>> {
    load: L,
}

impl<L: Deref<Target = ServiceLoad>> Drop for RequestGuard<L> {
    #[inline]
    fn drop(&mut self) {
        self.load.end_request();
    }
}

/// An `f64` behind an `AtomicU64`.
#[derive(Debug)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(value: f64) -> Self {
        AtomicF64(AtomicU64::new(value.to_bits()))
    }
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// User + system CPU time of this process so far.
pub fn process_cpu_time() -> Option<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().max(0) as u64)
            + Duration::from_micros(tv.tv_usec().max(0) as u64)
    };
    Some(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Memory in use on this host in percent: (MemTotal − MemAvailable) / MemTotal.
pub fn host_memory_usage_percent() -> Option<f64> {
    parse_meminfo_usage(&fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo_usage(meminfo: &str) -> Option<f64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").or_else(|| field("MemFree"))?;
    if total == 0 {
        return None;
    }
    Some(total.saturating_sub(available) as f64 * 100.0 / total as f64)
}

/// A load figure out of its range, as the bindings report it.
fn refused(what: &str, range: &str, got: f64) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("a {what} is {range} (or unset); got {got}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_guards_end_them() {
        let load = ServiceLoad::new(4);
        load.start_request();
        {
            let _a = load.request();
            let _b = load.request();
            assert_eq!(load.current_requests(), 3);
        }
        assert_eq!(load.current_requests(), 1);
        load.end_request();
        assert_eq!(load.current_requests(), 0);
    }

    #[test]
    fn guard_ends_request_when_handler_panics() {
        let load = Arc::new(ServiceLoad::new(4));
        let in_thread = Arc::clone(&load);
        let result = std::thread::spawn(move || {
            let _guard = in_thread.request_owned();
            panic!("handler failed");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(load.current_requests(), 0);
    }

    #[test]
    fn many_threads_balance_to_zero() {
        let load = Arc::new(ServiceLoad::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let load = Arc::clone(&load);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let _g = load.request();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker thread");
        }
        assert_eq!(load.current_requests(), 0);
        assert_eq!(load.snapshot().current_requests, 0);
    }

    #[test]
    fn a_start_and_end_between_reports_is_a_change() {
        let load = ServiceLoad::new(2);
        assert_eq!(load.snapshot().timestamp_ticks, 0, "no change yet");
        load.start_request();
        load.end_request();
        let first = load.snapshot().timestamp_ticks;
        assert!(first > UNIX_EPOCH_DOTNET_TICKS);
        assert_eq!(
            load.snapshot().timestamp_ticks,
            first,
            "nothing changed since"
        );
    }

    #[test]
    fn setters_stamp_and_validate() {
        let load = ServiceLoad::new(-1);
        assert_eq!(load.known_load_rate(), LOAD_RATE_NOT_SET);
        load.set_known_load_rate(0.25);
        assert_eq!(load.known_load_rate(), 0.25);
        assert!(load.snapshot().timestamp_ticks > 0);
        for bad in [f64::NAN, f64::INFINITY, -3.0] {
            load.set_known_load_rate(bad);
            assert_eq!(load.known_load_rate(), LOAD_RATE_NOT_SET);
        }
        load.set_capacity(7);
        load.set_server_utilization(Some(0.5));
        assert_eq!(load.fixed_memory_usage_percent(), None);
        load.set_memory_usage_percent(Some(12.5));
        assert_eq!(load.fixed_memory_usage_percent(), Some(12.5));
        load.reset_current_requests(3);
        let s = load.snapshot();
        assert_eq!(
            (
                s.capacity,
                s.current_requests,
                s.server_utilization,
                s.memory_usage_percent
            ),
            (7, 3, 0.5, 12.5)
        );
    }

    #[test]
    fn requests_started_counts_starts_only() {
        let load = ServiceLoad::new(2);
        load.start_request();
        load.start_request();
        load.end_request();
        load.reset_current_requests(5);
        let s = load.snapshot();
        assert_eq!((s.requests_started, s.current_requests), (2, 5));
    }

    #[tokio::test]
    async fn changed_returns_at_once_when_the_load_moved_on() {
        let load = ServiceLoad::new(2);
        let seen = load.version();
        load.start_request();
        load.end_request();
        let now = tokio::time::timeout(Duration::from_secs(5), load.changed(seen))
            .await
            .expect("a start and an end are a change");
        assert_ne!(now, seen);
        load.set_capacity(2);
        let after_setter = tokio::time::timeout(Duration::from_secs(5), load.changed(now))
            .await
            .expect("a setter is a change, even to the same value");
        assert_ne!(after_setter, now);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiting_watcher_is_woken_by_a_change_from_another_thread() {
        let load = Arc::new(ServiceLoad::new(2));
        let seen = load.version();
        let watchers: Vec<_> = (0..3)
            .map(|_| {
                let load = Arc::clone(&load);
                tokio::spawn(async move { load.changed(seen).await })
            })
            .collect();
        // Wait until all three are armed and waiting, so that the start has to wake them.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !load.armed.load(Ordering::Relaxed) || watchers.iter().any(|w| w.is_finished()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("watchers armed");
        let starter = Arc::clone(&load);
        std::thread::spawn(move || starter.start_request())
            .join()
            .expect("thread");
        for watcher in watchers {
            let now = tokio::time::timeout(Duration::from_secs(5), watcher)
                .await
                .expect("every watcher woken")
                .expect("task");
            assert_ne!(now, seen);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_kind_of_change_wakes_a_waiting_watcher() {
        type Change = fn(&ServiceLoad);
        let changes: [(&str, Change); 6] = [
            ("start", |l| l.start_request()),
            ("end", |l| l.end_request()),
            ("capacity", |l| l.set_capacity(3)),
            ("rate", |l| l.set_known_load_rate(0.5)),
            ("utilization", |l| l.set_server_utilization(Some(0.5))),
            ("reset", |l| l.reset_current_requests(0)),
        ];
        let load = Arc::new(ServiceLoad::new(2));
        for (what, change) in changes {
            // A watcher that returned leaves the flag set; clear it to see the next one arm.
            load.armed.store(false, Ordering::Relaxed);
            let seen = load.version();
            let watcher = {
                let load = Arc::clone(&load);
                tokio::spawn(async move { load.changed(seen).await })
            };
            tokio::time::timeout(Duration::from_secs(5), async {
                while !load.armed.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("watcher armed");
            let changer = Arc::clone(&load);
            std::thread::spawn(move || change(&changer))
                .join()
                .expect("thread");
            let now = tokio::time::timeout(Duration::from_secs(5), watcher)
                .await
                .unwrap_or_else(|_| panic!("{what} wakes the watcher"))
                .expect("task");
            assert_ne!(now, seen, "{what}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_following_a_busy_load_never_misses_the_last_change() {
        // A lost wake-up would leave the watcher waiting on an old version for good.
        let load = Arc::new(ServiceLoad::new(2));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let load = Arc::clone(&load);
                std::thread::spawn(move || {
                    for i in 0..100_000u32 {
                        let _g = load.request();
                        if i % 1000 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let watcher = {
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                let mut seen = load.version();
                let mut wakes = 0u64;
                while seen.requests != 200_000 << 32 {
                    seen = load.changed(seen).await;
                    wakes += 1;
                }
                wakes
            })
        };
        for thread in busy {
            thread.join().expect("thread");
        }
        let wakes = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the watcher sees the final state")
            .expect("task");
        assert!(wakes >= 1);
    }

    #[test]
    fn more_ends_than_starts_report_zero() {
        let load = ServiceLoad::new(1);
        load.end_request();
        assert_eq!(load.current_requests(), -1);
        assert_eq!(load.snapshot().current_requests, 0);
        load.start_request();
        assert_eq!(load.current_requests(), 0);
    }

    #[test]
    fn the_first_report_of_a_fresh_load_says_zero_then_cpu_is_measured() {
        // Burn CPU between construction and the first report: the C# load reports 0 then.
        let load = ServiceLoad::new(1);
        let spin_for = |time: Duration| {
            let until = Instant::now() + time;
            let mut spin = 0u64;
            while Instant::now() < until {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        };
        spin_for(Duration::from_millis(100));
        assert_eq!(load.snapshot().server_utilization, 0.0, "no interval yet");
        spin_for(Duration::from_millis(100));
        let measured = load.snapshot().server_utilization;
        assert!(
            measured > 0.0,
            "measured from the first report on: {measured}"
        );
    }

    #[test]
    fn sampled_utilization_sees_this_process_burn_cpu() {
        let load = ServiceLoad::new(1);
        let _ = load.snapshot();
        let until = Instant::now() + Duration::from_millis(200);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let utilization = load.snapshot().server_utilization;
        // One thread busy for the whole interval is 1/cores of the machine; allow for noise.
        assert!(
            utilization > 0.5 / cores && utilization <= 1.05,
            "utilization {utilization}"
        );
    }

    #[test]
    fn dotnet_ticks_round_trip() {
        assert_eq!(dotnet_ticks(UNIX_EPOCH), UNIX_EPOCH_DOTNET_TICKS);
        // 2001-09-09T01:46:40Z = 1e9 s after the epoch.
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(dotnet_ticks(t), 631_355_968_000_000_000);
        assert_eq!(time_from_dotnet_ticks(dotnet_ticks(t)), Some(t));
        assert_eq!(time_from_dotnet_ticks(0), None);
    }

    #[test]
    fn memory_usage_from_meminfo() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo_usage(text), Some(75.0));
        assert_eq!(parse_meminfo_usage("MemTotal: 0 kB\nMemFree: 0 kB\n"), None);
        assert_eq!(parse_meminfo_usage("garbage"), None);
        let real = host_memory_usage_percent().expect("/proc/meminfo on Linux");
        assert!((0.0..=100.0).contains(&real));
    }
}
