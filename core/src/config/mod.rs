//! The C# Quaestor's YAML configuration files, read so that a site's existing files load
//! unchanged (DESIGN.md "Configuration files").
//!
//! One file may hold any of three sections:
//!
//! ```yaml
//! loadBalancerConfig:          # the balancer (`quaestor load-balancer`)
//!   hostName: localhost
//!   port: 5150
//! clusterConfig:               # the supervisor (`quaestor cluster`)
//!   name: example_cluster
//!   heartBeatIntervalSeconds: 30
//! agents:                      # the processes: started by the cluster, registry of the balancer
//!   - agentType: Worker
//!     executablePath: worker
//!     commandLineArguments: "{Port} 100"
//!     processCount: 2
//!     ports: [ 5161, 5162 ]
//!     serviceNames:
//!     - Worker
//! ```
//!
//! What the C# version accepted, this accepts: keys in any case (`useTLS` for `useTls`), a key
//! without a value meaning "none", environment variable values of any scalar type taken as text,
//! flow and block lists, `agents` as a list (with `agentType`) or as a mapping from agent type to
//! agent (older files), `serverConfig` as the older name of `loadBalancerConfig`, and the C#
//! example's `bootstrapCluster` (ignored, with a [`ConfigWarning`]). What it silently ignored or
//! misread, this refuses: unknown keys (with the nearest valid key as a hint), duplicate keys
//! (also differing only in case), values of the wrong type or out of range, and a `ports` list
//! whose length differs from `processCount`. Every error names the file, line, column and key
//! path ([`ConfigError`]).
//!
//! Nothing here panics, whatever the input: the YAML tree is built without recursion, with
//! nesting and alias expansion bounded.

mod balancer;
mod bind;
mod error;
mod yaml;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use nix::sys::signal::Signal;

pub use crate::balancer::xds::LbPolicy;
pub use error::{ConfigError, ConfigWarning, KeyPath, Pos, Problem};

/// The file every role looks for first.
pub const GENERAL_FILE: &str = "quaestor.config.yml";
/// The C# `quaestor-cluster`'s own file.
pub const CLUSTER_FILE: &str = "quaestor.cluster.config.yml";
/// The C# `quaestor-loadbalancer`'s own file.
pub const LOAD_BALANCER_FILE: &str = "quaestor.loadbalancer.config.yml";

/// Config files larger than this are refused unread (real ones are a few KiB; this bounds the
/// memory a hostile or mistaken file can take).
const MAX_FILE_BYTES: usize = 1024 * 1024;

/// One config file: whichever of the three sections it has.
#[derive(Debug, Clone, PartialEq)]
pub struct QuaestorConfig {
    /// The file it came from (as given; used in messages).
    pub path: PathBuf,
    /// `clusterConfig`, if the file has it.
    pub cluster: Option<ClusterConfig>,
    /// `loadBalancerConfig` (or the older `serverConfig`), if the file has it.
    pub load_balancer: Option<LoadBalancerConfig>,
    /// `agents`, in file order.
    pub agents: Vec<AgentConfig>,
    /// Keys that were accepted but have no effect; worth logging.
    pub warnings: Vec<ConfigWarning>,
}

/// `clusterConfig`: the supervisor's timing. Defaults are the C# `ClusterConfig`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `name`: the cluster's name (for display).
    pub name: Option<String>,
    /// `heartBeatIntervalSeconds` (default 30 s): how often every member's health is checked.
    pub heartbeat_interval: Duration,
    /// `memberResponseTimeOutSeconds` (default 5 s): how long one health check may take.
    pub member_response_timeout: Duration,
    /// `memberMaxShutdownTimeSeconds` (default 45 s): how long a stopping member may take
    /// before it is killed. The C# samples write 0 ("not implemented" there): kill at once.
    pub member_max_shutdown_time: Duration,
    /// `memberMaxStartupRetries` (default 25): restarts tried before a member is given up.
    pub member_max_startup_retries: u32,
    /// `etcd` (quaestor's own): client URLs of an etcd the cluster registers its members in
    /// (one per member of the etcd cluster). Empty: a KeyValueStore agent's etcd, if any, else
    /// the in-memory registry.
    pub etcd: Vec<String>,
    /// `etcdOptions` (quaestor's own): TLS and credentials for `etcd`.
    pub etcd_options: EtcdAccessConfig,
    /// `httpHostName` (quaestor's own; default `127.0.0.1`): the address of the cluster's
    /// HTTP listener (`/metrics`, `/status.json`, `/healthz`, `/readyz`).
    pub http_host_name: Option<String>,
    /// `httpPort` (quaestor's own; 0–65535, 0: any free port): serve the cluster's HTTP
    /// listener on this port; none: no listener (unless `--http`).
    pub http_port: Option<u16>,
}

