//! The opt-in HTTP listener of a quaestor process (one per process, loopback unless told
//! otherwise), served with axum on the process's runtime:
//!
//! - `/metrics`: Prometheus text format (0.0.4), or OpenMetrics 1.0 when the `Accept` header
//!   asks for `application/openmetrics-text` ([`metrics`]);
//! - `/status.json`: the role's view as JSON (for the balancer, [`balancer::BalancerStatus`];
//!   for a cluster, [`cluster::ClusterStatus`]);
//! - `/healthz`: 200 while the process runs;
//! - `/readyz`: 200 when the role is ready, else 503 with the reason as text;
//! - anything else: 404.
//!
//! A role plugs in as a [`Source`]: its metrics (collected at scrape time), its status and
//! its readiness. [`balancer::BalancerSource`] is the load balancer's,
//! [`cluster::ClusterSource`] the cluster supervisor's, [`sidecar::SidecarSource`] the
//! sidecar's; the process metrics
//! (`process_*`, [`process`]) come with every source. With a [`ServerTls`] (the gRPC
//! listener's), it serves HTTPS, with client certificates required under mutual TLS
//! ([`tls`]).
//!
//! ```no_run
//! # async fn demo(balancer: quaestor_core::balancer::Balancer) -> std::io::Result<()> {
//! use quaestor_core::http::{HttpServer, balancer::BalancerSource};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = HttpServer::new(BalancerSource::new(balancer, "memory"))
//!     .spawn(listener)
//!     .expect("serving");
//! println!("http listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod balancer;
pub mod cluster;
pub mod metrics;
pub mod page;
pub mod process;
pub mod sidecar;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::tls::{ServerTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot serve HTTP: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serve HTTPS: {0}")]
    Tls(#[from] TlsError),
}

/// Whether a role is ready to serve, and if not, why.
pub type Readiness = Result<(), String>;

/// What a role exposes over HTTP.
pub trait Source: Send + Sync + 'static {
    /// Registers the role's metrics (collectors read at scrape time) into `registry`.
    fn register(&self, registry: &mut Registry);
    /// The role's view for `/status.json`.
    fn status(&self) -> serde_json::Value;
    /// For `/readyz`.
    fn readiness(&self) -> Readiness;
    /// The recent output of a member, for `/members/NAME/log` (text, oldest line first);
    /// `None` for a name that is not a member (404). Roles without members have none.
    fn member_log(&self, _member: &str) -> Option<String> {
        None
    }
}

struct Shared {
    source: Box<dyn Source>,
    registry: Registry,
}

/// The HTTP endpoints of one process, ready to serve.
pub struct HttpServer {
    shared: Arc<Shared>,
    tls: Option<ServerTls>,
}

impl HttpServer {
    /// Endpoints over `source`, with the process metrics.
    pub fn new(source: impl Source) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        source.register(&mut registry);
        HttpServer {
            shared: Arc::new(Shared {
                source: Box::new(source),
                registry,
            }),
            tls: None,
        }
    }

    /// Serves HTTPS with these files (None: plain HTTP).
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The routes (for serving elsewhere, or for tests without a socket).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_page))
            .route("/status.json", get(status_page))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_page))
            .route("/members/{member}/log", get(member_log_page))
            .route("/", get(|| async { page::asset(page::INDEX) }))
            .route("/page.js", get(|| async { page::asset(page::SCRIPT) }))
            .route("/page.css", get(|| async { page::asset(page::STYLE) }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(Arc::clone(&self.shared))
    }

    /// Serves on `listener` in the background until [`HttpHandle::shutdown`].
    pub fn spawn(self, listener: TcpListener) -> Result<HttpHandle, HttpError> {
        self.spawn_until(listener, std::future::pending())
    }

    /// Serves on `listener` in the background until `stop` resolves (e.g. the gRPC side's
    /// `HealthState::stopped`) or [`HttpHandle::shutdown`]; requests in flight then finish.
    /// TLS files are read now: a bad one is an error here, naming the file.
    pub fn spawn_until(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<HttpHandle, HttpError> {
        let local_addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let stopping = token.clone();
        let stopped = async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                () = stop => {}
            }
        };
        let router = self.router();
        let task = match &self.tls {
            None => tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(error) = served {
                    tracing::warn!(%error, "the HTTP listener failed");
                }
            }),
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls::server_config(tls)?)?;
                tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await;
                    if let Err(error) = served {
                        tracing::warn!(%error, "the HTTPS listener failed");
                    }
                })
            }
        };
        Ok(HttpHandle {
            local_addr,
            token,
            task,
        })
    }
}

/// A running HTTP listener.
#[derive(Debug)]
pub struct HttpHandle {
    local_addr: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the listener's end.
    pub async fn shutdown(self) {
        self.token.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the HTTP listener task ended abnormally");
        }
    }
}

async fn metrics_page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    match metrics::encode(&shared.registry, metrics::Format::from_accept(accept)) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn status_page(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.source.status().to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn ready_page(State(shared): State<Arc<Shared>>) -> Response {
    match shared.source.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// `/members/NAME/log`: a member's recent output as text, or 404.
async fn member_log_page(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(member): axum::extract::Path<String>,
) -> Response {
    match shared.source.member_log(&member) {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no member {member:?}\n")).into_response(),
    }
}
