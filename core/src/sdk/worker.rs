//! [`Worker`]: a reporter on a port of its own, its services and its registration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::blocking::{self, MadeIn};
use crate::error::{Error, ErrorKind};
use crate::load::ServiceLoad;
use crate::registry::ServiceLocation;
use crate::registry::etcd::{EtcdOptions, EtcdRegistrar};
use crate::reporter::Reporter;
use crate::server::ServerHandle;
use crate::server::health::HealthState;
use crate::tls::ServerTls;

use super::block_on;

/// How long calls in flight may take to finish when a worker closes.
const GRACE: Duration = Duration::from_secs(5);

/// The health and load of a worker's services, served on a port of its own
/// (`grpc.health.v1.Health`, `LoadReportingGrpc`, `LoadPush`, reflection), and the worker's
/// registration in etcd with that port as its control endpoint.
///
/// A worker made before a fork refuses every call in the child ([`ErrorKind::InvalidState`]):
/// its server runs on threads the child does not have. Dropped there, it is only forgotten.
pub struct Worker {
    made_in: MadeIn,
    reporter: Reporter,
    host: String,
    addr: SocketAddr,
    server: Mutex<Option<ServerHandle>>,
    /// Held across the registration's round trips, so two `register` calls cannot both win.
    registration: tokio::sync::Mutex<Option<EtcdRegistrar>>,
}

/// Where the worker's etcd is and how to get in: the parts every binding takes as arguments.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    /// Client URLs; each may hold several, comma-separated (`http://a:2379,http://b:2379`).
    pub endpoints: Vec<String>,
    /// `None`: the default (10 s).
    pub lease_ttl: Option<Duration>,
    /// The CA (PEM file) of the etcd members' certificates (implies TLS).
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM file), with `key`: both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd credentials: both or neither.
    pub user: Option<String>,
    pub password: Option<String>,
}

