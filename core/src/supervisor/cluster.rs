//! A cluster: the members of every agent of a configuration, each run by its own
//! [`Runner`], registered in one registry while they serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::member::Policy;
use super::recycle::{Recyclable, recycle_agent};
use super::runner::{
    MemberRegistry, MemberSpec, MemberStatus, Order, Runner, RunnerHandle, Tuning,
};
use super::spawn::{MemberCommand, SpawnError, Spawner, command_line, resolve_executable};
use crate::config::{AgentConfig, ClusterConfig, QuaestorConfig, ShutdownAction};
use crate::registry::ServiceLocation;

/// A stop waits at least this long for a member to exit before SIGKILL, also when the config
/// says 0 (every C# sample does: the C# version never waited).
pub const MIN_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("agent {agent} ({agent_type}): {problem}")]
    Agent {
        agent: usize,
        agent_type: String,
        problem: String,
    },
}

/// How members are started.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The folder relative executable paths are looked up in first (the config's folder).
    pub working_dir: PathBuf,
    /// The quaestor binary: its folder is the second place executables are looked up in,
    /// and it is the shim that gives members a parent-death signal.
    pub quaestor_bin: Option<PathBuf>,
}

/// Starts the member of the config's KeyValueStore agent (the etcd the cluster then uses as
/// its registry), if there is one, and waits (at most its startup wait and 10 s more) until
/// it serves. It is registered nowhere.
pub async fn start_key_value_store(
    config: &QuaestorConfig,
    options: &ClusterOptions,
    spawner: Spawner,
) -> Result<Option<KeyValueStore>, ClusterError> {
    let cluster = config.cluster.clone().unwrap_or_default();
    let Some((index, agent)) = config
        .agents
        .iter()
        .enumerate()
        .find(|(_, a)| a.is_key_value_store())
    else {
        return Ok(None);
    };
    let mut spec = member_spec(agent, 0, &cluster, options).map_err(|e| ClusterError::Agent {
        agent: index,
        agent_type: agent.agent_type.clone(),
        problem: e.to_string(),
    })?;
    spec.locations.clear();
    let port = port_of(&spec.health_address);
    let wait = spec.policy.startup_wait + Duration::from_secs(10);
    let runner = Runner::start(
        spec,
        spawner,
        Arc::new(crate::registry::memory::MemoryRegistry::new()),
    );
    let mut status = runner.status.clone();
    let serving = status.wait_for(|s| matches!(s.state, super::member::State::Ready { .. }));
    if tokio::time::timeout(wait, serving).await.is_err() {
        tracing::error!(agent = %agent.agent_type, "the KeyValueStore agent does not serve within {}", super::member::Seconds(wait));
    }
    let view = MemberView {
        agent_type: agent.agent_type.clone(),
        index: 0,
        port,
        status: runner.status.clone(),
        runner: runner.handle(),
    };
    Ok(Some(KeyValueStore { runner, view }))
}

/// The running member of a KeyValueStore agent.
pub struct KeyValueStore {
    runner: Runner,
    view: MemberView,
}

impl KeyValueStore {
    pub fn view(&self) -> MemberView {
        self.view.clone()
    }

    /// Stops it (and waits until it is stopped).
    pub async fn stop(self) {
        self.runner.stop().await;
    }
}

/// The port of a `host:port` address (0 if there is none).
fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_default()
}

/// The running members of a configuration. [`Cluster::reload`] moves it to another
/// configuration, touching only the members that differ.
pub struct Cluster {
    options: ClusterOptions,
    registry: Arc<dyn MemberRegistry>,
    spawner: Spawner,
    /// In config order.
    members: Vec<Managed>,
    recyclers: Vec<RecyclerRun>,
    next_serial: u64,
}

/// One running member and what it was started from.
struct Managed {
    /// Unique for the cluster's life: tells a restarted member from the one before it.
    serial: u64,
    identity: Identity,
    view: MemberView,
    action: ShutdownAction,
    recyclable: Recyclable,
    runner: Runner,
}

/// What makes a member's process what it is: the agent's settings that reach the process
/// (command line, environment, where it serves and is registered), its index and its
/// configured port. A member whose identity is unchanged by a reload keeps running; the
/// other settings are applied to it in place (see [`Tuning`]).
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    process: AgentConfig,
    index: usize,
    port: Option<u16>,
}

