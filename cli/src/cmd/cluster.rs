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
//! members are; `stop`, `start`, `restart`, `drain`, `undrain` and `logs` act on members.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{CLUSTER_FILE, QuaestorConfig};
use quaestor_core::http::cluster::ClusterSource;
use quaestor_core::registry::RegistryReader;
use quaestor_core::registry::etcd::{EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions, start_key_value_store};
use quaestor_core::supervisor::control::{self, ClusterReport, ControlError, MemberReport};
use quaestor_core::supervisor::logbook::LogBook;
use quaestor_core::supervisor::runner::MemberRegistry;
use quaestor_core::supervisor::spawn::{Spawner, log_lines_quieting};
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
    #[command(flatten)]
    http: super::http::HttpArgs,
}

/// The exit codes of the commands that talk to a running cluster.
const EXIT_CODES: &str = "Exit codes: 0 done; 1 the cluster refused (no such member) or the \
order was not carried out in time; 2 no cluster answers on the control socket; 64 bad usage \
(no config file, bad arguments).";

const NAMES_HELP: &str = "NAME is a member as `status` prints it (`Worker[1]`), an agent \
(`Worker#2`, when agents share a type) or an agent type (every member of it).";

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the members of the running cluster: state, pid, port, restarts, last health,
    /// uptime, restarts by cause, last exit, next retry and last reason.
    #[command(
        after_help = EXIT_CODES,
        after_long_help = format!("Example: quaestor cluster status --config quaestor.config.yml --watch\n\n{EXIT_CODES}")
    )]
    Status(StatusArgs),
    /// Stop members and keep them stopped (neither the heartbeat nor the restart policy starts
    /// them again) until `start`, or a reload that changes them. Returns once they stopped.
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster stop 'Worker[1]'\n\n{EXIT_CODES}"))]
    Stop(OrderArgs),
    /// Start stopped members (or members backing off or failed, at once and afresh). Returns
    /// once their processes were spawned.
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster start Worker\n\n{EXIT_CODES}"))]
    Start(OrderArgs),
    /// Restart members: a graceful stop (deregistered, stop signal, SIGKILL after
    /// memberMaxShutdownTimeSeconds), then a start at once; not counted as a crash. Returns
    /// once their new processes were spawned.
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster restart 'Worker[0]' LoadBalancer\n\n{EXIT_CODES}"))]
    Restart(OrderArgs),
    /// Take members out of the registry for maintenance, without stopping them: clients are
    /// no longer sent to them; their process and health checks go on (a crash still
    /// restarts them, and they stay drained).
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster drain 'Worker[2]'\n\n{EXIT_CODES}"))]
    Drain(OrderArgs),
    /// Put drained members back in the registry (as soon as they serve).
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster undrain 'Worker[2]'\n\n{EXIT_CODES}"))]
    Undrain(OrderArgs),
    /// Print the recent output (stdout and stderr) of members: the last lines the cluster
    /// keeps (1000 per member), each with its time, member and stream.
    #[command(after_help = format!("{NAMES_HELP}\n\nExample: quaestor cluster logs 'Worker[0]' -n 50 -f\n\n{EXIT_CODES}"))]
    Logs(LogsArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
    /// Redraw the table every second, until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct OrderArgs {
    /// The members.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    /// The members.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
    /// Keep printing new lines, until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last lines to print.
    #[arg(short = 'n', long, value_name = "LINES", default_value_t = 100)]
    lines: usize,
    #[command(flatten)]
    target: TargetArgs,
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
        Some(Command::Status(status)) if status.watch => watch_status(status).await,
        Some(Command::Status(status)) => show_status(status).await,
        Some(Command::Stop(order)) => give_order(control::Command::Stop, order).await,
        Some(Command::Start(order)) => give_order(control::Command::Start, order).await,
        Some(Command::Restart(order)) => give_order(control::Command::Restart, order).await,
        Some(Command::Drain(order)) => give_order(control::Command::Drain, order).await,
        Some(Command::Undrain(order)) => give_order(control::Command::Undrain, order).await,
        Some(Command::Logs(logs)) => show_logs(logs).await,
        None => run_cluster(args.target, args.http).await,
    }
}

