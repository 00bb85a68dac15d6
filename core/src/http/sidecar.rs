//! The sidecar over HTTP: its probe results and latency, the worker's health and its
//! registration ([`crate::sidecar::SidecarCounters`]), its `/status.json`
//! ([`SidecarStatus`]) and its readiness (the last probe found the worker healthy).
//!
//! Every metric is listed in docs/metrics.md; the only label is the sidecar's one service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::metrics::{counters, gauges, histograms};
use super::{Readiness, Source};
use crate::sidecar::{Check, Sidecar};

/// The `/status.json` of a sidecar. Its shape is stable (fields are added, never renamed or
/// removed). Keys are camelCase.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    /// Always `sidecar`.
    pub role: &'static str,
    /// As `/readyz` answers.
    pub ready: bool,
    /// Why not ready (None when ready).
    pub not_ready_reason: Option<String>,
    /// The worker's service.
    pub service: String,
    /// Where the worker serves.
    pub host: String,
    pub port: u16,
    /// How it is probed: `grpc`, `tcp`, `http` or `exec`.
    pub check: &'static str,
    /// The last probe's verdict (None before the first).
    pub healthy: Option<bool>,
    /// Whether the sidecar keeps it registered in etcd now (None without etcd).
    pub registered: Option<bool>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    /// Registrations or withdrawals that failed (each retried at the next probe).
    pub registration_errors: u64,
}

/// What `/healthz`, `/readyz`, `/status.json` and `/metrics` show of a [`Sidecar`].
#[derive(Clone)]
pub struct SidecarSource {
    sidecar: Arc<Sidecar>,
    registers: bool,
}

impl std::fmt::Debug for SidecarSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarSource")
            .field("service", &self.sidecar.options().service)
            .field("registers", &self.registers)
            .finish()
    }
}

impl SidecarSource {
    /// `registers`: whether the sidecar keeps the worker registered (it has an etcd).
    pub fn new(sidecar: Arc<Sidecar>, registers: bool) -> Self {
        SidecarSource { sidecar, registers }
    }

    /// The status as `/status.json` serves it.
    pub fn snapshot(&self) -> SidecarStatus {
        let options = self.sidecar.options();
        let counts = self.sidecar.counters();
        let healthy = *self.sidecar.healthy().borrow();
        let readiness = readiness(healthy);
        SidecarStatus {
            role: "sidecar",
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            service: options.service.clone(),
            host: options.host.clone(),
            port: options.port,
            check: match options.check {
                Check::Grpc => "grpc",
                Check::Tcp => "tcp",
                Check::Http { .. } => "http",
                Check::Exec { .. } => "exec",
            },
            healthy,
            registered: self
                .registers
                .then(|| counts.registered.load(Ordering::Relaxed)),
            probes_ok: counts.probes_ok.load(Ordering::Relaxed),
            probes_failed: counts.probes_failed.load(Ordering::Relaxed),
            registration_errors: counts.registration_errors.load(Ordering::Relaxed),
        }
    }
}

/// Ready when the last probe found the worker healthy.
fn readiness(healthy: Option<bool>) -> Readiness {
    match healthy {
        Some(true) => Ok(()),
        Some(false) => Err("the worker's last probe failed".into()),
        None => Err("the worker has not been probed yet".into()),
    }
}

impl Source for SidecarSource {
    fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(SidecarCollector(self.clone())));
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }

    fn readiness(&self) -> Readiness {
        readiness(*self.sidecar.healthy().borrow())
    }
}

/// Encodes the sidecar's metrics on every scrape.
#[derive(Debug)]
struct SidecarCollector(SidecarSource);

impl Collector for SidecarCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = &self.0;
        let status = source.snapshot();
        let service = status.service.as_str();
        let e = &mut encoder;
        counters(
            e,
            "quaestor_sidecar_probes",
            "Probes of the worker, by result (ok: healthy; failed: unhealthy or no answer).",
            [
                (
                    vec![("service", service), ("result", "ok")],
                    status.probes_ok,
                ),
                (
                    vec![("service", service), ("result", "failed")],
                    status.probes_failed,
                ),
            ],
        )?;
        histograms(
            e,
            "quaestor_sidecar_probe_duration_seconds",
            "Time one probe of the worker took.",
            [(
                vec![("service", service)],
                source.sidecar.counters().probe_latency.snapshot(),
            )],
        )?;
        gauges(
            e,
            "quaestor_sidecar_worker_healthy",
            "1 if the last probe found the worker healthy, else 0 (also before the first).",
            [(
                vec![("service", service)],
                i64::from(status.healthy == Some(true)),
            )],
        )?;
        gauges(
            e,
            "quaestor_sidecar_registered",
            "1 while the sidecar keeps the worker registered in etcd, else 0 (absent without etcd).",
            status
                .registered
                .map(|registered| (vec![("service", service)], i64::from(registered))),
        )?;
        counters(
            e,
            "quaestor_sidecar_registration_errors",
            "Registrations or withdrawals in etcd that failed (each retried at the next probe).",
            [(vec![("service", service)], status.registration_errors)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_a_probe_found_the_worker_healthy() {
        assert!(readiness(None).is_err());
        assert!(readiness(Some(false)).is_err());
        assert_eq!(readiness(Some(true)), Ok(()));
    }
}
