//! `quaestor cluster`: runs the members of a C# `quaestor.config.yml` (or
//! `quaestor.cluster.config.yml`), registers them while they serve and, when the file has a
//! `loadBalancerConfig`, serves the balancer over them in the same process. A KeyValueStore
//! agent is the cluster's etcd: it is started first and used as the registry; a
//! `clusterConfig.etcd` list names an etcd that runs elsewhere (`clusterConfig.etcdOptions`:
//! its TLS and credentials). Neither needs to answer when the cluster starts: members are
//! registered, and the balancer reads etcd, as soon as it does.
//!
//! SIGHUP, or a change of the config file, applies the file again (see [`Cluster::reload`]).
//! `quaestor cluster status` asks the running cluster, over its control socket, how its
//! members are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{CLUSTER_FILE, QuaestorConfig};
use quaestor_core::registry::RegistryReader;
use quaestor_core::registry::etcd::{EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions, start_key_value_store};
use quaestor_core::supervisor::control::{self, ClusterReport, ControlError};
use quaestor_core::supervisor::runner::MemberRegistry;
use quaestor_core::supervisor::spawn::{Spawner, log_lines};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::ConfigArgs;
use crate::exit::{Exit, Failure};

/// How often the config file is looked at for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the members of the running cluster: state, pid, port, restarts, last health,
    /// uptime. Exit 2 when no cluster runs this config.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// Which cluster: its config file, and its control socket.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The cluster's control socket [default: one per config file, under $XDG_RUNTIME_DIR
    /// or the temp folder].
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
}

impl TargetArgs {
    /// `--control`, else the default socket of the config file (which must exist).
    fn socket(&self) -> Result<PathBuf, Failure> {
        match &self.control {
            Some(socket) => Ok(socket.clone()),
            None => Ok(control::default_socket_path(
                &self.config.find(CLUSTER_FILE)?,
            )),
        }
    }
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    match args.command {
        Some(Command::Status(status)) => show_status(status).await,
        None => run_cluster(args.target).await,
    }
}

async fn run_cluster(target: TargetArgs) -> Result<Exit, Failure> {
    let mut config = target.config.load(CLUSTER_FILE)?;
    let quaestor_bin = std::env::current_exe().ok();
    let options = ClusterOptions {
        working_dir: config
            .path
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(".")),
        quaestor_bin: quaestor_bin.clone(),
    };
    let spawner = Spawner {
        shim: quaestor_bin,
        sink: log_lines(),
    };

    // Before anything starts: one cluster per config.
    let socket = target.socket()?;
    let control_listener = match control::bind(&socket).await {
        Ok(listener) => Some(listener),
        Err(error @ ControlError::AlreadyRunning { .. }) => {
            return Err(Failure::new(Exit::Failure, error));
        }
        Err(error) => {
            tracing::warn!(%error, "no control socket: `quaestor cluster status` will not answer");
            None
        }
    };

    // A KeyValueStore agent is the cluster's etcd: started first, then the registry.
    let store = start_key_value_store(&config, &options, spawner.clone())
        .await
        .map_err(Failure::usage)?;
    // etcd need not answer yet: the registrar registers, and the balancer reads, once it does.
    let (registry, balancer): (Arc<dyn MemberRegistry>, Option<Balancer>) =
        match config.etcd_options() {
            Some(etcd) => {
                let what = if store.is_some() {
                    "the KeyValueStore agent"
                } else {
                    "clusterConfig.etcd"
                };
                let fail = |error| super::etcd_failure(error).context(what);
                let registrar = EtcdRegistrar::start(etcd.clone()).map_err(fail)?;
                let reader = EtcdRegistry::start(etcd).map_err(fail)?;
                reader.wait_loaded(super::FIRST_LOAD_WAIT).await;
                (Arc::new(registrar), balancer_over(reader, &config))
            }
            None => {
                let memory = MemoryRegistry::new();
                (Arc::new(memory.clone()), balancer_over(memory, &config))
            }
        };

    // The balancer first, so that clients can ask as soon as members serve.
    let balancer_server = match &balancer {
        Some(balancer) => Some(super::load_balancer::serve(balancer, &config, None, None).await?),
        None => None,
    };

    let mut cluster = Cluster::start(&config, &options, registry, spawner)
        .await
        .map_err(Failure::usage)?;
    tracing::info!(members = cluster.statuses().len(), config = %config.path.display(), "cluster started");

    // The status lists the KeyValueStore member first, as it is started first.
    let store_view = store.as_ref().map(|store| store.view());
    let all_members = |cluster: &Cluster| {
        store_view
            .iter()
            .cloned()
            .chain(cluster.members())
            .collect::<Vec<_>>()
    };
    let (members, members_rx) = watch::channel(all_members(&cluster));
    let systemd = crate::notify::ClusterNotifier::start(members.subscribe());
    let control_server = control_listener.map(|listener| {
        let name = config.cluster.as_ref().and_then(|c| c.name.clone());
        tokio::spawn(control::serve(
            listener,
            name,
            config.path.clone(),
            members_rx,
        ))
    });

    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::unexpected)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Failure::unexpected)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(Failure::unexpected)?;
    let mut file_check = tokio::time::interval(FILE_CHECK);
    file_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = fingerprint(&config.path);
    loop {
        let why = tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping the cluster"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping the cluster"); break; }
            _ = hangup.recv() => "SIGHUP",
            _ = file_check.tick() => {
                let now = fingerprint(&config.path);
                if now.is_none() || now == seen {
                    continue;
                }
                "the config file changed"
            }
        };
        seen = fingerprint(&config.path);
        if let Some(systemd) = &systemd {
            systemd.reloading();
        }
        reload(&mut cluster, &mut config, why).await;
        members.send_replace(all_members(&cluster));
        if let Some(systemd) = &systemd {
            systemd.reloaded();
        }
    }

    if let Some(systemd) = &systemd {
        systemd.stopping();
    }
    cluster.stop().await;
    // The registry last: the members deregistered from it while they stopped.
    if let Some(store) = store {
        store.stop().await;
    }
    if let Some(server) = balancer_server {
        server.shutdown().await.map_err(Failure::unexpected)?;
    }
    if let Some(server) = control_server {
        server.abort();
        let _ = std::fs::remove_file(&socket);
    }
    tracing::info!("cluster stopped");
    Ok(Exit::Ok)
}

