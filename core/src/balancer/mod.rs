//! The look-aside balancer: follows a registry, monitors every location in the background and
//! answers "which worker?" from memory.
//!
//! - [`monitor`]: one monitor per location (health Watch or Check, load polls, liveness).
//! - [`ranking`]: the order of candidates; the C# Quaestor's by default.
//! - [`discovery`]: `Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc` over a [`Balancer`].
//! - [`grpclb`]: `grpc.lb.v1.LoadBalancer`, for stock gRPC clients with the grpclb policy.
//!
//! Anti-herding: a location handed out by `discover_top` counts as one more request, on
//! itself and on its host, until its next load report, until `recently_used_timeout` passes,
//! or until the location's estimated request time has passed (a report's own requests fade
//! the same way; see [`monitor::RequestTime`]). Choosing plus counting happen under one lock
//! per service, so simultaneous clients spread over equal workers. Each service's ranking is
//! kept between requests (see [`Balancer::discover_top`] and [`standings`]).

pub mod discovery;
pub mod grpclb;
pub mod monitor;
pub mod ranking;
pub mod standings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::registry::{RegistryReader, RegistryView, ServiceLocation};
use crate::server::GrpcServer;
use crate::server::health::HealthState;
use crate::tls::ClientTls;
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
}

impl Default for BalancerOptions {
    fn default() -> Self {
        BalancerOptions {
            probe_interval: Duration::from_millis(1000),
            response_timeout: Duration::from_secs(2),
            recently_used_timeout: Duration::from_secs(5),
            client_tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("the service name must not be empty")]
    EmptyServiceName,
}

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
}

type Rankings = HashMap<(String, String), Arc<Mutex<ServiceRanking>>>;

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
        )
    }
}

impl Located for Arc<Monitored> {
    fn location(&self) -> &ServiceLocation {
        &self.location
    }
}

/// How stale a ranking may be when something changed: the bound on how late a change of
/// health or load shows in `discover_top`.
pub const RERANK_AFTER: Duration = Duration::from_millis(20);

/// How stale a ranking may be when nothing changed: reports fade and hand-outs stop counting
/// as their requests end (see [`monitor::RequestTime`]), which no change announces.
pub const RANKING_MAX_AGE: Duration = Duration::from_millis(100);

