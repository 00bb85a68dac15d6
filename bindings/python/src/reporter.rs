//! `Reporter`: health and load on a port of the worker's own, and its registration in etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use quaestor_core::blocking::{self, MadeIn};
use quaestor_core::load::ServiceLoad as CoreLoad;
use quaestor_core::registry::ServiceLocation as CoreLocation;
use quaestor_core::registry::etcd::{EtcdOptions, EtcdRegistrar};
use quaestor_core::reporter::Reporter as CoreReporter;
use quaestor_core::server::ServerHandle;
use quaestor_core::tls::{ClientTls, ServerTls};

use crate::errors::{Failure, lock, wait};
use crate::load::ServiceLoad;

/// Serves grpc.health.v1.Health and Quaestor.LoadReporting for the services added to it, on
/// a port of its own.
#[pyclass(frozen, module = "quaestor._quaestor")]
pub(crate) struct Reporter {
    /// After a fork, the child's copy refuses every call (its server runs on the parent's
    /// threads, which the child does not have).
    made_in: MadeIn,
    reporter: CoreReporter,
    host: String,
    addr: SocketAddr,
    server: Mutex<Option<ServerHandle>>,
    registration: Mutex<Option<EtcdRegistrar>>,
}

impl Reporter {
    fn load_handle(&self, name: &str, load: Arc<CoreLoad>) -> ServiceLoad {
        ServiceLoad {
            load,
            health: self.reporter.health().clone(),
            name: name.to_owned(),
        }
    }

    /// Made in this process, not inherited through a fork.
    fn live(&self) -> Result<(), Failure> {
        Ok(self.made_in.check("Reporter")?)
    }

    fn deregister_now(&self, py: Python<'_>) -> Result<(), Failure> {
        self.live()?;
        let Some(registrar) = lock(&self.registration).take() else {
            return Ok(());
        };
        wait(py, async { registrar.stop().await.map_err(Failure::from) })
    }
}

