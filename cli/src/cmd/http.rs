//! `--http HOST:PORT` (env `QUAESTOR_HTTP`), shared by the roles that serve the HTTP
//! listener of `quaestor_core::http` (`load-balancer`, `cluster` and `sidecar`).

use quaestor_core::http::{HttpHandle, HttpServer, Source};
use quaestor_core::tls::ServerTls;
use tokio::net::TcpListener;

use super::resolve;
use crate::exit::{Exit, Failure};

/// The host of the HTTP listener when only a port is configured: loopback.
pub const DEFAULT_HOST: &str = "127.0.0.1";

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Serve /metrics, /status.json, /healthz and /readyz over HTTP on HOST:PORT (port 0:
    /// any free port), over the config's httpHostName/httpPort.
    #[arg(long = "http", value_name = "HOST:PORT", env = crate::env::HTTP, value_parser = parse_http)]
    pub http: Option<(String, u16)>,
}

/// `HOST:PORT`, `[IPV6]:PORT` or `:PORT` (loopback).
pub fn parse_http(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, found {text:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = if host.is_empty() { DEFAULT_HOST } else { host };
    Ok((host.to_owned(), port))
}

/// Binds the HTTP listener at `--http`, else at the config's `(host, port)` if a port is
/// set, and serves `source` on it (HTTPS with `tls`) until the handle is shut down; prints
/// `http listening on ADDR`. None: no listener asked for.
pub async fn start(
    args: &HttpArgs,
    configured: (Option<String>, Option<u16>),
    key: &str,
    tls: Option<ServerTls>,
    source: impl Source,
) -> Result<Option<HttpHandle>, Failure> {
    let (host, port) = match (&args.http, configured) {
        (Some((host, port)), _) => (host.clone(), *port),
        (None, (host, Some(port))) => (host.unwrap_or_else(|| DEFAULT_HOST.to_owned()), port),
        (None, (_, None)) => return Ok(None),
    };
    let addr = resolve(key, &host, port).await?;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Failure::new(
            Exit::Failure,
            format!("cannot listen on {addr} (HTTP): {e}"),
        )
    })?;
    let server = HttpServer::new(source)
        .with_tls(tls)
        .spawn(listener)
        .map_err(Failure::usage)?;
    crate::output::announce(format_args!("http listening on {}", server.local_addr()));
    tracing::info!(local = %server.local_addr(), "http serving");
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses_parse() {
        assert_eq!(parse_http("127.0.0.1:0"), Ok(("127.0.0.1".into(), 0)));
        assert_eq!(parse_http("[::1]:9150"), Ok(("::1".into(), 9150)));
        assert_eq!(parse_http(":9150"), Ok((DEFAULT_HOST.into(), 9150)));
        assert!(parse_http("localhost").is_err());
        assert!(parse_http("localhost:99999").is_err());
    }
}
