//! Asking a balancer: `DiscoveryClient`, `discover` and `ServiceLocation`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use quaestor_core::sdk::{DiscoveryClient as CoreClient, Location};
use quaestor_core::tls::ClientTls;

use crate::aio::awaitable;
use crate::errors::OrRaise;

/// Where a service is served, as a balancer answers.
#[pyclass(frozen, eq, hash, module = "quaestor._quaestor")]
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct ServiceLocation {
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

impl From<Location> for ServiceLocation {
    fn from(l: Location) -> Self {
        ServiceLocation {
            scope: l.scope,
            service_name: l.service,
            host_name: l.host,
            port: l.port,
        }
    }
}

fn locations(found: Vec<Location>) -> Vec<ServiceLocation> {
    found.into_iter().map(ServiceLocation::from).collect()
}

/// `timeout=` in seconds as a duration; not a positive number: ValueError.
fn timeout_arg(timeout: f64) -> PyResult<Duration> {
    if timeout.is_finite() && timeout > 0.0 {
        Ok(Duration::from_secs_f64(timeout))
    } else {
        Err(PyValueError::new_err(format!(
            "timeout must be > 0 seconds, got {timeout}"
        )))
    }
}

/// Asks the balancer at `address` which locations serve `service`: all healthy ones in
/// random order, or (top=True) those reporting load, best first; at most `max_count` (0:
/// all). `ca`: a CA certificate (PEM) for a balancer serving TLS. Calls with the same address,
/// CA and timeout share one connection (a DiscoveryClient kept for the process).
#[pyfunction]
#[allow(clippy::too_many_arguments)] // the Python signature, keywords with defaults
#[pyo3(signature = (address, service, max_count = 0, scope = "", top = false, timeout = 5.0, ca = None))]
pub(crate) fn discover(
    py: Python<'_>,
    address: &str,
    service: &str,
    max_count: i32,
    scope: &str,
    top: bool,
    timeout: f64,
    ca: Option<PathBuf>,
) -> PyResult<Vec<ServiceLocation>> {
    let client = CoreClient::shared(address, ca, timeout_arg(timeout)?).or_raise()?;
    let found = py.detach(|| {
        if top {
            client.discover_top_blocking(scope, service, max_count)
        } else {
            client.discover_blocking(scope, service, max_count)
        }
    });
    Ok(locations(found.or_raise()?))
}

/// A client of the balancer at `address` that keeps its connection between calls.
#[pyclass(frozen, module = "quaestor._quaestor")]
pub(crate) struct DiscoveryClient {
    client: Arc<CoreClient>,
}

#[pymethods]
impl DiscoveryClient {
    #[new]
    #[pyo3(signature = (address, *, ca = None, timeout = 5.0))]
    fn new(address: &str, ca: Option<PathBuf>, timeout: f64) -> PyResult<Self> {
        let client = CoreClient::new(address, ca.map(ClientTls::with_ca), timeout_arg(timeout)?)
            .or_raise()?;
        Ok(DiscoveryClient {
            client: Arc::new(client),
        })
    }

    /// `host:port` of the balancer.
    #[getter]
    fn address(&self) -> String {
        self.client.address()
    }

    /// The healthy locations of `service`, in random order; at most `max_count` (0: all).
    #[pyo3(signature = (service, max_count = 0, scope = ""))]
    fn discover(
        &self,
        py: Python<'_>,
        service: &str,
        max_count: i32,
        scope: &str,
    ) -> PyResult<Vec<ServiceLocation>> {
        let found = py.detach(|| self.client.discover_blocking(scope, service, max_count));
        Ok(locations(found.or_raise()?))
    }

    /// The healthy locations that report load, best first: max_count=1 is "which worker
    /// should I call now?".
    #[pyo3(signature = (service, max_count = 0, scope = ""))]
    fn discover_top(
        &self,
        py: Python<'_>,
        service: &str,
        max_count: i32,
        scope: &str,
    ) -> PyResult<Vec<ServiceLocation>> {
        let found = py.detach(|| self.client.discover_top_blocking(scope, service, max_count));
        Ok(locations(found.or_raise()?))
    }

    /// `discover`, as an awaitable (`quaestor.aio.DiscoveryClient.discover`).
    #[pyo3(signature = (service, max_count = 0, scope = ""))]
    fn discover_async<'py>(
        &self,
        py: Python<'py>,
        service: String,
        max_count: i32,
        scope: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (client, scope) = (Arc::clone(&self.client), scope.to_owned());
        awaitable(py, async move {
            Ok(locations(
                client.discover(&scope, &service, max_count).await?,
            ))
        })
    }

    /// `discover_top`, as an awaitable.
    #[pyo3(signature = (service, max_count = 0, scope = ""))]
    fn discover_top_async<'py>(
        &self,
        py: Python<'py>,
        service: String,
        max_count: i32,
        scope: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (client, scope) = (Arc::clone(&self.client), scope.to_owned());
        awaitable(py, async move {
            Ok(locations(
                client.discover_top(&scope, &service, max_count).await?,
            ))
        })
    }

    fn __repr__(&self) -> String {
        format!("DiscoveryClient({:?})", self.client.address())
    }
}
