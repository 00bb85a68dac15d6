//! quaestor's failures as Python exceptions, and waiting on the shared runtime.

use std::sync::{Mutex, PoisonError};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use quaestor_core::blocking::{self, BlockingError};
use quaestor_core::client::ClientError;
use quaestor_core::registry::LocationError;
use quaestor_core::registry::etcd::EtcdError;
use quaestor_core::reporter::ReporterError;
use quaestor_core::server::ServerError;

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
pub(crate) enum Failure {
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
pub(crate) fn wait<F, T>(py: Python<'_>, future: F) -> Result<T, Failure>
where
    F: std::future::Future<Output = Result<T, Failure>> + Send,
    T: Send,
{
    py.detach(|| blocking::block_on(future))?
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
