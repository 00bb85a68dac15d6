//! `quaestor.push.v1.LoadPush`: the reporter streams one service's load and health to each
//! balancer that watches it (the wire contract is in `docs/wire.md`).
//!
//! A stream is not a task: tonic polls it on its connection as the client reads, so an idle
//! stream costs its keep-alive timer and about 800 bytes (besides tonic's and h2's per-stream
//! state; the encode buffer is 128 bytes instead of 8 KiB), and a stream whose client went
//! away is simply dropped. It waits for changes with [`ServiceLoad::changed`] and the health
//! `watch` channel, never by polling.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_stream::Stream;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::load::{LoadSnapshot, LoadVersion, ServiceLoad};
use crate::proto::push::{Load, LoadUpdate, WatchLoadRequest};
use crate::server::health::{HealthState, ServingStatus};

/// The gRPC service name.
pub const SERVICE_NAME: &str = "quaestor.push.v1.LoadPush";

/// The keep-alive interval of a request that asks for none (`keepalive_interval_ms = 0`).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_millis(1000);

/// Shorter keep-alive intervals are raised to this.
pub const MIN_KEEPALIVE: Duration = Duration::from_millis(100);

/// The shortest gap between two updates of a request that asks for none (`min_interval_ms = 0`).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(10);

const WATCH_LOAD_PATH: &str = "/quaestor.push.v1.LoadPush/WatchLoad";

/// An update is about 70 bytes: tonic's default 8 KiB buffer per stream would be most of an
/// idle stream's memory.
fn buffer_settings() -> BufferSettings {
    BufferSettings::new(128, 32 * 1024)
}

impl From<LoadSnapshot> for Load {
    fn from(s: LoadSnapshot) -> Self {
        Load {
            timestamp_ticks: s.timestamp_ticks,
            known_load_rate: s.known_load_rate,
            request_capacity: s.capacity,
            current_requests: s.current_requests,
            server_utilization: s.server_utilization,
            server_memory_usage_percent: s.memory_usage_percent,
            requests_started: s.requests_started,
        }
    }
}

/// The `LoadPush` gRPC service over a reporter's services; add it to a server like any
/// generated tonic service. (Written out instead of generated for its small buffers.)
#[derive(Debug, Clone)]
pub struct LoadPushService {
    inner: Arc<Watches>,
}

#[derive(Debug)]
struct Watches {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
    health: HealthState,
}

impl LoadPushService {
    pub(crate) fn new(
        loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
        health: HealthState,
    ) -> Self {
        LoadPushService {
            inner: Arc::new(Watches { loads, health }),
        }
    }
}

impl NamedService for LoadPushService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tonic::codegen::Service<http::Request<B>> for LoadPushService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_LOAD_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("unknown method").into_http::<tonic::body::Body>())
            });
        }
        let method = WatchLoad(Arc::clone(&self.inner));
        Box::pin(async move { Ok(Grpc::new(PushCodec).server_streaming(method, request).await) })
    }
}

struct WatchLoad(Arc<Watches>);

impl ServerStreamingService<WatchLoadRequest> for WatchLoad {
    type Response = LoadUpdate;
    type ResponseStream = PushStream;
    type Future = std::future::Ready<Result<Response<PushStream>, Status>>;

    fn call(&mut self, request: Request<WatchLoadRequest>) -> Self::Future {
        std::future::ready(self.0.watch(request.into_inner()).map(Response::new))
    }
}

impl Watches {
    /// The request's scope is not checked: a worker serves one scope, as for `ReportLoad`.
    fn watch(&self, request: WatchLoadRequest) -> Result<PushStream, Status> {
        let name = &request.service_name;
        // As ReportLoad answers an unknown service (and the C# Quaestor): OUT_OF_RANGE.
        let load = super::reported(&self.loads, name)?;
        let watcher = Watcher {
            seen: load.version(),
            load,
            health: self.health.subscribe(name),
            stopping: self.health.subscribe_stopping(),
            keepalive: keepalive_interval(request.keepalive_interval_ms),
            min_interval: min_interval(request.min_interval_ms),
            sequence: 0,
            last_sent: Instant::now(),
            done: false,
        };
        Ok(PushStream {
            step: Some(Box::pin(watcher.next())),
        })
    }
}

/// `keepalive_interval_ms` as the reporter applies it.
pub fn keepalive_interval(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_KEEPALIVE,
        ms => Duration::from_millis(u64::from(ms)).max(MIN_KEEPALIVE),
    }
}

/// When a stream whose last update went out at `last_sent` owes a keep-alive: at the first
/// multiple of `interval` on the reporter's clock (counted from its first stream) that is at
/// least half an interval after `last_sent`. A silent stream so gets one every interval, never
/// more than 1.5 intervals apart, and every stream of a reporter with the same interval gets
/// it at the same moment: a balancer that watches many locations behind one reporter reads
/// their keep-alives together, a few TCP reads instead of one each.
pub fn keepalive_due(last_sent: Instant, interval: Duration) -> Instant {
    static GRID: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let grid = *GRID.get_or_init(Instant::now);
    let interval_ns = interval.as_nanos().max(1);
    let earliest = (last_sent + interval / 2).saturating_duration_since(grid);
    let ticks = earliest.as_nanos().div_ceil(interval_ns);
    let offset = u64::try_from(ticks.saturating_mul(interval_ns)).unwrap_or(u64::MAX);
    grid + Duration::from_nanos(offset)
}

