//! The look-aside balancer: follows a registry, monitors every location in the background and
//! answers "which worker?" from memory.
//!
//! - [`monitor`]: what is known of each location (health, load, liveness, hand-outs);
//!   [`probe`] keeps it current (load pushed by quaestor reporters, else health Watch and load
//!   polls) over [`connections`] shared per control endpoint; [`request_time`] estimates how
//!   long a location's requests take.
//! - [`ranking`]: the order of candidates; the C# Quaestor's by default.
//! - [`discovery`]: `Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc` over a [`Balancer`].
//! - [`grpclb`]: `grpc.lb.v1.LoadBalancer`, for stock gRPC clients with the grpclb policy.
//! - [`xds`]: `envoy.service.discovery.v3.AggregatedDiscoveryService`, for stock gRPC clients
//!   with an `xds:///SERVICE` target.
//! - [`counters`]: what it counts as it serves (requests, latency, streams, hand-outs), read
//!   by [`crate::http`] for `/metrics`.
//!
//! Anti-herding, as the C# Quaestor does it: every location of a `discover_top` answer counts
//! as one more request, on itself and on its host, until a load report taken late enough
//! after the hand-out to include the client's call ([`monitor::CLIENT_ALLOWANCE`]; a pushed
//! update that shows the call begin takes it in at once), or until `recently_used_timeout`
//! passes. Choosing plus counting happen under one lock per service, so simultaneous clients
//! spread over equal workers. Each service's ranking is kept between requests (see
//! [`Balancer::discover_top`] and [`standings`]) for services that have locations, at most
//! [`MAX_CACHED_RANKINGS`] of them.

pub mod connections;
pub mod counters;
pub mod discovery;
pub mod grpclb;
pub mod monitor;
mod probe;
pub mod ranking;
pub mod request_time;
pub mod standings;
pub mod xds;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::registry::{
    LocationError, RegistryReader, RegistryView, ServiceLocation, check_service_names,
};
use crate::server::GrpcServer;
use crate::server::health::HealthState;
use crate::tls::ClientTls;
use counters::BalancerCounters;
use monitor::{Connections, Monitored, ProbeState};
use ranking::{QuaestorRanking, Ranking};
use standings::{HostLoad, Located, Standing, Standings};

/// The most a location is repeated in a weighted list.
pub const MAX_WEIGHT: u32 = 10;

/// How the balancer probes and counts.
#[derive(Debug, Clone)]
pub struct BalancerOptions {
    /// Between two load probes of one location (`probeIntervalMs`).
    pub probe_interval: Duration,
    /// Bound of one probe; a location silent for longer is excluded
    /// (`serviceResponseTimeoutSeconds`). Also bounds the first probe round of a service.
    pub response_timeout: Duration,
    /// How long a hand-out weighs as a request without a fresh report (`recentlyUsedTimeoutSeconds`).
    pub recently_used_timeout: Duration,
    /// How to check workers that serve TLS (`https` keys).
    pub client_tls: Option<ClientTls>,
    /// The LB policy xDS clients are told to use, per service (`xdsLbPolicy`).
    pub lb_policies: xds::LbPolicies,
}

