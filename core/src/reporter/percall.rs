//! Per-call ORCA (gRFC A51): the `endpoint-load-metrics-bin` trailer, an
//! `xds.data.orca.v3.OrcaLoadReport` taken as each call ends, on the responses of the services
//! a worker wraps in [`PerCallLayer`]. Opt-in: a gRPC client balancing by backend metrics
//! with per-call reports (or a proxy reading them) gets the load without a stream of its own.
//!
//! The report is the one `StreamCoreMetrics` sends ([`crate::reporter::orca`]), read when the
//! response's trailers are sent: after the handler returned, so a call counted with
//! [`ServiceLoad::request`](crate::load::ServiceLoad::request) inside its handler is no
//! longer in `current_requests`; the report is the load the call leaves behind.
//! `rps_fractional` is the rate of requests started (every service of the reporter) over
//! the last second or so, as calls end: 0 in the first report. An error answered
//! trailers-only carries the report among those headers.
//!
//! ```no_run
//! # use quaestor_core::proto::example::work_server::{Work, WorkServer};
//! # async fn demo<W: Work>(work: WorkServer<W>) -> Result<(), quaestor_core::server::ServerError> {
//! use quaestor_core::reporter::Reporter;
//! let reporter = Reporter::new();
//! reporter.add_service("Worker", 4).expect("new name");
//! // `work`: the worker's own service; its answers carry the trailer, the reporter's do not.
//! let server = reporter
//!     .server()
//!     .add_service(reporter.per_call_orca().wrap(work))
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Reading the report costs what one `ReportLoad` answer costs (a lock per service and, for
//! figures not set by the worker, the process's CPU time and the host's memory from
//! `/proc`), once per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use prost::Message;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Bytes, StdError};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tower_layer::Layer;

use crate::load::ServiceLoad;
use crate::proto::xds::data::orca::v3::OrcaLoadReport;
use crate::reporter::orca;

/// The trailer (binary metadata: base64 on the wire) that carries a per-call report.
pub const TRAILER: &str = "endpoint-load-metrics-bin";

/// `rps_fractional` is measured since a mark at most this old (then the mark moves on).
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Readings closer to the mark than this keep the rate measured before.
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(100);

/// A tower layer adding the per-call report to every response of the service it wraps
/// (for a tonic `Server::layer`, every service of that server). Made by
/// [`Reporter::per_call_orca`](crate::reporter::Reporter::per_call_orca); cheap to clone.
#[derive(Debug, Clone)]
pub struct PerCallLayer {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
    rate: Arc<Mutex<Option<Rate>>>,
}

/// The mark the request rate is measured from, and the rate last measured.
#[derive(Debug)]
struct Rate {
    at: Instant,
    started: u64,
    per_second: f64,
}

impl Rate {
    /// The rate with `started` requests started by `now`; moves the mark once it is a
    /// window old.
    fn update(&mut self, started: u64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at);
        if elapsed >= MIN_RATE_INTERVAL {
            self.per_second = started.saturating_sub(self.started) as f64 / elapsed.as_secs_f64();
        }
        if elapsed >= RATE_WINDOW {
            self.at = now;
            self.started = started;
        }
        self.per_second
    }
}

impl PerCallLayer {
    pub(crate) fn new(loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>) -> Self {
        PerCallLayer {
            loads,
            rate: Arc::default(),
        }
    }

    /// `inner` with the per-call report on its responses (what [`Layer::layer`] does).
    pub fn wrap<S>(&self, inner: S) -> PerCall<S> {
        PerCall {
            inner,
            layer: self.clone(),
        }
    }

    /// The report a call ending now would carry.
    pub fn report(&self) -> OrcaLoadReport {
        let orca::Reading {
            mut report,
            started,
        } = orca::read(&self.loads);
        let now = Instant::now();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        report.rps_fractional = match rate.as_mut() {
            Some(rate) => rate.update(started, now),
            None => {
                *rate = Some(Rate {
                    at: now,
                    started,
                    per_second: 0.0,
                });
                0.0
            }
        };
        report
    }

    /// The report as a header map holding the one trailer.
    fn trailer(&self) -> HeaderMap {
        let mut metadata = MetadataMap::new();
        metadata.insert_bin(
            TRAILER,
            MetadataValue::from_bytes(&self.report().encode_to_vec()),
        );
        metadata.into_headers()
    }
}

impl<S> Layer<S> for PerCallLayer {
    type Service = PerCall<S>;

    fn layer(&self, inner: S) -> PerCall<S> {
        self.wrap(inner)
    }
}

/// A service whose responses carry the per-call report (see [`PerCallLayer`]). Keeps the
/// wrapped service's name, so that it is added to a server like the service itself.
#[derive(Debug, Clone)]
pub struct PerCall<S> {
    inner: S,
    layer: PerCallLayer,
}

impl<S: NamedService> NamedService for PerCall<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> tonic::codegen::Service<Request<ReqBody>> for PerCall<S>
where
    S: tonic::codegen::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = answer.await?;
            Ok(with_report(response, layer))
        })
    }
}

/// The response with the report added to its trailers when they are sent, or to its headers
/// at once when they are the trailers (a trailers-only answer: they hold `grpc-status`).
fn with_report<B>(response: Response<B>, layer: PerCallLayer) -> Response<tonic::body::Body>
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(tonic::Status::GRPC_STATUS) {
        parts.headers.extend(layer.trailer());
        return Response::from_parts(parts, tonic::body::Body::new(body));
    }
    let body = body.map_frame(move |mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            trailers.extend(layer.trailer());
        }
        frame
    });
    Response::from_parts(parts, tonic::body::Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_from_a_mark_that_moves_on_each_window() {
        let start = Instant::now();
        let mut rate = Rate {
            at: start,
            started: 0,
            per_second: 0.0,
        };
        // Too close to the mark: the rate before.
        assert_eq!(rate.update(5, start + Duration::from_millis(50)), 0.0);
        assert_eq!(rate.update(10, start + Duration::from_millis(500)), 20.0);
        assert_eq!(rate.at, start, "the mark stays within the window");
        assert_eq!(rate.update(30, start + Duration::from_secs(1)), 30.0);
        let mark = start + Duration::from_secs(1);
        assert_eq!((rate.at, rate.started), (mark, 30));
        // Just after the mark moved: the rate measured before, then from the new mark.
        assert_eq!(rate.update(31, mark + Duration::from_millis(10)), 30.0);
        assert_eq!(rate.update(40, mark + Duration::from_millis(200)), 50.0);
    }
}
