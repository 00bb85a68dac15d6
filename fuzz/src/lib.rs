//! What the fuzz targets share: one current-thread runtime, a balancer over a memory registry
//! with in-process workers (real reporters on 127.0.0.1), and calls of a tonic service in
//! process (the request body is gRPC frames built from the fuzz input; nothing goes over a
//! socket but the balancer's own probes of its workers).

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::HealthState;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// The runtime every in-process target drives (built once; libFuzzer runs one thread).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A balancer over a few locations: two `Worker`s that answer (one as `127.0.0.1`, one as
/// `localhost`), one that does not (a closed port), and `Other` in scope `prod`.
pub struct Fixture {
    pub balancer: Balancer,
    pub health: HealthState,
    pub locations: Vec<ServiceLocation>,
    _workers: Vec<(Reporter, ServerHandle)>,
}

impl Fixture {
    /// Starts the workers and the balancer, and waits for the first probes of every service.
    /// Call inside a runtime.
    pub async fn start() -> Fixture {
        let mut workers = Vec::new();
        let mut locations = Vec::new();
        for (scope, service, host, capacity) in [
            ("", "Worker", "127.0.0.1", 10),
            ("", "Worker", "localhost", 5),
            ("prod", "Other", "127.0.0.1", 3),
        ] {
            let reporter = Reporter::new();
            reporter
                .add_service(service, capacity)
                .expect("add a service");
            let server = reporter
                .serve("127.0.0.1:0".parse().expect("an address"), None)
                .await
                .expect("serve a reporter");
            let port = server.local_addr().port();
            locations.push(ServiceLocation::new(scope, service, host, port).expect("a location"));
            workers.push((reporter, server));
        }
        // A port nobody listens on: a location that never answers.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        locations.push(ServiceLocation::new("", "Worker", "127.0.0.1", port).expect("a location"));

        let registry = MemoryRegistry::from_locations(locations.clone());
        let options = BalancerOptions {
            probe_interval: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            ..BalancerOptions::default()
        };
        let balancer = Balancer::start(registry, options);
        for (scope, service) in [("", "Worker"), ("prod", "Other")] {
            balancer
                .discover(scope, service, 0)
                .await
                .expect("the first probes");
        }
        Fixture {
            balancer,
            health: HealthState::new(),
            locations,
            _workers: workers,
        }
    }

    /// The fixture of this process, on [`runtime`].
    pub fn shared() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| runtime().block_on(Fixture::start()))
    }
}

/// `messages` as the body of a gRPC request: each one a frame (no compression).
pub fn grpc_frames<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut body = BytesMut::new();
    for message in messages {
        body.extend_from_slice(&[0]);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
    }
    body.freeze()
}

/// Splits fuzz input into messages, each preceded by its length: one byte, or 0xFF and then
/// two (little-endian). A last, short message takes what is left.
pub fn length_prefixed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    while let Some((&first, rest)) = data.split_first() {
        let (len, rest) = match (first, rest) {
            (0xFF, [lo, hi, rest @ ..]) => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
            (0xFF, _) => break,
            (len, rest) => (usize::from(len), rest),
        };
        let len = len.min(rest.len());
        messages.push(&rest[..len]);
        data = &rest[len..];
    }
    messages
}

/// What a call answered.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The response messages, undecoded, in order.
    pub messages: Vec<Bytes>,
    /// The `grpc-status` (trailers, or headers of a trailers-only answer); None when the
    /// stream was still open at the deadline or at `max_messages`.
    pub status: Option<tonic::Code>,
    pub message: String,
}

/// Calls `path` of `service` in process with `body` (gRPC frames) and reads at most
/// `max_messages` response messages, for at most `within`.
pub async fn call<S>(
    service: S,
    path: &str,
    body: Bytes,
    max_messages: usize,
    within: Duration,
) -> Outcome
where
    S: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .expect("a request");
    let deadline = tokio::time::Instant::now() + within;
    let Ok(response) = service.oneshot(request).await;
    let mut outcome = Outcome::default();
    if let Some(status) = grpc_status(response.headers()) {
        outcome.status = Some(status.0);
        outcome.message = status.1;
        return outcome;
    }
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    while outcome.messages.len() < max_messages {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(status))) => {
                outcome.status = Some(status.code());
                break;
            }
            Ok(None) | Err(_) => break,
        };
        match frame.into_data() {
            Ok(data) => {
                buffer.extend_from_slice(&data);
                while let Some(message) = next_message(&mut buffer) {
                    outcome.messages.push(message);
                }
            }
            Err(frame) => {
                if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                    outcome.status = Some(status.0);
                    outcome.message = status.1;
                }
                break;
            }
        }
    }
    outcome
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(tonic::Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((tonic::Code::from(code), message))
}

/// One whole frame off the front of `buffer`, if it holds one.
fn next_message(buffer: &mut BytesMut) -> Option<Bytes> {
    if buffer.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < 5 + len {
        return None;
    }
    buffer.advance(5);
    Some(buffer.split_to(len).freeze())
}