impl Default for BalancerOptions {
    fn default() -> Self {
        BalancerOptions {
            probe_interval: Duration::from_millis(1000),
            response_timeout: Duration::from_secs(2),
            recently_used_timeout: Duration::from_secs(5),
            client_tls: None,
            lb_policies: xds::LbPolicies::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("the service name must not be empty")]
    EmptyServiceName,
    /// A scope or service name that no registration may have (it would act as a key prefix).
    #[error(transparent)]
    InvalidName(#[from] LocationError),
}

/// Checks the names of a request as registrations are checked.
fn check_request(scope: &str, service: &str) -> Result<(), DiscoveryError> {
    if service.is_empty() {
        return Err(DiscoveryError::EmptyServiceName);
    }
    Ok(check_service_names(scope, service)?)
}

/// Services with this many locations or more are ranked on a blocking thread.
const RANK_ON_BLOCKING_THREAD_FROM: usize = 2000;

/// Services whose ranking is kept between requests, at most; the least recently asked for
/// goes first.
pub const MAX_CACHED_RANKINGS: usize = 1024;

/// A running balancer. Cheap to clone; dropping the last clone stops following and probing.
#[derive(Debug, Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: BalancerOptions,
    ranking: Arc<dyn Ranking>,
    table: RwLock<Table>,
    /// Connections to control endpoints, shared by the locations behind each.
    connections: Arc<Connections>,
    /// Bumped whenever a location's health or load changes, or the set of locations does.
    changes: watch::Sender<u64>,
    /// The ranking of each (scope, service) asked for; its lock makes choosing and
    /// counting a hand-out one step.
    rankings: Mutex<Rankings>,
    follower: Mutex<Option<JoinHandle<()>>>,
    /// What it counts as it serves (for metrics).
    counters: Arc<BalancerCounters>,
    /// How the registry's backend is followed (revision, resyncs), for metrics.
    registry_stats: Arc<crate::registry::RegistryStats>,
}

type Rankings = HashMap<(String, String), CachedRanking>;

#[derive(Debug)]
struct CachedRanking {
    ranking: Arc<Mutex<ServiceRanking>>,
    last_used: Instant,
}

/// A service's ranking as kept between requests.
#[derive(Debug)]
struct ServiceRanking {
    /// The balancer's change counter when it was computed.
    generation: Option<u64>,
    computed_at: Option<Instant>,
    /// Hand-outs since included.
    standings: Standings<Arc<Monitored>>,
    /// A request is ranking the service afresh.
    rebuilding: bool,
    /// How long ranking it afresh took last time.
    cost: Duration,
    /// The service's hand-outs so far (outlives the ranking: see [`BalancerCounters`]).
    hand_outs: Arc<AtomicU64>,
}

/// Clears `rebuilding` if a request that was ranking afresh ends early (its caller went away).
struct Rebuilding<'a>(&'a Mutex<ServiceRanking>);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        lock(self.0).rebuilding = false;
    }
}

impl ServiceRanking {
    /// Still good for `generation` at `now` (see [`ranking_is_fresh`]).
    fn is_fresh(&self, generation: u64, now: Instant, options: &BalancerOptions) -> bool {
        let Some(computed_at) = self.computed_at else {
            return false;
        };
        ranking_is_fresh(
            now.saturating_duration_since(computed_at),
            self.generation == Some(generation),
            options.probe_interval,
            rerank_after(self.cost),
        )
    }
}

impl Located for Arc<Monitored> {
    fn location(&self) -> &ServiceLocation {
        &self.location
    }
}

/// How stale a ranking may be when something changed, at least: a change of health or load
/// shows in `discover_top` this late or later (see [`rerank_after`]).
pub const RERANK_AFTER: Duration = Duration::from_millis(1);

/// How stale a ranking may be when something changed, at most, however large the service.
pub const RERANK_AFTER_MAX: Duration = Duration::from_millis(20);

/// A service is ranked afresh after changes at most once per this many times what ranking it
/// took: ranking costs at most 1/20 of the service's time (a core while it changes).
const RERANK_COST_FACTOR: u32 = 20;

/// How stale a ranking that took `cost` to compute may be when something changed: 20 × its
/// cost, from [`RERANK_AFTER`] (a few workers: every millisecond, so a worker's freed slot is
/// seen at once) to [`RERANK_AFTER_MAX`] (10 000 locations take milliseconds to rank).
pub fn rerank_after(cost: Duration) -> Duration {
    cost.saturating_mul(RERANK_COST_FACTOR)
        .clamp(RERANK_AFTER, RERANK_AFTER_MAX)
}

/// How stale a ranking may be when nothing changed: reports fade and hand-outs stop counting
/// as their requests end (see [`monitor::RequestTime`]), which no change announces.
pub const RANKING_MAX_AGE: Duration = Duration::from_millis(100);

/// Whether a service's ranking computed `age` ago is still good: nothing changed since
/// (`unchanged`) or it is younger than `rerank_after` (see [`rerank_after`]), and it is
/// younger than [`RANKING_MAX_AGE`] and than one probe interval.
pub fn ranking_is_fresh(
    age: Duration,
    unchanged: bool,
    probe_interval: Duration,
    rerank_after: Duration,
) -> bool {
    age < probe_interval.min(RANKING_MAX_AGE) && (unchanged || age < rerank_after)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Table {
    /// The registry as last seen, keyed like it.
    locations: BTreeMap<String, Arc<Monitored>>,
    /// Every location on a host, for host utilisation.
    by_host: HashMap<String, Vec<Arc<Monitored>>>,
}

/// A location and what the balancer knows of it (for status and tests).
#[derive(Debug, Clone)]
pub struct LocationStatus {
    pub location: ServiceLocation,
    pub state: ProbeState,
    pub healthy: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(follower) = self
            .follower
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            follower.abort();
        }
    }
}

