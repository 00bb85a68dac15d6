//! How long a location's requests take, by Little's law: the time-averaged requests in flight
//! divided by the arrival rate, W = L / λ.
//!
//! - A location that pushes its load (quaestor's LoadPush) says how many requests started
//!   between two updates and how many are in flight at each: both λ and the time-average of L
//!   come from the worker itself, over all of its traffic.
//! - A location that is only polled (the C# workers) gives one in-flight figure per probe
//!   interval; the arrivals are then this balancer's own hand-outs over that interval.
//!
//! The estimate serves two ends: grpclb weighs a location by its service rate (capacity ÷
//! request time), and a polled report, up to a probe interval old, fades as its requests would
//! end. Hand-outs never stop counting because of it (see `ProbeState::current_requests`).

use std::time::{Duration, Instant};

/// The request-time estimate of one location.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTime {
    /// Arrivals per second, smoothed.
    rate: f64,
    /// Requests in flight (time-averaged over a window), smoothed.
    level: f64,
    reports: u32,
    /// The window being summed up from pushed updates.
    window: Option<Window>,
}

/// Pushed updates since the last observation: ∫ in-flight dt and the arrivals.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    last: Instant,
    in_flight: i64,
    area: f64,
    arrivals: u64,
}

impl RequestTime {
    /// Weight of the newest observation in the smoothed figures.
    const SMOOTHING: f64 = 0.2;
    /// Observations before the estimate is used.
    const SETTLED_AFTER: u32 = 3;
    /// Pushed updates are summed up over windows of at least this long.
    pub const PUSH_WINDOW: Duration = Duration::from_millis(250);
    /// The estimate's bounds.
    pub const SHORTEST: Duration = Duration::from_millis(5);
    pub const LONGEST: Duration = Duration::from_secs(60);

    /// One observation: `in_flight` requests on average over `interval`, during which
    /// `arrived` requests began.
    pub fn observe(&mut self, interval: Duration, arrived: u64, in_flight: f64) {
        let seconds = interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let rate = arrived as f64 / seconds;
        let level = in_flight.max(0.0);
        if self.reports == 0 {
            (self.rate, self.level) = (rate, level);
        } else {
            self.rate += Self::SMOOTHING * (rate - self.rate);
            self.level += Self::SMOOTHING * (level - self.level);
        }
        self.reports = self.reports.saturating_add(1);
    }

    /// A pushed update at `now`: `arrived` requests began since the previous one, and
    /// `in_flight` run from now on. Observes once a window of [`Self::PUSH_WINDOW`] is full.
    pub fn pushed(&mut self, now: Instant, arrived: u64, in_flight: i64) {
        let Some(window) = &mut self.window else {
            self.window = Some(Window {
                started: now,
                last: now,
                in_flight,
                area: 0.0,
                arrivals: 0,
            });
            return;
        };
        let dt = now.saturating_duration_since(window.last).as_secs_f64();
        window.area += window.in_flight.max(0) as f64 * dt;
        window.arrivals += arrived;
        window.last = now;
        window.in_flight = in_flight;
        let span = now.saturating_duration_since(window.started);
        if span >= Self::PUSH_WINDOW {
            let (arrivals, average) = (window.arrivals, window.area / span.as_secs_f64());
            *window = Window {
                started: now,
                last: now,
                in_flight,
                area: 0.0,
                arrivals: 0,
            };
            self.observe(span, arrivals, average);
        }
    }

    /// The estimated time a request takes; `None` until settled or while nothing arrives.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_follows_littles_law_once_settled() {
        let mut time = RequestTime::default();
        let second = Duration::from_secs(1);
        // 40 arrivals a second, 4 in flight: requests take 100 ms.
        time.observe(second, 40, 4.0);
        time.observe(second, 40, 4.0);
        assert_eq!(time.life(), None, "not settled after two observations");
        assert_eq!(
            time.still_running(6, second),
            6,
            "no fading without an estimate"
        );
        time.observe(second, 40, 4.0);
        assert_eq!(time.life(), Some(Duration::from_millis(100)));
        // A report one request time old: e^-1 of its requests still run.
        assert_eq!(time.still_running(10, Duration::from_millis(100)), 4);
        assert_eq!(time.still_running(10, Duration::ZERO), 10);
        // Slower requests move the estimate, smoothed.
        time.observe(second, 40, 40.0);
        let life = time.life().expect("settled");
        assert!(
            life > Duration::from_millis(100) && life < Duration::from_secs(1),
            "{life:?}"
        );
    }

    #[test]
    fn request_time_is_bounded_and_needs_arrivals() {
        let mut idle = RequestTime::default();
        for _ in 0..5 {
            idle.observe(Duration::from_secs(1), 0, 3.0);
        }
        assert_eq!(idle.life(), None, "nothing arrived: nothing to learn");
        let mut fast = RequestTime::default();
        for _ in 0..5 {
            fast.observe(Duration::from_secs(1), 1000, 0.0);
        }
        assert_eq!(fast.life(), Some(RequestTime::SHORTEST));
        let mut zero = RequestTime::default();
        zero.observe(Duration::ZERO, 10, 1.0);
        assert_eq!(zero.reports, 0, "a zero interval is no observation");
    }

    #[test]
    fn pushed_updates_average_in_flight_over_time() {
        // One request every 10 ms, each running 40 ms: 4 in flight on average, 100 a second.
        let mut time = RequestTime::default();
        let start = Instant::now();
        let mut in_flight = 0i64;
        let mut ends = std::collections::VecDeque::new();
        for tick in 0..200u64 {
            let now = start + Duration::from_millis(tick * 10);
            while ends.front().is_some_and(|end| *end <= now) {
                ends.pop_front();
                in_flight -= 1;
            }
            in_flight += 1;
            ends.push_back(now + Duration::from_millis(40));
            time.pushed(now, 1, in_flight);
        }
        let life = time.life().expect("settled after 2 s of updates");
        assert!(
            (Duration::from_millis(35)..=Duration::from_millis(45)).contains(&life),
            "{life:?}"
        );
    }
}