/// Whether a service's ranking computed `age` ago is still good: nothing changed since
/// (`unchanged`) or it is younger than [`RERANK_AFTER`], and it is younger than
/// [`RANKING_MAX_AGE`] and than one probe interval.
pub fn ranking_is_fresh(age: Duration, unchanged: bool, probe_interval: Duration) -> bool {
    age < probe_interval.min(RANKING_MAX_AGE) && (unchanged || age < RERANK_AFTER)
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
    /// means all. The first one counts as handed out.
    ///
    /// The service's ranking is kept between requests: recomputed when something changed (at
    /// most every [`RERANK_AFTER`], and at least every [`RANKING_MAX_AGE`]), and adjusted in place
    /// for each hand-out in between (on the location and on its host, see [`standings`]), so a
    /// request costs O(log n), not a sort of n locations.
    pub async fn discover_top(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<ServiceLocation>, DiscoveryError> {
        if service.is_empty() {
            return Err(DiscoveryError::EmptyServiceName);
        }
        let cached = self.ranking_of(scope, service);
        let limit = usize::try_from(max_count).ok().filter(|&n| n > 0);
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
        let now = Instant::now();
        let generation = *self.inner.changes.borrow();
        // Ranked outside the lock: at 10 000 locations this takes milliseconds.
        let standings = self.rank(&candidates, now);
        let mut ranking = lock(&cached);
        ranking.standings = standings;
        ranking.generation = Some(generation);
        ranking.computed_at = Some(now);
        ranking.rebuilding = false;
        let chosen = self.hand_out(&mut ranking, limit);
        drop(ranking);
        drop(rebuilding);
        Ok(chosen)
    }

    /// The best `limit` of a service's ranking; the first counts as handed out and moves to
    /// its new place.
    fn hand_out(&self, ranking: &mut ServiceRanking, limit: Option<usize>) -> Vec<ServiceLocation> {
        let chosen = ranking
            .standings
            .best(limit)
            .iter()
            .map(|s| s.key.location.clone())
            .collect();
        if let Some(first) = ranking.standings.hand_out() {
            first.handed_out(Instant::now(), self.inner.options.recently_used_timeout);
        }
        chosen
    }

    /// The ranked healthy locations of a service, without counting a hand-out (grpclb).
    pub fn ranked(&self, scope: &str, service: &str) -> Vec<ServiceLocation> {
        let candidates = self.locations_of(scope, service);
        self.rank(&candidates, Instant::now())
            .best(None)
            .iter()
            .map(|s| s.key.location.clone())
            .collect()
    }

    /// Every healthy location of a service with a weight, best first: free capacity
    /// (capacity − current, 1 to [`MAX_WEIGHT`]) for those that report load, 1 for those that
    /// do not. For balancing protocols that express load by repetition (grpclb).
    pub fn weighted(&self, scope: &str, service: &str) -> Vec<(ServiceLocation, u32)> {
        let now = Instant::now();
        let candidates = self.locations_of(scope, service);
        let standings = self.rank(&candidates, now);
        let ranked = standings.best(None);
        let mut weighted: Vec<(ServiceLocation, u32)> = ranked
            .iter()
            .map(|s| {
                let free = if s.capacity > 0 {
                    s.capacity - s.current_requests
                } else {
                    1
                };
                (
                    s.key.location.clone(),
                    free.clamp(1, i64::from(MAX_WEIGHT)) as u32,
                )
            })
            .collect();
        let ranked: HashSet<*const Monitored> =
            ranked.iter().map(|s| Arc::as_ptr(&s.key)).collect();
        let liveness = self.liveness_window();
        for m in &candidates {
            let unranked = !ranked.contains(&Arc::as_ptr(m));
            if unranked && m.with_state(|s| s.is_healthy(now, liveness) && s.load.is_none()) {
                weighted.push((m.location.clone(), 1));
            }
        }
        weighted
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

    /// A server with health (`""`, discovery (by its full and its short C# name) and grpclb
    /// SERVING), discovery, grpclb and reflection.
    pub fn server(&self, health: HealthState) -> GrpcServer {
        for service in [
            discovery::SERVICE_NAME,
            discovery::SHORT_SERVICE_NAME,
            grpclb::SERVICE_NAME,
        ] {
            health.set(service, crate::server::health::ServingStatus::Serving);
        }
        GrpcServer::new(health.clone())
            .add_service(self.discovery_service())
            .add_service(grpclb::service(self.clone(), health))
    }

    /// The locations of a service; the first time a service is asked for, waits (at most the
    /// response timeout) for the first probe of each of them.
    async fn candidates(
        &self,
        scope: &str,
        service: &str,
    ) -> Result<Vec<Arc<Monitored>>, DiscoveryError> {
        if service.is_empty() {
            return Err(DiscoveryError::EmptyServiceName);
        }
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
        let table = self
            .inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        table
            .locations
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, m)| Arc::clone(m))
            .collect()
    }

    /// Healthy candidates that report load with a capacity other than 0, ranked.
    fn rank(&self, candidates: &[Arc<Monitored>], now: Instant) -> Standings<Arc<Monitored>> {
        let window = self.inner.options.recently_used_timeout;
        let liveness = self.liveness_window();
        let table = self
            .inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let ranked = candidates.iter().filter_map(|m| {
            m.with_state(|s| {
                let load = s.load.filter(|_| s.is_healthy(now, liveness))?;
                Some(Standing {
                    key: Arc::clone(m),
                    known_load_rate: load.known_load_rate,
                    current_requests: s.current_requests(now, window)?,
                    capacity: i64::from(load.capacity),
                })
            })
        });
        let mut standings = Standings::new(Arc::clone(&self.inner.ranking));
        standings.rebuild(ranked, |host| {
            host_load(table.by_host.get(host), now, window)
        });
        standings
    }

    fn ranking_of(&self, scope: &str, service: &str) -> Arc<Mutex<ServiceRanking>> {
        let mut rankings = lock(&self.inner.rankings);
        Arc::clone(
            rankings
                .entry((scope.to_owned(), service.to_owned()))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(ServiceRanking {
                        generation: None,
                        computed_at: None,
                        standings: Standings::new(Arc::clone(&self.inner.ranking)),
                        rebuilding: false,
                    }))
                }),
        )
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

fn truncate<T>(items: &mut Vec<T>, max_count: i32) {
    if max_count > 0 {
        items.truncate(max_count as usize);
    }
}

impl Inner {
    /// Brings the monitors in line with the registry: new locations start being probed,
    /// departed ones stop, changed ones (e.g. a new control endpoint) start over.
    fn apply(&self, view: &RegistryView) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let before = table.locations.len();
        table
            .locations
            .retain(|key, m| view.locations.get(key).is_some_and(|l| *l == m.location));
        let mut added = 0;
        for (key, location) in view.locations.iter() {
            if !table.locations.contains_key(key) {
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
            self.changes
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}
