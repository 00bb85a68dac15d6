//! Counting requests: `ServiceLoad` and `Request`.

use std::sync::Arc;

use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use quaestor_core::load::ServiceLoad as CoreLoad;
use quaestor_core::server::health::HealthState;

/// One request of a service while inside `with` (or `async with`), or around every call of
/// a function it decorates.
#[pyclass(frozen, module = "quaestor._quaestor")]
pub(crate) struct Request {
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
pub(crate) struct Done {
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
pub(crate) struct ServiceLoad {
    pub(crate) load: Arc<CoreLoad>,
    pub(crate) health: HealthState,
    pub(crate) name: String,
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