/// Reads the config file again and moves the cluster to it. A file that does not load, or
/// whose new members cannot be built, changes nothing (the error is logged).
async fn reload(cluster: &mut Cluster, running: &mut QuaestorConfig, why: &str) {
    let path = running.path.clone();
    let new = match QuaestorConfig::load(&path) {
        Ok(new) => new,
        Err(error) => {
            tracing::error!(%error, "{why}: the config does not load; the cluster keeps running as it was");
            return;
        }
    };
    for warning in &new.warnings {
        tracing::warn!("{warning}");
    }
    for part in fixed_parts_changed(running, &new) {
        tracing::warn!("{why}: {part} changed; it applies when `quaestor cluster` is restarted");
    }
    match cluster.reload(&new).await {
        Ok(summary) if summary.is_empty() => {
            tracing::info!(
                kept = summary.kept,
                "{why}: config applied; no member to start or stop"
            );
        }
        Ok(summary) => tracing::info!(
            started = ?summary.started,
            stopped = ?summary.stopped,
            kept = summary.kept,
            "{why}: config applied"
        ),
        Err(error) => {
            tracing::error!(%error, "{why}: the new config cannot be applied; the cluster keeps running as it was");
            return;
        }
    }
    *running = new;
}

/// What a reload does not change in a running cluster: its registry and its balancer.
fn fixed_parts_changed(old: &QuaestorConfig, new: &QuaestorConfig) -> Vec<&'static str> {
    let store = |c: &QuaestorConfig| c.agents.iter().find(|a| a.is_key_value_store()).cloned();
    let etcd = |c: &QuaestorConfig| {
        c.cluster
            .as_ref()
            .map(|c| (c.etcd.clone(), c.etcd_options.clone()))
    };
    let mut changed = Vec::new();
    if old.load_balancer != new.load_balancer {
        changed.push("loadBalancerConfig");
    }
    if store(old) != store(new) {
        changed.push("the KeyValueStore agent");
    }
    if etcd(old).unwrap_or_default() != etcd(new).unwrap_or_default() {
        changed.push("clusterConfig.etcd");
    }
    changed
}

/// The config file's content, condensed; None while it cannot be read.
fn fingerprint(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

async fn show_status(args: StatusArgs) -> Result<Exit, Failure> {
    let socket = args.target.socket()?;
    let report = control::ask_status(&socket).await.map_err(|error| {
        let exit = match error {
            ControlError::NotRunning { .. } => Exit::Unreachable,
            _ => Exit::Failure,
        };
        Failure::new(exit, error)
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::unexpected)?;
        crate::output::line(text);
    } else {
        crate::output::text(status_table(&report));
    }
    Ok(Exit::Ok)
}

/// The status as a table, one member per line.
fn status_table(report: &ClusterReport) -> String {
    let mut rows = vec![[
        "MEMBER".to_owned(),
        "STATE".to_owned(),
        "PID".to_owned(),
        "PORT".to_owned(),
        "RESTARTS".to_owned(),
        "HEALTH".to_owned(),
        "UPTIME".to_owned(),
    ]];
    for m in &report.members {
        rows.push([
            m.member.clone(),
            m.state.clone(),
            m.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            m.port.to_string(),
            m.restarts.to_string(),
            m.last_health.clone().unwrap_or_else(|| "-".to_owned()),
            m.uptime_seconds
                .map_or_else(|| "-".to_owned(), |s| uptime(Duration::from_secs_f64(s))),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "cluster {} (pid {}, {})\n",
        report.name.as_deref().unwrap_or("(unnamed)"),
        report.pid,
        report.config.display()
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
fn uptime(duration: Duration) -> String {
    let s = duration.as_secs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The in-process balancer over `registry`, when the config has `loadBalancerConfig`.
fn balancer_over<R: RegistryReader + Send + Sync + 'static>(
    registry: R,
    config: &QuaestorConfig,
) -> Option<Balancer> {
    let settings = config.load_balancer.as_ref()?;
    Some(Balancer::start(registry, settings.balancer_options(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_are_short() {
        assert_eq!(uptime(Duration::from_secs(12)), "12s");
        assert_eq!(uptime(Duration::from_secs(250)), "4m10s");
        assert_eq!(uptime(Duration::from_secs(7500)), "2h5m");
        assert_eq!(uptime(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d4h");
    }
}
