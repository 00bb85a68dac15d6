//! The cost of one request start+end pair through libquaestor's C ABI (the service-load
//! handle, called through function pointers as C calls the exported symbols), next to the
//! same pair on `ServiceLoad` in Rust, in the same run. Target: under 50 ns through the ABI.
//!
//!     cargo bench -p quaestor-ffi --bench request [-- PAIRS]

use std::hint::black_box;
use std::ptr;
use std::time::Instant;

use quaestor::{
    quaestor_reporter, quaestor_reporter_add_service, quaestor_reporter_free,
    quaestor_reporter_new, quaestor_result, quaestor_service_load,
    quaestor_service_load_end_request, quaestor_service_load_free,
    quaestor_service_load_start_request,
};
use quaestor_core::load::ServiceLoad;

type Call = unsafe extern "C" fn(*const quaestor_service_load);

/// Nanoseconds per pair over `pairs` pairs, best of 5 rounds.
fn best_of(pairs: u64, mut round: impl FnMut(u64)) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            round(pairs);
            start.elapsed().as_nanos() as f64 / pairs as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let pairs: u64 = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .map_or(10_000_000, |a| a.parse().expect("PAIRS is a number"));

    let mut reporter: *mut quaestor_reporter = ptr::null_mut();
    let mut load: *mut quaestor_service_load = ptr::null_mut();
    // SAFETY: valid C strings and out-parameters.
    unsafe {
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
    }
    let start: Call = black_box(quaestor_service_load_start_request);
    let end: Call = black_box(quaestor_service_load_end_request);
    let handle = black_box(load.cast_const());
    let through_abi = best_of(pairs, |n| {
        for _ in 0..n {
            // SAFETY: a live handle.
            unsafe {
                start(handle);
                end(handle);
            }
        }
    });

    let rust = black_box(ServiceLoad::new(4));
    let in_rust = best_of(pairs, |n| {
        for _ in 0..n {
            black_box(&rust).start_request();
            black_box(&rust).end_request();
        }
    });

    println!("request start+end pair, {pairs} pairs per round, best of 5 rounds, one thread");
    println!(
        "{:<38} {:>8.1} ns",
        "through the C ABI (service-load handle)", through_abi
    );
    println!(
        "{:<38} {:>8.1} ns",
        "ServiceLoad in Rust (baseline)", in_rust
    );
    println!(
        "{:<38} {:>8.1} ns (target: under 50 ns through the C ABI)",
        "ABI overhead",
        through_abi - in_rust
    );
    // SAFETY: made above, freed once.
    unsafe {
        quaestor_service_load_free(load);
        quaestor_reporter_free(reporter);
    }
}
