//! `quaestor`: one binary for every role.
#![forbid(unsafe_code)]

mod cmd;
mod env;
mod exit;
mod logging;
mod notify;
mod output;

use clap::{Parser, Subcommand};

use crate::exit::Failure;

/// Keeps fleets of gRPC worker processes alive and tells clients which worker to call next.
#[derive(Debug, Parser)]
#[command(name = "quaestor", version, about, max_term_width = 100)]
struct Cli {
    /// After each subcommand's own options in its `--help`.
    #[command(flatten, next_help_heading = "Log options")]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference worker: the demo Work service, health and load on one port.
    /// SIGUSR1 turns it NOT_SERVING, SIGUSR2 SERVING again; SIGTERM stops it gracefully.
    #[command(after_help = examples(&[
        ("quaestor worker --port 5161", "serve the demo Work service, health and load on :5161"),
        ("kill -USR1 PID", "turn it NOT_SERVING (SIGUSR2: SERVING again)"),
    ]))]
    Worker(cmd::worker::Args),
    /// Ask a server for its health; exit 0 SERVING, 1 not serving or unknown, 2 unreachable.
    #[command(after_help = examples(&[
        ("quaestor health 127.0.0.1:5161", "the server as a whole: SERVING"),
        ("quaestor health https://host:5161 Worker --ca ca.pem", "one service, over TLS"),
    ]))]
    Health(cmd::health::Args),
    /// Ask a worker for the load report of one of its services.
    #[command(after_help = examples(&[
        ("quaestor load 127.0.0.1:5161 Worker", "requests, capacity, utilisation, memory"),
        ("quaestor load 127.0.0.1:5161 Worker --json", "the same as one JSON object"),
    ]))]
    Load(cmd::load::Args),
    /// Run the processes of a C# cluster config: start, check, restart and register them.
    #[command(after_help = examples(&[
        ("quaestor cluster --config quaestor.config.yml", "run the cluster (SIGHUP: reload)"),
        ("quaestor cluster status --config quaestor.config.yml", "its members, from the control socket"),
    ]))]
    Cluster(cmd::cluster::Args),
    /// Run the balancer: discovery, grpclb and xDS over the registry of the C# load balancer config.
    #[command(after_help = examples(&[
        ("quaestor load-balancer --config quaestor.loadbalancer.config.yml", "serve discovery"),
        ("quaestor load-balancer --config-dir /etc/quaestor --port 0", "any free port"),
    ]))]
    LoadBalancer(cmd::load_balancer::Args),
    /// Make one worker balanceable without touching it: probe it, serve health and load for
    /// it, keep it registered in etcd while it is healthy; optionally run it (`-- COMMAND`).
    #[command(after_help = examples(&[
        ("quaestor sidecar --service Worker --port 8080 --etcd http://127.0.0.1:2379",
         "probe :8080, keep it registered while it is healthy"),
        ("quaestor sidecar --service Worker --port 8080 -- ./server --port {Port}",
         "and run the worker, restarted when it dies"),
    ]))]
    Sidecar(cmd::sidecar::Args),
    /// Ask a balancer which workers serve a service; exit 1 when none does.
    #[command(after_help = examples(&[
        ("quaestor discover 127.0.0.1:5150 Worker", "every healthy worker: host:port lines"),
        ("quaestor discover 127.0.0.1:5150 Worker --top --max 1", "the least loaded one"),
    ]))]
    Discover(cmd::discover::Args),
    /// (Internal) Start a cluster member with a parent-death signal: `exec-member --parent PID
    /// -- PROGRAM ARGS...`. The supervisor starts members through it.
    #[command(hide = true)]
    ExecMember(cmd::exec_member::Args),
    /// List, follow or add registrations in etcd (the operator's view of the registry).
    #[command(subcommand)]
    Registry(cmd::registry::Command),
    /// Help stock gRPC xDS clients (`xds:///SERVICE` targets) use a quaestor balancer.
    #[command(subcommand)]
    Xds(cmd::xds::Command),
}

/// An "Examples:" section for `--help`: each command line, then what it does.
fn examples(lines: &[(&str, &str)]) -> String {
    let mut text = "Examples:".to_owned();
    for (command, what) in lines {
        text.push_str(&format!("\n  {command}\n      {what}"));
    }
    text
}

/// Names the binary answers to as the C# Quaestor's programs (a link or copy named so):
/// the subcommand they stand for.
const PROGRAM_NAMES: &[(&str, &str)] = &[
    ("quaestor-worker", "worker"),
    ("quaestor-loadbalancer", "load-balancer"),
    ("quaestor-cluster", "cluster"),
];

/// The command line, with the subcommand put in when the binary runs under one of
/// [`PROGRAM_NAMES`] (`quaestor-worker 5161 100` is `quaestor worker 5161 100`).
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if let Some((_, command)) = PROGRAM_NAMES.iter().find(|(program, _)| *program == name) {
        args.insert(1, command.into());
    }
    args
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(arguments()) {
        Ok(cli) => cli,
        Err(error) => return exit::usage_error(&error),
    };
    // Becomes the member (no runtime, no logging): must stay minimal.
    if let Command::ExecMember(args) = &cli.command {
        return cmd::exec_member::run(args);
    }
    if let Err(error) = logging::init(&cli.log) {
        return Failure::usage(error).report();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Failure::unexpected(error).report(),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Worker(args) => cmd::worker::run(args).await,
            Command::Health(args) => cmd::health::run(args).await,
            Command::Load(args) => cmd::load::run(args).await,
            Command::Registry(command) => cmd::registry::run(command).await,
            Command::Discover(args) => cmd::discover::run(args).await,
            Command::LoadBalancer(args) => cmd::load_balancer::run(args).await,
            Command::Cluster(args) => cmd::cluster::run(args).await,
            Command::Sidecar(args) => cmd::sidecar::run(args).await,
            Command::Xds(command) => cmd::xds::run(command),
            Command::ExecMember(_) => unreachable!("handled before the runtime starts"),
        }
    });
    // Do not wait for tasks still running (e.g. a connection being closed).
    runtime.shutdown_background();
    match outcome {
        Ok(exit) => exit.into(),
        Err(failure) => failure.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
