//! `quaestor._quaestor`: the native module of the Python package `quaestor` (see
//! `python/quaestor/_quaestor.pyi` for the Python view).
//!
//! Every call that waits (starting a server, etcd, a balancer) releases the GIL and runs on
//! quaestor's shared runtime; counting requests is one atomic operation and never waits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use pyo3::{create_exception, intern};
use quaestor_core::blocking::{self, BlockingError, MadeIn};
use quaestor_core::client::{ClientError, Target};
use quaestor_core::load::ServiceLoad as CoreLoad;
use quaestor_core::registry::etcd::{EtcdError, EtcdOptions, EtcdRegistrar};
use quaestor_core::registry::{LocationError, ServiceLocation as CoreLocation};
use quaestor_core::reporter::{Reporter as CoreReporter, ReporterError};
use quaestor_core::server::health::HealthState;
use quaestor_core::server::{ServerError, ServerHandle};
use quaestor_core::tls::{ClientTls, ServerTls};

create_exception!(
    quaestor,
    QuaestorError,
    PyException,
    "Base of every exception quaestor raises (besides TypeError and ValueError for bad Python arguments)."
);
create_exception!(
    quaestor,
    UnavailableError,
    QuaestorError,
    "The server (balancer, etcd) could not be reached."
);
create_exception!(
    quaestor,
    InvalidArgumentError,
    QuaestorError,
    "An argument the server or quaestor refused: empty or malformed names, bad addresses, a service added twice."
);
create_exception!(
    quaestor,
    TimeoutError,
    QuaestorError,
    "The server did not answer in time."
);
create_exception!(
    quaestor,
    RefusedError,
    QuaestorError,
    "The server refused the credentials given (e.g. etcd: authentication failed, permission denied)."
);
create_exception!(
    quaestor,
    NotFoundError,
    QuaestorError,
    "No such service on this reporter."
);

/// A failure of quaestor, on its way to becoming a Python exception.
enum Failure {
    Unavailable(String),
    Timeout(String),
    Invalid(String),
    NotFound(String),
    Refused(String),
    Other(String),
}

/// The one place where quaestor's errors become Python exceptions.
impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        match failure {
            Failure::Unavailable(m) => UnavailableError::new_err(m),
            Failure::Timeout(m) => TimeoutError::new_err(m),
            Failure::Invalid(m) => InvalidArgumentError::new_err(m),
            Failure::NotFound(m) => NotFoundError::new_err(m),
            Failure::Refused(m) => RefusedError::new_err(m),
            Failure::Other(m) => QuaestorError::new_err(m),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let m = e.to_string();
        match &e {
            ClientError::Timeout { .. } => Failure::Timeout(m),
            ClientError::InvalidAddress { .. } | ClientError::Tls(_) => Failure::Invalid(m),
            e if e.code() == Some(tonic::Code::DeadlineExceeded) => Failure::Timeout(m),
            e if e.is_unreachable() => Failure::Unavailable(m),
            e if e.code() == Some(tonic::Code::InvalidArgument) => Failure::Invalid(m),
            _ => Failure::Other(m),
        }
    }
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Failure {
        let m = e.to_string();
        match e {
            EtcdError::Unreachable { .. } => Failure::Unavailable(m),
            EtcdError::Timeout { .. } => Failure::Timeout(m),
            EtcdError::Tls(_)
            | EtcdError::Location(_)
            | EtcdError::LeaseTtl(_)
            | EtcdError::NoEndpoints => Failure::Invalid(m),
            EtcdError::Refused { .. } => Failure::Refused(m),
            EtcdError::Request { .. } => Failure::Other(m),
        }
    }
}

impl From<ServerError> for Failure {
    fn from(e: ServerError) -> Failure {
        match e {
            ServerError::Tls(_) | ServerError::TlsConfig(_) => Failure::Invalid(e.to_string()),
            _ => Failure::Other(e.to_string()),
        }
    }
}