impl Identity {
    fn of(agent: &AgentConfig, index: usize) -> Identity {
        let defaults = AgentConfig::new("");
        let mut process = agent.clone();
        process.process_count = defaults.process_count;
        process.ports.clear();
        process.startup_wait = defaults.startup_wait;
        process.recycling_interval_hours = None;
        process.stop_signal = defaults.stop_signal;
        process.health_check = defaults.health_check;
        process.restart_backoff = defaults.restart_backoff;
        Identity {
            process,
            index,
            port: agent.ports.get(index).copied(),
        }
    }
}

/// A member as the status shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub agent_type: String,
    /// Its index among its agent's processes.
    pub index: usize,
    pub port: u16,
    pub status: watch::Receiver<MemberStatus>,
    /// Its runner, for the operator's orders (stop, start, restart, drain).
    pub runner: RunnerHandle,
}

/// The recycling of one agent's members.
struct RecyclerRun {
    serials: Vec<u64>,
    interval: Duration,
    response_timeout: Duration,
    task: tokio::task::JoinHandle<()>,
}

/// What a reload did, by member tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    /// Members left running (with their settings updated).
    pub kept: usize,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.stopped.is_empty()
    }
}

/// One member of the configuration being applied: a running member that stays, or a new one.
enum Planned {
    Keep {
        /// In the running members.
        position: usize,
        agent: usize,
        tuning: Box<Tuning>,
    },
    Start {
        agent: usize,
        identity: Box<Identity>,
        spec: Box<MemberSpec>,
    },
}