/// `etcd=`: one URL (commas allowed) or a sequence of URLs; anything else is a TypeError.
fn etcd_endpoints(etcd: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let urls: Vec<String> = if let Ok(text) = etcd.cast::<PyString>() {
        vec![text.to_str()?.to_owned()]
    } else {
        etcd.extract()?
    };
    Ok(urls
        .iter()
        .flat_map(|u| u.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect())
}

#[pymethods]
impl Reporter {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1", port = 0, tls = None))]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        tls: Option<(PathBuf, PathBuf)>,
    ) -> PyResult<Self> {
        let reporter = CoreReporter::new();
        let tls = tls.map(|(cert, key)| ServerTls::new(cert, key));
        let host_name = host.to_owned();
        let server = wait(py, async {
            let addr = tokio::net::lookup_host((host_name.as_str(), port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    Failure::Invalid(format!("host {host_name:?} does not resolve to an address"))
                })?;
            reporter.serve(addr, tls).await.map_err(Failure::from)
        })?;
        Ok(Reporter {
            made_in: MadeIn::here(),
            reporter,
            host: host.to_owned(),
            addr: server.local_addr(),
            server: Mutex::new(Some(server)),
            registration: Mutex::new(None),
        })
    }

    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    #[getter]
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host:port` of the reporter.
    #[getter]
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.addr.port())
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.server).is_none()
    }

    /// Reports a new service, SERVING; count its requests on the returned load.
    #[pyo3(signature = (name, capacity = 4))]
    fn add_service(&self, name: &str, capacity: i32) -> PyResult<ServiceLoad> {
        self.live()?;
        if self.closed() {
            return Err(Failure::Other("the reporter is closed".into()).into());
        }
        let load = self
            .reporter
            .add_service(name, capacity)
            .map_err(Failure::from)?;
        Ok(self.load_handle(name, load))
    }

    /// The load of a service added before.
    fn service_load(&self, name: &str) -> PyResult<ServiceLoad> {
        self.live()?;
        let load = self
            .reporter
            .service_load(name)
            .ok_or_else(|| Failure::NotFound(format!("service {name:?} was not added")))?;
        Ok(self.load_handle(name, load))
    }

    /// Turns one service, or (service None) every service and the worker as a whole,
    /// SERVING or NOT_SERVING.
    #[pyo3(signature = (serving, service = None))]
    fn set_serving(&self, serving: bool, service: Option<&str>) -> PyResult<()> {
        self.live()?;
        match service {
            None => self.reporter.set_all_serving(serving),
            Some(name) if self.reporter.service_load(name).is_some() => {
                self.reporter.set_serving(name, serving);
            }
            Some(name) => {
                return Err(Failure::NotFound(format!("service {name:?} was not added")).into());
            }
        }
        Ok(())
    }

    /// Registers every service added so far in etcd, served at `host`:`port` (the worker's
    /// own port; None: the reporter's), with this reporter as the control endpoint, on a
    /// lease of `ttl` seconds kept alive in the background. For an etcd with TLS or
    /// authentication on: `etcd_ca` (the CA of its certificates, PEM; implies TLS),
    /// `etcd_cert` and `etcd_key` (a client certificate, both or neither), `etcd_user` and
    /// `etcd_password` (both or neither). A refusal raises RefusedError. When no etcd member
    /// answers (in a few seconds), this returns all the same: the registration is made in the
    /// background once etcd answers (a worker may start before its etcd).
    #[pyo3(signature = (
        etcd, host, port = None, scope = "", ttl = 10.0, *,
        etcd_ca = None, etcd_cert = None, etcd_key = None, etcd_user = None, etcd_password = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        py: Python<'_>,
        etcd: &Bound<'_, PyAny>,
        host: &str,
        port: Option<u16>,
        scope: &str,
        ttl: f64,
        etcd_ca: Option<PathBuf>,
        etcd_cert: Option<PathBuf>,
        etcd_key: Option<PathBuf>,
        etcd_user: Option<String>,
        etcd_password: Option<String>,
    ) -> PyResult<()> {
        self.live()?;
        if etcd_cert.is_some() != etcd_key.is_some() {
            return Err(PyValueError::new_err(
                "give both etcd_cert and etcd_key, or neither",
            ));
        }
        if etcd_user.is_some() != etcd_password.is_some() {
            return Err(PyValueError::new_err(
                "give both etcd_user and etcd_password, or neither",
            ));
        }
        let endpoints = etcd_endpoints(etcd)?;
        if !(ttl.is_finite() && ttl > 0.0) {
            return Err(PyValueError::new_err(format!(
                "ttl must be > 0 seconds, got {ttl}"
            )));
        }
        if self.closed() {
            return Err(Failure::Other("the reporter is closed".into()).into());
        }
        let mut registration = lock(&self.registration);
        if registration.is_some() {
            return Err(Failure::Other("registered already; deregister first".into()).into());
        }
        let services = self.reporter.service_names();
        if services.is_empty() {
            return Err(
                Failure::Invalid("no service to register; add services first".into()).into(),
            );
        }
        let control = format!("{host}:{}", self.addr.port());
        let port = port.unwrap_or(self.addr.port());
        let locations = services
            .iter()
            .map(|service| {
                CoreLocation::new(scope, service, host, port)
                    .map(|l| l.with_control(control.clone()).with_pid(std::process::id()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::from)?;
        let mut options = EtcdOptions::new(endpoints).with_lease_ttl(Duration::from_secs_f64(ttl));
        if etcd_ca.is_some() || etcd_cert.is_some() {
            options = options.with_tls(ClientTls {
                ca: etcd_ca,
                identity: etcd_cert.zip(etcd_key),
                domain: None,
            });
        }
        if let Some((user, password)) = etcd_user.zip(etcd_password) {
            options = options.with_user(user, password);
        }
        let registrar = wait(py, async {
            Ok(EtcdRegistrar::hold(options, &locations).await?)
        })?;
        *registration = Some(registrar);
        Ok(())
    }

    /// Removes the registrations (revokes their lease); not registered: nothing to do.
    fn deregister(&self, py: Python<'_>) -> PyResult<()> {
        Ok(self.deregister_now(py)?)
    }

    /// Deregisters, then stops serving (calls in flight get up to 5 s). Closing again does
    /// nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.live()?;
        let deregistered = self.deregister_now(py);
        if let Some(server) = lock(&self.server).take() {
            wait(py, async {
                let _ = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
                Ok(())
            })?;
        }
        Ok(deregistered?)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Reporter({}, services={:?}{})",
            self.address(),
            self.reporter.service_names(),
            if self.closed() { ", closed" } else { "" }
        )
    }
}

impl Drop for Reporter {
    /// Not closed: the lease is revoked and the server stopped in the background.
    fn drop(&mut self) {
        let registration = lock(&self.registration).take();
        let server = lock(&self.server).take();
        if !self.made_in.is_here() {
            // Inherited through a fork: nothing of it can run here, and the parent owns it.
            std::mem::forget((registration, server));
            return;
        }
        if registration.is_none() && server.is_none() {
            return;
        }
        if let Ok(runtime) = blocking::runtime() {
            runtime.spawn(async move {
                if let Some(registrar) = registration {
                    let _ = registrar.stop().await;
                }
                if let Some(server) = server {
                    let _ = server.shutdown().await;
                }
            });
        }
    }
}
