//! Which location is best: a trait, and the C# Quaestor's order as the default.

use std::cmp::Ordering;
use std::time::Duration;

use crate::registry::ServiceLocation;

/// What a ranking knows of one candidate location.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub location: &'a ServiceLocation,
    /// < 0: not set.
    pub known_load_rate: f64,
    /// Requests in flight as last reported, plus those handed out since (anti-herding).
    pub current_requests: i64,
    /// < 0: unknown; 0 is never a candidate.
    pub capacity: i64,
    /// Σ current / Σ capacity over every location on this candidate's host.
    pub host_utilization: f64,
    /// How long a request takes there (Little's law), when known for every candidate.
    pub request_time: Option<Duration>,
}

impl Candidate<'_> {
    /// current / capacity; an unknown capacity counts as 1.
    pub fn utilization(&self) -> f64 {
        self.current_requests as f64 / self.capacity.max(1) as f64
    }
}

/// Orders candidates, best first. Implementations must be total orders, and the order of two
/// candidates with the same host utilisation must not depend on its value: the balancer keeps
/// each host's locations in order while the host's utilisation changes (see
/// [`super::standings`]).
pub trait Ranking: Send + Sync + std::fmt::Debug {
    fn compare(&self, a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering;
}

/// The C# `LoadReportComparer` order: known load rate (when both have one), then host
/// utilisation, then the location's own current/capacity, then host name (ignoring case),
/// then port. Where the C# order would fall back to host name and port, two equally loaded
/// locations whose request times are known go fastest first (a 40 ms worker before a 120 ms
/// one; without traffic no time is known, and the C# order stands). The balancer hands it
/// candidates that all have a known load rate or none does, and likewise a request time (see
/// [`super::standings::Standings::rebuild`]), which makes it a total order.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuaestorRanking;

impl Ranking for QuaestorRanking {
    fn compare(&self, a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
        let by_rate = if a.known_load_rate >= 0.0 && b.known_load_rate >= 0.0 {
            a.known_load_rate.total_cmp(&b.known_load_rate)
        } else {
            Ordering::Equal
        };
        by_rate
            .then_with(|| a.host_utilization.total_cmp(&b.host_utilization))
            .then_with(|| a.utilization().total_cmp(&b.utilization()))
            .then_with(|| match (a.request_time, b.request_time) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => Ordering::Equal,
            })
            .then_with(|| ignoring_case(&a.location.host, &b.location.host))
            .then_with(|| a.location.port.cmp(&b.location.port))
    }
}

/// Compares host names ignoring (ASCII) case, without allocating: this runs for every
/// comparison of a sort.
fn ignoring_case(a: &str, b: &str) -> Ordering {
    let a = a.bytes().map(|byte| byte.to_ascii_lowercase());
    a.cmp(b.bytes().map(|byte| byte.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16) -> ServiceLocation {
        ServiceLocation::new("", "Worker", host, port).expect("valid")
    }

    fn candidate(
        location: &ServiceLocation,
        rate: f64,
        current: i64,
        capacity: i64,
        host: f64,
    ) -> Candidate<'_> {
        Candidate {
            location,
            known_load_rate: rate,
            current_requests: current,
            capacity,
            host_utilization: host,
            request_time: None,
        }
    }

    #[test]
    fn the_csharp_order() {
        let (a, b) = (at("a", 1), at("b", 1));
        let rank = |x: &Candidate<'_>, y: &Candidate<'_>| QuaestorRanking.compare(x, y);
        // Known load rate first, when both have one, whatever else says.
        assert_eq!(
            rank(
                &candidate(&a, 0.1, 9, 10, 0.9),
                &candidate(&b, 0.2, 0, 10, 0.0)
            ),
            Ordering::Less
        );
        // One without a rate: fall through to host utilisation.
        assert_eq!(
            rank(
                &candidate(&a, -1.0, 0, 10, 0.9),
                &candidate(&b, 0.2, 0, 10, 0.1)
            ),
            Ordering::Greater
        );
        // Then the location's own utilisation.
        assert_eq!(
            rank(
                &candidate(&a, -1.0, 1, 2, 0.5),
                &candidate(&b, -1.0, 1, 4, 0.5)
            ),
            Ordering::Greater
        );
        // Then host name, ignoring case, then port.
        let (upper, lower) = (at("B", 1), at("a", 2));
        assert_eq!(
            rank(
                &candidate(&upper, -1.0, 0, 1, 0.0),
                &candidate(&lower, -1.0, 0, 1, 0.0)
            ),
            Ordering::Greater
        );
        let (p1, p2) = (at("h", 1), at("h", 2));
        assert_eq!(
            rank(
                &candidate(&p1, -1.0, 0, 1, 0.0),
                &candidate(&p2, -1.0, 0, 1, 0.0)
            ),
            Ordering::Less
        );
    }

    #[test]
    fn equally_loaded_locations_go_fastest_first() {
        let (slow, fast) = (at("a", 1), at("b", 2));
        let timed = |location, millis| Candidate {
            request_time: Some(Duration::from_millis(millis)),
            ..candidate(location, -1.0, 1, 4, 0.5)
        };
        assert_eq!(
            QuaestorRanking.compare(&timed(&slow, 120), &timed(&fast, 40)),
            Ordering::Greater
        );
        // Less loaded still goes first, however slow.
        let idle_slow = Candidate {
            current_requests: 0,
            ..timed(&slow, 120)
        };
        assert_eq!(
            QuaestorRanking.compare(&idle_slow, &timed(&fast, 40)),
            Ordering::Less
        );
    }

    #[test]
    fn unknown_capacity_counts_as_one() {
        let a = at("a", 1);
        assert_eq!(candidate(&a, -1.0, 3, -1, 0.0).utilization(), 3.0);
        assert_eq!(candidate(&a, -1.0, 3, 4, 0.0).utilization(), 0.75);
    }
}
