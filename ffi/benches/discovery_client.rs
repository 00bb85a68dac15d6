//! Discovery calls per second through libquaestor's C ABI, next to a raw tonic client over one
//! reused channel, in the same run and against the same in-process balancer (one registered
//! worker, reporting load). Target: the C ABI's reusable client at ≥ 0.8× the raw client.
//!
//! Cases, taking turns round by round (the median round counts):
//! - `tonic`: `ServiceDiscoveryGrpcClient::discover_top_services` over one channel, awaited in
//!   a loop inside one `block_on` of a single-threaded runtime (the floor a Rust program gets);
//! - `tonic, 2 worker threads`: the same on a multi-threaded runtime (what `#[tokio::main]`
//!   gives), the channel's tasks on its workers;
//! - `client`: `quaestor_discovery_client_discover_top` from a plain thread, one client;
//! - `one-shot`: `quaestor_discover_top` (a client shared per address, kept by the library);
//! - `connect each call`: a new connection per call, as every one-shot call did before.
//!
//! ```text
//! cargo bench -p quaestor-ffi --bench discovery_client [-- SECONDS_PER_CASE ROUNDS]
//! ```

use std::ffi::{CString, c_char};
use std::ptr;
use std::time::{Duration, Instant};

use quaestor::{
    quaestor_discover_top, quaestor_discovery_client, quaestor_discovery_client_discover_top,
    quaestor_discovery_client_free, quaestor_discovery_client_new, quaestor_location_list,
    quaestor_location_list_free, quaestor_location_list_len, quaestor_result,
};
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::client::Target;
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::HealthState;