impl Cluster {
    /// Starts every member of every agent but KeyValueStore agents (an etcd is started and
    /// used as the registry by the caller).
    pub async fn start(
        config: &QuaestorConfig,
        options: &ClusterOptions,
        registry: Arc<dyn MemberRegistry>,
        spawner: Spawner,
    ) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster {
            options: options.clone(),
            registry,
            spawner,
            members: Vec::new(),
            recyclers: Vec::new(),
            next_serial: 0,
        };
        cluster.reload(config).await?;
        Ok(cluster)
    }

    /// Moves the cluster to `config`: members of removed agents (and removed processes) are
    /// stopped first, then those of added agents started; a member whose process would be
    /// started differently (command line, environment, working directory, port, service
    /// names, shutdown action, …) is stopped and started anew; every other member keeps
    /// running and takes the new timing settings (health check, backoff, stop signal,
    /// heartbeat, startup wait). KeyValueStore agents are not touched. If a new member cannot
    /// be built (its executable is missing, say), nothing changes.
    pub async fn reload(&mut self, config: &QuaestorConfig) -> Result<ReloadSummary, ClusterError> {
        let plan = self.plan(config)?;
        let mut summary = ReloadSummary::default();
        let mut running: Vec<Option<Managed>> = std::mem::take(&mut self.members)
            .into_iter()
            .map(Some)
            .collect();

        // Stop first: a changed member's successor may need its port.
        let kept: Vec<usize> = plan
            .iter()
            .filter_map(|p| match p {
                Planned::Keep { position, .. } => Some(*position),
                Planned::Start { .. } => None,
            })
            .collect();
        let mut removed = Vec::new();
        for (position, slot) in running.iter_mut().enumerate() {
            if !kept.contains(&position) {
                if let Some(member) = slot.take() {
                    summary
                        .stopped
                        .push(member.view.status.borrow().tag.clone());
                    member
                        .runner
                        .order(Order::StopFor(super::member::Reason::ConfigChanged))
                        .await;
                    removed.push((member.runner.task, member.view.status));
                }
            }
        }
        // Their last statuses, by tag: a member that replaces one carries its history on.
        let mut previous = std::collections::HashMap::new();
        for (task, status) in removed {
            let _ = task.await;
            let last = status.borrow().clone();
            previous.insert(last.tag.clone(), last);
        }

        let mut members = Vec::with_capacity(plan.len());
        for planned in plan {
            match planned {
                Planned::Keep {
                    position,
                    agent,
                    tuning,
                } => {
                    let member = running[position].take().expect("kept once");
                    member.runner.order(Order::Retune(tuning)).await;
                    summary.kept += 1;
                    members.push((agent, member));
                }
                Planned::Start {
                    agent,
                    identity,
                    spec,
                } => {
                    summary.started.push(spec.tag.clone());
                    let before = previous.remove(&spec.tag);
                    members.push((
                        agent,
                        self.launch(*identity, *spec, &config.agents[agent], before.as_ref()),
                    ));
                }
            }
        }
        self.recycle(config, &members);
        self.members = members.into_iter().map(|(_, m)| m).collect();
        Ok(summary)
    }

    /// Matches `config`'s members to the running ones, and builds (without starting) every
    /// member that is not running yet.
    fn plan(&self, config: &QuaestorConfig) -> Result<Vec<Planned>, ClusterError> {
        let cluster = config.cluster.clone().unwrap_or_default();
        let mut taken = vec![false; self.members.len()];
        let mut plan = Vec::new();
        for (agent_index, agent) in config.agents.iter().enumerate() {
            if agent.is_key_value_store() {
                continue;
            }
            for index in 0..agent.process_count as usize {
                let identity = Identity::of(agent, index);
                let running = (0..self.members.len())
                    .find(|&at| !taken[at] && self.members[at].identity == identity);
                if let Some(position) = running {
                    taken[position] = true;
                    plan.push(Planned::Keep {
                        position,
                        agent: agent_index,
                        tuning: Box::new(tuning(agent, &cluster)),
                    });
                    continue;
                }
                let mut spec = member_spec(agent, index, &cluster, &self.options).map_err(|e| {
                    ClusterError::Agent {
                        agent: agent_index,
                        agent_type: agent.agent_type.clone(),
                        problem: e.to_string(),
                    }
                })?;
                spec.tag = format!("{}[{index}]", agent_name(config, agent_index));
                plan.push(Planned::Start {
                    agent: agent_index,
                    identity: Box::new(identity),
                    spec: Box::new(spec),
                });
            }
        }
        Ok(plan)
    }

    fn launch(
        &mut self,
        identity: Identity,
        spec: MemberSpec,
        agent: &AgentConfig,
        previous: Option<&MemberStatus>,
    ) -> Managed {
        self.next_serial += 1;
        let port = port_of(&spec.health_address);
        let (load_address, services) = (spec.health_address.clone(), spec.services.clone());
        let runner = Runner::start_after(
            spec,
            self.spawner.clone(),
            Arc::clone(&self.registry),
            previous,
        );
        Managed {
            serial: self.next_serial,
            view: MemberView {
                agent_type: agent.agent_type.clone(),
                index: identity.index,
                port,
                status: runner.status.clone(),
                runner: runner.handle(),
            },
            identity,
            action: agent.cluster_shutdown_action,
            recyclable: Recyclable {
                runner: runner.handle(),
                load_address,
                services,
            },
            runner,
        }
    }

    /// One recycler per agent with `recyclingIntervalHours`; a recycler whose members and
    /// timing are unchanged keeps running (and keeps its schedule).
    fn recycle(&mut self, config: &QuaestorConfig, members: &[(usize, Managed)]) {
        let response_timeout = config
            .cluster
            .as_ref()
            .map(|c| c.member_response_timeout)
            .unwrap_or_else(|| ClusterConfig::default().member_response_timeout);
        let mut previous = std::mem::take(&mut self.recyclers);
        for (agent_index, agent) in config.agents.iter().enumerate() {
            let Some(hours) = agent.recycling_interval_hours.filter(|h| *h > 0.0) else {
                continue;
            };
            let interval = Duration::from_secs_f64(hours * 3600.0);
            let mine: Vec<&Managed> = members
                .iter()
                .filter(|(a, _)| *a == agent_index)
                .map(|(_, m)| m)
                .collect();
            let serials: Vec<u64> = mine.iter().map(|m| m.serial).collect();
            let same = previous.iter().position(|r| {
                r.serials == serials
                    && r.interval == interval
                    && r.response_timeout == response_timeout
            });
            let run = match same {
                Some(at) => previous.swap_remove(at),
                None => RecyclerRun {
                    task: tokio::spawn(recycle_agent(
                        mine.iter().map(|m| m.recyclable.clone()).collect(),
                        interval,
                        response_timeout,
                    )),
                    serials,
                    interval,
                    response_timeout,
                },
            };
            self.recyclers.push(run);
        }
        for unused in previous {
            unused.task.abort();
        }
    }

    /// Every member, in config order.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.iter().map(|m| m.view.clone()).collect()
    }

    /// Followers of every member's status, in config order.
    pub fn status_receivers(&self) -> Vec<watch::Receiver<MemberStatus>> {
        self.members.iter().map(|m| m.view.status.clone()).collect()
    }

    /// Every member's status, in config order.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        self.members
            .iter()
            .map(|m| m.view.status.borrow().clone())
            .collect()
    }

    /// Stops the cluster: members whose shutdown action is Kill are stopped (deregistered,
    /// stop signal, SIGKILL after the timeout); those with None are deregistered and left
    /// running, as in the C# version. All at once; returns when every runner is done.
    pub async fn stop(self) {
        for recycler in &self.recyclers {
            recycler.task.abort();
        }
        for member in &self.members {
            let order = match member.action {
                ShutdownAction::Kill => Order::Stop,
                ShutdownAction::None => Order::Leave,
            };
            member.runner.order(order).await;
        }
        for member in self.members {
            let _ = member.runner.task.await;
        }
    }
}

