//! The load balancer over HTTP: its metrics (computed at scrape time from the [`Balancer`]
//! and its [`BalancerCounters`](crate::balancer::counters::BalancerCounters)), its
//! `/status.json` ([`BalancerStatus`]) and its readiness.
//!
//! Every metric is listed, with its labels, in docs/metrics.md. Labels that name a service
//! come from the registry (bounded by it); there is no per-request label.

use std::collections::BTreeMap;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::metrics::{Labels, counters, gauge, gauges, histograms};
use super::{Readiness, Source};
use crate::balancer::counters::DiscoveryMethod;
use crate::balancer::monitor::{Feed, ProbeState};
use crate::balancer::{Balancer, LocationStatus};
use crate::server::health::ServingStatus;

/// The `/status.json` of a load balancer. Its shape is stable (fields are added, never
/// renamed or removed): the status page renders it. Keys are camelCase.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BalancerStatus {
    /// Always `load-balancer`.
    pub role: &'static str,
    /// As `/readyz` answers.
    pub ready: bool,
    /// Why not ready (None when ready).
    pub not_ready_reason: Option<String>,
    pub registry: RegistryStatus,
    /// Connections open to the workers' control endpoints.
    pub monitor_connections: usize,
    /// Every (scope, service) with a location, sorted by scope then service.
    pub services: Vec<ServiceStatus>,
}

/// The registry the balancer follows.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// `etcd` or `memory` (the config's Worker agents).
    pub backend: String,
    /// False while the backend cannot be reached or has not answered yet (the last known
    /// set, or the fallback, serves meanwhile).
    pub up: bool,
    /// Registry views applied (the first load, then one per change).
    pub updates: u64,
    /// Locations in the registry.
    pub locations: usize,
    /// etcd's revision of the last load or change seen (0 for the memory registry).
    pub revision: i64,
    /// Reloads after the first (a broken watch, a compaction, an outage); 0 for memory.
    pub resyncs: u64,
}

/// One service and its locations.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub scope: String,
    pub service: String,
    /// Locations handed out by `DiscoverTopServices` since the balancer started.
    pub hand_outs: u64,
    /// Locations by [`LocationView::health`] (`healthy`, `unhealthy`, `unknown`).
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
    /// Sorted by registry key (host, then port).
    pub locations: Vec<LocationView>,
}

/// One location as the balancer sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocationView {
    pub host: String,
    pub port: u16,
    /// Where its health and load are asked (`host:port` of the control endpoint).
    pub control: String,
    /// `healthy` (offered), `unhealthy` (answered NOT_SERVING, or stopped answering) or
    /// `unknown` (no answer yet).
    pub health: &'static str,
    /// The last `grpc.health.v1` answer: `SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`,
    /// `UNKNOWN`, or None before the first.
    pub serving_status: Option<&'static str>,
    /// How its load arrives: `pushed`, `polled`, `orca` or `unknown`.
    pub feed: &'static str,
    /// Requests believed in flight (the last report plus hand-outs not yet reported).
    pub current_requests: Option<i64>,
    pub capacity: Option<i64>,
    /// `currentRequests / capacity` (None without a load report or a positive capacity).
    pub utilization: Option<f64>,
    /// The utilisation the worker reported itself (0–1).
    pub server_utilization: Option<f64>,
    /// Age of the last load report.
    pub report_age_seconds: Option<f64>,
    /// Since it last answered anything.
    pub last_answer_age_seconds: Option<f64>,
    /// Probes in a row without an answer.
    pub failures: u32,
    /// Hand-outs still counted against it (no report has taken them in yet).
    pub recent_hand_outs: usize,
}

/// What `/healthz`, `/readyz`, `/status.json` and `/metrics` show of a [`Balancer`].
#[derive(Debug, Clone)]
pub struct BalancerSource {
    balancer: Balancer,
    backend: String,
}

impl BalancerSource {
    /// `backend` names the registry followed (`etcd` or `memory`).
    pub fn new(balancer: Balancer, backend: impl Into<String>) -> Self {
        BalancerSource {
            balancer,
            backend: backend.into(),
        }
    }

    /// The status as `/status.json` serves it.
    pub fn snapshot(&self) -> BalancerStatus {
        let now = Instant::now();
        let all = self.balancer.all_status();
        let readiness = readiness(&self.balancer, &all);
        let counters = self.balancer.counters();
        let hand_outs: BTreeMap<(String, String), u64> = counters.hand_outs().into_iter().collect();
        let mut services: BTreeMap<(String, String), ServiceStatus> = BTreeMap::new();
        for status in &all {
            let key = (
                status.location.scope.clone(),
                status.location.service.clone(),
            );
            let service = services
                .entry(key.clone())
                .or_insert_with(|| ServiceStatus {
                    scope: key.0.clone(),
                    service: key.1.clone(),
                    hand_outs: hand_outs.get(&key).copied().unwrap_or(0),
                    healthy: 0,
                    unhealthy: 0,
                    unknown: 0,
                    locations: Vec::new(),
                });
            let view = self.location_view(status, now);
            match view.health {
                "healthy" => service.healthy += 1,
                "unhealthy" => service.unhealthy += 1,
                _ => service.unknown += 1,
            }
            service.locations.push(view);
        }
        BalancerStatus {
            role: "load-balancer",
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            registry: RegistryStatus {
                backend: self.backend.clone(),
                up: !counters.registry_stale(),
                updates: counters.registry_updates(),
                locations: all.len(),
                revision: self.balancer.registry_stats().revision(),
                resyncs: self.balancer.registry_stats().resyncs(),
            },
            monitor_connections: self.balancer.connection_count(),
            services: services.into_values().collect(),
        }
    }