impl Balancer {
    /// Follows `registry` and monitors its locations, ranking with the C# order.
    pub fn start<R: RegistryReader + Send + Sync + 'static>(
        registry: R,
        options: BalancerOptions,
    ) -> Self {
        Self::with_ranking(registry, options, Box::new(QuaestorRanking))
    }

    pub fn with_ranking<R: RegistryReader + Send + Sync + 'static>(
        registry: R,
        options: BalancerOptions,
        ranking: Box<dyn Ranking>,
    ) -> Self {
        let inner = Arc::new(Inner {
            options,
            ranking: Arc::from(ranking),
            table: RwLock::new(Table::default()),
            connections: Arc::default(),
            changes: watch::Sender::new(0),
            rankings: Mutex::new(HashMap::new()),
            follower: Mutex::new(None),
            counters: Arc::default(),
            registry_stats: registry.publisher().stats(),
        });
        let mut views = registry.subscribe();
        inner.apply(&views.borrow_and_update());
        let weak = Arc::downgrade(&inner);
        let follower = tokio::spawn(async move {
            // Holds the registry (an etcd reader stops when dropped) for as long as it follows.
            let _registry = registry;
            while views.changed().await.is_ok() {
                let Some(inner) = weak.upgrade() else { return };
                inner.apply(&views.borrow_and_update());
            }
        });
        *inner
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(follower);
        Balancer { inner }
    }

    pub fn options(&self) -> &BalancerOptions {
        &self.inner.options
    }

    /// Healthy locations of a service, in random order; `max_count` ≤ 0 means all.
    pub async fn discover(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<ServiceLocation>, DiscoveryError> {
        let mut candidates = self.candidates(scope, service).await?;
        let now = Instant::now();
        let liveness = self.liveness_window();
        candidates.retain(|m| m.with_state(|s| s.is_healthy(now, liveness)));
        fastrand::shuffle(&mut candidates);
        truncate(&mut candidates, max_count);
        Ok(candidates.iter().map(|m| m.location.clone()).collect())
    }

    /// Healthy locations that report load with capacity ≠ 0, best first; `max_count` ≤ 0
    /// means all. Every location returned counts as handed out (as in the C# Quaestor).
    ///
    /// The service's ranking is kept between requests: recomputed when something changed (at
    /// most every [`rerank_after`] its cost, and at least every [`RANKING_MAX_AGE`]), and adjusted in place
    /// for each hand-out in between (on the location and on its host, see [`standings`]), so a
    /// request costs O(log n), not a sort of n locations. A service without locations is
    /// answered without keeping anything.
    pub async fn discover_top(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<ServiceLocation>, DiscoveryError> {
        check_request(scope, service)?;
        let limit = usize::try_from(max_count).ok().filter(|&n| n > 0);
        let cached = match self.cached_ranking(scope, service) {
            Some(cached) => cached,
            None if self.locations_of(scope, service).is_empty() => return Ok(Vec::new()),
            None => self.ranking_of(scope, service),
        };
        {
            let mut ranking = lock(&cached);
            let fresh = ranking.is_fresh(
                *self.inner.changes.borrow(),
                Instant::now(),
                &self.inner.options,
            );
            // While another request ranks afresh, the ranking it replaces still serves.
            if fresh || (ranking.rebuilding && ranking.computed_at.is_some()) {
                return Ok(self.hand_out(&mut ranking, limit));
            }
            ranking.rebuilding = true;
        }
        let rebuilding = Rebuilding(&cached);
        let candidates = self.candidates(scope, service).await?;
        let generation = *self.inner.changes.borrow();
        // Ranked outside the lock: at 10 000 locations this takes milliseconds, at 50 000 a
        // hundred or more, which a large service spends on a blocking thread rather than
        // on a worker of the runtime that answers requests and follows the monitors.
        let (standings, now, cost) = if candidates.len() >= RANK_ON_BLOCKING_THREAD_FROM {
            let balancer = self.clone();
            tokio::task::spawn_blocking(move || balancer.timed_rank(&candidates))
                .await
                .unwrap_or_else(|failed| std::panic::resume_unwind(failed.into_panic()))
        } else {
            self.timed_rank(&candidates)
        };
        let mut ranking = lock(&cached);
        ranking.standings = standings;
        ranking.cost = cost;
        ranking.generation = Some(generation);
        ranking.computed_at = Some(now);
        ranking.rebuilding = false;
        let chosen = self.hand_out(&mut ranking, limit);
        drop(ranking);
        drop(rebuilding);
        Ok(chosen)
    }

    /// The best `limit` of a service's ranking; each counts as handed out and moves to its
    /// new place.
    fn hand_out(&self, ranking: &mut ServiceRanking, limit: Option<usize>) -> Vec<ServiceLocation> {
        let now = Instant::now();
        let window = self.inner.options.recently_used_timeout;
        let chosen: Vec<ServiceLocation> = ranking
            .standings
            .hand_out_best(limit)
            .into_iter()
            .map(|m| {
                m.handed_out(now, window);
                m.location.clone()
            })
            .collect();
        ranking
            .hand_outs
            .fetch_add(chosen.len() as u64, Ordering::Relaxed);
        chosen
    }

    /// The ranked healthy locations of a service, without counting a hand-out.
    pub fn ranked(&self, scope: &str, service: &str) -> Vec<ServiceLocation> {
        if check_request(scope, service).is_err() {
            return Vec::new();
        }
        let candidates = self.locations_of(scope, service);
        self.rank(&candidates, Instant::now())
            .best(None)
            .iter()
            .map(|s| s.key.location.clone())
            .collect()
    }

    /// Every healthy location of a service with room for another request, with a weight, best
    /// first, for balancing protocols that express load by repetition (grpclb); see
    /// [`weights`]. A location that reports no load weighs 1; a saturated one (as many
    /// requests as its capacity) is left out while others have room.
    pub fn weighted(&self, scope: &str, service: &str) -> Vec<(ServiceLocation, u32)> {
        if check_request(scope, service).is_err() {
            return Vec::new();
        }
        let now = Instant::now();
        let window = self.inner.options.recently_used_timeout;
        let liveness = self.liveness_window();
        let candidates = self.locations_of(scope, service);
        let standings = self.rank(&candidates, now);
        let ranked: Vec<WeightInput> = standings
            .best(None)
            .iter()
            .map(|s| WeightInput {
                capacity: s.capacity,
                current_requests: s.current_requests,
                request_time: s.key.with_state(|state| state.request_time()),
            })
            .collect();
        let mut weighted: Vec<(ServiceLocation, u32)> = standings
            .best(None)
            .iter()
            .map(|s| s.key.location.clone())
            .zip(weights(&ranked))
            .filter(|(_, weight)| *weight > 0)
            .collect();
        let ranked: HashSet<*const Monitored> = standings
            .best(None)
            .iter()
            .map(|s| Arc::as_ptr(&s.key))
            .collect();
        for m in &candidates {
            let unranked = !ranked.contains(&Arc::as_ptr(m));
            if unranked
                && m.with_state(|s| {
                    s.is_healthy(now, liveness) && s.current_requests(now, window).is_none()
                })
            {
                weighted.push((m.location.clone(), 1));
            }
        }
        weighted
    }

    /// Every location of a service with its state for xDS and its weight (0 for one that is
    /// not healthy or has no room; see [`Balancer::weighted`]).
    pub fn endpoints(
        &self,
        scope: &str,
        service: &str,
    ) -> Vec<(ServiceLocation, xds::EndpointStatus, u32)> {
        let weights: HashMap<ServiceLocation, u32> =
            self.weighted(scope, service).into_iter().collect();
        let now = Instant::now();
        let liveness = self.liveness_window();
        self.locations_of(scope, service)
            .iter()
            .map(|m| {
                let status = m.with_state(|s| {
                    if s.is_healthy(now, liveness) {
                        xds::EndpointStatus::Healthy
                    } else if s.health == Some(crate::server::health::ServingStatus::NotServing)
                        && s.failures == 0
                    {
                        xds::EndpointStatus::Draining
                    } else {
                        xds::EndpointStatus::Unhealthy
                    }
                });
                let weight = weights.get(&m.location).copied().unwrap_or(0);
                (m.location.clone(), status, weight)
            })
            .collect()
    }

    /// Every (scope, service) with at least one location.
    pub fn services(&self) -> std::collections::BTreeSet<(String, String)> {
        let table = self.table();
        table
            .locations
            .values()
            .map(|m| (m.location.scope.clone(), m.location.service.clone()))
            .collect()
    }

    /// Whether a service has at least one location.
    pub fn has_service(&self, scope: &str, service: &str) -> bool {
        check_request(scope, service).is_ok() && !self.locations_of(scope, service).is_empty()
    }

    /// What the balancer knows of every location of a service.
    pub fn status(&self, scope: &str, service: &str) -> Vec<LocationStatus> {
        let now = Instant::now();
        self.locations_of(scope, service)
            .iter()
            .map(|m| {
                let state = m.state();
                LocationStatus {
                    location: m.location.clone(),
                    healthy: state.is_healthy(now, self.liveness_window()),
                    state,
                }
            })
            .collect()
    }

    /// What the balancer knows of every location, in registry key order.
    pub fn all_status(&self) -> Vec<LocationStatus> {
        let now = Instant::now();
        let liveness = self.liveness_window();
        let table = self.table();
        table
            .locations
            .values()
            .map(|m| {
                let state = m.state();
                LocationStatus {
                    location: m.location.clone(),
                    healthy: state.is_healthy(now, liveness),
                    state,
                }
            })
            .collect()
    }

    /// What the balancer counted so far (requests, hand-outs, streams, registry updates).
    pub fn counters(&self) -> &Arc<BalancerCounters> {
        &self.inner.counters
    }

    /// How the registry's backend is followed: its last revision and resyncs.
    pub fn registry_stats(&self) -> &crate::registry::RegistryStats {
        &self.inner.registry_stats
    }

    /// Connections open to control endpoints (locations behind one endpoint share them).
    pub fn connection_count(&self) -> usize {
        self.inner.connections.count()
    }

    /// Services whose ranking is kept between requests (for status and tests).
    pub fn cached_rankings(&self) -> usize {
        lock(&self.inner.rankings).len()
    }

    /// Bumped whenever health, load or the set of locations changes.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The `ServiceDiscoveryGrpc` service over this balancer.
    pub fn discovery_service(&self) -> discovery::ServiceDiscoveryServer {
        discovery::service(self.clone())
    }

    /// The `grpc.lb.v1.LoadBalancer` service over this balancer; its streams end when
    /// `health` shuts down.
    pub fn grpclb_service(&self, health: HealthState) -> grpclb::GrpclbServer {
        grpclb::service(self.clone(), health)
    }

    /// A server with health (`""`, discovery (by its full and its short C# name), grpclb and
    /// ADS SERVING), discovery, grpclb, xDS (ADS) and reflection.
    pub fn server(&self, health: HealthState) -> GrpcServer {
        self.server_with(xds::XdsService::new(self.clone(), health.clone()))
    }

    /// [`Balancer::server`] with the given ADS service (see [`xds::XdsService::with_rewrite`]).
    pub fn server_with(&self, ads: xds::XdsService) -> GrpcServer {
        let health = ads.health().clone();
        for service in [
            discovery::SERVICE_NAME,
            discovery::SHORT_SERVICE_NAME,
            grpclb::SERVICE_NAME,
            xds::SERVICE_NAME,
        ] {
            health.set(service, crate::server::health::ServingStatus::Serving);
        }
        GrpcServer::new(health.clone())
            .add_service(self.discovery_service())
            .add_service(grpclb::service(self.clone(), health))
            .add_service(ads.into_server())
    }

    /// The locations of a service; the first time a service is asked for, waits (at most the
    /// response timeout) for the first probe of each of them.
    async fn candidates(
        &self,
        scope: &str,
        service: &str,
    ) -> Result<Vec<Arc<Monitored>>, DiscoveryError> {
        check_request(scope, service)?;
        let candidates = self.locations_of(scope, service);
        if candidates.iter().all(|m| m.with_state(ProbeState::probed)) {
            return Ok(candidates);
        }
        let mut changes = self.inner.changes.subscribe();
        let all_probed = async {
            while !candidates.iter().all(|m| m.with_state(ProbeState::probed)) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.inner.options.response_timeout, all_probed).await;
        Ok(candidates)
    }

    fn locations_of(&self, scope: &str, service: &str) -> Vec<Arc<Monitored>> {
        let prefix = ServiceLocation::service_prefix(scope, service);
        let table = self.table();
        table
            .locations
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, m)| Arc::clone(m))
            .collect()
    }

    /// [`Balancer::rank`] now; the ranking, when it started and what it took.
    fn timed_rank(
        &self,
        candidates: &[Arc<Monitored>],
    ) -> (Standings<Arc<Monitored>>, Instant, Duration) {
        let now = Instant::now();
        let standings = self.rank(candidates, now);
        (standings, now, now.elapsed())
    }

    /// Healthy candidates that report load with a capacity other than 0, ranked.
    fn rank(&self, candidates: &[Arc<Monitored>], now: Instant) -> Standings<Arc<Monitored>> {
        let window = self.inner.options.recently_used_timeout;
        let liveness = self.liveness_window();
        let table = self.table();
        let ranked = candidates
            .iter()
            .filter(|m| !m.is_stopped())
            .filter_map(|m| {
                m.with_state(|s| {
                    let load = s.load.filter(|_| s.is_healthy(now, liveness))?;
                    Some(Standing {
                        key: Arc::clone(m),
                        known_load_rate: load.known_load_rate,
                        current_requests: s.current_requests(now, window)?,
                        capacity: i64::from(load.capacity),
                        request_time: s.request_time(),
                    })
                })
            });
        let mut standings = Standings::new(Arc::clone(&self.inner.ranking));
        standings.rebuild(ranked, |host| {
            host_load(table.by_host.get(host), now, window)
        });
        standings
    }

    /// The kept ranking of a service, if there is one.
    fn cached_ranking(&self, scope: &str, service: &str) -> Option<Arc<Mutex<ServiceRanking>>> {
        let mut rankings = lock(&self.inner.rankings);
        let cached = rankings.get_mut(&(scope.to_owned(), service.to_owned()))?;
        cached.last_used = Instant::now();
        Some(Arc::clone(&cached.ranking))
    }

    /// The kept ranking of a service, made (and the least recently used one dropped when
    /// [`MAX_CACHED_RANKINGS`] are kept) if there is none.
    fn ranking_of(&self, scope: &str, service: &str) -> Arc<Mutex<ServiceRanking>> {
        let mut rankings = lock(&self.inner.rankings);
        let key = (scope.to_owned(), service.to_owned());
        if !rankings.contains_key(&key) && rankings.len() >= MAX_CACHED_RANKINGS {
            let oldest = rankings
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                rankings.remove(&oldest);
            }
        }
        let cached = rankings.entry(key).or_insert_with(|| CachedRanking {
            ranking: Arc::new(Mutex::new(ServiceRanking {
                generation: None,
                computed_at: None,
                standings: Standings::new(Arc::clone(&self.inner.ranking)),
                rebuilding: false,
                cost: Duration::ZERO,
                hand_outs: self.inner.counters.hand_out_counter(scope, service),
            })),
            last_used: Instant::now(),
        });
        cached.last_used = Instant::now();
        Arc::clone(&cached.ranking)
    }

    /// The registry as last seen, for reading.
    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A location that has not answered for this long is not healthy.
    fn liveness_window(&self) -> Duration {
        self.inner.options.probe_interval + self.inner.options.response_timeout
    }
}

