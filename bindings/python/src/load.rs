//! Counting requests: `ServiceLoad`, `Request` and `CancellableRequest`.

use std::sync::{Arc, Mutex, PoisonError};

use crate::errors::OrRaise;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use quaestor_core::load::ServiceLoad as CoreLoad;
use quaestor_core::reporter::admin::CancellableRequest as CoreCancellable;
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

/// One request started on behalf of a user in an environment, while inside `with` (or
/// `async with`): a `ProcessAdministrationGrpc/Cancel` of that user name and environment sets
/// `cancelled`. Entered once.
#[pyclass(frozen, module = "quaestor._quaestor")]
pub(crate) struct CancellableRequest {
    load: Arc<CoreLoad>,
    user_name: String,
    environment: String,
    state: Mutex<Cancellable>,
}

/// Where a cancellable request is in its life.
enum Cancellable {
    NotStarted,
    Running(CoreCancellable),
    /// Ended; whether it was cancelled while it ran.
    Ended {
        cancelled: bool,
    },
}

impl CancellableRequest {
    fn start(&self) -> PyResult<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            Cancellable::NotStarted => {
                *state = Cancellable::Running(
                    self.load
                        .start_request_as(&self.user_name, &self.environment),
                );
                Ok(())
            }
            _ => Err(PyRuntimeError::new_err(
                "a cancellable request is entered once: call load.request(...) for each request",
            )),
        }
    }

    fn end(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Cancellable::Running(request) = &*state {
            // Dropping the running request ends it.
            *state = Cancellable::Ended {
                cancelled: request.is_cancelled(),
            };
        }
    }
}

#[pymethods]
impl CancellableRequest {
    /// True once a Cancel for this user name and environment arrived while it ran.
    #[getter]
    fn cancelled(&self) -> bool {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Cancellable::NotStarted => false,
            Cancellable::Running(request) => request.is_cancelled(),
            Cancellable::Ended { cancelled } => *cancelled,
        }
    }

    /// True while inside `with`.
    #[getter]
    fn running(&self) -> bool {
        matches!(
            &*self.state.lock().unwrap_or_else(PoisonError::into_inner),
            Cancellable::Running(_)
        )
    }

    #[getter]
    fn user_name(&self) -> &str {
        &self.user_name
    }

    #[getter]
    fn environment(&self) -> &str {
        &self.environment
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.start()?;
        Ok(slf)
    }

    fn __exit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) {
        self.end();
    }

    fn __aenter__(slf: Bound<'_, Self>) -> PyResult<Done> {
        slf.get().start()?;
        Ok(Done {
            value: Some(slf.into_any().unbind()),
        })
    }

    fn __aexit__(
        &self,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> Done {
        self.end();
        Done { value: None }
    }

    fn __repr__(&self) -> String {
        format!(
            "CancellableRequest(user_name={:?}, environment={:?}, running={}, cancelled={})",
            self.user_name,
            self.environment,
            self.running(),
            self.cancelled()
        )
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
        self.load.try_set_known_load_rate(value).or_raise()
    }

    /// The reported server utilisation when fixed (1.0 = all cores busy); None: measured
    /// from this process's CPU time.
    #[getter]
    fn server_utilization(&self) -> Option<f64> {
        self.load.fixed_server_utilization()
    }

    #[setter]
    fn set_server_utilization(&self, value: Option<f64>) -> PyResult<()> {
        self.load.try_set_server_utilization(value).or_raise()
    }

    /// The reported host memory usage in percent when fixed (0 to 100); None: read from the
    /// host at each report.
    #[getter]
    fn memory_usage_percent(&self) -> Option<f64> {
        self.load.fixed_memory_usage_percent()
    }

    #[setter]
    fn set_memory_usage_percent(&self, value: Option<f64>) -> PyResult<()> {
        self.load.try_set_memory_usage_percent(value).or_raise()
    }

    fn start_request(&self) {
        self.load.start_request();
    }

    fn end_request(&self) {
        self.load.end_request();
    }

    /// A request to count with `with`; with a user name and an environment (both or
    /// neither), a `CancellableRequest` that a Cancel of that user and environment marks.
    #[pyo3(signature = (*, user_name = None, environment = None))]
    fn request(
        &self,
        py: Python<'_>,
        user_name: Option<String>,
        environment: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let load = Arc::clone(&self.load);
        match (user_name, environment) {
            (None, None) => Ok(Py::new(py, Request { load })?.into_any()),
            (Some(user_name), Some(environment)) => Ok(Py::new(
                py,
                CancellableRequest {
                    load,
                    user_name,
                    environment,
                    state: Mutex::new(Cancellable::NotStarted),
                },
            )?
            .into_any()),
            _ => Err(PyTypeError::new_err(
                "request(): give user_name and environment together (\"\" is a valid value), \
                 or neither",
            )),
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