const SERVICE: &str = "Bench";
const TIMEOUT_MS: u32 = 5000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let seconds: f64 = args.first().map_or(2.0, |a| a.parse().expect("SECONDS"));
    let rounds: usize = args.get(1).map_or(5, |a| a.parse().expect("ROUNDS"));
    let per_case = Duration::from_secs_f64(seconds);

    // The server side: a reporter and a balancer on a runtime of their own (one thread), so
    // that every client case below talks to the same servers over loopback.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-servers")
        .enable_all()
        .build()
        .expect("server runtime");
    let (balancer_addr, _servers) = server_runtime.block_on(async {
        let reporter = Reporter::new();
        reporter.add_service(SERVICE, 4).expect("service");
        let worker = reporter
            .serve("127.0.0.1:0".parse().expect("addr"), None)
            .await
            .expect("reporter");
        let location = ServiceLocation::new("", SERVICE, "127.0.0.1", worker.local_addr().port())
            .expect("loc");
        let balancer = Balancer::start(
            MemoryRegistry::from_locations([location]),
            BalancerOptions::default(),
        );
        let server = balancer
            .server(HealthState::new())
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("balancer");
        let deadline = Instant::now() + Duration::from_secs(20);
        while balancer
            .discover_top("", SERVICE, 1)
            .await
            .map_or(0, |l| l.len())
            != 1
        {
            assert!(
                Instant::now() < deadline,
                "the worker never became discoverable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (server.local_addr(), (reporter, worker, balancer, server))
    });
    let address = balancer_addr.to_string();
    let c_address = CString::new(address.clone()).expect("address");
    let service = CString::new(SERVICE).expect("service");

    // The client side of the raw tonic case: its own runtime, driven from this thread.
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let channel = client_runtime.block_on(async {
        Target::new(&address, None, Duration::from_secs(5))
            .expect("target")
            .connect()
            .await
            .expect("connect")
    });
    let threaded_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("threaded client runtime");
    let threaded_channel = threaded_runtime.block_on(async {
        Target::new(&address, None, Duration::from_secs(5))
            .expect("target")
            .connect()
            .await
            .expect("connect")
    });
    let mut client: *mut quaestor_discovery_client = ptr::null_mut();
    // SAFETY: valid C strings and out-parameter.
    let made = unsafe {
        quaestor_discovery_client_new(c_address.as_ptr(), ptr::null(), TIMEOUT_MS, &mut client)
    };
    assert_eq!(made, quaestor_result::QUAESTOR_RESULT_OK);

    let tonic_case = |until: Instant| tonic_calls(&client_runtime, &channel, until);
    let threaded_case = |until: Instant| tonic_calls(&threaded_runtime, &threaded_channel, until);
    fn tonic_calls(
        runtime: &tokio::runtime::Runtime,
        channel: &tonic::transport::Channel,
        until: Instant,
    ) -> u64 {
        let request = || DiscoverServicesRequest {
            scope: String::new(),
            service_name: SERVICE.to_owned(),
            max_count: 1,
        };
        runtime.block_on(async {
            let mut grpc = ServiceDiscoveryGrpcClient::new(channel.clone());
            let mut calls = 0u64;
            while Instant::now() < until {
                let answer = grpc.discover_top_services(request()).await.expect("call");
                assert_eq!(answer.get_ref().service_locations.len(), 1);
                calls += 1;
            }
            calls
        })
    }
    let c_calls =
        |until: Instant, ask: &dyn Fn(*mut *mut quaestor_location_list) -> quaestor_result| {
            let mut calls = 0u64;
            while Instant::now() < until {
                let mut list: *mut quaestor_location_list = ptr::null_mut();
                assert_eq!(ask(&mut list), quaestor_result::QUAESTOR_RESULT_OK);
                // SAFETY: a list the call made; freed once.
                unsafe {
                    assert_eq!(quaestor_location_list_len(list), 1);
                    quaestor_location_list_free(list);
                }
                calls += 1;
            }
            calls
        };
    let client_case = |until: Instant| {
        c_calls(until, &|out| {
            // SAFETY: a live client, valid C strings and out-parameter.
            unsafe {
                quaestor_discovery_client_discover_top(
                    client,
                    ptr::null(),
                    service.as_ptr(),
                    1,
                    out,
                )
            }
        })
    };
    let one_shot_case = |until: Instant| {
        c_calls(until, &|out| {
            // SAFETY: valid C strings and out-parameter.
            unsafe {
                quaestor_discover_top(
                    c_address.as_ptr(),
                    ptr::null::<c_char>(),
                    service.as_ptr(),
                    1,
                    TIMEOUT_MS,
                    out,
                )
            }
        })
    };
    let connect_case = |until: Instant| {
        client_runtime.block_on(async {
            let target = Target::new(&address, None, Duration::from_secs(5)).expect("target");
            let mut calls = 0u64;
            while Instant::now() < until {
                let channel = target.connect().await.expect("connect");
                let found = target
                    .discover(channel, "", SERVICE, 1, true)
                    .await
                    .expect("call");
                assert_eq!(found.len(), 1);
                calls += 1;
            }
            calls
        })
    };

    type Case<'a> = (&'a str, &'a dyn Fn(Instant) -> u64);
    let cases: [Case; 5] = [
        ("tonic (raw, one channel)", &tonic_case),
        ("tonic, 2 worker threads", &threaded_case),
        ("C ABI client", &client_case),
        ("C ABI one-shot (shared client)", &one_shot_case),
        ("connect each call", &connect_case),
    ];
    // Warm-up: every path connected once.
    for (_, case) in &cases {
        case(Instant::now() + Duration::from_millis(200));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        // Rotate the order so that no case always runs first.
        for i in 0..cases.len() {
            let index = (i + round) % cases.len();
            let start = Instant::now();
            let calls = (cases[index].1)(start + per_case);
            rates[index].push(calls as f64 / start.elapsed().as_secs_f64());
        }
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let baseline = median(&rates[0]);
    println!(
        "DiscoverTopServices(max_count 1), one caller, {rounds} rounds of {seconds} s per case \
         (median round; ratio to the raw tonic client):"
    );
    for ((name, _), rate) in cases.iter().zip(&rates) {
        let m = median(rate);
        println!(
            "  {name:<32} {m:>9.0} calls/s  {:>5.2}x  (rounds: {})",
            m / baseline,
            rate.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    // SAFETY: made above, freed once.
    unsafe { quaestor_discovery_client_free(client) };
}