async fn run_cluster(target: TargetArgs, http: super::http::HttpArgs) -> Result<Exit, Failure> {
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
    // The KeyValueStore member (etcd) logs at DEBUG but for its warnings and errors.
    let quiet: Vec<String> = config
        .agents
        .iter()
        .filter(|a| a.is_key_value_store())
        .map(|a| format!("{}[0]", a.agent_type))
        .collect();
    let logs = LogBook::default();
    let spawner = Spawner {
        shim: quaestor_bin,
        sink: logs.sink(log_lines_quieting(move |member| {
            quiet.iter().any(|q| q == member)
        })),
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
    // Watched before anything is announced: a signal sent as soon as a line is read must not
    // meet the default action (which ends the process).
    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::unexpected)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Failure::unexpected)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(Failure::unexpected)?;
    let announcer = tokio::spawn(quaestor_core::supervisor::ready::announce(
        members_rx.clone(),
    ));
    let systemd = crate::notify::ClusterNotifier::start(members.subscribe());
    let name = config.cluster.as_ref().and_then(|c| c.name.clone());
    let settings = config.cluster.clone().unwrap_or_default();
    let http_server = super::http::start(
        &http,
        (settings.http_host_name, settings.http_port),
        "clusterConfig.httpHostName",
        None,
        ClusterSource::new(name.clone(), config.path.clone(), members_rx.clone())
            .with_logs(logs.clone()),
    )
    .await?;
    let control_server = control_listener.map(|listener| {
        tokio::spawn(control::serve(
            listener,
            name,
            config.path.clone(),
            members_rx,
            logs,
        ))
    });

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

    announcer.abort();
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
    if let Some(server) = http_server {
        server.shutdown().await;
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
            started = %summary.started.join(", "),
            stopped = %summary.stopped.join(", "),
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

/// A control error as a failure: 2 when no cluster answers, else 1.
fn control_failure(error: ControlError) -> Failure {
    let exit = match error {
        ControlError::NotRunning { .. } => Exit::Unreachable,
        _ => Exit::Failure,
    };
    Failure::new(exit, error)
}

/// Writes `text` to stdout; false once stdout is closed (a pipe whose reader is gone).
fn print_out(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

async fn give_order(command: control::Command, args: OrderArgs) -> Result<Exit, Failure> {
    let socket = args.target.socket()?;
    let answer = control::ask_order(&socket, command, &args.names)
        .await
        .map_err(control_failure)?;
    let text: String = answer
        .members
        .iter()
        .map(|m| format!("{}: {}\n", m.member, m.outcome))
        .collect();
    print_out(&text);
    Ok(Exit::Ok)
}

async fn show_logs(args: LogsArgs) -> Result<Exit, Failure> {
    let socket = args.target.socket()?;
    let mut closed = false;
    let read = control::ask_logs(&socket, &args.names, args.lines, args.follow, |entry| {
        if !closed {
            closed = !print_out(&format!(
                "{} {} {}: {}\n",
                entry.time, entry.member, entry.stream, entry.line
            ));
        }
    });
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Failure::unexpected)?;
    tokio::select! {
        result = read => result.map_err(control_failure)?,
        _ = interrupt.recv() => {}
    }
    Ok(Exit::Ok)
}

/// `status --watch`: the table again every second (the screen cleared first on a terminal),
/// until Ctrl-C; while no cluster answers, says so and keeps asking.
async fn watch_status(args: StatusArgs) -> Result<Exit, Failure> {
    use std::io::IsTerminal;
    let socket = args.target.socket()?;
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // One listener for the whole loop: a Ctrl-C while the status is asked is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Failure::unexpected)?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = interrupt.recv() => return Ok(Exit::Ok),
        }
        let frame = match control::ask_status(&socket).await {
            Ok(report) => status_table(&report),
            Err(error) => format!("quaestor: {error}\n"),
        };
        let frame = if terminal {
            format!("\x1b[H\x1b[2J{frame}")
        } else {
            format!("{frame}\n")
        };
        if !print_out(&frame) {
            return Ok(Exit::Ok);
        }
    }
}

async fn show_status(args: StatusArgs) -> Result<Exit, Failure> {
    let socket = args.target.socket()?;
    let report = control::ask_status(&socket)
        .await
        .map_err(control_failure)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::unexpected)?;
        crate::output::line(text);
    } else {
        crate::output::text(status_table(&report));
    }
    Ok(Exit::Ok)
}

/// The columns of the status table (the last reason follows them).
const COLUMNS: [&str; 14] = [
    "MEMBER",
    "STATE",
    "PID",
    "PORT",
    "RESTARTS",
    "HEALTH",
    "UPTIME",
    "CRASH",
    "UNHEALTHY",
    "RECYCLE",
    "CONFIG",
    "OPERATOR",
    "LAST-EXIT",
    "NEXT-RETRY",
];

