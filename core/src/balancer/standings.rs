//! A service's ranking as kept between requests.
//!
//! Locations are grouped by host: each host keeps its locations in ranking order, and the hosts
//! are kept in the order of their best location (with the host's own utilisation). A hand-out
//! counts one request on the best location *and* on its host, then moves both to their new
//! places: O(log n) per request, and the next request already sees the host as busier, which is
//! the ranking's first key after the known load rate.
//!
//! The structure knows nothing of time or probes: the balancer fills it from its monitors and
//! real time, the balancing benchmark from simulated time.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::ranking::{Candidate, Ranking};
use crate::load::LOAD_RATE_NOT_SET;
use crate::registry::ServiceLocation;

/// What a ranked entry stands for: anything that knows its location.
pub trait Located: Clone {
    fn location(&self) -> &ServiceLocation;
}

impl Located for ServiceLocation {
    fn location(&self) -> &ServiceLocation {
        self
    }
}

/// One location and the figures it is ranked by.
#[derive(Debug, Clone)]
pub struct Standing<K> {
    pub key: K,
    /// < 0: not set.
    pub known_load_rate: f64,
    /// Requests in flight as last reported, plus hand-outs still counted.
    pub current_requests: i64,
    /// > 0, or < 0 for unknown; capacity 0 is never ranked.
    pub capacity: i64,
    /// How long a request takes there, if estimated.
    pub request_time: Option<Duration>,
}

/// The requests in flight and the capacity of every location on one host that reports load
/// (all services), for host utilisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLoad {
    pub current_requests: i64,
    pub capacity: i64,
}

impl HostLoad {
    pub fn utilization(self) -> f64 {
        if self.capacity <= 0 {
            0.0
        } else {
            self.current_requests as f64 / self.capacity as f64
        }
    }
}

/// A service's locations in ranking order, best first.
#[derive(Debug)]
pub struct Standings<K> {
    ranking: Arc<dyn Ranking>,
    hosts: Vec<Host<K>>,
    /// Hosts by their best location.
    order: BTreeSet<HostSeat<K>>,
}

#[derive(Debug)]
struct Host<K> {
    load: HostLoad,
    seats: BTreeSet<Seat<K>>,
    /// How the host sits in `order` now (to take it out again).
    seated_as: Option<HostSeat<K>>,
}

/// A location in its host's order. Within one host every candidate has the same host
/// utilisation, so the order is taken with 0 there and holds whatever the host's load becomes.
#[derive(Debug, Clone)]
struct Seat<K> {
    ranking: Arc<dyn Ranking>,
    standing: Standing<K>,
    /// Unique within the standings: the last tie-break, so no two seats are equal.
    id: usize,
}

/// A host in the order of hosts: its best seat, ranked with the host's utilisation.
#[derive(Debug, Clone)]
struct HostSeat<K> {
    best: Seat<K>,
    utilization: f64,
    host: usize,
}

impl<K: Located> Seat<K> {
    fn candidate(&self, host_utilization: f64) -> Candidate<'_> {
        Candidate {
            location: self.standing.key.location(),
            known_load_rate: self.standing.known_load_rate,
            current_requests: self.standing.current_requests,
            capacity: self.standing.capacity,
            host_utilization,
            request_time: self.standing.request_time,
        }
    }
}

impl<K: Located> Ord for Seat<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ranking
            .compare(&self.candidate(0.0), &other.candidate(0.0))
            .then(self.id.cmp(&other.id))
    }
}
impl<K: Located> PartialOrd for Seat<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Located> PartialEq for Seat<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Located> Eq for Seat<K> {}

impl<K: Located> HostSeat<K> {
    fn candidate(&self) -> Candidate<'_> {
        self.best.candidate(self.utilization)
    }
}

impl<K: Located> Ord for HostSeat<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.best
            .ranking
            .compare(&self.candidate(), &other.candidate())
            .then(self.host.cmp(&other.host))
    }
}
impl<K: Located> PartialOrd for HostSeat<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Located> PartialEq for HostSeat<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Located> Eq for HostSeat<K> {}

