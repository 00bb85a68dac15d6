//! Every environment variable the `quaestor` binary reads, in one place.

/// Log filter, as tracing's `EnvFilter` reads it; overrides `-v`/`-q`.
pub const RUST_LOG: &str = "RUST_LOG";
/// `text` or `json`: the format of the log on stderr (`--log-format`).
pub const LOG_FORMAT: &str = "QUAESTOR_LOG_FORMAT";
/// Comma-separated etcd client URLs (`--etcd`).
pub const ETCD_ENDPOINTS: &str = "QUAESTOR_ETCD";
/// Password for `--etcd-user`, so that it need not appear on a command line.
pub const ETCD_PASSWORD: &str = "QUAESTOR_ETCD_PASSWORD";
/// The config file (`--config`).
pub const CONFIG: &str = "QUAESTOR_CONFIG";
/// `HOST:PORT` of the HTTP listener (`--http`: metrics, status, health).
pub const HTTP: &str = "QUAESTOR_HTTP";
