//! `quaestor sidecar`: one worker that knows nothing of quaestor made balanceable. The sidecar
//! probes it, serves health and load for it on a control port, keeps it registered in etcd
//! while it is healthy and, with `-- COMMAND`, runs it (restarting it when it dies). etcd
//! need not be up when the sidecar starts: it registers (and `--serve-discovery` answers
//! from etcd) as soon as etcd answers.
//!
//! Prints `listening on ADDR` (the control port), `discovery listening on ADDR` (with
//! `--serve-discovery`) and `worker started pid PID` (with a command), for scripts and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::config::Signal;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::etcd::{EtcdRegistrar, EtcdRegistry};
use quaestor_core::server::health::HealthState;
use quaestor_core::sidecar::{Check, Registration, Sidecar, SidecarOptions};
use quaestor_core::supervisor::spawn::{
    MemberCommand, Spawner, log_lines, resolve_executable, signal_group,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{EtcdAccessArgs, etcd_failure, parse_duration, resolve};
use crate::exit::{Exit, Failure};

/// How long a started worker may take to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Restart delays of a started worker that dies: doubling from the first, up to the last.
const RESTART_FIRST: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before dying restarts after the first delay again.
const RESTART_RESET: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worker's service: probed, reported and registered under this name.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// The worker's port.
    #[arg(long, value_name = "WORKER_PORT")]
    port: u16,
    /// The worker's host (also where the sidecar serves, and its registered address).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Where the sidecar serves health and load for the worker (0: a free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    control_port: u16,
    /// How the worker's health is probed: grpc (its gRPC health of NAME), tcp, http:/PATH
    /// (2xx/3xx) or exec:COMMAND (exit 0).
    #[arg(long, default_value = "grpc", value_parser = clap::value_parser!(Check))]
    check: Check,
    /// Time between two probes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Bound of one probe.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Requests the worker takes at once (reported unless the worker reports its own load).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1..))]
    capacity: i32,
    /// etcd client URL to keep the worker registered in; repeat, or separate with commas.
    /// etcd need not be up: the registration is made as soon as it answers.
    #[arg(long = "etcd", value_name = "URL", env = crate::env::ETCD_ENDPOINTS, value_delimiter = ',')]
    etcd: Vec<String>,
    #[command(flatten)]
    etcd_access: EtcdAccessArgs,
    /// The scope to register in.
    #[arg(long, default_value = "")]
    scope: String,
    /// The registration's lease: it ends this long after the sidecar stops renewing it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// The worker's process, whose CPU time is its utilisation [default: the started command].
    #[arg(long)]
    pid: Option<u32>,
    /// Also answer ServiceDiscoveryGrpc and grpclb on this port, from the etcd registry.
    #[arg(long, value_name = "PORT", requires = "etcd")]
    serve_discovery: Option<u16>,
    /// Run the worker: `-- COMMAND ARGS...`, `{Port}` and `{HostName}` replaced.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let sidecar = Arc::new(
        Sidecar::new(SidecarOptions {
            service: args.service.clone(),
            host: args.host.clone(),
            port: args.port,
            check: args.check.clone(),
            interval: args.interval,
            timeout: args.timeout,
            capacity: args.capacity,
        })
        .map_err(|e| Failure::usage(format!("--service: {e}")))?,
    );
    sidecar.set_pid(args.pid);

    let addr = resolve("--host", &args.host, args.control_port).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot listen on {addr}: {e}")))?;
    let control = listener.local_addr().map_err(Failure::unexpected)?;
    let control_server = sidecar
        .reporter()
        .server()
        .spawn(listener)
        .map_err(Failure::usage)?;
    crate::output::announce(format_args!("listening on {control}"));

    let etcd = if args.etcd.is_empty() {
        None
    } else {
        Some(
            args.etcd_access
                .options(&args.etcd)?
                .with_lease_ttl(args.ttl),
        )
    };
    let registration = match &etcd {
        Some(options) => {
            let location = ServiceLocation::new(&args.scope, &args.service, &args.host, args.port)
                .map_err(Failure::usage)?
                .with_control(format!("{}:{}", args.host, control.port()))
                .with_agent("quaestor sidecar");
            let registrar = EtcdRegistrar::start(options.clone()).map_err(etcd_failure)?;
            Some(Registration {
                registrar,
                location,
            })
        }
        None => None,
    };

    let discovery_server = match (args.serve_discovery, &etcd) {
        (Some(port), Some(options)) => {
            let registry = EtcdRegistry::start(options.clone()).map_err(etcd_failure)?;
            registry.wait_loaded(super::FIRST_LOAD_WAIT).await;
            let balancer = Balancer::start(registry, BalancerOptions::default());
            let addr = resolve("--host", &args.host, port).await?;
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                Failure::new(Exit::Failure, format!("cannot listen on {addr}: {e}"))
            })?;
            let local = listener.local_addr().map_err(Failure::unexpected)?;
            let server = balancer
                .server(HealthState::new())
                .spawn(listener)
                .map_err(Failure::usage)?;
            crate::output::announce(format_args!("discovery listening on {local}"));
            Some((balancer, server))
        }
        _ => None,
    };

    // Two stops, in this order: the probing (which withdraws the registration), the worker.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (stop_worker_tx, stop_worker_rx) = watch::channel(false);
    let child_pid = Arc::new(AtomicU32::new(0));
    let keeper = if args.command.is_empty() {
        None
    } else {
        let command = worker_command(&args)?;
        Some(tokio::spawn(keep_running(
            command,
            Arc::clone(&sidecar),
            Arc::clone(&child_pid),
            stop_worker_rx,
        )))
    };

    let probing = {
        let sidecar = Arc::clone(&sidecar);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            sidecar
                .run(registration, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };

    let systemd = crate::notify::ServerNotifier::ready(&format!(
        "serving health and load of {}",
        args.service
    ));
    wait_for_stop(&child_pid).await?;
    systemd.stopping();
    // Withdraw first, then stop the worker, then the servers.
    let _ = stop_tx.send(true);
    let _ = probing.await;
    let _ = stop_worker_tx.send(true);
    let code = match keeper {
        Some(keeper) => keeper.await.map_err(Failure::unexpected)?,
        None => 0,
    };
    control_server
        .shutdown()
        .await
        .map_err(Failure::unexpected)?;
    if let Some((_balancer, server)) = discovery_server {
        server.shutdown().await.map_err(Failure::unexpected)?;
    }
    Ok(if code == 0 {
        Exit::Ok
    } else {
        Exit::Code(code)
    })
}

