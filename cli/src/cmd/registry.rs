//! `quaestor registry list|watch|register`: the operator's view of the etcd registry.

use std::time::Duration;

use quaestor_core::registry::etcd::{EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::{RegistryReader, RegistryView, ServiceLocation};
use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{EtcdArgs, etcd_failure, parse_duration};
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print what is registered.
    #[command(after_help = crate::examples(&[
        ("quaestor registry list --etcd http://127.0.0.1:2379", "every registration, by key"),
        ("quaestor registry list Worker --json --etcd http://127.0.0.1:2379", "one service, as JSON lines"),
    ]))]
    List(ListArgs),
    /// Print what is registered, then every change as it happens (until SIGINT/SIGTERM).
    #[command(after_help = crate::examples(&[
        ("quaestor registry watch --etcd http://127.0.0.1:2379", "+ and - lines as workers come and go"),
    ]))]
    Watch(ListArgs),
    /// Register one location and keep it registered (on a lease) until SIGINT/SIGTERM.
    #[command(after_help = crate::examples(&[
        ("quaestor registry register --service Worker --host 10.0.0.5 --port 5161 --etcd http://127.0.0.1:2379",
         "register one worker until SIGTERM"),
    ]))]
    Register(RegisterArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this service.
    service: Option<String>,
    /// Only this scope ("" is the default scope) [default: every scope].
    #[arg(long)]
    scope: Option<String>,
    /// One JSON object per location, one per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The service name.
    #[arg(long)]
    service: String,
    /// The host clients call.
    #[arg(long)]
    host: String,
    /// The port clients call.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The scope ("" is the default scope).
    #[arg(long, default_value = "")]
    scope: String,
    /// The service speaks TLS (the key ends in /https).
    #[arg(long)]
    tls: bool,
    /// host:port where health and load are served, if not the service port.
    #[arg(long, value_name = "HOST:PORT")]
    control: Option<String>,
    /// Lease TTL: how long the entry outlives this process if it is killed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    #[command(flatten)]
    etcd: EtcdArgs,
}

pub async fn run(command: Command) -> Result<Exit, Failure> {
    match command {
        Command::List(args) => list(args).await,
        Command::Watch(args) => watch(args).await,
        Command::Register(args) => register(args).await,
    }
}

async fn list(args: ListArgs) -> Result<Exit, Failure> {
    let registry = EtcdRegistry::connect(args.etcd.options()?)
        .await
        .map_err(etcd_failure)?;
    for location in selected(&registry.current(), &args) {
        crate::output::line(describe(location, args.json));
    }
    Ok(Exit::Ok)
}

async fn watch(args: ListArgs) -> Result<Exit, Failure> {
    let registry = EtcdRegistry::connect(args.etcd.options()?)
        .await
        .map_err(etcd_failure)?;
    let mut views = registry.subscribe();
    let mut shown: Vec<ServiceLocation> = Vec::new();
    let mut was_stale = false;
    let (mut terminate, mut interrupt) = stop_signals()?;
    loop {
        let view = views.borrow_and_update().clone();
        let now: Vec<ServiceLocation> = selected(&view, &args).cloned().collect();
        for gone in shown.iter().filter(|l| !now.contains(l)) {
            crate::output::line(change("-", gone, args.json));
        }
        for added in now.iter().filter(|l| !shown.contains(l)) {
            crate::output::line(change("+", added, args.json));
        }
        if view.stale != was_stale {
            if view.stale {
                tracing::warn!("etcd unreachable: showing the last known registry");
            } else {
                tracing::info!("etcd reachable again");
            }
            was_stale = view.stale;
        }
        shown = now;
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return Ok(Exit::Ok) },
            _ = terminate.recv() => return Ok(Exit::Ok),
            _ = interrupt.recv() => return Ok(Exit::Ok),
        }
    }
}

async fn register(args: RegisterArgs) -> Result<Exit, Failure> {
    let mut location = ServiceLocation::new(&args.scope, &args.service, &args.host, args.port)
        .map_err(Failure::usage)?
        .with_tls(args.tls)
        .with_agent("quaestor registry register")
        .with_pid(std::process::id());
    if let Some(control) = &args.control {
        location = location.with_control(control);
    }
    let options = args.etcd.options()?.with_lease_ttl(args.ttl);
    let registrar = EtcdRegistrar::connect(options)
        .await
        .map_err(etcd_failure)?;
    // Watched before the line below: a signal sent as soon as it is read must not meet the
    // default action (which ends the process and leaves the key until its lease expires).
    let (mut terminate, mut interrupt) = stop_signals()?;
    registrar.register(&location).await.map_err(etcd_failure)?;
    crate::output::line(format_args!("registered {location}"));
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    registrar.stop().await.map_err(etcd_failure)?;
    tracing::info!(%location, "deregistered");
    Ok(Exit::Ok)
}

/// SIGTERM and SIGINT, watched.
fn stop_signals() -> Result<(Signal, Signal), Failure> {
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Failure::unexpected(format!("cannot watch {name}: {e}")))
    };
    Ok((
        watch(SignalKind::terminate(), "SIGTERM")?,
        watch(SignalKind::interrupt(), "SIGINT")?,
    ))
}

fn selected<'a>(
    view: &'a RegistryView,
    args: &'a ListArgs,
) -> impl Iterator<Item = &'a ServiceLocation> + 'a {
    view.locations.values().filter(move |l| {
        args.scope.as_ref().is_none_or(|scope| &l.scope == scope)
            && args
                .service
                .as_ref()
                .is_none_or(|service| &l.service == service)
    })
}

fn describe(location: &ServiceLocation, as_json: bool) -> String {
    if as_json {
        return json!({
            "key": location.key(),
            "scope": location.scope,
            "service": location.service,
            "host": location.host,
            "port": location.port,
            "tls": location.tls,
            "control": location.control_endpoint(),
            "agent": location.agent,
            "pid": location.pid,
        })
        .to_string();
    }
    let mut text = location.key();
    if let Some(control) = &location.control {
        text.push_str(&format!("  control={control}"));
    }
    if let Some(agent) = &location.agent {
        text.push_str(&format!("  agent={agent:?}"));
    }
    if let Some(pid) = location.pid {
        text.push_str(&format!("  pid={pid}"));
    }
    text
}

fn change(sign: &str, location: &ServiceLocation, as_json: bool) -> String {
    if as_json {
        let event = if sign == "+" { "put" } else { "delete" };
        format!(
            "{{\"event\":\"{event}\",\"location\":{}}}",
            describe(location, true)
        )
    } else {
        format!("{sign} {}", describe(location, false))
    }
}