    fn location_view(&self, status: &LocationStatus, now: Instant) -> LocationView {
        let state = &status.state;
        let window = self.balancer.options().recently_used_timeout;
        let load = state.load;
        let current_requests = state.current_requests(now, window);
        let capacity = load.map(|l| i64::from(l.capacity));
        let utilization = match (current_requests, capacity) {
            (Some(current), Some(capacity)) if capacity > 0 => {
                Some(current as f64 / capacity as f64)
            }
            _ => None,
        };
        LocationView {
            host: status.location.host.clone(),
            port: status.location.port,
            control: status.location.control_endpoint(),
            health: health_of(status),
            serving_status: state.health.map(serving_status_name),
            feed: match state.feed {
                Feed::Unknown => "unknown",
                Feed::Pushed => "pushed",
                Feed::Polled => "polled",
                Feed::Orca => "orca",
            },
            current_requests,
            capacity,
            utilization,
            server_utilization: load.map(|l| l.server_utilization),
            report_age_seconds: load
                .map(|l| now.saturating_duration_since(l.sent_at).as_secs_f64()),
            last_answer_age_seconds: state
                .last_answer
                .map(|at| now.saturating_duration_since(at).as_secs_f64()),
            failures: state.failures,
            recent_hand_outs: state.recent_handouts(now, window),
        }
    }
}

/// `healthy`, `unhealthy` or `unknown` (see [`LocationView::health`]).
pub fn health_of(status: &LocationStatus) -> &'static str {
    if status.healthy {
        "healthy"
    } else if status.state.health.is_none() && status.state.failures == 0 {
        "unknown"
    } else {
        "unhealthy"
    }
}

fn serving_status_name(status: ServingStatus) -> &'static str {
    match status {
        ServingStatus::Serving => "SERVING",
        ServingStatus::NotServing => "NOT_SERVING",
        ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        ServingStatus::Unknown => "UNKNOWN",
    }
}

/// A location has been probed (or failed to answer) at least once.
fn settled(state: &ProbeState) -> bool {
    state.probed() || state.failures > 0
}

/// Ready when the registry is loaded (not stale) and every location has had its first
/// probe (an answer or a failure).
fn readiness(balancer: &Balancer, all: &[LocationStatus]) -> Readiness {
    let counters = balancer.counters();
    if counters.registry_stale() {
        return Err(
            "registry not loaded: its backend has not answered yet or cannot be reached".into(),
        );
    }
    let waiting = all.iter().filter(|s| !settled(&s.state)).count();
    if waiting > 0 {
        return Err(format!(
            "{waiting} of {} locations not probed yet",
            all.len()
        ));
    }
    Ok(())
}

impl Source for BalancerSource {
    fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(BalancerCollector(self.clone())));
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }

    fn readiness(&self) -> Readiness {
        readiness(&self.balancer, &self.balancer.all_status())
    }
}

/// Encodes the balancer's metrics on every scrape.
#[derive(Debug)]
struct BalancerCollector(BalancerSource);