/// `min_interval_ms` as the reporter applies it.
pub fn min_interval(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_MIN_INTERVAL,
        ms => Duration::from_millis(u64::from(ms)),
    }
}

/// The wait for the next update; boxed: its timers and wake-up registrations are the larger
/// part of a stream.
type Step = Pin<Box<dyn Future<Output = Option<(LoadUpdate, Watcher)>> + Send>>;

/// The updates of one `WatchLoad` call.
pub struct PushStream {
    step: Option<Step>,
}

impl std::fmt::Debug for PushStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStream")
            .field("ended", &self.step.is_none())
            .finish()
    }
}

impl Stream for PushStream {
    type Item = Result<LoadUpdate, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(step) = self.step.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(step.as_mut().poll(cx)) {
            Some((update, watcher)) => {
                self.step = Some(Box::pin(watcher.next()));
                Poll::Ready(Some(Ok(update)))
            }
            None => {
                self.step = None;
                Poll::Ready(None)
            }
        }
    }
}

/// One stream's state between two updates.
struct Watcher {
    load: Arc<ServiceLoad>,
    health: watch::Receiver<ServingStatus>,
    stopping: watch::Receiver<bool>,
    keepalive: Duration,
    min_interval: Duration,
    /// Updates sent so far.
    sequence: u64,
    /// The load's version when the last update was taken.
    seen: LoadVersion,
    last_sent: Instant,
    /// The last update (NOT_SERVING at a stop) was sent.
    done: bool,
}

enum Woke {
    Change,
    Quiet,
    Stop,
}

impl Watcher {
    /// Waits for the next update and takes it; `None` once the stream is over.
    async fn next(mut self) -> Option<(LoadUpdate, Watcher)> {
        if self.done {
            return None;
        }
        if self.sequence == 0 {
            let update = if *self.stopping.borrow() {
                self.last_update()
            } else {
                self.update(false)
            };
            return Some((update, self));
        }
        let quiet_until = keepalive_due(self.last_sent, self.keepalive.max(self.min_interval));
        let woke = tokio::select! {
            biased;
            () = stopped(&mut self.stopping) => Woke::Stop,
            changed = self.health.changed() => match changed {
                Ok(()) => Woke::Change,
                Err(_) => Woke::Stop, // the health state is gone: so is the server
            },
            _ = self.load.changed(self.seen) => Woke::Change,
            () = sleep_until(quiet_until) => Woke::Quiet,
        };
        let update = match woke {
            Woke::Stop => self.last_update(),
            Woke::Quiet => self.update(true),
            Woke::Change => {
                // Coalesce: changes until the earliest time of the next update make one.
                let earliest = self.last_sent + self.min_interval;
                tokio::select! {
                    biased;
                    () = stopped(&mut self.stopping) => self.last_update(),
                    () = sleep_until(earliest) => self.update(false),
                }
            }
        };
        Some((update, self))
    }

    /// The current state; a keep-alive only if nothing changed since the last update after all.
    fn update(&mut self, keepalive: bool) -> LoadUpdate {
        // The version before the snapshot: a change in between shows as one later.
        let version = self.load.version();
        let health_changed = self.health.has_changed().unwrap_or(false);
        let snapshot = self.load.snapshot();
        let health = *self.health.borrow_and_update();
        let keepalive = keepalive && version == self.seen && !health_changed;
        self.seen = version;
        self.sequence += 1;
        self.last_sent = Instant::now();
        LoadUpdate {
            load: Some(snapshot.into()),
            health: health as i32,
            sequence: self.sequence,
            keepalive,
        }
    }

    /// The update that ends the stream at a stop: NOT_SERVING.
    fn last_update(&mut self) -> LoadUpdate {
        let mut update = self.update(false);
        update.health = ServingStatus::NotServing as i32;
        self.done = true;
        update
    }
}

/// Completes when the server stops (or its health state is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// The prost codec with buffers sized for these small messages.
struct PushCodec;

impl Codec for PushCodec {
    type Encode = LoadUpdate;
    type Decode = WatchLoadRequest;
    type Encoder = <ProstCodec<LoadUpdate, WatchLoadRequest> as Codec>::Encoder;
    type Decoder = <ProstCodec<LoadUpdate, WatchLoadRequest> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<LoadUpdate, WatchLoadRequest>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<LoadUpdate, WatchLoadRequest>::raw_decoder(buffer_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::push::load_push_server::SERVICE_NAME as GENERATED_NAME;

    #[test]
    fn keep_alives_fall_on_one_grid() {
        let interval = Duration::from_millis(1000);
        let start = Instant::now();
        let first = keepalive_due(start, interval);
        let silence = first.saturating_duration_since(start);
        assert!(
            silence >= interval / 2 && silence <= interval * 3 / 2,
            "{silence:?}"
        );
        // Streams whose last updates differ share the moment, and an idle one ticks on.
        let other = keepalive_due(start + Duration::from_millis(300), interval);
        assert!(
            other == first || other == first + interval,
            "{:?}",
            other - first
        );
        assert_eq!(keepalive_due(first, interval), first + interval);
    }

    #[test]
    fn name_and_intervals() {
        assert_eq!(SERVICE_NAME, GENERATED_NAME);
        assert_eq!(keepalive_interval(0), DEFAULT_KEEPALIVE);
        assert_eq!(keepalive_interval(5), MIN_KEEPALIVE);
        assert_eq!(keepalive_interval(250), Duration::from_millis(250));
        assert_eq!(min_interval(0), DEFAULT_MIN_INTERVAL);
        assert_eq!(min_interval(1), Duration::from_millis(1));
    }
}
