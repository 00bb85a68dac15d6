//! How late a load change shows in `discover_top`: pushed (quaestor reporters) next to polled
//! (reporters that serve only `ReportLoad` and health, as the C# workers do), in one process,
//! trials interleaved.
//!
//! Eight reporters of each kind, all with a known load rate of 1. A trial gives one of them
//! rate 0 (and the previous one 1 again) and then asks `discover_top(max_count = 1)` every
//! millisecond until that one comes first; the time from the change to that answer is the
//! figure. Run with `cargo bench -p quaestor-core --bench freshness [-- TRIALS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::load::ServiceLoad;
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::{GrpcServer, ServerHandle};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WORKERS: usize = 8;
const DEFAULT_TRIALS: usize = 200;
/// A change not seen by then counts as this late (and is reported as missed).
const GIVE_UP: Duration = Duration::from_secs(5);

struct Fleet {
    service: &'static str,
    loads: Vec<Arc<ServiceLoad>>,
    ports: Vec<u16>,
    _servers: Vec<ServerHandle>,
}

impl Fleet {
    /// `pushed`: the reporter's full server; else only health and `ReportLoad`.
    async fn start(service: &'static str, pushed: bool) -> Result<Self, BoxError> {
        let (mut loads, mut ports, mut servers) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..WORKERS {
            let reporter = Reporter::new();
            let load = reporter.add_service(service, 4)?;
            load.set_known_load_rate(1.0);
            let server = if pushed {
                reporter.server()
            } else {
                GrpcServer::new(reporter.health().clone())
                    .add_service(reporter.load_reporting_service())
            };
            let server = server.bind("127.0.0.1:0".parse()?).await?;
            ports.push(server.local_addr().port());
            loads.push(load);
            servers.push(server);
        }
        Ok(Fleet {
            service,
            loads,
            ports,
            _servers: servers,
        })
    }

    fn locations(&self) -> Result<Vec<ServiceLocation>, BoxError> {
        self.ports
            .iter()
            .map(|&port| Ok(ServiceLocation::new("", self.service, "127.0.0.1", port)?))
            .collect()
    }

    /// Makes worker `target` the best; returns how long until `discover_top` says so.
    async fn trial(&self, balancer: &Balancer, target: usize) -> Result<Duration, BoxError> {
        for (i, load) in self.loads.iter().enumerate() {
            if i != target {
                load.set_known_load_rate(1.0);
            }
        }
        let changed = Instant::now();
        self.loads[target].set_known_load_rate(0.0);
        loop {
            let top = balancer.discover_top("", self.service, 1).await?;
            if top.first().map(|l| l.port) == Some(self.ports[target]) {
                return Ok(changed.elapsed());
            }
            if changed.elapsed() > GIVE_UP {
                return Ok(GIVE_UP);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let trials = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_TRIALS);
    let pushed = Fleet::start("Pushed", true).await?;
    let polled = Fleet::start("Polled", false).await?;
    let registry =
        MemoryRegistry::from_locations(pushed.locations()?.into_iter().chain(polled.locations()?));
    let options = BalancerOptions::default();
    println!(
        "freshness: {trials} trials per kind, {WORKERS} workers each, probe interval {:?}",
        options.probe_interval
    );
    let balancer = Balancer::start(registry, options);
    // The first answers wait for the first probes; then both kinds are settled.
    for fleet in [&pushed, &polled] {
        balancer.discover_top("", fleet.service, 1).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut push_times, mut poll_times) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let target = trial % WORKERS;
        push_times.push(pushed.trial(&balancer, target).await?);
        poll_times.push(polled.trial(&balancer, target).await?);
    }
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>7}",
        "feed", "p50 ms", "p99 ms", "max ms", "missed"
    );
    for (name, times) in [("pushed", &mut push_times), ("polled", &mut poll_times)] {
        times.sort();
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let missed = times.iter().filter(|t| **t >= GIVE_UP).count();
        println!(
            "{name:<8} {:>9.1} {:>9.1} {:>9.1} {missed:>7}",
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
