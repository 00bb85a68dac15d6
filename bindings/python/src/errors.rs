//! quaestor's failures as Python exceptions, and waiting on the shared runtime.
//!
//! The exception classes are defined in Python (`quaestor/_errors.py`, so that they can derive
//! from `ValueError` and `LookupError` too); [`exception_name`] is the one table from the
//! core's error kinds to them.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyType;
use quaestor_core::error::{Error, ErrorKind};
use quaestor_core::sdk;

/// The one table from quaestor's error kinds to Python exception classes (the C ABI's is
/// `code_of` in `ffi/src/error.rs`; `tests/test_error_mapping.py` checks they agree).
pub(crate) fn exception_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "InvalidArgumentError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::AlreadyExists => "AlreadyExistsError",
        ErrorKind::Io => "IoError",
        ErrorKind::Tls => "TlsError",
        ErrorKind::Unavailable => "UnavailableError",
        ErrorKind::Timeout => "TimeoutError",
        ErrorKind::Remote => "RemoteError",
        ErrorKind::Refused => "RefusedError",
        ErrorKind::InvalidState => "InvalidStateError",
        ErrorKind::Internal => "InternalError",
    }
}

/// The Python exception for `error`.
pub(crate) fn raise(error: Error) -> PyErr {
    Python::attach(|py| {
        let class = py
            .import(intern!(py, "quaestor._errors"))
            .and_then(|module| module.getattr(exception_name(error.kind())))
            .and_then(|class| Ok(class.cast_into::<PyType>()?));
        match class {
            Ok(class) => PyErr::from_type(class, error.message().to_owned()),
            Err(import_failed) => import_failed,
        }
    })
}

/// `?` for the core's results in functions that return `PyResult`.
pub(crate) trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T, E: Into<Error>> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(|e| raise(e.into()))
    }
}

/// Runs `future` on the shared runtime with the GIL released.
pub(crate) fn wait<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: std::future::Future<Output = Result<T, Error>> + Send,
    T: Send,
{
    py.detach(|| sdk::block_on(future)).or_raise()
}