impl<K: Located> Standings<K> {
    pub fn new(ranking: Arc<dyn Ranking>) -> Self {
        Standings {
            ranking,
            hosts: Vec::new(),
            order: BTreeSet::new(),
        }
    }

    /// Ranks `standings` afresh (capacity 0 left out); `host_load` gives the load of each host
    /// they are on. The known load rate is compared only when every location reports one:
    /// C# compared it only when both of two did, which is no order at all in a mixed fleet.
    pub fn rebuild(
        &mut self,
        standings: impl IntoIterator<Item = Standing<K>>,
        mut host_load: impl FnMut(&str) -> HostLoad,
    ) {
        let mut standings: Vec<Standing<K>> =
            standings.into_iter().filter(|s| s.capacity != 0).collect();
        if standings.iter().any(|s| s.known_load_rate < 0.0) {
            for standing in &mut standings {
                standing.known_load_rate = LOAD_RATE_NOT_SET;
            }
        }
        // Likewise request times: compared only when every location has one.
        if standings.iter().any(|s| s.request_time.is_none()) {
            for standing in &mut standings {
                standing.request_time = None;
            }
        }
        self.hosts.clear();
        self.order.clear();
        let mut host_index: HashMap<String, usize> = HashMap::new();
        for (id, standing) in standings.into_iter().enumerate() {
            let host_name = &standing.key.location().host;
            let host = match host_index.get(host_name) {
                Some(&host) => host,
                None => {
                    self.hosts.push(Host {
                        load: host_load(host_name),
                        seats: BTreeSet::new(),
                        seated_as: None,
                    });
                    host_index.insert(host_name.clone(), self.hosts.len() - 1);
                    self.hosts.len() - 1
                }
            };
            self.hosts[host].seats.insert(Seat {
                ranking: Arc::clone(&self.ranking),
                standing,
                id,
            });
        }
        for host in 0..self.hosts.len() {
            self.reseat(host);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn len(&self) -> usize {
        self.hosts.iter().map(|h| h.seats.len()).sum()
    }

    /// The best `limit` locations, best first (all of them for `None`).
    pub fn best(&self, limit: Option<usize>) -> Vec<&Standing<K>> {
        self.best_seats(limit)
            .into_iter()
            .map(|(_, seat)| &seat.standing)
            .collect()
    }

    /// The best `limit` seats with their hosts, best first.
    fn best_seats(&self, limit: Option<usize>) -> Vec<(usize, &Seat<K>)> {
        let limit = limit.unwrap_or(usize::MAX);
        if limit == 1 {
            return self
                .order
                .first()
                .map(|h| (h.host, &h.best))
                .into_iter()
                .collect();
        }
        // Every location of a host ranks below that host's best one, so the best `limit`
        // are among the best `limit` of the first `limit` hosts.
        let mut candidates: Vec<(usize, &Seat<K>, f64)> = self
            .order
            .iter()
            .take(limit)
            .flat_map(|h| {
                let host = &self.hosts[h.host];
                let utilization = host.load.utilization();
                host.seats
                    .iter()
                    .take(limit)
                    .map(move |seat| (h.host, seat, utilization))
            })
            .collect();
        let ranking = &self.ranking;
        candidates.sort_by(|(_, a, ua), (_, b, ub)| {
            ranking
                .compare(&a.candidate(*ua), &b.candidate(*ub))
                .then(a.id.cmp(&b.id))
        });
        candidates
            .into_iter()
            .take(limit)
            .map(|(host, seat, _)| (host, seat))
            .collect()
    }

    /// Counts one request on the best location and on its host, moves both to their new
    /// places and returns that location.
    pub fn hand_out(&mut self) -> Option<K> {
        self.hand_out_best(Some(1)).pop()
    }

    /// The best `limit` locations (all for `None`), best first; each counts one request, on
    /// itself and on its host, and moves to its new place.
    pub fn hand_out_best(&mut self, limit: Option<usize>) -> Vec<K> {
        let chosen: Vec<(usize, Seat<K>)> = self
            .best_seats(limit)
            .into_iter()
            .map(|(host, seat)| (host, seat.clone()))
            .collect();
        let mut touched = vec![false; self.hosts.len()];
        let mut keys = Vec::with_capacity(chosen.len());
        for (host, seat) in chosen {
            let entry = &mut self.hosts[host];
            let Some(mut seat) = entry.seats.take(&seat) else {
                continue;
            };
            seat.standing.current_requests = seat.standing.current_requests.saturating_add(1);
            keys.push(seat.standing.key.clone());
            entry.seats.insert(seat);
            entry.load.current_requests = entry.load.current_requests.saturating_add(1);
            touched[host] = true;
        }
        for host in (0..touched.len()).filter(|&host| touched[host]) {
            self.reseat(host);
        }
        keys
    }

    /// Puts `host` back into the order of hosts after its best seat or its load changed.
    fn reseat(&mut self, host: usize) {
        let entry = &mut self.hosts[host];
        if let Some(old) = entry.seated_as.take() {
            self.order.remove(&old);
        }
        let Some(best) = entry.seats.first() else {
            return;
        };
        let seat = HostSeat {
            best: best.clone(),
            utilization: entry.load.utilization(),
            host,
        };
        entry.seated_as = Some(seat.clone());
        self.order.insert(seat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::ranking::QuaestorRanking;

    fn at(host: &str, port: u16) -> ServiceLocation {
        ServiceLocation::new("", "Worker", host, port).expect("valid")
    }

    fn standing(host: &str, port: u16, current: i64, capacity: i64) -> Standing<ServiceLocation> {
        Standing {
            key: at(host, port),
            known_load_rate: LOAD_RATE_NOT_SET,
            current_requests: current,
            capacity,
            request_time: None,
        }
    }

    fn names(standings: &[&Standing<ServiceLocation>]) -> Vec<String> {
        standings
            .iter()
            .map(|s| format!("{}:{}", s.key.host, s.key.port))
            .collect()
    }

    /// The same order as sorting every candidate with its host's utilisation.
    fn sorted(
        standings: &[Standing<ServiceLocation>],
        loads: &HashMap<String, HostLoad>,
    ) -> Vec<String> {
        let mut all: Vec<&Standing<ServiceLocation>> = standings.iter().collect();
        fn candidate<'a>(
            s: &'a Standing<ServiceLocation>,
            loads: &HashMap<String, HostLoad>,
        ) -> Candidate<'a> {
            Candidate {
                location: &s.key,
                known_load_rate: s.known_load_rate,
                current_requests: s.current_requests,
                capacity: s.capacity,
                host_utilization: loads[&s.key.host].utilization(),
                request_time: s.request_time,
            }
        }
        let candidate = |s| candidate(s, loads);
        all.sort_by(|a, b| QuaestorRanking.compare(&candidate(a), &candidate(b)));
        all.iter()
            .map(|s| format!("{}:{}", s.key.host, s.key.port))
            .collect()
    }

    #[test]
    fn best_agrees_with_a_full_sort() {
        let mut rng = fastrand::Rng::with_seed(7);
        let standings: Vec<_> = (0..60)
            .map(|i| {
                let capacity = rng.i64(1..9);
                standing(
                    &format!("host-{}", i % 7),
                    5000 + i,
                    rng.i64(0..=capacity),
                    capacity,
                )
            })
            .collect();
        let mut loads: HashMap<String, HostLoad> = HashMap::new();
        for s in &standings {
            let load = loads.entry(s.key.host.clone()).or_default();
            load.current_requests += s.current_requests;
            load.capacity += s.capacity;
        }
        let mut kept = Standings::new(Arc::new(QuaestorRanking));
        kept.rebuild(standings.clone(), |host| loads[host]);
        assert_eq!(kept.len(), 60);
        let expected = sorted(&standings, &loads);
        assert_eq!(names(&kept.best(None)), expected);
        for limit in [1, 2, 5, 13] {
            assert_eq!(names(&kept.best(Some(limit))), expected[..limit]);
        }
    }

    #[test]
    fn a_hand_out_counts_on_the_location_and_on_its_host() {
        let standings = vec![
            // host a: 2 of 10 in use; its idle location is the best anywhere.
            standing("a", 1, 0, 4),
            standing("a", 2, 2, 6),
            // host b: 3 of 10 in use.
            standing("b", 1, 3, 10),
        ];
        let mut loads = HashMap::from([
            (
                "a".to_owned(),
                HostLoad {
                    current_requests: 2,
                    capacity: 10,
                },
            ),
            (
                "b".to_owned(),
                HostLoad {
                    current_requests: 3,
                    capacity: 10,
                },
            ),
        ]);
        let mut kept = Standings::new(Arc::new(QuaestorRanking));
        kept.rebuild(standings.clone(), |host| loads[host]);
        let mut handed: Vec<String> = Vec::new();
        let mut mirror = standings;
        for _ in 0..6 {
            let chosen = kept.hand_out().expect("a location");
            handed.push(format!("{}:{}", chosen.host, chosen.port));
            // Mirror it: one more request on the chosen location and on its host.
            let s = mirror.iter_mut().find(|s| s.key == chosen).expect("known");
            s.current_requests += 1;
            loads.get_mut(&chosen.host).expect("host").current_requests += 1;
            assert_eq!(names(&kept.best(None)), sorted(&mirror, &loads));
        }
        // Host a is at 0.2 and b at 0.3: a takes one (0.3 too), then the tie goes by the
        // location's own utilisation (a:1 at 1/4 against b:1 at 3/10). From then on the hosts
        // take turns as each one's utilisation passes the other's, and within host a the
        // emptier location goes first.
        assert_eq!(handed, ["a:1", "a:1", "b:1", "a:2", "b:1", "a:1"]);
    }

    #[test]
    fn a_mixed_fleet_ranks_without_load_rates() {
        // With rates, a is best (0.1) and c worst; without, the idle host wins. Some locations
        // without a rate: ranked as if none had one, a total order.
        let mut a = standing("a", 1, 9, 10);
        a.known_load_rate = 0.1;
        let b = standing("b", 1, 5, 10);
        let mut c = standing("c", 1, 0, 10);
        c.known_load_rate = 0.2;
        let loads = |host: &str| HostLoad {
            current_requests: match host {
                "a" => 9,
                "b" => 5,
                _ => 0,
            },
            capacity: 10,
        };
        let mut kept = Standings::new(Arc::new(QuaestorRanking));
        kept.rebuild(vec![a.clone(), b, c.clone()], loads);
        assert_eq!(names(&kept.best(None)), ["c:1", "b:1", "a:1"]);
        kept.rebuild(vec![a, c], loads);
        assert_eq!(names(&kept.best(None)), ["a:1", "c:1"]);
    }

    #[test]
    fn capacity_zero_is_left_out_and_empty_hands_out_nothing() {
        let mut kept = Standings::new(Arc::new(QuaestorRanking));
        kept.rebuild(vec![standing("a", 1, 0, 0)], |_| HostLoad::default());
        assert!(kept.is_empty());
        assert!(kept.best(Some(3)).is_empty());
        assert!(kept.hand_out().is_none());
    }

    #[test]
    fn every_location_of_a_top_answer_counts() {
        let mut standings = Standings::new(Arc::new(QuaestorRanking));
        standings.rebuild((0..8).map(|i| standing("h", 5000 + i, 0, 4)), |_| {
            HostLoad {
                current_requests: 0,
                capacity: 32,
            }
        });
        let first: Vec<u16> = standings
            .hand_out_best(Some(6))
            .iter()
            .map(|l| l.port)
            .collect();
        assert_eq!(first.len(), 6);
        let next: Vec<u16> = standings
            .hand_out_best(Some(2))
            .iter()
            .map(|l| l.port)
            .collect();
        assert_eq!(next.len(), 2);
        assert!(
            next.iter().all(|p| !first.contains(p)),
            "{first:?} then {next:?}"
        );
        // Every one of the eight now weighs one request: the next answer starts over.
        assert_eq!(
            standings
                .best(None)
                .iter()
                .map(|s| s.current_requests)
                .sum::<i64>(),
            8
        );
    }
}
