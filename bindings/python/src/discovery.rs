//! Asking a balancer: `discover` and `ServiceLocation`.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use quaestor_core::client::Target;
use quaestor_core::tls::ClientTls;

use crate::errors::{Failure, wait};

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

/// Asks the balancer at `address` which locations serve `service`: all healthy ones in
/// random order, or (top=True) those reporting load, best first; at most `max_count` (0:
/// all). `ca`: a CA certificate (PEM) for a balancer serving TLS.
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