/// `etcdOptions` (quaestor's own), under `clusterConfig` (for `clusterConfig.etcd`) or on a
/// KeyValueStore agent: how to reach an etcd with TLS or authentication on. Paths are
/// relative to the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdAccessConfig {
    /// `caFile`: the CA (PEM) that signed the etcd members' certificates; implies TLS.
    pub ca_file: Option<String>,
    /// `certFile`: client certificate (PEM) for etcd's client-cert-auth (needs `keyFile`).
    pub cert_file: Option<String>,
    /// `keyFile`: the client certificate's private key (PEM).
    pub key_file: Option<String>,
    /// `user`: etcd user name (needs `passwordEnv` or `passwordFile`).
    pub user: Option<String>,
    /// The password of `user`, read when the file is loaded from `passwordEnv` (the name of
    /// an environment variable) or `passwordFile` (a file; one trailing newline is dropped).
    pub password: Option<Secret>,
}

impl EtcdAccessConfig {
    /// Whether any key was given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A password: compared, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_interval: Duration::from_secs(30),
            member_response_timeout: Duration::from_secs(5),
            member_max_shutdown_time: Duration::from_secs(45),
            member_max_startup_retries: 25,
            etcd: Vec::new(),
            etcd_options: EtcdAccessConfig::default(),
            http_host_name: None,
            http_port: None,
        }
    }
}

/// `loadBalancerConfig`: where the balancer serves and how it probes.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancerConfig {
    /// `hostName`: the address to serve on (and the TLS certificate's name).
    pub host_name: Option<String>,
    /// `port` (1–65535).
    pub port: Option<u16>,
    /// `certificate`: the server certificate (PEM file; the C# version also took a Windows
    /// certificate store subject or thumbprint). None: plain text.
    pub certificate: Option<String>,
    /// `privateKeyFile`: the certificate's private key (PEM file).
    pub private_key_file: Option<String>,
    /// `enforceMutualTls` (default false): require client certificates.
    pub enforce_mutual_tls: bool,
    /// `serviceResponseTimeoutSeconds` (default 2 s): how long one health check or load report
    /// of a worker may take.
    pub service_response_timeout: Duration,
    /// `recentlyUsedTimeoutSeconds` (default 5 s): how long a location just handed out counts
    /// as busier (anti-herding).
    pub recently_used_timeout: Duration,
    /// `probeIntervalMs` (quaestor's own; default 1000 ms, 1–3600000): how often every
    /// location's load is polled.
    pub probe_interval: Duration,
    /// `workerCaFile` (quaestor's own): the CA (PEM) that signed the certificates of `useTLS`
    /// workers; None: the system's roots.
    pub worker_ca_file: Option<String>,
    /// `workerCertFile` (quaestor's own): client certificate (PEM) presented to workers that
    /// require mutual TLS (needs `workerKeyFile`).
    pub worker_cert_file: Option<String>,
    /// `workerKeyFile` (quaestor's own): its private key (PEM).
    pub worker_key_file: Option<String>,
    /// `xdsLbPolicy` (quaestor's own; default `round_robin`): the LB policy xDS clients are
    /// told to use for services that name none of their own.
    pub xds_lb_policy: LbPolicy,
    /// `xdsLbPolicies` (quaestor's own): the LB policy of named services, over the agents'
    /// `xdsLbPolicy` and the default.
    pub xds_lb_policies: Vec<(String, LbPolicy)>,
    /// `httpHostName` (quaestor's own; default `127.0.0.1`): the address of the HTTP listener
    /// (metrics, status, health; see `quaestor_core::http`).
    pub http_host_name: Option<String>,
    /// `httpPort` (quaestor's own; 0–65535, 0: any free port): serve the HTTP listener on
    /// this port. None: no HTTP listener (`--http` overrides both).
    pub http_port: Option<u16>,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        Self {
            host_name: None,
            port: None,
            certificate: None,
            private_key_file: None,
            enforce_mutual_tls: false,
            service_response_timeout: Duration::from_secs(2),
            recently_used_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_millis(1000),
            worker_ca_file: None,
            worker_cert_file: None,
            worker_key_file: None,
            xds_lb_policy: LbPolicy::RoundRobin,
            xds_lb_policies: Vec::new(),
            http_host_name: None,
            http_port: None,
        }
    }
}