impl From<ReporterError> for Failure {
    fn from(e: ReporterError) -> Failure {
        Failure::Invalid(e.to_string())
    }
}

impl From<LocationError> for Failure {
    fn from(e: LocationError) -> Failure {
        Failure::Invalid(e.to_string())
    }
}

impl From<BlockingError> for Failure {
    fn from(e: BlockingError) -> Failure {
        Failure::Other(e.to_string())
    }
}

/// Runs `future` on the shared runtime with the GIL released.
fn wait<F, T>(py: Python<'_>, future: F) -> Result<T, Failure>
where
    F: std::future::Future<Output = Result<T, Failure>> + Send,
    T: Send,
{
    py.detach(|| blocking::block_on(future))?
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request of a service while inside `with` (or `async with`), or around every call of
/// a function it decorates.
#[pyclass(frozen, module = "quaestor._quaestor")]
struct Request {
    load: Arc<CoreLoad>,
}

#[pymethods]
impl Request {
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf.load.start_request();
        slf
    }

    fn __exit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) {
        self.load.end_request();
    }

    fn __aenter__(slf: Bound<'_, Self>) -> Done {
        slf.get().load.start_request();
        Done {
            value: Some(slf.into_any().unbind()),
        }
    }

    fn __aexit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> Done {
        self.load.end_request();
        Done { value: None }
    }

    /// `@load.request()`: counts every call of `func` (sync or async) as one request.
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        func: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import(intern!(py, "quaestor._decorate"))?
            .getattr(intern!(py, "counted"))?
            .call1((slf, func))
    }
}

/// An awaitable that is already done (what `async with` gets from a request, which never
/// waits).
#[pyclass(module = "quaestor._quaestor")]
struct Done {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Done {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }
}

/// The load of one service of a reporter: count requests on it.
#[pyclass(frozen, module = "quaestor._quaestor")]
struct ServiceLoad {
    load: Arc<CoreLoad>,
    health: HealthState,
    name: String,
}

#[pymethods]
impl ServiceLoad {
    #[getter]
    fn service_name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn current_requests(&self) -> i32 {
        self.load.current_requests()
    }

    #[getter]
    fn capacity(&self) -> i32 {
        self.load.capacity()
    }

    #[setter]
    fn set_capacity(&self, value: i32) {
        self.load.set_capacity(value);
    }

    /// A load figure the worker computes itself; None: not set.
    #[getter]
    fn known_load_rate(&self) -> Option<f64> {
        Some(self.load.known_load_rate()).filter(|r| *r >= 0.0)
    }

    #[setter]
    fn set_known_load_rate(&self, value: Option<f64>) -> PyResult<()> {
        match value {
            Some(rate) if !(rate.is_finite() && rate >= 0.0) => Err(PyValueError::new_err(
                format!("a known load rate is a finite number >= 0, or None; got {rate}"),
            )),
            _ => {
                self.load.set_known_load_rate(value.unwrap_or(-1.0));
                Ok(())
            }
        }
    }

    /// The reported server utilisation when fixed (1.0 = all cores busy); None: measured
    /// from this process's CPU time.
    #[getter]
    fn server_utilization(&self) -> Option<f64> {
        self.load.fixed_server_utilization()
    }

    #[setter]
    fn set_server_utilization(&self, value: Option<f64>) -> PyResult<()> {
        if let Some(u) = value.filter(|u| !(u.is_finite() && *u >= 0.0)) {
            return Err(PyValueError::new_err(format!(
                "a server utilization is a finite number >= 0, or None; got {u}"
            )));
        }
        self.load.set_server_utilization(value);
        Ok(())
    }

    /// The reported host memory usage in percent when fixed (0 to 100); None: read from the
    /// host at each report.
    #[getter]
    fn memory_usage_percent(&self) -> Option<f64> {
        self.load.fixed_memory_usage_percent()
    }

