//! What a configuration means for the balancer: its registry (the Worker agents, or an etcd:
//! `clusterConfig.etcd` or a KeyValueStore agent's), its probing options and its TLS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{AgentConfig, EtcdAccessConfig, LoadBalancerConfig, QuaestorConfig};
use crate::balancer::BalancerOptions;
use crate::balancer::xds::LbPolicies;
use crate::registry::ServiceLocation;
use crate::registry::etcd::EtcdOptions;
use crate::tls::{ClientTls, ServerTls};

impl QuaestorConfig {
    /// The locations the Worker agents serve (one per port and service name): the memory
    /// registry, as the C# load balancer's fallback. Agents excluded from the registry, and
    /// names that cannot form a key, are left out (with a warning for the latter).
    pub fn worker_locations(&self) -> Vec<ServiceLocation> {
        let mut locations = Vec::new();
        for agent in self
            .agents
            .iter()
            .filter(|a| a.is_worker() && !a.exclude_from_service_registry)
        {
            for &port in &agent.ports {
                for service in agent.service_names.iter().flatten() {
                    match ServiceLocation::new("", service, &agent.host_name, port) {
                        Ok(location) => locations.push(location.with_tls(agent.use_tls)),
                        Err(error) => {
                            tracing::warn!(%error, service, port, "a Worker agent's location is left out")
                        }
                    }
                }
            }
        }
        locations
    }

    /// The etcd of the registry: `clusterConfig.etcd` (with `clusterConfig.etcdOptions`) if
    /// given, else the KeyValueStore agent's (a member per port, with its `etcdOptions`),
    /// else none.
    pub fn etcd_options(&self) -> Option<EtcdOptions> {
        if let Some(cluster) = self.cluster.as_ref().filter(|c| !c.etcd.is_empty()) {
            let tls = cluster.etcd.iter().any(|e| e.starts_with("https://"));
            let options = EtcdOptions::new(cluster.etcd.iter().cloned());
            return Some(self.etcd_access(options, &cluster.etcd_options, tls));
        }
        let store = self.agents.iter().find(|a| a.is_key_value_store())?;
        let options = EtcdOptions::new(etcd_endpoints(store));
        Some(self.etcd_access(options, &store.etcd_options, store.use_tls))
    }

    /// `options` with the TLS and credentials of `access` (TLS also when `tls` says so).
    fn etcd_access(
        &self,
        options: EtcdOptions,
        access: &EtcdAccessConfig,
        tls: bool,
    ) -> EtcdOptions {
        let path = |p: &Option<String>| p.as_deref().map(|p| self.resolve_path(p));
        let credentials = access
            .user
            .clone()
            .zip(access.password.clone().map(|p| p.0));
        options.with_access(
            tls,
            path(&access.ca_file),
            path(&access.cert_file).zip(path(&access.key_file)),
            credentials,
        )
    }

    /// A path in the config, relative to the config file's folder.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let folder = self.path.parent().unwrap_or(Path::new("."));
        folder.join(path)
    }
}

fn etcd_endpoints(store: &AgentConfig) -> Vec<String> {
    let scheme = if store.use_tls { "https" } else { "http" };
    let ports = if store.ports.is_empty() {
        vec![2379]
    } else {
        store.ports.clone()
    };
    ports
        .iter()
        .map(|port| format!("{scheme}://{}:{port}", store.host_name))
        .collect()
}

impl LoadBalancerConfig {
    /// The balancer's options; `workerCaFile`, `workerCertFile` and `workerKeyFile` (relative
    /// to `config`'s folder) say how `useTLS` workers are checked.
    pub fn balancer_options(&self, config: &QuaestorConfig) -> BalancerOptions {
        let path = |p: &Option<String>| p.as_deref().map(|p| config.resolve_path(p));
        let ca = path(&self.worker_ca_file);
        let identity = path(&self.worker_cert_file).zip(path(&self.worker_key_file));
        let client_tls = (ca.is_some() || identity.is_some()).then_some(ClientTls {
            ca,
            identity,
            domain: None,
        });
        BalancerOptions {
            probe_interval: self.probe_interval,
            response_timeout: self.service_response_timeout,
            recently_used_timeout: self.recently_used_timeout,
            client_tls,
            lb_policies: self.lb_policies(config),
        }
    }

    /// The LB policy of every service for xDS clients: `xdsLbPolicies`, then the `xdsLbPolicy`
    /// of the first agent that serves it, then `xdsLbPolicy`.
    pub fn lb_policies(&self, config: &QuaestorConfig) -> LbPolicies {
        let mut services = HashMap::new();
        for agent in &config.agents {
            if let Some(policy) = agent.xds_lb_policy {
                for service in agent.service_names.iter().flatten() {
                    services.entry(service.clone()).or_insert(policy);
                }
            }
        }
        services.extend(self.xds_lb_policies.iter().cloned());
        LbPolicies {
            default: self.xds_lb_policy,
            services,
        }
    }

    /// TLS from `certificate` and `privateKeyFile` (PEM, relative to `config`'s folder); with
    /// `enforceMutualTls`, clients must present a certificate signed by a CA in the
    /// `certificate` file (the server's chain, as for a self-signed or private CA).
    pub fn server_tls(&self, config: &QuaestorConfig) -> Option<ServerTls> {
        let certificate = config.resolve_path(self.certificate.as_deref()?);
        let key = config.resolve_path(self.private_key_file.as_deref()?);
        let tls = ServerTls::new(&certificate, key);
        Some(if self.enforce_mutual_tls {
            tls.with_client_ca(certificate)
        } else {
            tls
        })
    }
}