/// The status as a table, one member per line; the last reason ends each line (it is
/// words, so it comes last).
fn status_table(report: &ClusterReport) -> String {
    let dash = || "-".to_owned();
    let mut rows = vec![COLUMNS.map(str::to_owned)];
    for m in &report.members {
        rows.push([
            m.member.clone(),
            if m.drained {
                format!("{},drained", m.state)
            } else {
                m.state.clone()
            },
            m.pid.map_or_else(dash, |p| p.to_string()),
            m.port.to_string(),
            m.restarts.to_string(),
            m.last_health.clone().unwrap_or_else(dash),
            m.uptime_seconds
                .map_or_else(dash, |s| uptime(Duration::from_secs_f64(s))),
            m.crashes.to_string(),
            m.health_restarts.to_string(),
            m.recycles.to_string(),
            m.config_restarts.to_string(),
            m.operator_restarts.to_string(),
            last_exit_cell(m),
            next_retry_cell(m),
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "cluster {} (pid {}, {})\n",
        report.name.as_deref().unwrap_or("(unnamed)"),
        report.pid,
        report.config.display()
    );
    let reasons = std::iter::once("LAST-REASON".to_owned()).chain(
        report
            .members
            .iter()
            .map(|m| m.last_reason.clone().unwrap_or_else(dash)),
    );
    for (row, reason) in rows.iter().zip(reasons) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(&cells.join("  "));
        out.push_str("  ");
        out.push_str(&reason);
        out.push('\n');
    }
    out
}

/// `code=3`, `SIGKILL`, or `-`.
fn last_exit_cell(m: &MemberReport) -> String {
    match (&m.last_exit_code, &m.last_exit_signal) {
        (Some(code), _) => format!("code={code}"),
        (None, Some(signal)) => signal.clone(),
        (None, None) => "-".to_owned(),
    }
}

/// `10:31:07(+4s)`: the time of day (UTC) of the next start, and how far off it is; `-`.
fn next_retry_cell(m: &MemberReport) -> String {
    match (&m.next_retry_at, m.next_retry_seconds) {
        (Some(at), Some(seconds)) => {
            let time = at.get(11..19).unwrap_or(at);
            format!(
                "{time}(+{})",
                uptime(Duration::from_secs_f64(seconds.ceil()))
            )
        }
        _ => "-".to_owned(),
    }
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
    fn the_table_ends_each_line_with_the_last_reason() {
        let member = MemberReport {
            member: "Worker[1]".into(),
            agent_type: "Worker".into(),
            index: 1,
            state: "BackingOff".into(),
            pid: None,
            port: 5001,
            restarts: 2,
            failures: 1,
            last_health: Some("SERVING".into()),
            uptime_seconds: None,
            last_exit_code: None,
            last_exit_signal: Some("SIGKILL".into()),
            last_exit: Some("killed by SIGKILL".into()),
            last_exit_at: Some("2026-12-01T10:31:03Z".into()),
            last_reason: Some("killed by SIGKILL".into()),
            last_reason_kind: Some("crash".into()),
            crashes: 2,
            health_restarts: 1,
            recycles: 0,
            config_restarts: 0,
            operator_restarts: 0,
            next_retry_at: Some("2026-12-01T10:31:07Z".into()),
            next_retry_seconds: Some(3.2),
            drained: false,
        };
        let report = ClusterReport {
            name: Some("c".into()),
            pid: 9,
            config: "q.yml".into(),
            members: vec![member],
        };
        let table = status_table(&report);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0].len(), 15, "{table}");
        assert_eq!(
            lines[1],
            [
                "Worker[1]",
                "BackingOff",
                "-",
                "5001",
                "2",
                "SERVING",
                "-",
                "2",
                "1",
                "0",
                "0",
                "0",
                "SIGKILL",
                "10:31:07(+4s)",
                "killed",
                "by",
                "SIGKILL"
            ],
            "{table}"
        );
    }

    #[test]
    fn uptimes_are_short() {
        assert_eq!(uptime(Duration::from_secs(12)), "12s");
        assert_eq!(uptime(Duration::from_secs(250)), "4m10s");
        assert_eq!(uptime(Duration::from_secs(7500)), "2h5m");
        assert_eq!(uptime(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d4h");
    }
}