/// Waits for SIGTERM or SIGINT; SIGHUP, SIGUSR1 and SIGUSR2 go on to the started worker.
async fn wait_for_stop(child_pid: &AtomicU32) -> Result<(), Failure> {
    let watch = |kind| signal(kind).map_err(Failure::unexpected);
    let mut terminate = watch(SignalKind::terminate())?;
    let mut interrupt = watch(SignalKind::interrupt())?;
    let mut hangup = watch(SignalKind::hangup())?;
    let mut user1 = watch(SignalKind::user_defined1())?;
    let mut user2 = watch(SignalKind::user_defined2())?;
    loop {
        let forward = tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = hangup.recv() => Signal::SIGHUP,
            _ = user1.recv() => Signal::SIGUSR1,
            _ = user2.recv() => Signal::SIGUSR2,
        };
        let pid = child_pid.load(Ordering::Relaxed);
        if pid != 0 {
            let _ = signal_group(pid, forward);
        }
    }
}

/// The command after `--`, its program found as the supervisor finds members' programs.
fn worker_command(args: &Args) -> Result<MemberCommand, Failure> {
    let replace = |arg: &str| {
        arg.replace("{Port}", &args.port.to_string())
            .replace("{HostName}", &args.host)
    };
    let cwd = std::env::current_dir().map_err(Failure::unexpected)?;
    let exe = std::env::current_exe().ok();
    let program = resolve_executable(
        &args.command[0],
        &cwd,
        exe.as_deref().and_then(|e| e.parent()),
    )
    .map_err(Failure::usage)?;
    Ok(MemberCommand {
        program,
        args: args.command[1..].iter().map(|a| replace(a)).collect(),
        env: Vec::new(),
        working_dir: None,
    })
}

/// Runs the worker until `stop`: restarted with backoff whenever it dies. Returns its exit
/// code once stopped (128 + signal for a signal).
async fn keep_running(
    command: MemberCommand,
    sidecar: Arc<Sidecar>,
    child_pid: Arc<AtomicU32>,
    mut stop: watch::Receiver<bool>,
) -> u8 {
    let spawner = Spawner {
        shim: std::env::current_exe().ok(),
        sink: log_lines(),
    };
    let mut failures = 0u32;
    loop {
        let mut child = match spawner.spawn(&command, "worker", true) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "cannot start the worker");
                failures += 1;
                if pause(restart_delay(failures), &mut stop).await {
                    return 1;
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or_default();
        child_pid.store(pid, Ordering::Relaxed);
        sidecar.set_pid(Some(pid));
        crate::output::announce(format_args!("worker started pid {pid}"));
        let started = Instant::now();
        let exited = tokio::select! {
            exited = child.wait() => Some(exited),
            _ = stop.wait_for(|s| *s) => None,
        };
        if let Some(exited) = exited {
            child_pid.store(0, Ordering::Relaxed);
            sidecar.set_pid(None);
            tracing::warn!(pid, status = ?exited.ok(), "the worker died; it is restarted");
            failures = if started.elapsed() >= RESTART_RESET {
                1
            } else {
                failures + 1
            };
            if pause(restart_delay(failures), &mut stop).await {
                return 0;
            }
            continue;
        }
        let _ = signal_group(pid, Signal::SIGTERM);
        let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::warn!(pid, "the worker did not stop in time; SIGKILL");
                let _ = signal_group(pid, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        child_pid.store(0, Ordering::Relaxed);
        return exit_code(status);
    }
}

fn exit_code(status: Option<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            _ => 1,
        },
        None => 1,
    }
}

fn restart_delay(failures: u32) -> Duration {
    RESTART_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RESTART_MAX)
}

/// Sleeps `delay` unless told to stop first (then true).
async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}