/// What the cluster does with an agent's processes when it shuts down
/// (`clusterShutdownAction`, the C# `ShutdownAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownAction {
    /// `None` (the default): leave them running.
    #[default]
    None,
    /// `Kill`: stop them.
    Kill,
}

/// One entry of `agents`: a kind of process, how to start it, where it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `agentType` (or the key, in the mapping form): `Worker`, `KeyValueStore`,
    /// `LoadBalancer`, or any other name.
    pub agent_type: String,
    /// `executablePath`: absolute, or relative (resolved by the supervisor).
    pub executable_path: Option<String>,
    /// `commandLineArguments`, with `{HostName}` and `{Port}` placeholders; None: no arguments.
    pub command_line_arguments: Option<String>,
    /// `processCount`: processes to keep running (1 or more). Not given: one per port, or 1.
    pub process_count: u32,
    /// `clusterShutdownAction` (default None).
    pub cluster_shutdown_action: ShutdownAction,
    /// `environmentVariables`, in file order, every value as its text.
    pub environment_variables: Vec<(String, String)>,
    /// `hostName` (default `127.0.0.1`, the C# `LocalProcess` default): where the processes
    /// are reached for health checks and where clients are sent.
    pub host_name: String,
    /// `useTls` (the C# samples write `useTLS`; default false).
    pub use_tls: bool,
    /// `clientCertificate`: the client certificate to check TLS processes with.
    pub client_certificate: Option<String>,
    /// `ports`: one per process; empty: ephemeral ports, picked when each process starts (only
    /// for a local `hostName`).
    pub ports: Vec<u16>,
    /// `serviceNames`: None if not given; `Some(vec![])` for `serviceNames: []`. Either way a
    /// health check with no names checks the empty service name (as etcd needs); only names
    /// given are registered.
    pub service_names: Option<Vec<String>>,
    /// `startupWaitSeconds` (default 8 s; 0 also means 8 s, as in the C# version): the time a
    /// starting process is given before it must be healthy.
    pub startup_wait: Duration,
    /// `recyclingIntervalHours`: restart idle processes about this often (±10 %); None for 0
    /// or not given. Fractions allowed.
    pub recycling_interval_hours: Option<f64>,
    /// `excludeFromServiceRegistry` (default false): run and check, but never register.
    pub exclude_from_service_registry: bool,
    /// `workingDirectory` (quaestor's own): where the processes run, relative to the config
    /// file's folder; None: the config file's folder.
    pub working_directory: Option<String>,
    /// `stopSignal` (quaestor's own; default SIGTERM): what a stop sends to the process group
    /// before the SIGKILL that follows `memberMaxShutdownTimeSeconds` later.
    pub stop_signal: Signal,
    /// `healthCheck` (quaestor's own).
    pub health_check: HealthCheckConfig,
    /// `restartBackoff` (quaestor's own).
    pub restart_backoff: RestartBackoffConfig,
    /// `etcdOptions` (quaestor's own; KeyValueStore agents only): TLS and credentials for
    /// the agent's etcd.
    pub etcd_options: EtcdAccessConfig,
    /// `xdsLbPolicy` (quaestor's own): the LB policy xDS clients are told to use for this
    /// agent's services (over `loadBalancerConfig.xdsLbPolicy`).
    pub xds_lb_policy: Option<LbPolicy>,
}