    #[setter]
    fn set_memory_usage_percent(&self, value: Option<f64>) -> PyResult<()> {
        if let Some(p) = value.filter(|p| !(0.0..=100.0).contains(p)) {
            return Err(PyValueError::new_err(format!(
                "a memory usage percent is a number from 0 to 100, or None; got {p}"
            )));
        }
        self.load.set_memory_usage_percent(value);
        Ok(())
    }

    fn start_request(&self) {
        self.load.start_request();
    }

    fn end_request(&self) {
        self.load.end_request();
    }

    fn request(&self) -> Request {
        Request {
            load: Arc::clone(&self.load),
        }
    }

    /// Turns this service SERVING or NOT_SERVING.
    fn set_serving(&self, serving: bool) {
        self.health.set_serving(&self.name, serving);
    }

    fn __repr__(&self) -> String {
        format!(
            "ServiceLoad({:?}, current_requests={}, capacity={})",
            self.name,
            self.load.current_requests(),
            self.load.capacity()
        )
    }
}

/// Serves grpc.health.v1.Health and Quaestor.LoadReporting for the services added to it, on
/// a port of its own.
#[pyclass(frozen, module = "quaestor._quaestor")]
struct Reporter {
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

/// Where a service is served, as a balancer answers.
#[pyclass(frozen, eq, hash, module = "quaestor._quaestor")]
#[derive(PartialEq, Eq, Hash)]
struct ServiceLocation {
    #[pyo3(get)]
    scope: String,
    #[pyo3(get)]
    service_name: String,
    #[pyo3(get)]
    host_name: String,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl ServiceLocation {
    #[new]
    fn new(scope: String, service_name: String, host_name: String, port: u16) -> Self {
        ServiceLocation {
            scope,
            service_name,
            host_name,
            port,
        }
    }

    /// `host_name:port`.
    #[getter]
    fn address(&self) -> String {
        format!("{}:{}", self.host_name, self.port)
    }

    fn __repr__(&self) -> String {
        format!(
            "ServiceLocation(scope={:?}, service_name={:?}, host_name={:?}, port={})",
            self.scope, self.service_name, self.host_name, self.port
        )
    }
}

/// Asks the balancer at `address` which locations serve `service`: all healthy ones in
/// random order, or (top=True) those reporting load, best first; at most `max_count` (0:
/// all). `ca`: a CA certificate (PEM) for a balancer serving TLS.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // the Python signature, keywords with defaults
#[pyo3(signature = (address, service, max_count = 0, scope = "", top = false, timeout = 5.0, ca = None))]
fn discover(
    py: Python<'_>,
    address: &str,
    service: &str,
    max_count: i32,
    scope: &str,
    top: bool,
    timeout: f64,
    ca: Option<PathBuf>,
) -> PyResult<Vec<ServiceLocation>> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(PyValueError::new_err(format!(
            "timeout must be > 0 seconds, got {timeout}"
        )));
    }
    let tls = ca.map(|ca| ClientTls {
        ca: Some(ca),
        identity: None,
        domain: None,
    });
    let target =
        Target::new(address, tls, Duration::from_secs_f64(timeout)).map_err(Failure::from)?;
    let found = wait(py, async {
        let channel = target.connect().await?;
        Ok(target
            .discover(channel, scope, service, max_count, top)
            .await?)
    })?;
    Ok(found
        .into_iter()
        .map(|l| ServiceLocation {
            scope: l.scope,
            service_name: l.service_name,
            host_name: l.host_name,
            port: u16::try_from(l.port).unwrap_or(0),
        })
        .collect())
}

#[pymodule]
fn _quaestor(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("QuaestorError", py.get_type::<QuaestorError>())?;
    m.add("UnavailableError", py.get_type::<UnavailableError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add_class::<Reporter>()?;
    m.add_class::<ServiceLoad>()?;
    m.add_class::<Request>()?;
    m.add_class::<ServiceLocation>()?;
    m.add_function(wrap_pyfunction!(discover, m)?)?;
    Ok(())
}
