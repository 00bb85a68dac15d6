//! Connecting to quaestor servers (workers, reporters, balancers) and asking them for health,
//! load and services.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use crate::proto::health::HealthCheckRequest;
use crate::proto::health::health_client::HealthClient;
use crate::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;
use crate::proto::load_reporting::{LoadReportRequest, LoadReportResponse};
use crate::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use crate::proto::service_discovery::{DiscoverServicesRequest, ServiceLocationMsg};
use crate::server::health::ServingStatus;
use crate::tls::{ClientTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("no answer from {address} within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("{address} answered {}{}", code_name(.status.code()), message_part(.status.message()))]
    Rpc { address: String, status: Status },
}

impl ClientError {
    /// True when the server could not be reached or did not answer in time, as opposed to a
    /// server that answered with an error.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Rpc { status, .. } => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            }
            ClientError::InvalidAddress { .. } | ClientError::Tls(_) => false,
        }
    }

    /// Whether the server answered UNIMPLEMENTED: it does not serve the service asked (a
    /// worker asked for discovery, a balancer for load, ...).
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Some(Code::Unimplemented)
    }

    /// The gRPC status code the server answered with, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// A server to talk to: its address and how to secure the connection.
#[derive(Debug, Clone)]
pub struct Target {
    uri: Uri,
    tls: Option<ClientTls>,
    timeout: Duration,
}

impl Target {
    /// `address` is `host:port`, `http://host:port` or `https://host:port` (https, or any
    /// `tls` given, means TLS). `timeout` bounds connecting and each call.
    pub fn new(
        address: &str,
        tls: Option<ClientTls>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidAddress {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = match address.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some((other, _)) => {
                return Err(invalid(&format!(
                    "unknown scheme {other:?}, use http or https"
                )));
            }
            None => ("http", address),
        };
        let tls = match (scheme, tls) {
            ("https", None) => Some(ClientTls::default()),
            (_, tls) => tls,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{rest}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.port_u16() {
            Some(0) | None => {
                return Err(invalid("expected host:port with a port from 1 to 65535"));
            }
            Some(_) => {}
        }
        if uri.path() != "/" || uri.query().is_some() {
            return Err(invalid("expected host:port, without a path"));
        }
        Ok(Target { uri, tls, timeout })
    }

    /// `host:port` as given.
    pub fn address(&self) -> String {
        self.uri
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects now; fails if the server cannot be reached within the timeout.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        // Calls are bounded by `call` (not by the endpoint's own timeout, which would end
        // them as CANCELLED and so look like an answer instead of silence).
        let mut endpoint = Endpoint::from(self.uri.clone()).connect_timeout(self.timeout);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.load()?)
                .map_err(|e| TlsError::Invalid {
                    reason: error_chain(&e),
                })?;
        }
        match tokio::time::timeout(self.timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(self.unreachable(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// `grpc.health.v1.Health/Check` of `service` (`""`: the whole server). An unknown
    /// service gives `Ok(ServiceUnknown)`.
    pub async fn check_health(
        &self,
        channel: Channel,
        service: &str,
    ) -> Result<ServingStatus, ClientError> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let answer = self.call(HealthClient::new(channel).check(request)).await;
        match answer {
            Ok(response) => {
                Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
            }
            Err(ClientError::Rpc { status, .. }) if status.code() == Code::NotFound => {
                Ok(ServingStatus::ServiceUnknown)
            }
            Err(other) => Err(other),
        }
    }

    /// `LoadReportingGrpc/ReportLoad` of `service` in `scope`.
    pub async fn report_load(
        &self,
        channel: Channel,
        scope: &str,
        service: &str,
    ) -> Result<LoadReportResponse, ClientError> {
        let request = LoadReportRequest {
            scope: scope.to_owned(),
            service_name: service.to_owned(),
        };
        self.call(LoadReportingGrpcClient::new(channel).report_load(request))
            .await
    }

    /// `ServiceDiscoveryGrpc/DiscoverServices` (random order), or `DiscoverTopServices`
    /// (best first) when `top`; `max_count` ≤ 0 means all.
    pub async fn discover(
        &self,
        channel: Channel,
        scope: &str,
        service: &str,
        max_count: i32,
        top: bool,
    ) -> Result<Vec<ServiceLocationMsg>, ClientError> {
        let request = DiscoverServicesRequest {
            scope: scope.to_owned(),
            service_name: service.to_owned(),
            max_count,
        };
        let mut client = ServiceDiscoveryGrpcClient::new(channel);
        let answer = if top {
            self.call(client.discover_top_services(request)).await?
        } else {
            self.call(client.discover_services(request)).await?
        };
        Ok(answer.service_locations)
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // The connection failed under the call (the status comes from the transport, not
            // from the server): a TLS server reads the plaintext HTTP/2 preface as garbage
            // and closes, which the client sees as a protocol error or a cancelled call.
            Ok(Err(status))
                if self.tls.is_none()
                    && std::error::Error::source(&status).is_some()
                    && matches!(status.code(), Code::Unknown | Code::Cancelled) =>
            {
                Err(ClientError::Unreachable {
                    address: self.address(),
                    reason: format!(
                        "it closed the connection without an answer (plaintext to a server that speaks TLS? use https:// or --tls): {}",
                        status.message()
                    ),
                })
            }
            Ok(Err(status)) => Err(ClientError::Rpc {
                address: self.address(),
                status,
            }),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn unreachable(&self, error: &dyn std::error::Error) -> ClientError {
        let chain = error_chain(error);
        let chain = chain.strip_prefix("transport error: ").unwrap_or(&chain);
        let reason = if self.tls.is_some() && chain.contains("InvalidContentType") {
            // rustls read a plaintext HTTP/2 answer where a TLS record was due.
            "it does not answer in TLS (TLS to a server that speaks plaintext?)".to_owned()
        } else if self.tls.is_some()
            && (chain.contains("certificate") || chain.contains("received fatal alert"))
        {
            format!("refused by TLS: {chain}")
        } else {
            chain.to_owned()
        };
        ClientError::Unreachable {
            address: self.address(),
            reason,
        }
    }

    fn timed_out(&self) -> ClientError {
        ClientError::Timeout {
            address: self.address(),
            after: self.timeout,
        }
    }
}

/// The name of a gRPC status code as the gRPC specification spells it (`UNIMPLEMENTED`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `: message`, or nothing for an empty message.
fn message_part(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// An error and its causes on one line: a transport error's own text is only "transport
/// error"; its causes say why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn addresses() {
        let plain = Target::new("127.0.0.1:5161", None, T).expect("host:port");
        assert_eq!(plain.uri.to_string(), "http://127.0.0.1:5161/");
        assert_eq!(plain.address(), "127.0.0.1:5161");
        let https = Target::new("https://localhost:5161", None, T).expect("https url");
        assert!(https.tls.is_some());
        let tls = Target::new("localhost:5161", Some(ClientTls::default()), T).expect("tls");
        assert_eq!(tls.uri.scheme_str(), Some("https"));
        assert!(Target::new("[::1]:80", None, T).is_ok());
        for bad in [
            "localhost",
            "localhost:0",
            "localhost:99999",
            "ftp://x:1",
            "x:1/path",
            "",
            ":",
        ] {
            assert!(
                matches!(
                    Target::new(bad, None, T),
                    Err(ClientError::InvalidAddress { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }
}