impl EtcdAccess {
    /// The registry options these stand for; half of a pair is an invalid argument.
    pub fn options(self) -> Result<EtcdOptions, Error> {
        let invalid = |what: &str| Err(Error::new(ErrorKind::InvalidArgument, what));
        if self.cert.is_some() != self.key.is_some() {
            return invalid("give both the etcd client certificate and its key, or neither");
        }
        if self.user.is_some() != self.password.is_some() {
            return invalid("give both the etcd user and password, or neither");
        }
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        let mut options = EtcdOptions::new(endpoints);
        if let Some(ttl) = self.lease_ttl {
            options = options.with_lease_ttl(ttl);
        }
        Ok(options.with_access(
            false,
            self.ca,
            self.cert.zip(self.key),
            self.user.zip(self.password),
        ))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid_state(what: &str) -> Error {
    Error::new(ErrorKind::InvalidState, what)
}

impl Worker {
    /// Starts serving on `host`:`port` (port 0: a free one), in plain text or with `tls`.
    /// No services yet; the worker as a whole is SERVING.
    pub async fn start(host: &str, port: u16, tls: Option<ServerTls>) -> Result<Worker, Error> {
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("host {host:?} does not resolve to an address"),
                )
            })?;
        let reporter = Reporter::new();
        let server = reporter.serve(addr, tls).await?;
        Ok(Worker {
            made_in: MadeIn::here(),
            reporter,
            host: host.to_owned(),
            addr: server.local_addr(),
            server: Mutex::new(Some(server)),
            registration: tokio::sync::Mutex::new(None),
        })
    }

    /// [`Worker::start`] on the shared runtime.
    pub fn start_blocking(host: &str, port: u16, tls: Option<ServerTls>) -> Result<Worker, Error> {
        block_on(Self::start(host, port, tls))
    }

    /// `Ok` in the process that made the worker (see the type's note on forks).
    pub fn live(&self) -> Result<(), Error> {
        Ok(self.made_in.check("reporter")?)
    }

    /// The host given to [`Worker::start`].
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host:port` as given and bound.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.addr.port())
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.server).is_none()
    }

    /// The reporter behind it (its services, their loads and health).
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    pub fn health(&self) -> &HealthState {
        self.reporter.health()
    }

    /// The names of the services added, in order.
    pub fn service_names(&self) -> Vec<String> {
        self.reporter.service_names()
    }

    /// Reports a new service taking `capacity` requests at once (-1: unknown), SERVING;
    /// count its requests on the load returned.
    pub fn add_service(&self, name: &str, capacity: i32) -> Result<Arc<ServiceLoad>, Error> {
        self.live()?;
        if self.is_closed() {
            return Err(invalid_state("the reporter is closed"));
        }
        Ok(self.reporter.add_service(name, capacity)?)
    }

    /// The load of a service added before.
    pub fn service_load(&self, name: &str) -> Result<Arc<ServiceLoad>, Error> {
        self.live()?;
        self.reporter
            .service_load(name)
            .ok_or_else(|| not_added(name))
    }

    /// Turns one service, or (`None` or `""`) every service and the worker as a whole,
    /// SERVING or NOT_SERVING.
    pub fn set_serving(&self, service: Option<&str>, serving: bool) -> Result<(), Error> {
        self.live()?;
        match service {
            None | Some("") => self.reporter.set_all_serving(serving),
            Some(name) => {
                self.service_load(name)?;
                self.reporter.set_serving(name, serving);
            }
        }
        Ok(())
    }

    /// Registers every service added so far in etcd as served at `host`:`port` (the worker's
    /// own port; `None`: this worker's port), in `scope`, with this worker's port as the
    /// control endpoint, on a lease kept alive in the background. When no etcd member
    /// answers, this succeeds all the same and registers once one does (a worker may start
    /// before its etcd); a refusal fails ([`ErrorKind::Refused`]).
    pub async fn register(
        &self,
        etcd: EtcdAccess,
        scope: &str,
        host: &str,
        port: Option<u16>,
    ) -> Result<(), Error> {
        self.live()?;
        let options = etcd.options()?;
        if self.is_closed() {
            return Err(invalid_state("the reporter is closed"));
        }
        let mut registration = self.registration.lock().await;
        if registration.is_some() {
            return Err(invalid_state("registered already; deregister first"));
        }
        let services = self.reporter.service_names();
        if services.is_empty() {
            return Err(invalid_state("no service to register; add services first"));
        }
        let control = format!("{host}:{}", self.addr.port());
        let port = port.unwrap_or(self.addr.port());
        let locations = services
            .iter()
            .map(|service| {
                ServiceLocation::new(scope, service, host, port)
                    .map(|l| l.with_control(control.clone()).with_pid(std::process::id()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        *registration = Some(EtcdRegistrar::hold(options, &locations).await?);
        Ok(())
    }

    /// [`Worker::register`] on the shared runtime.
    pub fn register_blocking(
        &self,
        etcd: EtcdAccess,
        scope: &str,
        host: &str,
        port: Option<u16>,
    ) -> Result<(), Error> {
        self.live()?;
        block_on(self.register(etcd, scope, host, port))
    }

    /// Removes the registrations (revokes their lease); not registered: nothing to do. When
    /// etcd does not answer, the lease ends by itself after its TTL.
    pub async fn deregister(&self) -> Result<(), Error> {
        self.live()?;
        let registrar = self.registration.lock().await.take();
        match registrar {
            Some(registrar) => Ok(registrar.stop().await?),
            None => Ok(()),
        }
    }

    /// [`Worker::deregister`] on the shared runtime.
    pub fn deregister_blocking(&self) -> Result<(), Error> {
        self.live()?;
        block_on(self.deregister())
    }

    /// Deregisters, then stops serving: every health Watch and load push is told
    /// NOT_SERVING and ended, calls in flight get up to 5 s. Closing again does nothing;
    /// the service loads stay usable.
    pub async fn close(&self) -> Result<(), Error> {
        self.live()?;
        let deregistered = self.deregister().await;
        let server = lock(&self.server).take();
        if let Some(server) = server {
            let _ = tokio::time::timeout(GRACE * 2, server.shutdown()).await;
        }
        deregistered
    }

    /// [`Worker::close`] on the shared runtime.
    pub fn close_blocking(&self) -> Result<(), Error> {
        self.live()?;
        block_on(self.close())
    }
}

fn not_added(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("service {name:?} was not added"),
    )
}

impl Drop for Worker {
    /// Not closed: the lease is revoked and the server stopped in the background. Inherited
    /// through a fork: forgotten (the parent owns it; nothing of it can run here).
    fn drop(&mut self) {
        let registration = self.registration.get_mut().take();
        let server = lock(&self.server).take();
        if !self.made_in.is_here() {
            std::mem::forget((registration, server));
            return;
        }
        if registration.is_none() && server.is_none() {
            return;
        }
        let cleanup = async move {
            if let Some(registrar) = registration {
                let _ = registrar.stop().await;
            }
            if let Some(server) = server {
                let _ = tokio::time::timeout(GRACE * 2, server.shutdown()).await;
            }
        };
        // On the caller's runtime when there is one (an async program), else on the shared one.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(cleanup)),
            Err(_) => {
                if let Ok(runtime) = blocking::runtime() {
                    drop(runtime.spawn(cleanup));
                }
            }
        }
    }
}
