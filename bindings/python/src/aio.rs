//! Awaitables on quaestor's shared runtime: the future runs on quaestor's threads and resolves
//! an asyncio future of the caller's event loop (through `call_soon_threadsafe`), so awaiting
//! it blocks no thread. Cancelling the asyncio future aborts the work.

use std::future::Future;

use pyo3::prelude::*;
use pyo3::{IntoPyObjectExt, intern};
use quaestor_core::blocking;
use quaestor_core::error::Error;
use tokio::task::AbortHandle;

use crate::errors::{OrRaise, raise};

/// An asyncio future of the running event loop that `future`'s result resolves.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py
        .import(intern!(py, "asyncio"))?
        .call_method0(intern!(py, "get_running_loop"))?;
    let result = event_loop.call_method0(intern!(py, "create_future"))?;
    let resolve = py
        .import(intern!(py, "quaestor._aio"))?
        .getattr(intern!(py, "_resolve"))?
        .unbind();
    let (event_loop_ref, result_ref) = (event_loop.unbind(), result.clone().unbind());
    let task = blocking::runtime().or_raise()?.spawn(async move {
        let outcome = future.await;
        Python::attach(|py| {
            let (ok, value) = match outcome {
                Ok(value) => match value.into_py_any(py) {
                    Ok(value) => (true, value),
                    Err(error) => (false, error.into_value(py).into_any()),
                },
                Err(error) => (false, raise(error).into_value(py).into_any()),
            };
            // A closed loop cannot be told; its future is gone with it.
            let _ = event_loop_ref.bind(py).call_method1(
                intern!(py, "call_soon_threadsafe"),
                (resolve, result_ref, ok, value),
            );
        });
    });
    result.call_method1(
        intern!(py, "add_done_callback"),
        (Abort {
            handle: task.abort_handle(),
        },),
    )?;
    Ok(result)
}

/// Aborts the work behind an asyncio future once the future is done (cancelled, or resolved:
/// then there is nothing left to abort).
#[pyclass(frozen, module = "quaestor._quaestor")]
struct Abort {
    handle: AbortHandle,
}

#[pymethods]
impl Abort {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.handle.abort();
    }
}
