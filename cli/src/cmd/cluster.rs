//! `quaestor cluster`: runs the members of a C# `quaestor.config.yml` (or
//! `quaestor.cluster.config.yml`), registers them while they serve and, when the file has a
//! `loadBalancerConfig`, serves the balancer over them in the same process. A KeyValueStore
//! agent is the cluster's etcd: it is started first and used as the registry.

use std::path::PathBuf;
use std::sync::Arc;

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{CLUSTER_FILE, QuaestorConfig, find_config};
use quaestor_core::registry::etcd::{EtcdError, EtcdOptions, EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::server::health::HealthState;
use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions, start_key_value_store};
use quaestor_core::supervisor::runner::MemberRegistry;
use quaestor_core::supervisor::spawn::{Spawner, log_lines};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file [default: quaestor.config.yml or quaestor.cluster.config.yml in --config-dir].
    #[arg(long, value_name = "FILE", env = crate::env::CONFIG)]
    config: Option<PathBuf>,
    /// Where to look for the config file.
    #[arg(long, value_name = "DIR", default_value = ".")]
    config_dir: PathBuf,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let path = find_config(args.config.as_deref(), &args.config_dir, CLUSTER_FILE)
        .map_err(Failure::usage)?;
    let config = QuaestorConfig::load(&path).map_err(Failure::usage)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let quaestor_bin = std::env::current_exe().ok();
    let options = ClusterOptions {
        working_dir: path
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

    // A KeyValueStore agent is the cluster's etcd: started first, then the registry.
    let store = start_key_value_store(&config, &options, spawner.clone())
        .await
        .map_err(Failure::usage)?;
    let memory = MemoryRegistry::new();
    let (registry, balancer_registry): (Arc<dyn MemberRegistry>, BalancerRegistry) = match config
        .etcd_options()
    {
        Some(etcd) if store.is_some() => match connect_etcd(etcd).await {
            Ok((registrar, reader)) => (Arc::new(registrar), BalancerRegistry::Etcd(reader)),
            Err(error) => {
                tracing::error!(%error, "the cluster's etcd does not answer; members are registered in memory");
                (
                    Arc::new(memory.clone()),
                    BalancerRegistry::Memory(memory.clone()),
                )
            }
        },
        _ => (
            Arc::new(memory.clone()),
            BalancerRegistry::Memory(memory.clone()),
        ),
    };

    // The balancer first, so that clients can ask as soon as members serve.
    let mut balancer_server = None;
    if let Some(settings) = &config.load_balancer {
        let host = settings
            .host_name
            .clone()
            .unwrap_or_else(|| "localhost".to_owned());
        let port = settings.port.ok_or_else(|| {
            Failure::usage(format!(
                "{}: loadBalancerConfig.port is not set",
                path.display()
            ))
        })?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "loadBalancerConfig.hostName {host:?} does not resolve"
                ))
            })?;
        let balancer = match balancer_registry {
            BalancerRegistry::Memory(registry) => {
                Balancer::start(registry, settings.balancer_options())
            }
            BalancerRegistry::Etcd(registry) => {
                Balancer::start(registry, settings.balancer_options())
            }
        };
        let server = balancer
            .server(HealthState::new())
            .with_tls(settings.server_tls(&config))
            .bind(addr)
            .await
            .map_err(|e| Failure::new(Exit::Failure, e))?;
        println!("listening on {}", server.local_addr());
        balancer_server = Some(server);
    }

    let cluster = Cluster::start(&config, &options, registry, spawner).map_err(Failure::usage)?;
    tracing::info!(members = cluster.statuses().len(), config = %path.display(), "cluster started");

    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::unexpected)?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping the cluster"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the cluster"),
    }
    cluster.stop().await;
    // The registry last: the members deregistered from it while they stopped.
    if let Some(store) = store {
        store.stop().await;
    }
    if let Some(server) = balancer_server {
        server.shutdown().await.map_err(Failure::unexpected)?;
    }
    tracing::info!("cluster stopped");
    Ok(Exit::Ok)
}

/// Where the in-process balancer reads locations from.
enum BalancerRegistry {
    Memory(MemoryRegistry),
    Etcd(EtcdRegistry),
}

/// A registrar for the members and a reader for the balancer, on the cluster's etcd.
async fn connect_etcd(options: EtcdOptions) -> Result<(EtcdRegistrar, EtcdRegistry), EtcdError> {
    let registrar = EtcdRegistrar::connect(options.clone()).await?;
    let reader = EtcdRegistry::connect(options).await?;
    Ok((registrar, reader))
}
