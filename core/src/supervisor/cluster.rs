//! A cluster: the members of every agent of a configuration, each run by its own
//! [`Runner`], registered in one registry while they serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::member::Policy;
use super::recycle::{Recyclable, recycle_agent};
use super::runner::{MemberRegistry, MemberSpec, MemberStatus, Order, Runner};
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
) -> Result<Option<Runner>, ClusterError> {
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
    let wait = spec.policy.startup_wait + Duration::from_secs(10);
    let runner = Runner::start(
        spec,
        spawner,
        Arc::new(crate::registry::memory::MemoryRegistry::new()),
    );
    let mut status = runner.status.clone();
    let serving = status.wait_for(|s| matches!(s.state, super::member::State::Ready { .. }));
    if tokio::time::timeout(wait, serving).await.is_err() {
        tracing::error!(agent = %agent.agent_type, ?wait, "the KeyValueStore agent does not serve yet");
    }
    Ok(Some(runner))
}

/// The running members of a configuration.
pub struct Cluster {
    members: Vec<(ShutdownAction, Runner)>,
    recyclers: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Starts every member of every agent but KeyValueStore agents (an etcd is started and
    /// used as the registry by the caller).
    pub fn start(
        config: &QuaestorConfig,
        options: &ClusterOptions,
        registry: Arc<dyn MemberRegistry>,
        spawner: Spawner,
    ) -> Result<Cluster, ClusterError> {
        let cluster = config.cluster.clone().unwrap_or_default();
        let mut specs = Vec::new();
        for (index, agent) in config.agents.iter().enumerate() {
            if agent.is_key_value_store() {
                continue;
            }
            let problem = |problem: String| ClusterError::Agent {
                agent: index,
                agent_type: agent.agent_type.clone(),
                problem,
            };
            for member in 0..agent.process_count as usize {
                let spec = member_spec(agent, member, &cluster, options)
                    .map_err(|e| problem(e.to_string()))?;
                specs.push((index, agent.cluster_shutdown_action, spec));
            }
        }
        let mut members = Vec::new();
        let mut recyclers = Vec::new();
        let mut by_agent: Vec<(usize, Recyclable)> = Vec::new();
        for (agent, action, spec) in specs {
            let (load_address, services) = (spec.health_address.clone(), spec.services.clone());
            let runner = Runner::start(spec, spawner.clone(), Arc::clone(&registry));
            by_agent.push((
                agent,
                Recyclable {
                    runner: runner.handle(),
                    load_address,
                    services,
                },
            ));
            members.push((action, runner));
        }
        for (index, agent) in config.agents.iter().enumerate() {
            let Some(hours) = agent.recycling_interval_hours.filter(|h| *h > 0.0) else {
                continue;
            };
            let mine: Vec<Recyclable> = by_agent
                .iter()
                .filter(|(a, _)| *a == index)
                .map(|(_, r)| r.clone())
                .collect();
            let interval = Duration::from_secs_f64(hours * 3600.0);
            recyclers.push(tokio::spawn(recycle_agent(
                mine,
                interval,
                cluster.member_response_timeout,
            )));
        }
        Ok(Cluster { members, recyclers })
    }

    /// Followers of every member's status, in config order.
    pub fn status_receivers(&self) -> Vec<tokio::sync::watch::Receiver<MemberStatus>> {
        self.members.iter().map(|(_, r)| r.status.clone()).collect()
    }

    /// Every member's status, in config order.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        self.members
            .iter()
            .map(|(_, r)| r.status.borrow().clone())
            .collect()
    }

    /// Stops the cluster: members whose shutdown action is Kill are stopped (deregistered,
    /// stop signal, SIGKILL after the timeout); those with None are deregistered and left
    /// running, as in the C# version. All at once; returns when every runner is done.
    pub async fn stop(self) {
        for recycler in &self.recyclers {
            recycler.abort();
        }
        for (action, runner) in &self.members {
            let order = match action {
                ShutdownAction::Kill => Order::Stop,
                ShutdownAction::None => Order::Leave,
            };
            runner.order(order).await;
        }
        for (_, runner) in self.members {
            let _ = runner.task.await;
        }
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
    let executable = agent.executable_path.as_deref().unwrap_or_default();
    let program = resolve_executable(
        executable,
        &options.working_dir,
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
    Ok(MemberSpec {
        tag: format!("{}[{index}]", agent.agent_type),
        command: MemberCommand {
            program,
            args,
            env: agent.environment_variables.clone(),
            working_dir: Some(options.working_dir.clone()),
        },
        health_address: format!("{}:{port}", agent.host_name),
        services,
        locations,
        policy: Policy {
            startup_wait: agent.startup_wait,
            max_failures: cluster.member_max_startup_retries.max(1),
            shutdown_timeout: cluster.member_max_shutdown_time.max(MIN_SHUTDOWN_WAIT),
            ..Policy::default()
        },
        heartbeat: cluster.heartbeat_interval,
        response_timeout: cluster.member_response_timeout,
        stop_signal: Signal::SIGTERM,
        die_with_supervisor: agent.cluster_shutdown_action == ShutdownAction::Kill,
    })
}

/// A port nobody listens on now, for agents with no ports configured.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
