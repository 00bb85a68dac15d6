//! What kind of failure an error is: one classification for every error of quaestor-core,
//! which the C ABI turns into result codes and the Python module into exception classes, each
//! with one table of its own (so a failure reads alike in every language).

use std::fmt;

use tonic::Code;

/// The kind of a failure, as a caller reacts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument out of range or malformed: an empty or bad name, a bad address, a TTL too
    /// short, a config that does not parse.
    InvalidArgument,
    /// No such service (not added to the reporter).
    NotFound,
    /// Added before (a service of the same name).
    AlreadyExists,
    /// The operating system said no: the port in use, no threads to start, a socket error.
    Io,
    /// TLS files missing or unusable, or TLS settings that do not fit together.
    Tls,
    /// The server (balancer, etcd, worker) could not be reached.
    Unavailable,
    /// The server did not answer in time.
    Timeout,
    /// The server answered with an error.
    Remote,
    /// The server refused the caller: wrong credentials, no permission.
    Refused,
    /// The object is in the wrong state for the call: registered already, nothing to
    /// register, closed, or inherited through a fork.
    InvalidState,
    /// A bug in quaestor.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Io,
        ErrorKind::Tls,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Remote,
        ErrorKind::Refused,
        ErrorKind::InvalidState,
        ErrorKind::Internal,
    ];

    /// The kind's name in snake case (`invalid_argument`), as Python's `QuaestorError.kind`
    /// gives it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Io => "io",
            ErrorKind::Tls => "tls",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Remote => "remote",
            ErrorKind::Refused => "refused",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of a gRPC status a server answered with.
    pub fn of_status(code: Code) -> ErrorKind {
        match code {
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DeadlineExceeded => ErrorKind::Timeout,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Refused,
            _ => ErrorKind::Remote,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure of the worker-facing API ([`crate::sdk`]): its kind and what happened, in words
/// that name the thing (the address, the service, the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Errors that know their [`ErrorKind`]; every one becomes an [`Error`] with its own text.
pub trait Kind: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

macro_rules! into_error {
    ($($type:ty),* $(,)?) => {
        $(impl From<$type> for Error {
            fn from(error: $type) -> Error {
                Error::new(Kind::kind(&error), error.to_string())
            }
        })*
    };
}

into_error!(
    ClientError,
    EtcdError,
    ServerError,
    TlsError,
    ReporterError,
    LocationError,
    BlockingError,
    DiscoveryError,
    ConfigError,
    ControlError,
    SpawnError,
    ClusterError,
);

use crate::balancer::DiscoveryError;
use crate::blocking::BlockingError;
use crate::client::ClientError;
use crate::config::ConfigError;
use crate::registry::LocationError;
use crate::registry::etcd::EtcdError;
use crate::reporter::ReporterError;
use crate::server::ServerError;
use crate::supervisor::cluster::ClusterError;
use crate::supervisor::control::ControlError;
use crate::supervisor::spawn::SpawnError;
use crate::tls::TlsError;

impl Kind for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClientError::InvalidAddress { .. } => ErrorKind::InvalidArgument,
            ClientError::Tls(_) => ErrorKind::Tls,
            ClientError::Unreachable { .. } => ErrorKind::Unavailable,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Rpc { status, .. } => ErrorKind::of_status(status.code()),
        }
    }
}

impl Kind for EtcdError {
    fn kind(&self) -> ErrorKind {
        match self {
            EtcdError::Unreachable { .. } => ErrorKind::Unavailable,
            EtcdError::Timeout { .. } => ErrorKind::Timeout,
            EtcdError::Tls(_) => ErrorKind::Tls,
            EtcdError::Refused { .. } => ErrorKind::Refused,
            EtcdError::Request { .. } => ErrorKind::Remote,
            EtcdError::Location(_) | EtcdError::LeaseTtl(_) | EtcdError::NoEndpoints => {
                ErrorKind::InvalidArgument
            }
        }
    }
}

impl Kind for ServerError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServerError::Tls(_) | ServerError::TlsConfig(_) => ErrorKind::Tls,
            ServerError::Bind { .. } | ServerError::Serve(_) => ErrorKind::Io,
            ServerError::Reflection(_) | ServerError::Task(_) => ErrorKind::Internal,
        }
    }
}

impl Kind for TlsError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Tls
    }
}

impl Kind for ReporterError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReporterError::EmptyServiceName => ErrorKind::InvalidArgument,
            ReporterError::DuplicateService(_) => ErrorKind::AlreadyExists,
        }
    }
}

impl Kind for LocationError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

impl Kind for BlockingError {
    fn kind(&self) -> ErrorKind {
        match self {
            BlockingError::Start(_) => ErrorKind::Io,
            BlockingError::InsideRuntime | BlockingError::Forked { .. } => ErrorKind::InvalidState,
        }
    }
}

impl Kind for DiscoveryError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

impl Kind for ConfigError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Read { .. } | ConfigError::NotFound { .. } => ErrorKind::Io,
            ConfigError::Invalid { .. } => ErrorKind::InvalidArgument,
        }
    }
}

impl Kind for ControlError {
    fn kind(&self) -> ErrorKind {
        match self {
            ControlError::AlreadyRunning { .. } => ErrorKind::InvalidState,
            ControlError::Io { .. } => ErrorKind::Io,
            ControlError::NotRunning { .. } => ErrorKind::Unavailable,
            ControlError::BadAnswer { .. } => ErrorKind::Remote,
            ControlError::Refused { kind, .. } if kind == "unknown_member" => ErrorKind::NotFound,
            ControlError::Refused { .. } => ErrorKind::Remote,
        }
    }
}

impl Kind for SpawnError {
    fn kind(&self) -> ErrorKind {
        match self {
            SpawnError::Quotes { .. } => ErrorKind::InvalidArgument,
            SpawnError::NotFound { .. } => ErrorKind::NotFound,
            SpawnError::Start { .. } => ErrorKind::Io,
        }
    }
}

impl Kind for ClusterError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_snake_case() {
        let names: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn errors_keep_their_text_and_kind() {
        let error = Error::from(ReporterError::DuplicateService("Worker".into()));
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
        assert_eq!(error.to_string(), "service \"Worker\" is already reported");
        assert_eq!(
            ErrorKind::of_status(Code::DeadlineExceeded),
            ErrorKind::Timeout
        );
        assert_eq!(
            ErrorKind::of_status(Code::PermissionDenied),
            ErrorKind::Refused
        );
    }
}
