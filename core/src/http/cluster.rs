//! The cluster supervisor over HTTP: its metrics (computed at scrape time from the members'
//! status, the same views the control socket's `status` reports), its `/status.json`
//! ([`ClusterStatus`]) and its readiness (every member Ready).
//!
//! Every metric is listed, with its labels, in docs/metrics.md. Labels name agents and
//! members of the config file (bounded by it) and states and reasons from fixed lists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use super::metrics::{Labels, counters, gauge, gauges};
use super::{Readiness, Source};
use crate::supervisor::cluster::MemberView;
use crate::supervisor::control::{self, MemberReport};
use crate::supervisor::logbook::LogBook;
use crate::supervisor::member::State;

/// Every member state, as `status` names them (the `state` label's values).
pub const MEMBER_STATES: [&str; 9] = [
    "Starting",
    "Ready",
    "Unhealthy",
    "Recycling",
    "Restarting",
    "Stopping",
    "BackingOff",
    "Failed",
    "Stopped",
];

/// The `reason` label's values of `quaestor_member_restarts_total`.
pub const RESTART_REASONS: [&str; 5] = ["crash", "health", "recycle", "operator", "config"];

/// The `/status.json` of a cluster. Its shape is stable (fields are added, never renamed or
/// removed). Keys are camelCase; each member is as `quaestor cluster status --json` prints
/// it ([`MemberReport`], snake_case keys).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Always `cluster`.
    pub role: &'static str,
    /// As `/readyz` answers.
    pub ready: bool,
    /// Why not ready (None when ready).
    pub not_ready_reason: Option<String>,
    /// `clusterConfig.name`.
    pub name: Option<String>,
    /// The supervisor's pid.
    pub pid: u32,
    /// The config file it runs.
    pub config: PathBuf,
    /// In the order `cluster status` lists them (the KeyValueStore member first).
    pub members: Vec<MemberReport>,
}

/// What `/healthz`, `/readyz`, `/status.json` and `/metrics` show of a running cluster: the
/// members it publishes on its `watch` channel (replaced on every reload).
#[derive(Debug, Clone)]
pub struct ClusterSource {
    name: Option<String>,
    config: PathBuf,
    members: watch::Receiver<Vec<MemberView>>,
    logs: Option<LogBook>,
}

impl ClusterSource {
    /// Over the members of the cluster named `name` (`clusterConfig.name`) running `config`.
    pub fn new(
        name: Option<String>,
        config: PathBuf,
        members: watch::Receiver<Vec<MemberView>>,
    ) -> Self {
        ClusterSource {
            name,
            config,
            members,
            logs: None,
        }
    }

    /// With `/members/NAME/log` served from the members' recent output.
    pub fn with_logs(mut self, logs: LogBook) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The status as `/status.json` serves it.
    pub fn snapshot(&self) -> ClusterStatus {
        let report = {
            let views = self.members.borrow();
            control::report(self.name.clone(), self.config.clone(), &views)
        };
        let readiness = readiness(&report.members);
        ClusterStatus {
            role: "cluster",
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            name: report.name,
            pid: report.pid,
            config: report.config,
            members: report.members,
        }
    }

    /// Heartbeat checks failed in a row now, by member tag (0 unless Ready).
    fn heartbeat_failures(&self) -> Vec<(String, u32)> {
        self.members
            .borrow()
            .iter()
            .map(|view| {
                let status = view.status.borrow();
                let failed = match status.state {
                    State::Ready { failed_checks, .. } => failed_checks,
                    _ => 0,
                };
                (status.tag.clone(), failed)
            })
            .collect()
    }
}

/// Ready when there is a member and every member is Ready.
fn readiness(members: &[MemberReport]) -> Readiness {
    if members.is_empty() {
        return Err("the cluster has no member".into());
    }
    let waiting: Vec<String> = members
        .iter()
        .filter(|m| m.state != "Ready")
        .map(|m| format!("{} is {}", m.member, m.state))
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} members not ready: {}",
            waiting.len(),
            members.len(),
            waiting.join(", ")
        ))
    }
}

impl Source for ClusterSource {
    fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ClusterCollector(self.clone())));
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }

    fn readiness(&self) -> Readiness {
        readiness(&self.snapshot().members)
    }

    fn member_log(&self, member: &str) -> Option<String> {
        let logs = self.logs.as_ref()?;
        let known = self.snapshot().members.iter().any(|m| m.member == member);
        if !known {
            return None;
        }
        let mut text = String::new();
        for line in logs.recent(&[member.to_owned()], MEMBER_LOG_LINES) {
            text.push_str(line.stream.as_str());
            text.push_str(": ");
            text.push_str(&line.text);
            text.push('\n');
        }
        Some(text)
    }
}

