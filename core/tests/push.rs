//! quaestor's own load push (`quaestor.push.v1.LoadPush/WatchLoad`) over real gRPC on
//! loopback: the first update, pushed requests, setters and health flips, coalescing,
//! keep-alives, several watchers, unknown services and the end of the stream at a stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quaestor_core::load::ServiceLoad;
use quaestor_core::proto::push::load_push_client::LoadPushClient;
use quaestor_core::proto::push::{LoadUpdate, WatchLoadRequest};
use quaestor_core::reporter::Reporter;
use quaestor_core::reporter::push::DEFAULT_MIN_INTERVAL;
use quaestor_core::server::ServerHandle;
use quaestor_core::server::health::ServingStatus;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(10);
const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

type Updates = tonic::Streaming<LoadUpdate>;

async fn serve(capacity: i32) -> (Reporter, Arc<ServiceLoad>, ServerHandle, Channel) {
    let reporter = Reporter::new();
    let load = reporter.add_service("Worker", capacity).expect("add");
    let server = reporter
        .serve("127.0.0.1:0".parse().expect("addr"), None)
        .await
        .expect("serve");
    let channel = Channel::from_shared(format!("http://{}", server.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    (reporter, load, server, channel)
}

async fn watch_with(
    channel: &Channel,
    service: &str,
    keepalive_interval_ms: u32,
) -> Result<Updates, tonic::Status> {
    let request = WatchLoadRequest {
        scope: String::new(),
        service_name: service.into(),
        keepalive_interval_ms,
        min_interval_ms: 0,
    };
    Ok(LoadPushClient::new(channel.clone())
        .watch_load(request)
        .await?
        .into_inner())
}

async fn watch(channel: &Channel) -> Updates {
    watch_with(channel, "Worker", 0).await.expect("WatchLoad")
}

/// The next update, or `None` at the end of the stream; panics after TIMEOUT.
async fn next(updates: &mut Updates) -> Option<LoadUpdate> {
    tokio::time::timeout(TIMEOUT, updates.next())
        .await
        .expect("an update within the timeout")
        .map(|update| update.expect("an update, not an error"))
}

/// Reads updates until one satisfies `done`; returns it and how many were read.
async fn until(
    updates: &mut Updates,
    what: &str,
    done: impl FnMut(&LoadUpdate) -> bool,
) -> (LoadUpdate, usize) {
    quaestor_test_support::message_until(updates, TIMEOUT, what, done).await
}

fn current(update: &LoadUpdate) -> i32 {
    update.load.expect("load").current_requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_update_at_once_then_requests_setters_and_health_are_pushed() {
    let (reporter, load, _server, channel) = serve(4).await;
    load.set_known_load_rate(0.5);
    let mut updates = watch(&channel).await;

    let first = next(&mut updates).await.expect("first update");
    let first_load = first.load.expect("load");
    assert_eq!(
        (first.sequence, first.keepalive, first.health),
        (1, false, SERVING)
    );
    assert_eq!(
        (
            first_load.request_capacity,
            first_load.current_requests,
            first_load.known_load_rate
        ),
        (4, 0, 0.5)
    );
    assert!(first_load.timestamp_ticks > quaestor_core::load::UNIX_EPOCH_DOTNET_TICKS);

    load.start_request();
    let (started, _) = until(&mut updates, "the start", |u| current(u) == 1).await;
    assert!(!started.keepalive);
    assert_eq!(started.load.expect("load").requests_started, 1);
    assert!(started.sequence >= 2);

    load.set_capacity(7);
    until(&mut updates, "the new capacity", |u| {
        u.load.expect("load").request_capacity == 7
    })
    .await;

    reporter.set_serving("Worker", false);
    let (flipped, _) = until(&mut updates, "NOT_SERVING", |u| u.health == NOT_SERVING).await;
    assert_eq!(current(&flipped), 1, "health and load in one update");
    reporter.set_serving("Worker", true);
    until(&mut updates, "SERVING again", |u| u.health == SERVING).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_is_coalesced_and_ends_on_the_final_state() {
    let (_reporter, load, _server, channel) = serve(8).await;
    let mut updates = watch(&channel).await;
    next(&mut updates).await.expect("first update");

    // 1000 starts and ends spread over about 100 ms, leaving 3 requests in flight.
    let started = Instant::now();
    let burst = {
        let load = Arc::clone(&load);
        std::thread::spawn(move || {
            for i in 0..1000u32 {
                load.start_request();
                if i >= 3 {
                    load.end_request();
                }
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let (last, count) = until(&mut updates, "the burst's final state", |u| {
        let l = u.load.expect("load");
        l.requests_started == 1000 && l.current_requests == 3
    })
    .await;
    let elapsed = started.elapsed();
    burst.join().expect("burst thread");
    assert!(!last.keepalive);

    eprintln!("burst: {count} updates in {elapsed:?}");
    let allowed = (elapsed.as_millis() / DEFAULT_MIN_INTERVAL.as_millis()) as usize + 3;
    assert!(
        count <= allowed,
        "{count} updates in {elapsed:?}: at most {allowed} with 10 ms spacing"
    );
    assert!(
        count < 1000,
        "{count} updates for 2000 changes: not coalesced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_after_silence() {
    let (_reporter, load, _server, channel) = serve(2).await;
    let mut updates = watch_with(&channel, "Worker", 100)
        .await
        .expect("WatchLoad");
    let first = next(&mut updates).await.expect("first update");
    let second = next(&mut updates).await.expect("a keep-alive");
    assert!(second.keepalive, "{second:?}");
    assert_eq!(second.sequence, first.sequence + 1);
    assert_eq!(second.health, SERVING);
    assert_eq!(
        second.load.expect("load").timestamp_ticks,
        first.load.expect("load").timestamp_ticks,
        "a keep-alive repeats an unchanged load"
    );
    // A change after a keep-alive is an update again.
    load.start_request();
    let (change, _) = until(&mut updates, "the start", |u| current(u) == 1).await;
    assert!(!change.keepalive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_out_of_range() {
    let (_reporter, _load, _server, channel) = serve(1).await;
    for name in ["Nope", ""] {
        let status = watch_with(&channel, name, 0)
            .await
            .expect_err("unknown service");
        assert_eq!(status.code(), Code::OutOfRange, "{name:?}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_sees_a_change() {
    let (_reporter, load, _server, channel) = serve(3).await;
    // Two on one connection, one on its own connection (as from another balancer).
    let other = Channel::from_shared(format!("http://{}", _server.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut watchers = vec![
        watch(&channel).await,
        watch(&channel).await,
        watch(&other).await,
    ];
    for updates in &mut watchers {
        next(updates).await.expect("first update");
    }
    load.start_request();
    load.start_request();
    for updates in &mut watchers {
        until(updates, "2 in flight", |u| current(u) == 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_sends_not_serving_and_ends_the_stream() {
    let (_reporter, load, server, channel) = serve(2).await;
    load.start_request();
    let mut updates = watch(&channel).await;
    assert_eq!(next(&mut updates).await.expect("first").health, SERVING);

    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("an open WatchLoad does not hold up the stop")
        .expect("shutdown");
    let (last, _) = until(&mut updates, "NOT_SERVING", |u| u.health == NOT_SERVING).await;
    assert_eq!(current(&last), 1);
    assert!(
        next(&mut updates).await.is_none(),
        "the stream ends at the stop"
    );
}