/// Σ current (with hand-outs) and Σ capacity over the host's locations that report load.
fn host_load(locations: Option<&Vec<Arc<Monitored>>>, now: Instant, window: Duration) -> HostLoad {
    let mut total = HostLoad::default();
    for m in locations.into_iter().flatten() {
        m.with_state(|s| {
            if let Some(load) = s.load.filter(|l| l.capacity > 0) {
                total.current_requests += s.current_requests(now, window).unwrap_or(0);
                total.capacity += i64::from(load.capacity);
            }
        });
    }
    total
}

/// What a location's grpclb weight is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightInput {
    /// > 0, or ≤ 0 for unknown.
    pub capacity: i64,
    /// Requests in flight as believed now (reports plus hand-outs).
    pub current_requests: i64,
    /// How long a request takes there, once estimated.
    pub request_time: Option<Duration>,
}

/// Weights (0 to [`MAX_WEIGHT`]) in proportion to each location's expected service rate for
/// new requests: its free slots (capacity − in flight) ÷ its request time (Little's law), so
/// that a client that round-robins over the list gives a slow worker its proportional share
/// and a busy one less. A location whose request time is not known yet is taken to be as fast
/// as the median of those that are (or all alike). A saturated location (no free slot) gets 0
/// while another has room; when none has, all weigh by capacity ÷ request time. A location of
/// unknown capacity gets 1. The fastest free location weighs [`MAX_WEIGHT`].
pub fn weights(inputs: &[WeightInput]) -> Vec<u32> {
    let mut known: Vec<f64> = inputs
        .iter()
        .filter_map(|i| i.request_time.map(|t| t.as_secs_f64()))
        .collect();
    known.sort_by(f64::total_cmp);
    let typical = known.get(known.len() / 2).copied().unwrap_or(1.0);
    let any_room = inputs
        .iter()
        .any(|i| i.capacity <= 0 || i.current_requests < i.capacity);
    let rate = |input: &WeightInput| {
        let time = input.request_time.map_or(typical, |t| t.as_secs_f64());
        let slots = if any_room {
            (input.capacity - input.current_requests).max(0)
        } else {
            input.capacity
        };
        slots as f64 / time.max(f64::MIN_POSITIVE)
    };
    let fastest = inputs
        .iter()
        .filter(|i| i.capacity > 0)
        .map(rate)
        .fold(0.0, f64::max);
    inputs
        .iter()
        .map(|input| {
            if input.capacity <= 0 {
                1
            } else {
                let rate = rate(input);
                if rate <= 0.0 {
                    0
                } else {
                    let share = f64::from(MAX_WEIGHT) * rate / fastest;
                    (share.round() as u32).clamp(1, MAX_WEIGHT)
                }
            }
        })
        .collect()
}

