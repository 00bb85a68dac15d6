//! Discovery latency and throughput: `DiscoverTopServices` (max_count 1) through a real
//! balancer server at 10, 100 and 1000 registered locations, next to a bare unary RPC
//! (`grpc.health.v1.Health/Check`) on the same server, in the same run.
//!
//!     cargo bench -p quaestor-core --bench discovery [-- SECONDS_PER_CASE CONCURRENCY]
//!
//! Locations are distinct `host:port` entries whose control endpoints are a handful of
//! in-process reporters, so the balancer monitors every one of them for real (health Watch
//! and a load probe per location per second) while it answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::proto::health::HealthCheckRequest;
use quaestor_core::proto::health::health_client::HealthClient;
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::HealthState;
use tonic::transport::Channel;

const REPORTERS: usize = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let seconds: f64 = args.next().map_or(Ok(3.0), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let duration = Duration::from_secs_f64(seconds);
    println!(
        "discovery benchmark: {seconds} s per case, {concurrency} concurrent callers, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "case", "p50 µs", "p99 µs", "calls/s"
    );

    let mut reporters = Vec::new();
    for _ in 0..REPORTERS {
        let reporter = Reporter::new();
        let load = reporter.add_service("Worker", 8)?;
        load.reset_current_requests(fastrand::i32(0..8));
        let server = reporter.serve("127.0.0.1:0".parse()?, None).await?;
        reporters.push((reporter, load, server));
    }

    for count in [10usize, 100, 1000] {
        let locations = (0..count).map(|i| {
            let control = reporters[i % REPORTERS].2.local_addr().to_string();
            ServiceLocation::new("", "Worker", &format!("host-{}", i % 50), 20_000 + i as u16)
                .expect("valid location")
                .with_control(control)
        });
        let balancer = Balancer::start(
            MemoryRegistry::from_locations(locations),
            BalancerOptions::default(),
        );
        let server = balancer
            .server(HealthState::new())
            .bind("127.0.0.1:0".parse()?)
            .await?;
        let channel = Channel::from_shared(format!("http://{}", server.local_addr()))?
            .connect()
            .await?;
        // Let the first probe round finish before measuring.
        let warm = balancer.discover_top("", "Worker", 1).await?;
        assert!(!warm.is_empty(), "no location offered");

        let bare = measure(
            duration,
            concurrency,
            channel.clone(),
            |channel| async move {
                HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ())
            },
        )
        .await;
        report(&format!("bare unary RPC ({count} locations)"), &bare);
        let top = measure(
            duration,
            concurrency,
            channel.clone(),
            |channel| async move {
                let request = DiscoverServicesRequest {
                    scope: String::new(),
                    service_name: "Worker".into(),
                    max_count: 1,
                };
                ServiceDiscoveryGrpcClient::new(channel)
                    .discover_top_services(request)
                    .await
                    .map(|_| ())
            },
        )
        .await;
        report(&format!("DiscoverTopServices ({count} locations)"), &top);
        println!(
            "{:<34} {:>10.2}x",
            "  p50 ratio to the bare RPC",
            top.p50 / bare.p50
        );
        server.shutdown().await?;
    }
    Ok(())
}

struct Figures {
    p50: f64,
    p99: f64,
    per_second: f64,
}

fn report(case: &str, f: &Figures) {
    println!(
        "{case:<34} {:>10.1} {:>10.1} {:>12.0}",
        f.p50, f.p99, f.per_second
    );
}

/// Runs `call` from `concurrency` tasks for `duration`; latencies in µs.
async fn measure<F, Fut>(
    duration: Duration,
    concurrency: usize,
    channel: Channel,
    call: F,
) -> Figures
where
    F: Fn(Channel) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, channel) = (Arc::clone(&call), channel.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    call(channel.clone()).await.expect("call succeeds");
                    latencies.push(began.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("caller task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_second: all.len() as f64 / elapsed,
    }
}
