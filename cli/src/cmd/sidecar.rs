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
use std::time::Duration;

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::config::Signal;
use quaestor_core::http::sidecar::SidecarSource;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::etcd::{EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::server::health::HealthState;
use quaestor_core::sidecar::{Check, Registration, Sidecar, SidecarOptions};
use quaestor_core::supervisor::member::{Exit as Ended, Policy};
use quaestor_core::supervisor::runner::{MemberSpec, Runner};
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
    #[command(flatten)]
    http: super::http::HttpArgs,
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
    let mut signals = Signals::watch()?;
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

    let http_server = super::http::start(
        &args.http,
        (None, None),
        "--http",
        None,
        SidecarSource::new(Arc::clone(&sidecar), registration.is_some()),
    )
    .await?;

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
    wait_for_stop(&mut signals, &child_pid).await?;
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
    if let Some(server) = http_server {
        server.shutdown().await;
    }
    Ok(if code == 0 {
        Exit::Ok
    } else {
        Exit::Code(code)
    })
}

/// The signals the sidecar handles, watched from its start: one sent as soon as the sidecar
/// announces its port must not meet its default action (which ends the process).
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
    user2: tokio::signal::unix::Signal,
}

impl Signals {
    fn watch() -> Result<Self, Failure> {
        let watch = |kind| signal(kind).map_err(Failure::unexpected);
        Ok(Signals {
            terminate: watch(SignalKind::terminate())?,
            interrupt: watch(SignalKind::interrupt())?,
            hangup: watch(SignalKind::hangup())?,
            user1: watch(SignalKind::user_defined1())?,
            user2: watch(SignalKind::user_defined2())?,
        })
    }
}

/// Waits for SIGTERM or SIGINT; SIGHUP, SIGUSR1 and SIGUSR2 go on to the started worker.
async fn wait_for_stop(signals: &mut Signals, child_pid: &AtomicU32) -> Result<(), Failure> {
    loop {
        let forward = tokio::select! {
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = signals.hangup.recv() => Signal::SIGHUP,
            _ = signals.user1.recv() => Signal::SIGUSR1,
            _ = signals.user2.recv() => Signal::SIGUSR2,
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

/// Runs the worker until `stop`, as the cluster runs a member (the supervisor's runner: its
/// state machine, backoff and stop sequence), without health checks or registration, which
/// the sidecar does itself: only the worker's exit restarts it. Returns its exit code once
/// stopped (128 + signal for a signal; 0 when it was not running).
async fn keep_running(
    command: MemberCommand,
    sidecar: Arc<Sidecar>,
    child_pid: Arc<AtomicU32>,
    mut stop: watch::Receiver<bool>,
) -> u8 {
    let spec = MemberSpec {
        tag: "worker".to_owned(),
        command,
        health_address: String::new(),
        services: Vec::new(),
        locations: Vec::new(),
        policy: Policy {
            backoff_initial: RESTART_FIRST,
            backoff_max: RESTART_MAX,
            reset_after: RESTART_RESET,
            // The sidecar never gives up on its worker.
            max_failures: u32::MAX,
            shutdown_timeout: STOP_GRACE,
            ..Policy::default()
        },
        heartbeat: Duration::from_secs(3600),
        response_timeout: Duration::from_secs(5),
        stop_signal: Signal::SIGTERM,
        die_with_supervisor: true,
        check_health: false,
    };
    let spawner = Spawner {
        shim: std::env::current_exe().ok(),
        sink: log_lines(),
    };
    let runner = Runner::start(spec, spawner, Arc::new(MemoryRegistry::new()));
    let mut status = runner.status.clone();
    let mut shown = None;
    loop {
        let pid = status.borrow_and_update().pid;
        if pid != shown {
            child_pid.store(pid.unwrap_or(0), Ordering::Relaxed);
            sidecar.set_pid(pid);
            if let Some(pid) = pid {
                crate::output::announce(format_args!("worker started pid {pid}"));
            }
            shown = pid;
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let running = status.borrow().pid.is_some();
    runner.stop().await;
    child_pid.store(0, Ordering::Relaxed);
    sidecar.set_pid(None);
    let last_exit = status.borrow().last_exit;
    match last_exit {
        _ if !running => 0,
        Some(Ended::Code(code)) => u8::try_from(code).unwrap_or(1),
        Some(Ended::Signal(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        Some(Ended::Unknown) | None => 1,
    }
}
