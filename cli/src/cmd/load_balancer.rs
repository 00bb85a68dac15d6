//! `quaestor load-balancer`: the balancer as a server, configured by the C# Quaestor's
//! `quaestor.loadbalancer.config.yml` (`loadBalancerConfig` and `agents`).

use std::net::SocketAddr;
use std::path::PathBuf;

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{LOAD_BALANCER_FILE, LoadBalancerConfig, QuaestorConfig, find_config};
use quaestor_core::registry::etcd::EtcdRegistry;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::server::health::HealthState;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file [default: quaestor.config.yml or quaestor.loadbalancer.config.yml in --config-dir].
    #[arg(long, value_name = "FILE", env = crate::env::CONFIG)]
    config: Option<PathBuf>,
    /// Where to look for the config file.
    #[arg(long, value_name = "DIR", default_value = ".")]
    config_dir: PathBuf,
    /// Listen on this host instead of the config's hostName.
    #[arg(long)]
    host: Option<String>,
    /// Listen on this port instead of the config's port (0: any free port).
    #[arg(long)]
    port: Option<u16>,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let path = find_config(args.config.as_deref(), &args.config_dir, LOAD_BALANCER_FILE)
        .map_err(Failure::usage)?;
    let config = QuaestorConfig::load(&path).map_err(Failure::usage)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let settings = config.load_balancer.clone().unwrap_or_default();
    let host = args
        .host
        .or(settings.host_name.clone())
        .unwrap_or_else(|| "localhost".to_owned());
    let port = args.port.or(settings.port).ok_or_else(|| {
        Failure::usage(format!(
            "{}: loadBalancerConfig.port is not set (or pass --port)",
            path.display()
        ))
    })?;
    let addr = resolve(&host, port).await?;

    let balancer = start_balancer(&config, &settings).await;
    let health = HealthState::new();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::new(Exit::Failure, format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(Failure::unexpected)?;
    let mut server = balancer
        .server(health)
        .with_tls(settings.server_tls(&config))
        .spawn(listener)
        .map_err(Failure::usage)?;
    println!("listening on {local}");
    tracing::info!(%local, config = %path.display(), "load balancer serving");

    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::unexpected)?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        ended = server.wait() => return Err(Failure::unexpected(match ended {
            Ok(()) => "the server stopped by itself".to_owned(),
            Err(e) => e.to_string(),
        })),
    }
    server.shutdown().await.map_err(Failure::unexpected)?;
    Ok(Exit::Ok)
}

/// The etcd of a KeyValueStore agent if it answers; else the Worker agents (as the C# load
/// balancer falls back when etcd is unreachable).
async fn start_balancer(config: &QuaestorConfig, settings: &LoadBalancerConfig) -> Balancer {
    let options = settings.balancer_options();
    if let Some(etcd) = config.etcd_options() {
        let endpoints = etcd.endpoints.join(",");
        match EtcdRegistry::connect(etcd).await {
            Ok(registry) => {
                tracing::info!(%endpoints, "registry: etcd");
                return Balancer::start(registry, options);
            }
            Err(error) => {
                tracing::warn!(%error, "etcd unreachable; using the Worker agents of the config instead")
            }
        }
    }
    let locations = config.worker_locations();
    tracing::info!(
        locations = locations.len(),
        "registry: the config's Worker agents"
    );
    Balancer::start(MemoryRegistry::from_locations(locations), options)
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Failure> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::usage(format!("hostName {host:?}: {e}")))?
        .next()
        .ok_or_else(|| Failure::usage(format!("hostName {host:?} resolves to no address")))
}