fn truncate<T>(items: &mut Vec<T>, max_count: i32) {
    if max_count > 0 {
        items.truncate(max_count as usize);
    }
}

impl Inner {
    /// Brings the monitors in line with the registry: new locations start being probed,
    /// departed ones stop, changed ones (e.g. a new control endpoint) start over.
    fn apply(&self, view: &RegistryView) {
        self.counters.registry_applied(view.stale);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let before = table.locations.len();
        // Services whose set of locations changed: their kept rankings go (they hold the
        // departed locations), and are made afresh when next asked for.
        let mut touched: HashSet<(String, String)> = HashSet::new();
        table.locations.retain(|key, m| {
            let stays = view.locations.get(key).is_some_and(|l| *l == m.location);
            if !stays {
                m.stop();
                touched.insert((m.location.scope.clone(), m.location.service.clone()));
            }
            stays
        });
        let mut added = 0;
        for (key, location) in view.locations.iter() {
            if !table.locations.contains_key(key) {
                touched.insert((location.scope.clone(), location.service.clone()));
                let monitored = Monitored::start(
                    location.clone(),
                    &self.options,
                    &self.connections,
                    self.changes.clone(),
                );
                table.locations.insert(key.clone(), monitored);
                added += 1;
            }
        }
        if added > 0 || table.locations.len() != before {
            let mut by_host: HashMap<String, Vec<Arc<Monitored>>> = HashMap::new();
            for m in table.locations.values() {
                by_host
                    .entry(m.location.host.clone())
                    .or_default()
                    .push(Arc::clone(m));
            }
            table.by_host = by_host;
            drop(table);
            let mut rankings = lock(&self.rankings);
            for service in &touched {
                rankings.remove(service);
            }
            drop(rankings);
            self.changes
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(capacity: i64, current: i64, millis: Option<u64>) -> WeightInput {
        WeightInput {
            capacity,
            current_requests: current,
            request_time: millis.map(Duration::from_millis),
        }
    }

    #[test]
    fn weights_follow_the_service_rate_of_free_slots() {
        // Six workers of 40 ms and two of 120 ms, 4 slots each, idle: a third of the share.
        let mut fleet = vec![input(4, 0, Some(40)); 6];
        fleet.extend([input(4, 0, Some(120)); 2]);
        let weights = weights(&fleet);
        assert_eq!(weights, [10, 10, 10, 10, 10, 10, 3, 3]);
        // Busy slots count against a worker; a saturated one leaves the list.
        assert_eq!(
            super::weights(&[
                input(4, 2, Some(40)),
                input(4, 0, Some(40)),
                input(4, 4, Some(40))
            ]),
            [5, 10, 0]
        );
        // None has room: all by capacity and speed, none left out.
        assert_eq!(
            super::weights(&[input(4, 4, Some(40)), input(4, 9, Some(120))]),
            [10, 3]
        );
        // Unknown request times are taken as the median; unknown capacity weighs 1.
        assert_eq!(
            super::weights(&[input(4, 0, None), input(4, 0, Some(40)), input(-1, 0, None)]),
            [10, 10, 1]
        );
        assert!(super::weights(&[]).is_empty());
    }
}
