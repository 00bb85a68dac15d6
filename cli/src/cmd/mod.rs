//! One module per subcommand, and what they share.

pub mod cluster;
pub mod discover;
pub mod exec_member;
pub mod health;
pub mod http;
pub mod load;
pub mod load_balancer;
pub mod registry;
pub mod sidecar;
pub mod worker;
pub mod xds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quaestor_core::client::{ClientError, Target};
use quaestor_core::config::{QuaestorConfig, find_config};
use quaestor_core::registry::etcd::{EtcdError, EtcdOptions};
use quaestor_core::tls::ClientTls;

use crate::exit::{Exit, Failure};

/// How long a command whose registry is etcd waits for etcd's first answer before it serves
/// anyway (etcd is then followed in the background).
pub const FIRST_LOAD_WAIT: Duration = Duration::from_secs(3);

/// Which config file to read: `--config`, else `quaestor.config.yml`, then the role's own
/// file, in `--config-dir`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The config file [default: quaestor.config.yml, then the role's own file, in --config-dir].
    #[arg(long, value_name = "FILE", env = crate::env::CONFIG)]
    config: Option<PathBuf>,
    /// Where to look for the config file.
    #[arg(long, value_name = "DIR", default_value = ".")]
    config_dir: PathBuf,
}

impl ConfigArgs {
    /// The config file's path (not read); exit 64 naming every path tried if none exists.
    pub fn find(&self, role_file: &str) -> Result<PathBuf, Failure> {
        find_config(self.config.as_deref(), &self.config_dir, role_file).map_err(Failure::usage)
    }

    /// Finds and loads the config (`role_file` is the role's own file name); its warnings go
    /// to the log. A missing or bad file exits 64, naming file, line and key.
    pub fn load(&self, role_file: &str) -> Result<QuaestorConfig, Failure> {
        let path = self.find(role_file)?;
        let config = QuaestorConfig::load(&path).map_err(Failure::usage)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }
}

/// The first address `host`:`port` resolves to; `what` names the setting in the error.
pub async fn resolve(what: &str, host: &str, port: u16) -> Result<SocketAddr, Failure> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::usage(format!("{what} {host:?}: {e}")))?
        .next()
        .ok_or_else(|| Failure::usage(format!("{what} {host:?} resolves to no address")))
}

/// How to reach a server.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// How long to wait for the server to connect and to answer (e.g. 5, 5s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Use TLS (also implied by an https:// address or any option below).
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) that signed the server's certificate [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name expected in the server's certificate [default: the host of the address].
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

impl ClientArgs {
    pub fn target(&self, address: &str) -> Result<Target, Failure> {
        let wants_tls =
            self.tls || self.ca.is_some() || self.cert.is_some() || self.tls_domain.is_some();
        let tls = wants_tls.then(|| ClientTls {
            ca: self.ca.clone(),
            identity: self.cert.clone().zip(self.key.clone()),
            domain: self.tls_domain.clone(),
        });
        Target::new(address, tls, self.timeout).map_err(client_failure)
    }
}

/// How to reach etcd.
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URL (http://host:2379); repeat, or separate with commas, for every member.
    #[arg(long = "etcd", value_name = "URL", env = crate::env::ETCD_ENDPOINTS, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub access: EtcdAccessArgs,
}

impl EtcdArgs {
    pub fn options(&self) -> Result<EtcdOptions, Failure> {
        self.access.options(&self.endpoints)
    }
}