/// Lines of a member's output `/members/NAME/log` shows, at most.
pub const MEMBER_LOG_LINES: usize = 200;

/// Encodes the cluster's metrics on every scrape.
#[derive(Debug)]
struct ClusterCollector(ClusterSource);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = &self.0;
        let status = source.snapshot();
        let heartbeat = source.heartbeat_failures();
        let e = &mut encoder;

        // Every state of every agent type, 0 included, so that a state left shows 0.
        let mut by_agent: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
        for m in &status.members {
            let states = by_agent
                .entry(m.agent_type.as_str())
                .or_insert_with(|| MEMBER_STATES.iter().map(|&s| (s, 0)).collect());
            *states.entry(m.state.as_str()).or_insert(0) += 1;
        }
        gauges(
            e,
            "quaestor_cluster_members",
            "Members by agent type and state.",
            by_agent.iter().flat_map(|(&agent, states)| {
                states
                    .iter()
                    .map(move |(&state, &n)| (vec![("agent", agent), ("state", state)], n))
            }),
        )?;
        let registered = status
            .members
            .iter()
            .filter(|m| m.state == "Ready" && !m.drained)
            .count();
        gauge(
            e,
            "quaestor_cluster_registered_members",
            "Members the cluster keeps in the registry now (Ready and not drained).",
            registered as i64,
        )?;
        counters(
            e,
            "quaestor_member_restarts",
            "Stops and restarts of a member, by cause (crash, health, recycle, operator, config).",
            status.members.iter().flat_map(|m| {
                [
                    ("crash", m.crashes),
                    ("health", m.health_restarts),
                    ("recycle", m.recycles),
                    ("operator", m.operator_restarts),
                    ("config", m.config_restarts),
                ]
                .into_iter()
                .map(|(reason, n)| {
                    (
                        vec![("member", m.member.as_str()), ("reason", reason)],
                        u64::from(n),
                    )
                })
            }),
        )?;
        gauges(
            e,
            "quaestor_member_up",
            "1 if the member is Ready (serving), else 0.",
            status.members.iter().map(|m| {
                (
                    vec![("member", m.member.as_str())],
                    i64::from(m.state == "Ready"),
                )
            }),
        )?;
        gauges(
            e,
            "quaestor_member_uptime_seconds",
            "How long the member's current process has run (members with a process only).",
            status.members.iter().filter_map(|m| {
                m.uptime_seconds
                    .map(|s| (vec![("member", m.member.as_str())], s))
            }),
        )?;
        gauges(
            e,
            "quaestor_member_heartbeat_failures",
            "Health checks of a Ready member failed in a row now.",
            heartbeat
                .iter()
                .map(|(member, n)| -> (Labels, i64) { (vec![("member", member)], i64::from(*n)) }),
        )?;
        gauges(
            e,
            "quaestor_member_failures",
            "Failed starts or crashes of a member in a row now.",
            status
                .members
                .iter()
                .map(|m| (vec![("member", m.member.as_str())], i64::from(m.failures))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: &str) -> MemberReport {
        MemberReport {
            member: name.into(),
            agent_type: "Worker".into(),
            index: 0,
            state: state.into(),
            pid: None,
            port: 5001,
            restarts: 0,
            failures: 0,
            last_health: None,
            uptime_seconds: None,
            last_exit_code: None,
            last_exit_signal: None,
            last_exit: None,
            last_exit_at: None,
            last_reason: None,
            last_reason_kind: None,
            crashes: 0,
            health_restarts: 0,
            recycles: 0,
            config_restarts: 0,
            operator_restarts: 0,
            next_retry_at: None,
            next_retry_seconds: None,
            drained: false,
        }
    }

    #[test]
    fn ready_only_when_every_member_is() {
        assert!(readiness(&[]).is_err());
        assert_eq!(
            readiness(&[member("Worker[0]", "Ready"), member("Worker[1]", "Ready")]),
            Ok(())
        );
        let reason = readiness(&[
            member("Worker[0]", "Ready"),
            member("Worker[1]", "BackingOff"),
        ])
        .unwrap_err();
        assert_eq!(reason, "1 of 2 members not ready: Worker[1] is BackingOff");
    }
}