/// An agent's `healthCheck`: when failed heartbeats lead to a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// `failuresBeforeRestart` (default 1, as in the C# version, which restarts at the first
    /// failed heartbeat): failed health checks in a row before the member is restarted.
    pub failures_before_restart: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            failures_before_restart: 1,
        }
    }
}

/// An agent's `restartBackoff`: how long a member that crashed or failed waits before it is
/// started again. The wait doubles with each failure in a row (with jitter), up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoffConfig {
    /// `initialSeconds` (default 0.5): the wait after the first failure.
    pub initial: Duration,
    /// `maxSeconds` (default 60): the longest wait.
    pub max: Duration,
    /// `resetAfterSeconds` (default 60): serving this long forgets earlier failures.
    pub reset_after: Duration,
}

impl Default for RestartBackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl AgentConfig {
    /// An agent of `agent_type` with every default.
    pub fn new(agent_type: impl Into<String>) -> Self {
        Self {
            agent_type: agent_type.into(),
            executable_path: None,
            command_line_arguments: None,
            process_count: 1,
            cluster_shutdown_action: ShutdownAction::None,
            environment_variables: Vec::new(),
            host_name: "127.0.0.1".to_owned(),
            use_tls: false,
            client_certificate: None,
            ports: Vec::new(),
            service_names: None,
            startup_wait: Duration::from_secs(8),
            recycling_interval_hours: None,
            exclude_from_service_registry: false,
            working_directory: None,
            stop_signal: Signal::SIGTERM,
            health_check: HealthCheckConfig::default(),
            restart_backoff: RestartBackoffConfig::default(),
            etcd_options: EtcdAccessConfig::default(),
            xds_lb_policy: None,
        }
    }

    /// Whether this agent is the etcd the cluster uses as registry (`agentType: KeyValueStore`,
    /// in any case).
    pub fn is_key_value_store(&self) -> bool {
        self.agent_type.eq_ignore_ascii_case("KeyValueStore")
    }

    /// Whether this agent's processes are workers (`agentType: Worker`, in any case): the
    /// locations of the in-memory registry.
    pub fn is_worker(&self) -> bool {
        self.agent_type.eq_ignore_ascii_case("Worker")
    }
}

impl QuaestorConfig {
    /// Reads and checks the config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::from_bytes(&bytes, path)
    }

    /// Checks config file content given as bytes: UTF-8 (with or without BOM) or UTF-16 with
    /// a BOM. `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        check_size(bytes.len(), path)?;
        let text = yaml::decode(bytes)
            .map_err(|(pos, problem)| ConfigError::invalid(path, pos, KeyPath::root(), problem))?;
        Self::parse(&text, path)
    }

    /// Checks config file content. `path` is only used in messages.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        check_size(text.len(), path)?;
        let root = yaml::parse(text).map_err(|failure| {
            ConfigError::invalid(path, failure.pos, failure.key, failure.problem)
        })?;
        bind::bind(root.as_ref(), path)
    }
}

fn check_size(len: usize, path: &Path) -> Result<(), ConfigError> {
    if len <= MAX_FILE_BYTES {
        return Ok(());
    }
    Err(ConfigError::invalid(
        path,
        Pos { line: 1, column: 1 },
        KeyPath::root(),
        Problem::InvalidValue(format!(
            "larger than {} KiB: not a config file",
            MAX_FILE_BYTES / 1024
        )),
    ))
}

/// The config file a role reads: `explicit` (`--config FILE`) if given, else the first of
/// [`GENERAL_FILE`] and `role_file` (e.g. [`LOAD_BALANCER_FILE`]) that exists in `dir`
/// (`--config-dir`, default the current folder). The error lists every path tried.
pub fn find_config(
    explicit: Option<&Path>,
    dir: &Path,
    role_file: &str,
) -> Result<PathBuf, ConfigError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(file) => vec![file.to_owned()],
        None => {
            let mut names = vec![GENERAL_FILE];
            if role_file != GENERAL_FILE {
                names.push(role_file);
            }
            names.into_iter().map(|name| dir.join(name)).collect()
        }
    };
    match candidates.iter().find(|path| path.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(ConfigError::NotFound { tried: candidates }),
    }
}
