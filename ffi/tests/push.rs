//! The C ABI's reporter serves quaestor's load push: a request counted through the ABI and a
//! health flip reach a `WatchLoad` stream, and freeing the reporter ends the stream.

use std::ptr;
use std::time::Duration;

use quaestor::{
    quaestor_reporter, quaestor_reporter_add_service, quaestor_reporter_free,
    quaestor_reporter_new, quaestor_reporter_port, quaestor_reporter_set_serving, quaestor_result,
    quaestor_service_load, quaestor_service_load_free, quaestor_service_load_start_request,
};
use quaestor_core::proto::push::load_push_client::LoadPushClient;
use quaestor_core::proto::push::{LoadUpdate, WatchLoadRequest};

const TIMEOUT: Duration = Duration::from_secs(10);
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// Reads updates until one satisfies `done` (panics after TIMEOUT or at the stream's end).
async fn until(
    updates: &mut tonic::Streaming<LoadUpdate>,
    what: &str,
    done: impl Fn(&LoadUpdate) -> bool,
) -> LoadUpdate {
    quaestor_test_support::message_until(updates, TIMEOUT, what, done)
        .await
        .0
}

#[test]
fn the_c_reporter_pushes_requests_and_health() {
    let mut reporter: *mut quaestor_reporter = ptr::null_mut();
    let mut load: *mut quaestor_service_load = ptr::null_mut();
    // SAFETY: valid C strings and out-parameters.
    let port = unsafe {
        assert_eq!(
            quaestor_reporter_new(
                c"127.0.0.1".as_ptr(),
                0,
                ptr::null(),
                ptr::null(),
                &mut reporter
            ),
            quaestor_result::QUAESTOR_RESULT_OK
        );
        assert_eq!(
            quaestor_reporter_add_service(reporter, c"Worker".as_ptr(), 4, &mut load),
            quaestor_result::QUAESTOR_RESULT_OK
        );
        quaestor_reporter_port(reporter)
    };
    // The library runs its own runtime; the client gets another, and the ABI is called from
    // outside it (as C would).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut updates = runtime.block_on(async {
        let mut client = LoadPushClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let mut updates = client
            .watch_load(WatchLoadRequest {
                service_name: "Worker".into(),
                ..Default::default()
            })
            .await
            .expect("WatchLoad through the C reporter")
            .into_inner();
        let first = until(&mut updates, "the first update", |_| true).await;
        assert_eq!(first.health, SERVING);
        assert_eq!(first.load.expect("load").current_requests, 0);
        updates
    });

    // SAFETY: a live handle.
    unsafe { quaestor_service_load_start_request(load) };
    runtime.block_on(until(&mut updates, "the start", |u| {
        u.load.is_some_and(|l| l.current_requests == 1)
    }));

    // SAFETY: a live reporter and a NUL-terminated name.
    let flipped = unsafe { quaestor_reporter_set_serving(reporter, c"Worker".as_ptr(), false) };
    assert_eq!(flipped, quaestor_result::QUAESTOR_RESULT_OK);
    runtime.block_on(until(&mut updates, "NOT_SERVING", |u| {
        u.health == NOT_SERVING
    }));

    // SAFETY: made above, freed once.
    unsafe {
        quaestor_service_load_free(load);
        quaestor_reporter_free(reporter);
    }
    let rest = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let mut rest = 0;
            while let Ok(Some(_)) = updates.message().await {
                rest += 1;
            }
            rest
        })
        .await
        .expect("the stream ends when the reporter is freed")
    });
    assert!(rest <= 2, "{rest} updates after the free");
}
