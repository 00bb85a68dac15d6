//! `quaestor load-balancer`: the balancer as a server, configured by the C# Quaestor's
//! `quaestor.loadbalancer.config.yml` (`loadBalancerConfig` and `agents`). With a
//! KeyValueStore agent, the registry is its etcd; the Worker agents serve until etcd first
//! answers (retried in the background), and after that etcd's registry.

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{LOAD_BALANCER_FILE, QuaestorConfig};
use quaestor_core::http::balancer::BalancerSource;
use quaestor_core::registry::RegistryReader;
use quaestor_core::registry::etcd::EtcdRegistry;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::HealthState;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::{ConfigArgs, resolve};
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen on this host instead of the config's hostName.
    #[arg(long)]
    host: Option<String>,
    /// Listen on this port instead of the config's port (0: any free port).
    #[arg(long)]
    port: Option<u16>,
    #[command(flatten)]
    http: super::http::HttpArgs,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let config = args.config.load(LOAD_BALANCER_FILE)?;
    let (balancer, backend) = start_balancer(&config).await?;
    // Watched before `serve` announces the port: a signal sent as soon as the line is read
    // must not meet the default action (which ends the process).
    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::unexpected)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Failure::unexpected)?;
    let mut server = serve(&balancer, &config, args.host, args.port).await?;
    let settings = config.load_balancer.clone().unwrap_or_default();
    let http = super::http::start(
        &args.http,
        (settings.http_host_name.clone(), settings.http_port),
        "loadBalancerConfig.httpHostName",
        settings.server_tls(&config),
        BalancerSource::new(balancer.clone(), backend),
    )
    .await?;
    let systemd = crate::notify::ServerNotifier::ready("serving discovery");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        ended = server.wait() => return Err(Failure::unexpected(match ended {
            Ok(()) => "the server stopped by itself".to_owned(),
            Err(e) => e.to_string(),
        })),
    }
    systemd.stopping();
    let stopped = server.shutdown().await;
    if let Some(http) = http {
        http.shutdown().await;
    }
    stopped.map_err(Failure::unexpected)?;
    Ok(Exit::Ok)
}

/// Serves `balancer` at the config's `loadBalancerConfig` address (`host`/`port` override it)
/// with its TLS, and prints `listening on ADDR` (what tests and scripts wait for).
pub async fn serve(
    balancer: &Balancer,
    config: &QuaestorConfig,
    host: Option<String>,
    port: Option<u16>,
) -> Result<ServerHandle, Failure> {
    let settings = config.load_balancer.clone().unwrap_or_default();
    let host = host
        .or(settings.host_name.clone())
        .unwrap_or_else(|| "localhost".to_owned());
    let port = port.or(settings.port).ok_or_else(|| {
        Failure::usage(format!(
            "{}: loadBalancerConfig.port is not set",
            config.path.display()
        ))
    })?;
    let addr = resolve("loadBalancerConfig.hostName", &host, port).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(Failure::unexpected)?;
    let server = balancer
        .server(HealthState::new())
        .with_tls(settings.server_tls(config))
        .spawn(listener)
        .map_err(Failure::usage)?;
    crate::output::announce(format_args!("listening on {local}"));
    tracing::info!(%local, config = %config.path.display(), "balancer serving");
    Ok(server)
}

/// The etcd of a KeyValueStore agent (or `clusterConfig.etcd`), followed in the background;
/// until it first answers, the Worker agents of the config (as the C# load balancer falls
/// back when etcd is unreachable). Without an etcd, the Worker agents for good. Also names
/// the registry's backend (`etcd` or `memory`).
async fn start_balancer(config: &QuaestorConfig) -> Result<(Balancer, &'static str), Failure> {
    let options = config
        .load_balancer
        .clone()
        .unwrap_or_default()
        .balancer_options(config);
    let workers = MemoryRegistry::from_locations(config.worker_locations());
    if let Some(etcd) = config.etcd_options() {
        let registry =
            EtcdRegistry::start_with_fallback(etcd, workers).map_err(super::etcd_failure)?;
        // etcd up: serve its registry from the first answer; else do not wait long.
        registry.wait_loaded(super::FIRST_LOAD_WAIT).await;
        return Ok((Balancer::start(registry, options), "etcd"));
    }
    tracing::info!(
        locations = workers.current().locations.len(),
        "registry: the config's Worker agents"
    );
    Ok((Balancer::start(workers, options), "memory"))
}
