//! `quaestor cluster`: runs the members of a C# `quaestor.config.yml` (or
//! `quaestor.cluster.config.yml`), registers them while they serve and, when the file has a
//! `loadBalancerConfig`, serves the balancer over them in the same process. A KeyValueStore
//! agent is the cluster's etcd: it is started first and used as the registry.

use std::path::PathBuf;
use std::sync::Arc;

use quaestor_core::balancer::Balancer;
use quaestor_core::config::{CLUSTER_FILE, QuaestorConfig};
use quaestor_core::registry::RegistryReader;
use quaestor_core::registry::etcd::{EtcdError, EtcdOptions, EtcdRegistrar, EtcdRegistry};
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::supervisor::cluster::{Cluster, ClusterOptions, start_key_value_store};
use quaestor_core::supervisor::runner::MemberRegistry;
use quaestor_core::supervisor::spawn::{Spawner, log_lines};
use tokio::signal::unix::{SignalKind, signal};

use super::ConfigArgs;
use crate::exit::{Exit, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
}

pub async fn run(args: Args) -> Result<Exit, Failure> {
    let config = args.config.load(CLUSTER_FILE)?;
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

    // A KeyValueStore agent is the cluster's etcd: started first, then the registry.
    let store = start_key_value_store(&config, &options, spawner.clone())
        .await
        .map_err(Failure::usage)?;
    let etcd = match config.etcd_options() {
        Some(etcd) if store.is_some() => connect_etcd(etcd)
            .await
            .inspect_err(|error| tracing::error!(%error, "the cluster's etcd does not answer; members are registered in memory"))
            .ok(),
        _ => None,
    };
    let (registry, balancer): (Arc<dyn MemberRegistry>, Option<Balancer>) = match etcd {
        Some((registrar, reader)) => (Arc::new(registrar), balancer_over(reader, &config)),
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

    let cluster = Cluster::start(&config, &options, registry, spawner).map_err(Failure::usage)?;
    tracing::info!(members = cluster.statuses().len(), config = %config.path.display(), "cluster started");

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

/// The in-process balancer over `registry`, when the config has `loadBalancerConfig`.
fn balancer_over<R: RegistryReader + Send + Sync + 'static>(
    registry: R,
    config: &QuaestorConfig,
) -> Option<Balancer> {
    let settings = config.load_balancer.as_ref()?;
    Some(Balancer::start(registry, settings.balancer_options()))
}

/// A registrar for the members and a reader for the balancer, on the cluster's etcd.
async fn connect_etcd(options: EtcdOptions) -> Result<(EtcdRegistrar, EtcdRegistry), EtcdError> {
    let registrar = EtcdRegistrar::connect(options.clone()).await?;
    let reader = EtcdRegistry::connect(options).await?;
    Ok((registrar, reader))
}