/// TLS, credentials and timeout for etcd: the part of [`EtcdArgs`] a command whose etcd is
/// optional (`sidecar`) shares.
#[derive(Debug, clap::Args)]
pub struct EtcdAccessArgs {
    /// CA certificate (PEM) of the etcd members; implies TLS.
    #[arg(id = "etcd_ca", long = "etcd-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(
        id = "etcd_cert",
        long = "etcd-cert",
        value_name = "FILE",
        requires = "etcd_key"
    )]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd.
    #[arg(
        id = "etcd_key",
        long = "etcd-key",
        value_name = "FILE",
        requires = "etcd_cert"
    )]
    pub key: Option<PathBuf>,
    /// etcd user name (authentication on); its password from --etcd-password or
    /// --etcd-password-file.
    #[arg(id = "etcd_user", long = "etcd-user", value_name = "NAME")]
    pub user: Option<String>,
    /// etcd password of --etcd-user.
    #[arg(id = "etcd_password", long = "etcd-password", value_name = "PASSWORD", env = crate::env::ETCD_PASSWORD, hide_env_values = true)]
    pub password: Option<String>,
    /// A file holding the etcd password of --etcd-user (one trailing newline is dropped);
    /// wins over --etcd-password.
    #[arg(
        id = "etcd_password_file",
        long = "etcd-password-file",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    pub password_file: Option<PathBuf>,
    /// Bound of one etcd request to one member.
    #[arg(id = "etcd_timeout", long = "etcd-timeout", value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl EtcdAccessArgs {
    /// Options for `endpoints`; exit 64 for a user without password or an unreadable
    /// password file.
    pub fn options(&self, endpoints: &[String]) -> Result<EtcdOptions, Failure> {
        let options = EtcdOptions::new(endpoints.iter().map(|e| e.trim().to_owned()))
            .with_timeouts(self.timeout.min(Duration::from_secs(5)), self.timeout);
        let credentials = match &self.user {
            None => None,
            Some(user) => {
                let password = match (&self.password_file, &self.password) {
                    (None, Some(password)) => password.clone(),
                    (Some(file), _) => {
                        let text = std::fs::read_to_string(file).map_err(|e| {
                            Failure::usage(format!("--etcd-password-file {}: {e}", file.display()))
                        })?;
                        let text = text.strip_suffix('\n').unwrap_or(&text);
                        text.strip_suffix('\r').unwrap_or(text).to_owned()
                    }
                    (None, None) => {
                        return Err(Failure::usage(format!(
                            "--etcd-user {user} needs --etcd-password (or {}) or --etcd-password-file",
                            crate::env::ETCD_PASSWORD
                        )));
                    }
                };
                Some((user.clone(), password))
            }
        };
        let options = options.with_access(
            false,
            self.ca.clone(),
            self.cert.clone().zip(self.key.clone()),
            credentials,
        );
        Ok(options)
    }
}

/// etcd that cannot be reached exits 2, bad settings 64, other failures 1.
pub fn etcd_failure(error: EtcdError) -> Failure {
    let exit = match &error {
        EtcdError::Unreachable { .. } | EtcdError::Timeout { .. } => Exit::Unreachable,
        EtcdError::Tls(_)
        | EtcdError::Location(_)
        | EtcdError::LeaseTtl(_)
        | EtcdError::NoEndpoints => Exit::Code(crate::exit::USAGE),
        EtcdError::Request { .. } | EtcdError::Refused { .. } => Exit::Failure,
    };
    Failure::new(exit, error)
}

/// Unreachable servers exit 2, bad addresses and TLS files 64, error answers 1.
pub fn client_failure(error: ClientError) -> Failure {
    let exit = match &error {
        e if e.is_unreachable() => Exit::Unreachable,
        ClientError::InvalidAddress { .. } | ClientError::Tls(_) => Exit::Code(crate::exit::USAGE),
        _ => Exit::Failure,
    };
    Failure::new(exit, error)
}

/// Like [`client_failure`], but a server that answered UNIMPLEMENTED is named as one that
/// does not serve `service` (the gRPC service, e.g. `Quaestor.ServiceDiscovery`), followed by
/// `hint` (e.g. ": is it a worker, not a balancer?"); exit 1.
pub fn call_failure(error: ClientError, service: &str, hint: &str) -> Failure {
    match &error {
        ClientError::Rpc { address, .. } if error.is_unimplemented() => Failure::new(
            Exit::Failure,
            format!("{address} does not serve {service} (it answered UNIMPLEMENTED){hint}"),
        ),
        _ => client_failure(error),
    }
}

/// `5`, `2.5` (seconds), `500ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 5, 5s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "5x", "-1", "1e999", "1.2.3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