/// How the members of agent `index` are named in logs and status: its type, numbered (from 1)
/// when several agents have that type (`Worker#2`).
fn agent_name(config: &QuaestorConfig, index: usize) -> String {
    let agent_type = &config.agents[index].agent_type;
    let same: Vec<usize> = (0..config.agents.len())
        .filter(|&i| config.agents[i].agent_type.eq_ignore_ascii_case(agent_type))
        .collect();
    match same.iter().position(|&i| i == index) {
        Some(n) if same.len() > 1 => format!("{agent_type}#{}", n + 1),
        _ => agent_type.clone(),
    }
}

/// The settings of `agent`'s members that can change while they run.
fn tuning(agent: &AgentConfig, cluster: &ClusterConfig) -> Tuning {
    Tuning {
        policy: Policy {
            startup_wait: agent.startup_wait,
            max_failures: cluster.member_max_startup_retries.max(1),
            backoff_initial: agent.restart_backoff.initial,
            backoff_max: agent.restart_backoff.max,
            reset_after: agent.restart_backoff.reset_after,
            unhealthy_after: agent.health_check.failures_before_restart.max(1),
            shutdown_timeout: cluster.member_max_shutdown_time.max(MIN_SHUTDOWN_WAIT),
            ..Policy::default()
        },
        heartbeat: cluster.heartbeat_interval,
        response_timeout: cluster.member_response_timeout,
        stop_signal: agent.stop_signal,
        die_with_supervisor: agent.cluster_shutdown_action == ShutdownAction::Kill,
    }
}

/// What member `index` of `agent` runs and how it is checked.
fn member_spec(
    agent: &AgentConfig,
    index: usize,
    cluster: &ClusterConfig,
    options: &ClusterOptions,
) -> Result<MemberSpec, SpawnError> {
    let port = match agent.ports.get(index) {
        Some(port) => *port,
        None => free_port().map_err(|source| SpawnError::Start {
            program: "an ephemeral port".into(),
            source,
        })?,
    };
    let working_dir = match &agent.working_directory {
        Some(dir) => options.working_dir.join(dir),
        None => options.working_dir.clone(),
    };
    let executable = agent.executable_path.as_deref().unwrap_or_default();
    let program = resolve_executable(
        executable,
        &working_dir,
        options.quaestor_bin.as_deref().and_then(Path::parent),
    )?;
    let args = command_line(
        agent.command_line_arguments.as_deref(),
        &agent.host_name,
        Some(port),
    )?;
    let services = agent.service_names.clone().unwrap_or_default();
    let locations = if agent.exclude_from_service_registry {
        Vec::new()
    } else {
        services
            .iter()
            .filter_map(|service| ServiceLocation::new("", service, &agent.host_name, port).ok())
            .map(|location| location.with_tls(agent.use_tls))
            .collect()
    };
    let tuning = tuning(agent, cluster);
    Ok(MemberSpec {
        tag: format!("{}[{index}]", agent.agent_type),
        command: MemberCommand {
            program,
            args,
            env: agent.environment_variables.clone(),
            working_dir: Some(working_dir),
        },
        health_address: format!("{}:{port}", agent.host_name),
        services,
        locations,
        policy: tuning.policy,
        heartbeat: tuning.heartbeat,
        response_timeout: tuning.response_timeout,
        stop_signal: tuning.stop_signal,
        die_with_supervisor: tuning.die_with_supervisor,
        check_health: true,
    })
}

/// A port nobody listens on now, for agents with no ports configured.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_sharing_a_type_are_numbered() {
        let config = QuaestorConfig::parse(
            "agents:\n- agentType: Worker\n- agentType: KeyValueStore\n- agentType: worker\n",
            "t.yml",
        )
        .expect("config");
        let names: Vec<String> = (0..3).map(|i| agent_name(&config, i)).collect();
        assert_eq!(names, ["Worker#1", "KeyValueStore", "worker#2"]);
    }
}
