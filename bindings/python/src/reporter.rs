//! `Reporter`: health and load on a port of the worker's own, and its registration in etcd
//! (the core's `sdk::Worker`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use quaestor_core::load::ServiceLoad as CoreLoad;
use quaestor_core::sdk::{EtcdAccess, Worker};
use quaestor_core::tls::ServerTls;

use crate::aio::awaitable;
use crate::errors::{OrRaise, wait};
use crate::load::ServiceLoad;

/// Serves grpc.health.v1.Health and Quaestor.LoadReporting for the services added to it, on
/// a port of its own.
#[pyclass(frozen, module = "quaestor._quaestor")]
pub(crate) struct Reporter {
    worker: Arc<Worker>,
}

impl Reporter {
    fn load_handle(&self, name: &str, load: Arc<CoreLoad>) -> ServiceLoad {
        ServiceLoad {
            load,
            health: self.worker.health().clone(),
            name: name.to_owned(),
        }
    }
}

/// `etcd=`: one URL (commas allowed) or a sequence of URLs; anything else is a TypeError.
fn etcd_endpoints(etcd: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(text) = etcd.cast::<PyString>() {
        Ok(vec![text.to_str()?.to_owned()])
    } else {
        etcd.extract()
    }
}

/// What `register` and `register_async` take, as the core takes it.
#[allow(clippy::too_many_arguments)]
fn etcd_access(
    etcd: &Bound<'_, PyAny>,
    ttl: f64,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_user: Option<String>,
    etcd_password: Option<String>,
) -> PyResult<EtcdAccess> {
    if !(ttl.is_finite() && ttl > 0.0) {
        return Err(PyValueError::new_err(format!(
            "ttl must be > 0 seconds, got {ttl}"
        )));
    }
    Ok(EtcdAccess {
        endpoints: etcd_endpoints(etcd)?,
        lease_ttl: Some(Duration::from_secs_f64(ttl)),
        ca: etcd_ca,
        cert: etcd_cert,
        key: etcd_key,
        user: etcd_user,
        password: etcd_password,
    })
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
        let tls = tls.map(|(cert, key)| ServerTls::new(cert, key));
        let worker = wait(py, Worker::start(host, port, tls))?;
        Ok(Reporter {
            worker: Arc::new(worker),
        })
    }

    #[getter]
    fn host(&self) -> &str {
        self.worker.host()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.worker.port()
    }

    /// `host:port` of the reporter.
    #[getter]
    fn address(&self) -> String {
        self.worker.address()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.worker.is_closed()
    }

    /// Reports a new service, SERVING; count its requests on the returned load.
    #[pyo3(signature = (name, capacity = 4))]
    fn add_service(&self, name: &str, capacity: i32) -> PyResult<ServiceLoad> {
        let load = self.worker.add_service(name, capacity).or_raise()?;
        Ok(self.load_handle(name, load))
    }

    /// The load of a service added before.
    fn service_load(&self, name: &str) -> PyResult<ServiceLoad> {
        let load = self.worker.service_load(name).or_raise()?;
        Ok(self.load_handle(name, load))
    }

    /// Turns one service, or (service None) every service and the worker as a whole,
    /// SERVING or NOT_SERVING.
    #[pyo3(signature = (serving, service = None))]
    fn set_serving(&self, serving: bool, service: Option<&str>) -> PyResult<()> {
        self.worker.set_serving(service, serving).or_raise()
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
        let access = etcd_access(
            etcd,
            ttl,
            etcd_ca,
            etcd_cert,
            etcd_key,
            etcd_user,
            etcd_password,
        )?;
        wait(py, self.worker.register(access, scope, host, port))
    }

    /// `register`, as an awaitable (`quaestor.aio.Reporter.register`).
    #[pyo3(signature = (
        etcd, host, port = None, scope = "", ttl = 10.0, *,
        etcd_ca = None, etcd_cert = None, etcd_key = None, etcd_user = None, etcd_password = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn register_async<'py>(
        &self,
        py: Python<'py>,
        etcd: &Bound<'py, PyAny>,
        host: String,
        port: Option<u16>,
        scope: &str,
        ttl: f64,
        etcd_ca: Option<PathBuf>,
        etcd_cert: Option<PathBuf>,
        etcd_key: Option<PathBuf>,
        etcd_user: Option<String>,
        etcd_password: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let access = etcd_access(
            etcd,
            ttl,
            etcd_ca,
            etcd_cert,
            etcd_key,
            etcd_user,
            etcd_password,
        )?;
        let (worker, scope) = (Arc::clone(&self.worker), scope.to_owned());
        awaitable(py, async move {
            worker.register(access, &scope, &host, port).await
        })
    }

    /// Removes the registrations (revokes their lease); not registered: nothing to do.
    fn deregister(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.worker.deregister())
    }

    /// `deregister`, as an awaitable.
    fn deregister_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let worker = Arc::clone(&self.worker);
        awaitable(py, async move { worker.deregister().await })
    }

    /// Deregisters, then stops serving (calls in flight get up to 5 s). Closing again does
    /// nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, self.worker.close())
    }

    /// `close`, as an awaitable.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let worker = Arc::clone(&self.worker);
        awaitable(py, async move { worker.close().await })
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
            self.worker.address(),
            self.worker.service_names(),
            if self.worker.is_closed() {
                ", closed"
            } else {
                ""
            }
        )
    }
}