impl Collector for BalancerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = &self.0;
        let balancer = &source.balancer;
        let counts = balancer.counters();
        let e = &mut encoder;

        let requests: Vec<(DiscoveryMethod, Vec<(&str, u64)>)> = DiscoveryMethod::ALL
            .iter()
            .map(|&m| (m, counts.requests(m)))
            .collect();
        counters(
            e,
            "quaestor_discovery_requests",
            "Discovery requests answered, by method and gRPC status code.",
            requests.iter().flat_map(|(method, codes)| {
                codes
                    .iter()
                    .map(move |&(code, n)| (vec![("method", method.name()), ("code", code)], n))
            }),
        )?;
        histograms(
            e,
            "quaestor_discovery_request_duration_seconds",
            "Time to answer a discovery request in the balancer (not counting the transport).",
            DiscoveryMethod::ALL
                .iter()
                .map(|&m| (vec![("method", m.name())], counts.latency(m))),
        )?;
        let grpclb = counts.grpclb.by_code();
        counters(
            e,
            "quaestor_grpclb_requests",
            "grpc.lb.v1 BalanceLoad streams opened, by gRPC status code of their opening.",
            grpclb
                .iter()
                .map(|&(code, n)| (vec![("method", "BalanceLoad"), ("code", code)], n)),
        )?;
        gauge(
            e,
            "quaestor_grpclb_streams_open",
            "grpc.lb.v1 BalanceLoad streams open now.",
            counts.grpclb.open(),
        )?;
        let ads = counts.ads.by_code();
        counters(
            e,
            "quaestor_ads_requests",
            "xDS (ADS) StreamAggregatedResources streams opened, by gRPC status code.",
            ads.iter().map(|&(code, n)| {
                (
                    vec![("method", "StreamAggregatedResources"), ("code", code)],
                    n,
                )
            }),
        )?;
        gauge(
            e,
            "quaestor_ads_streams_open",
            "xDS (ADS) streams open now.",
            counts.ads.open(),
        )?;

        let status = source.snapshot();
        let mut by_state = Vec::new();
        let mut hand_outs = Vec::new();
        for s in &status.services {
            for (state, n) in [
                ("healthy", s.healthy),
                ("unhealthy", s.unhealthy),
                ("unknown", s.unknown),
            ] {
                by_state.push((s, state, n as i64));
            }
            hand_outs.push((s, s.hand_outs));
        }
        gauges(
            e,
            "quaestor_balancer_locations",
            "Locations by service and health state (healthy, unhealthy, unknown).",
            by_state.iter().map(|&(s, state, n)| {
                (
                    vec![
                        ("scope", s.scope.as_str()),
                        ("service", s.service.as_str()),
                        ("state", state),
                    ],
                    n,
                )
            }),
        )?;
        counters(
            e,
            "quaestor_balancer_hand_outs",
            "Locations handed out by DiscoverTopServices, by service.",
            hand_outs.iter().map(|&(s, n)| {
                (
                    vec![("scope", s.scope.as_str()), ("service", s.service.as_str())],
                    n,
                )
            }),
        )?;

        let ports: Vec<String> = status
            .services
            .iter()
            .flat_map(|s| s.locations.iter().map(|l| l.port.to_string()))
            .collect();
        let located: Vec<(Labels, &LocationView)> = status
            .services
            .iter()
            .flat_map(|s| s.locations.iter().map(move |l| (s, l)))
            .zip(&ports)
            .map(|((s, l), port)| {
                (
                    vec![
                        ("scope", s.scope.as_str()),
                        ("service", s.service.as_str()),
                        ("host", l.host.as_str()),
                        ("port", port.as_str()),
                    ],
                    l,
                )
            })
            .collect();
        gauges(
            e,
            "quaestor_location_healthy",
            "1 if the location is offered (serving and answering), else 0.",
            located
                .iter()
                .map(|(labels, l)| (labels.clone(), i64::from(l.health == "healthy"))),
        )?;
        gauges(
            e,
            "quaestor_location_current_requests",
            "Requests believed in flight at the location (last report plus hand-outs not yet reported).",
            located
                .iter()
                .filter_map(|(labels, l)| Some((labels.clone(), l.current_requests?))),
        )?;
        gauges(
            e,
            "quaestor_location_capacity",
            "Capacity the location last reported.",
            located
                .iter()
                .filter_map(|(labels, l)| Some((labels.clone(), l.capacity?))),
        )?;
        gauges(
            e,
            "quaestor_location_utilization",
            "Current requests over capacity (ratio) at the location.",
            located
                .iter()
                .filter_map(|(labels, l)| Some((labels.clone(), l.utilization?))),
        )?;
        gauges(
            e,
            "quaestor_location_server_utilization",
            "Utilisation the location reported itself (ratio, 0-1).",
            located
                .iter()
                .filter_map(|(labels, l)| Some((labels.clone(), l.server_utilization?))),
        )?;
        gauges(
            e,
            "quaestor_location_report_age_seconds",
            "Age of the location's last load report.",
            located
                .iter()
                .filter_map(|(labels, l)| Some((labels.clone(), l.report_age_seconds?))),
        )?;

        gauge(
            e,
            "quaestor_balancer_monitor_connections",
            "Connections open to the workers' control endpoints.",
            status.monitor_connections as i64,
        )?;
        gauge(
            e,
            "quaestor_balancer_cached_rankings",
            "Services whose ranking is kept between requests.",
            balancer.cached_rankings() as i64,
        )?;
        gauges(
            e,
            "quaestor_registry_info",
            "The registry the balancer follows (backend: etcd or memory); always 1.",
            [(vec![("backend", status.registry.backend.as_str())], 1i64)],
        )?;
        gauge(
            e,
            "quaestor_registry_up",
            "1 if the registry is loaded and its backend answers, 0 while it is stale.",
            i64::from(status.registry.up),
        )?;
        counters(
            e,
            "quaestor_registry_updates",
            "Registry views applied by the balancer (the first load, then one per change).",
            [(Labels::new(), status.registry.updates)],
        )?;
        gauge(
            e,
            "quaestor_registry_locations",
            "Locations in the registry.",
            status.registry.locations as i64,
        )?;
        gauge(
            e,
            "quaestor_registry_revision",
            "etcd's revision of the last registry load or change seen (0 for the memory registry).",
            status.registry.revision,
        )?;
        counters(
            e,
            "quaestor_registry_resyncs",
            "Registry reloads after the first (a broken watch, a compaction, an outage).",
            [(Labels::new(), status.registry.resyncs)],
        )?;
        gauge(
            e,
            "quaestor_ready",
            "1 if /readyz answers 200, else 0.",
            i64::from(status.ready),
        )
    }
}
