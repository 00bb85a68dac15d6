//! One gRPC server as every quaestor role serves it: `grpc.health.v1`, server reflection for
//! exactly the services it serves, optional (mutual) TLS and a graceful stop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quaestor_core::server::ServerError> {
//! use quaestor_core::reporter::Reporter;
//! let reporter = Reporter::new();
//! let load = reporter.add_service("Worker", 4).expect("new name");
//! let server = reporter.server().bind("127.0.0.1:0".parse().unwrap()).await?;
//! println!("reporting on {}", server.local_addr());
//! server.shutdown().await
//! # }
//! ```

mod closable;
pub mod health;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::proto;
use crate::tls::{ServerTls, TlsError};
use closable::Closable;
use health::HealthState;

/// How long a stop waits for calls in flight before it closes their connections.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid TLS certificate or key: {0}")]
    TlsConfig(#[source] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("the gRPC server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The services of one server, ready to serve.
pub struct GrpcServer {
    health: HealthState,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    tls: Option<ServerTls>,
    grace: Duration,
}

impl GrpcServer {
    /// A server with `grpc.health.v1.Health` over `health`.
    pub fn new(health: HealthState) -> Self {
        let server = GrpcServer {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptor_sets: vec![
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            tls: None,
            grace: DEFAULT_GRACE_PERIOD,
            health: health.clone(),
        };
        server.add_service(health.service())
    }

    /// Adds a service; reflection lists it.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Makes reflection able to describe services whose protos are not quaestor's.
    pub fn add_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded);
        self
    }

    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// How long a stop waits for calls in flight ([`DEFAULT_GRACE_PERIOD`]).
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn health(&self) -> &HealthState {
        &self.health
    }

    /// Binds `addr` (port 0: any free port) and serves in a background task.
    pub async fn bind(self, addr: SocketAddr) -> Result<ServerHandle, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        self.spawn(listener)
    }

    /// Serves on an already-bound listener in a background task.
    pub fn spawn(self, listener: TcpListener) -> Result<ServerHandle, ServerError> {
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: "the given listener".into(),
            source,
        })?;
        let prepared = self.prepare()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(prepared.run(listener, async {
            let _ = stopped.await;
        }));
        Ok(ServerHandle {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Serves on `listener` until `shutdown` completes, then stops gracefully: health goes
    /// NOT_SERVING, watch streams end, calls in flight get the grace period to finish.
    pub async fn serve_with_incoming_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.prepare()?.run(listener, shutdown).await
    }

    /// Everything that can fail before serving: TLS files and the reflection service.
    fn prepare(self) -> Result<Prepared, ServerError> {
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder
                .tls_config(tls.load()?)
                .map_err(ServerError::TlsConfig)?;
        }
        let mut routes = self.routes;
        let reflection = || {
            let with_sets = self
                .descriptor_sets
                .iter()
                .fold(tonic_reflection::server::Builder::configure(), |b, set| {
                    b.register_encoded_file_descriptor_set(set)
                });
            self.names
                .iter()
                .chain(REFLECTION_SERVICES.iter())
                .fold(with_sets, |b, name| b.with_service_name(*name))
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);
        let router = builder.add_routes(routes.routes());
        Ok(Prepared {
            router,
            health: self.health,
            grace: self.grace,
        })
    }
}

struct Prepared {
    router: tonic::transport::server::Router,
    health: HealthState,
    grace: Duration,
}

impl Prepared {
    async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let health = self.health;
        let (began, beginning) = oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            health.shutdown();
            let _ = began.send(());
        };
        let cut = CancellationToken::new();
        let incoming = {
            let cut = cut.clone();
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(move |accepted| accepted.map(|io| Closable::new(io, cut.clone())))
        };
        let serve = self.router.serve_with_incoming_shutdown(incoming, signal);
        // After the grace period, connections still busy are cut; the server then ends.
        let grace = self.grace;
        let cut_after_grace = async move {
            if beginning.await.is_ok() {
                tokio::time::sleep(grace).await;
                tracing::warn!(
                    ?grace,
                    "calls still in flight after the grace period; cutting them off"
                );
                cut.cancel();
            }
            std::future::pending::<Infallible>().await
        };
        tokio::select! {
            served = serve => served.map_err(ServerError::Serve),
            never = cut_after_grace => match never {},
        }
    }
}

/// A server running in the background. Dropping the handle stops the server as
/// [`shutdown`](Self::shutdown) does, without waiting for it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops gracefully and waits until the server has stopped.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (after a shutdown, or when it fails).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match self.task.as_mut() {
            Some(task) => {
                let result = task.await;
                self.task = None;
                result?
            }
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
