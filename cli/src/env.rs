//! Every environment variable the `quaestor` binary reads, in one place.

/// Log filter, as tracing's `EnvFilter` reads it; overrides `-v`/`-q`.
pub const RUST_LOG: &str = "RUST_LOG";
/// `text` or `json`: the format of the log on stderr (`--log-format`).
pub const LOG_FORMAT: &str = "QUAESTOR_LOG_FORMAT";
