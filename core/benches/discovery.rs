//! Discovery latency, throughput and memory, in one run:
//!
//! - `DiscoverTopServices` (max_count 1) through a real balancer server at 10, 100, 1000 and
//!   10 000 registered locations;
//! - the floor: a bare tonic unary echo server (the `Echo` service defined below, no protos),
//!   measured alone first and then again at each size while the balancer monitors in the
//!   background, so that both see the same machine;
//! - `grpc.health.v1.Health/Check` on the balancer's own server (its server stack without the
//!   discovery logic);
//! - the C# Quaestor's strategy: a second discovery server (`FanOutDiscovery` below) that asks
//!   every location for its health and load on every query and ranks them then;
//! - the process's VmRSS before each balancer is created and once it monitors every location;
//! - the cost of the HTTP side (issue 18): `DiscoverTopServices` again, interleaved with the
//!   plain case, while the balancer's HTTP listener (`quaestor_core::http`, as `--http` runs
//!   it) is scraped every second (`/metrics` and `/status.json`, a Prometheus server and an
//!   open status page); the scraper polls only during that case's slices.
//!
//! ```text
//! cargo bench -p quaestor-core --bench discovery [-- SECONDS_PER_CASE CONCURRENCY]
//! cargo bench -p quaestor-core --bench discovery -- quick      # 0.5 s per case, 8 callers
//! ```
//!
//! Defaults: 3 s per case, 16 concurrent callers. Callers run a closed loop over one HTTP/2
//! connection per server; the cases of one size take turns in three slices of the duration, so
//! that their ratios compare like with like. Locations are distinct `host:port` entries (50 host names) whose
//! control endpoints are a handful of reporters, so the balancer monitors every one of them
//! for real (a connection, a health Watch and a load probe per second per location) while it
//! answers.
//!
//! Callers, balancer, echo and fan-out servers share this process and its tokio runtime. The
//! reporters run in a second process, this same executable started again: both ends of 10 000
//! monitoring connections in one process need more open files than the usual hard limit
//! (20 000 here, and raising it needs CAP_SYS_RESOURCE), and the balancer's memory is then
//! measured without the reporters' side of its connections. Both processes share the cores.

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use quaestor_core::balancer::ranking::{Candidate, QuaestorRanking, Ranking};
use quaestor_core::balancer::{Balancer, BalancerOptions};
use quaestor_core::proto::health::HealthCheckRequest;
use quaestor_core::proto::health::health_client::HealthClient;
use quaestor_core::proto::load_reporting::LoadReportRequest;
use quaestor_core::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::proto::service_discovery::service_discovery_grpc_server::{
    ServiceDiscoveryGrpc, ServiceDiscoveryGrpcServer,
};
use quaestor_core::proto::service_discovery::{
    DiscoverServicesRequest, DiscoverServicesResponse, ServiceLocationMsg,
};
use quaestor_core::registry::ServiceLocation;
use quaestor_core::registry::memory::MemoryRegistry;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::{HealthState, ServingStatus};
use quaestor_core::server::{GrpcServer, ServerHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

type BoxError = Box<dyn Error + Send + Sync>;

const SERVICE: &str = "Worker";
/// The reporters every location's control endpoint points at.
const REPORTERS: usize = 10;
/// Set in the environment of the second process, the one that serves the reporters.
const REPORTERS_ROLE: &str = "QUAESTOR_BENCH_DISCOVERY_REPORTERS";
/// Distinct host names among the locations (host utilisation groups by them).
const HOSTS: usize = 50;
const COUNTS: [usize; 4] = [10, 100, 1000, 10_000];
/// The size the fan-out / quaestor ratio is judged at.
const RATIO_AT: usize = 1000;
/// From this size on the fan-out server is measured with one caller only.
const FAN_OUT_ONE_CALLER: usize = 10_000;
/// Listen backlog of the reporters: a balancer opens every monitoring connection at once.
const BACKLOG: u32 = 4096;
/// Open files beyond the one per location (a monitoring or a fan-out connection).
const FD_MARGIN: u64 = 1024;
/// Idle probe intervals over which the monitoring CPU is measured.
const IDLE_INTERVALS: u32 = 5;
/// Idle CPU of the balancer's process at 10 000 pushing locations, at most (issue 14).
const TARGET_IDLE_CORES: f64 = 0.05;
/// How long a balancer may take until it has a load report from every location.
const READY_DEADLINE: Duration = Duration::from_secs(60);

// The targets of issue 9.
const TARGET_P50_RATIO: f64 = 1.5;
/// "Flat": the highest p50 over the sizes at most this many times the lowest.
const TARGET_FLAT: f64 = 1.25;
const TARGET_THROUGHPUT_RATIO: f64 = 0.7;
const TARGET_FAN_OUT_RATIO: f64 = 20.0;
const TARGET_RSS_MB: f64 = 200.0;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let largest = *COUNTS.iter().max().expect("sizes") as u64;
    let fd_limit = raise_fd_limit(largest + FD_MARGIN);
    if std::env::var_os(REPORTERS_ROLE).is_some() {
        return serve_reporters().await;
    }
    let settings = Settings::from_args()?;
    let machine = Machine::read();
    println!(
        "discovery benchmark: {} s per case, {} concurrent callers (closed loop, one HTTP/2 connection per server)",
        settings.duration.as_secs_f64(),
        settings.concurrency
    );
    println!(
        "machine: {} cores, {}; load average at start {}; open files limit {fd_limit}",
        machine.cores,
        machine.model,
        load_average()
    );
    let reporters = ReporterProcess::spawn().await?;
    println!(
        "processes: callers, balancer, fan-out server and echo server share this one ({}) and its tokio runtime; the {REPORTERS} reporters run in a second one ({})",
        std::process::id(),
        reporters.pid
    );
    let controls = reporters.controls.clone();
    let echo_server = EchoServer::start().await?;
    let echo_channel = connect(echo_server.addr).await?;
    let baseline_fds = open_fds();
    if settings.scale {
        scale_run(&settings, &controls, &echo_channel).await?;
        drop(reporters);
        return Ok(());
    }

    println!();
    println!("## Latency and throughput");
    println!();
    println!(
        "| case | locations | calls | p50 µs | p99 µs | p999 µs | calls/s | other processes' CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let [floor] = interleaved(
        &settings,
        [(
            "bare unary echo, nothing else running",
            Call::Echo,
            &echo_channel,
        )],
        None,
    )
    .await;

    let mut sizes: Vec<AtSize> = Vec::new();
    let mut skipped = Vec::new();
    for count in COUNTS {
        if count as u64 + FD_MARGIN > fd_limit {
            skipped.push(count);
            continue;
        }
        wait_for_fds(baseline_fds).await;
        sizes.push(measure_balancer(&settings, count, &controls, &echo_channel).await?);
    }
    for count in &skipped {
        println!(
            "| (skipped: {count} locations need {} open files, the limit is {fd_limit}; raise `ulimit -n`) | | | | | | | |",
            *count as u64 + FD_MARGIN
        );
    }

    let mut fan_out: Vec<(usize, Figures)> = Vec::new();
    for count in sizes.iter().map(|s| s.count).collect::<Vec<_>>() {
        wait_for_fds(baseline_fds).await;
        fan_out.push((count, measure_fan_out(&settings, count, &controls).await?));
    }

    print_memory(&sizes);
    print_ratios(&sizes, &fan_out);
    print_http_cost(&sizes);
    print_targets(&floor, &sizes, &fan_out);
    println!();
    println!("load average at the end: {}", load_average());
    drop(reporters);
    Ok(())
}

/// What one balancer size gave.
struct AtSize {
    count: usize,
    monitored: Monitored,
    bare: Figures,
    top: Figures,
    /// DiscoverTopServices while the HTTP side is scraped, and the scrapes that succeeded.
    scraped: Figures,
    scrapes: u64,
}

/// Starts a balancer over `count` locations, waits until it monitors every one of them,
/// records the memory, then measures the echo floor, Health/Check and DiscoverTopServices.
async fn measure_balancer(
    settings: &Settings,
    count: usize,
    controls: &[String],
    echo_channel: &Channel,
) -> Result<AtSize, BoxError> {
    let rss_before_kib = vm_rss_kib();
    let balancer = Balancer::start(
        MemoryRegistry::from_locations(locations(count, controls)?),
        BalancerOptions::default(),
    );
    let server = balancer
        .server(HealthState::new())
        .bind(localhost())
        .await?;
    let monitored = settle(&balancer, count, rss_before_kib).await?;

    let channel = connect(server.local_addr()).await?;
    let (http, scrapes) = start_scraper(&balancer).await?;
    let [bare, _, top, scraped] = interleaved(
        settings,
        [
            (
                "bare unary echo, balancer monitoring",
                Call::Echo,
                echo_channel,
            ),
            (
                "Health/Check on the balancer's server",
                Call::Health,
                &channel,
            ),
            ("DiscoverTopServices, quaestor", Call::DiscoverTop, &channel),
            (
                "DiscoverTopServices, HTTP side scraped every second",
                Call::DiscoverTopScraped,
                &channel,
            ),
        ],
        Some(count),
    )
    .await;
    http.shutdown().await;
    let scrapes = scrapes.load(std::sync::atomic::Ordering::Relaxed);
    let direct = measure_direct(settings.duration, &balancer).await?;
    report(
        "Balancer::discover_top called in-process, 1 caller, no RPC",
        Some(count),
        &direct,
    );
    drop(channel);
    server.shutdown().await?;
    drop(balancer);
    Ok(AtSize {
        count,
        monitored,
        bare,
        top,
        scraped,
        scrapes,
    })
}

/// Serves the C# strategy over `count` locations and measures DiscoverTopServices through it.
async fn measure_fan_out(
    settings: &Settings,
    count: usize,
    controls: &[String],
) -> Result<Figures, BoxError> {
    let discovery = FanOutDiscovery::new(locations(count, controls)?, Duration::from_secs(2))?;
    let server = GrpcServer::new(HealthState::new())
        .add_service(ServiceDiscoveryGrpcServer::new(discovery))
        .bind(localhost())
        .await?;
    let channel = connect(server.local_addr()).await?;
    // The first query opens a connection to every location; then the channels are kept.
    Call::DiscoverTop.once(channel.clone()).await?;
    // A query asks every location twice: at the largest size one caller is all the machine
    // answers within seconds, and the few calls make p99 and p999 the slowest call.
    let (name, concurrency) = if count >= FAN_OUT_ONE_CALLER {
        ("DiscoverTopServices, fan-out per query (C#), 1 caller", 1)
    } else {
        (
            "DiscoverTopServices, fan-out per query (C#)",
            settings.concurrency,
        )
    };
    let figures = measure(settings.duration, concurrency, &channel, Call::DiscoverTop)
        .await
        .figures();
    report(name, Some(count), &figures);
    drop(channel);
    server.shutdown().await?;
    Ok(figures)
}

// ---------------------------------------------------------------------------------------
// The scale run (issue 19).

/// The sizes of the scale run.
const SCALE_COUNTS: [usize; 2] = [10_000, 50_000];
/// Puts in one etcd transaction (etcd's default `--max-txn-ops` is 128).
const PUTS_PER_TXN: usize = 128;
/// Transactions in flight while the registry is written.
const WRITERS: usize = 8;

/// What one size of the scale run gave.
struct AtScale {
    count: usize,
    /// From connecting to etcd until its registry was loaded (every key read and parsed).
    loaded_after: Duration,
    monitored: Monitored,
    bare: Figures,
    top: Figures,
}

/// A balancer once it monitors every location: how long that took, its memory and its idle
/// monitoring cost.
struct Monitored {
    /// Until every location had answered health and load.
    after: Duration,
    ready: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// CPU of this process and of the reporters' over [`IDLE_INTERVALS`] idle probe
    /// intervals.
    idle_cores: (f64, f64),
    reporters_rss_kib: u64,
}

impl Monitored {
    /// How long until every location was monitored, or how many were by the deadline.
    fn ready_text(&self, count: usize) -> String {
        if self.ready == count {
            format!("{:.2} s", self.after.as_secs_f64())
        } else {
            format!(
                "only {} after {:.0} s",
                self.ready,
                self.after.as_secs_f64()
            )
        }
    }

    /// The balancer's memory per location, KB (10^3 bytes).
    fn per_location_kb(&self, count: usize) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 * 1.024 / count as f64
    }
}

/// Waits until `balancer` monitors every one of `count` locations, then measures its idle
/// monitoring over [`IDLE_INTERVALS`] probe intervals and the memory (`rss_before_kib` is the
/// process's before the balancer was created).
async fn settle(
    balancer: &Balancer,
    count: usize,
    rss_before_kib: u64,
) -> Result<Monitored, BoxError> {
    let (after, ready) = wait_until_monitored(balancer, count).await;
    // Steady state: idle probe intervals with every location monitored (pushing locations
    // send a keep-alive each interval).
    let cpu = CpuClock::start();
    tokio::time::sleep(balancer.options().probe_interval * IDLE_INTERVALS).await;
    let idle_cores = cpu.own_cores();
    let warm = balancer.discover_top("", SERVICE, 1).await?;
    if warm.is_empty() {
        return Err("no location offered".into());
    }
    Ok(Monitored {
        after,
        ready,
        rss_before_kib,
        rss_after_kib: vm_rss_kib(),
        idle_cores,
        reporters_rss_kib: reporters_rss_kib(),
    })
}

/// A balancer over a real etcd holding 10 000 and then 50 000 locations (sharing the
/// reporters' control endpoints, as the size series does): the time to load the registry,
/// memory, idle CPU with pushed load, and DiscoverTopServices against the bare echo in the
/// same run.
async fn scale_run(
    settings: &Settings,
    controls: &[String],
    echo_channel: &Channel,
) -> Result<(), BoxError> {
    let etcd = quaestor_test_support::etcd::EtcdCluster::single();
    println!();
    println!(
        "## Scale: one balancer over a real etcd (one member, this machine) at {SCALE_COUNTS:?} locations"
    );
    println!();
    println!(
        "| case | locations | calls | p50 µs | p99 µs | p999 µs | calls/s | other processes' CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for count in SCALE_COUNTS {
        rows.push(measure_at_scale(settings, count, controls, echo_channel, &etcd).await?);
    }
    print_scale(&rows);
    Ok(())
}

async fn measure_at_scale(
    settings: &Settings,
    count: usize,
    controls: &[String],
    echo_channel: &Channel,
    etcd: &quaestor_test_support::etcd::EtcdCluster,
) -> Result<AtScale, BoxError> {
    use quaestor_core::registry::RegistryReader;
    use quaestor_core::registry::etcd::{EtcdOptions, EtcdRegistry};
    let all = locations(count, controls)?;
    write_registry(&etcd.endpoints(), &all).await?;
    let rss_before_kib = vm_rss_kib();
    let started = Instant::now();
    let registry = EtcdRegistry::connect(EtcdOptions::new(etcd.endpoints())).await?;
    let loaded_after = started.elapsed();
    let loaded = registry.current().locations.len();
    if loaded != count {
        return Err(format!("etcd's registry has {loaded} locations instead of {count}").into());
    }
    let balancer = Balancer::start(registry, BalancerOptions::default());
    let server = balancer
        .server(HealthState::new())
        .bind(localhost())
        .await?;
    let monitored = settle(&balancer, count, rss_before_kib).await?;
    let channel = connect(server.local_addr()).await?;
    let [bare, top] = interleaved(
        settings,
        [
            (
                "bare unary echo, balancer monitoring",
                Call::Echo,
                echo_channel,
            ),
            ("DiscoverTopServices, quaestor", Call::DiscoverTop, &channel),
        ],
        Some(count),
    )
    .await;
    drop(channel);
    server.shutdown().await?;
    drop(balancer);
    Ok(AtScale {
        count,
        loaded_after,
        monitored,
        bare,
        top,
    })
}

/// Replaces etcd's registry with `locations` (their keys and values as a registrar writes
/// them, without a lease): [`PUTS_PER_TXN`] puts per transaction, [`WRITERS`] at a time.
async fn write_registry(
    endpoints: &[String],
    locations: &[ServiceLocation],
) -> Result<(), BoxError> {
    use etcd_client::{Client, DeleteOptions, Txn, TxnOp};
    let mut client = Client::connect(endpoints, None).await?;
    client
        .delete(
            ServiceLocation::service_prefix("", SERVICE),
            Some(DeleteOptions::new().with_prefix()),
        )
        .await?;
    let mut writers = JoinSet::new();
    for batch in locations.chunks(PUTS_PER_TXN) {
        if writers.len() >= WRITERS {
            writers.join_next().await.ok_or("no writer")???;
        }
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|l| TxnOp::put(l.key(), l.value(), None))
            .collect();
        let mut kv = client.kv_client();
        writers.spawn(async move { kv.txn(Txn::new().and_then(ops)).await.map(|_| ()) });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

fn print_scale(rows: &[AtScale]) {
    println!();
    println!(
        "Registry loaded: from connecting to etcd until every key is read and parsed (`EtcdRegistry::connect`). All monitored: from the balancer's start until every location has answered health and load. RSS: VmRSS of this process (which holds the balancer, the callers and the echo server) before the registry is loaded and once every location is monitored and 5 more probe intervals have passed; the reporters' side is in the other process. Idle CPU: over those 5 probe intervals, with load pushed (keep-alives), this process + the reporters'. MB = 10^6 bytes."
    );
    println!();
    println!(
        "| locations | registry loaded | all monitored | RSS before MB | RSS after MB | per location KB | idle CPU | reporters' RSS MB | bare p50 / p99 µs | DiscoverTop p50 / p99 µs | p50 ratio | p99 ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let m = &r.monitored;
        println!(
            "| {} | {:.2} s | {} | {:.1} | {:.1} | {:.1} | {:.3} + {:.3} cores | {:.1} | {} / {} | {} / {} | {:.2}x | {:.2}x |",
            r.count,
            r.loaded_after.as_secs_f64(),
            m.ready_text(r.count),
            mb(m.rss_before_kib),
            mb(m.rss_after_kib),
            m.per_location_kb(r.count),
            m.idle_cores.0,
            m.idle_cores.1,
            mb(m.reporters_rss_kib),
            micros(r.bare.p50),
            micros(r.bare.p99),
            micros(r.top.p50),
            micros(r.top.p99),
            r.top.p50 / r.bare.p50,
            r.top.p99 / r.bare.p99,
        );
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `count` locations on `HOSTS` host names, their control endpoints spread over `controls`.
fn locations(count: usize, controls: &[String]) -> Result<Vec<ServiceLocation>, BoxError> {
    (0..count)
        .map(|i| {
            // Distinct `host:port` pairs for up to 50 000 locations per host name.
            let port = u16::try_from(10_000 + i / HOSTS)?;
            Ok(
                ServiceLocation::new("", SERVICE, &format!("host-{}", i % HOSTS), port)?
                    .with_control(controls[i % controls.len()].clone()),
            )
        })
        .collect()
}

/// The second process: serves the reporters, prints their addresses (then `ready`) and lives
/// until the benchmark closes its standard input (or dies).
async fn serve_reporters() -> Result<(), BoxError> {
    let reporters = start_reporters().await?;
    {
        let mut out = std::io::stdout().lock();
        for (_, server) in &reporters {
            writeln!(out, "{}", server.local_addr())?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
    }
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}

/// The reporters' process, as the benchmark sees it; killed when dropped.
struct ReporterProcess {
    _child: tokio::process::Child,
    pid: u32,
    controls: Vec<String>,
}

impl ReporterProcess {
    async fn spawn() -> Result<Self, BoxError> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env(REPORTERS_ROLE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the reporters' process ended at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut controls = Vec::new();
        loop {
            match lines.next_line().await? {
                Some(line) if line == "ready" => break,
                Some(line) => controls.push(line),
                None => return Err("the reporters' process ended before it was ready".into()),
            }
        }
        REPORTERS_PID.set(pid).map_err(|_| "started twice")?;
        Ok(ReporterProcess {
            _child: child,
            pid,
            controls,
        })
    }
}

static REPORTERS_PID: OnceLock<u32> = OnceLock::new();

/// VmRSS of the reporters' process in KiB.
fn reporters_rss_kib() -> u64 {
    REPORTERS_PID
        .get()
        .map_or(0, |pid| vm_rss_kib_of(&pid.to_string()))
}

/// Reporters of one `Worker` service each (capacity 8, a few requests in flight). CPU and
/// memory figures are fixed, so that a report is as cheap as one from a real worker: here one
/// reporter stands for hundreds of workers.
async fn start_reporters() -> Result<Vec<(Reporter, ServerHandle)>, BoxError> {
    let mut reporters = Vec::new();
    for _ in 0..REPORTERS {
        let reporter = Reporter::new();
        let load = reporter.add_service(SERVICE, 8)?;
        load.reset_current_requests(fastrand::i32(0..8));
        load.set_server_utilization(Some(0.25));
        load.set_memory_usage_percent(Some(50.0));
        let server = reporter.server().spawn(listen(BACKLOG)?)?;
        reporters.push((reporter, server));
    }
    Ok(reporters)
}

fn listen(backlog: u32) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(localhost())?;
    socket.listen(backlog)
}

async fn connect(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Waits until the balancer has a health answer and a load report from every location;
/// returns how long that took and how many were ready (all, unless the deadline passed).
async fn wait_until_monitored(balancer: &Balancer, count: usize) -> (Duration, usize) {
    let started = Instant::now();
    loop {
        let ready = balancer
            .status("", SERVICE)
            .iter()
            .filter(|s| s.healthy && s.state.load.is_some())
            .count();
        if ready == count || started.elapsed() > READY_DEADLINE {
            return (started.elapsed(), ready);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The calls measured.

/// What a caller calls.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// The bare echo server's `Echo`.
    Echo,
    /// `grpc.health.v1.Health/Check` of the overall status.
    Health,
    /// `DiscoverTopServices` of `Worker`, max_count 1.
    DiscoverTop,
    /// The same, while the HTTP listener is scraped every second ([`SCRAPING`]).
    DiscoverTopScraped,
}

/// On while a [`Call::DiscoverTopScraped`] slice runs: the scraper polls only then.
static SCRAPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often the scraper polls (a Prometheus scrape interval, a status page's refresh).
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// Serves `balancer`'s HTTP side on a port of its own and polls `/metrics` and `/status.json`
/// every [`SCRAPE_EVERY`] while [`SCRAPING`] is on; returns the server's handle and how many
/// scrapes succeeded so far.
async fn start_scraper(
    balancer: &Balancer,
) -> Result<
    (
        quaestor_core::http::HttpHandle,
        Arc<std::sync::atomic::AtomicU64>,
    ),
    BoxError,
> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind(localhost()).await?;
    let addr = listener.local_addr()?;
    let server = quaestor_core::http::HttpServer::new(
        quaestor_core::http::balancer::BalancerSource::new(balancer.clone(), "memory"),
    )
    .spawn(listener)?;
    let scrapes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&scrapes);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SCRAPE_EVERY);
        loop {
            ticks.tick().await;
            if !SCRAPING.load(Ordering::Relaxed) {
                continue;
            }
            for path in ["/metrics", "/status.json"] {
                if http_get(addr, path).await.is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    Ok((server, scrapes))
}

/// The body of `GET path` (HTTP/1.1, one request per connection, as a scraper makes them).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(answer)
    } else {
        Err(std::io::Error::other("not 200"))
    }
}

impl Call {
    async fn once(self, channel: Channel) -> Result<(), Status> {
        match self {
            Call::Echo => call_echo(channel).await,
            Call::Health => call_health(channel).await,
            Call::DiscoverTop | Call::DiscoverTopScraped => call_discover_top(channel).await,
        }
    }
}

async fn call_echo(channel: Channel) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let _: Response<echo::Message> = grpc
        .unary(
            Request::new(echo::Message {
                text: SERVICE.into(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static(echo::PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(())
}

async fn call_health(channel: Channel) -> Result<(), Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Fails unless a location is offered: an empty answer would be cheap and wrong.
async fn call_discover_top(channel: Channel) -> Result<(), Status> {
    let request = DiscoverServicesRequest {
        scope: String::new(),
        service_name: SERVICE.into(),
        max_count: 1,
    };
    let answer = ServiceDiscoveryGrpcClient::new(channel)
        .discover_top_services(request)
        .await?
        .into_inner();
    if answer.service_locations.len() == 1 {
        Ok(())
    } else {
        Err(Status::internal(format!(
            "{} locations offered instead of 1",
            answer.service_locations.len()
        )))
    }
}

// ---------------------------------------------------------------------------------------
// The load generator.

struct Settings {
    duration: Duration,
    concurrency: usize,
    /// The scale run (issue 19) instead of the size series.
    scale: bool,
}

impl Settings {
    /// `[scale] [SECONDS_PER_CASE [CONCURRENCY]]` or `quick`; cargo's own `--bench` is
    /// ignored.
    fn from_args() -> Result<Self, BoxError> {
        let mut args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        if args.first().is_some_and(|a| a == "quick") {
            return Ok(Settings {
                duration: Duration::from_millis(500),
                concurrency: 8,
                scale: false,
            });
        }
        let scale = args.first().is_some_and(|a| a == "scale");
        if scale {
            args.remove(0);
        }
        let seconds: f64 = args.first().map_or(Ok(3.0), |a| a.parse())?;
        let concurrency: usize = args.get(1).map_or(Ok(16), |a| a.parse())?;
        if !seconds.is_finite() || seconds <= 0.0 || concurrency == 0 {
            return Err("SECONDS_PER_CASE and CONCURRENCY must be positive".into());
        }
        Ok(Settings {
            duration: Duration::from_secs_f64(seconds),
            concurrency,
            scale,
        })
    }

    fn warm_up(&self) -> Duration {
        (self.duration / 5).min(Duration::from_millis(200))
    }
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    calls: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    per_second: f64,
    /// Cores' worth of CPU other processes used meanwhile (noise).
    others: f64,
}

/// Each case is measured in `ROUNDS` slices of the duration, the cases taking turns, so that
/// they see the same machine (other processes, the balancer's probe rounds).
const ROUNDS: u32 = 3;

/// Warms each case up, measures them in turns and prints a row for each.
async fn interleaved<const N: usize>(
    settings: &Settings,
    cases: [(&str, Call, &Channel); N],
    count: Option<usize>,
) -> [Figures; N] {
    for (_, call, channel) in &cases {
        measure(settings.warm_up(), settings.concurrency, channel, *call).await;
    }
    let mut samples: [Samples; N] = std::array::from_fn(|_| Samples::default());
    for _ in 0..ROUNDS {
        for ((_, call, channel), samples) in cases.iter().zip(samples.iter_mut()) {
            let slice = settings.duration / ROUNDS;
            samples.add(measure(slice, settings.concurrency, channel, *call).await);
        }
    }
    std::array::from_fn(|i| {
        let figures = std::mem::take(&mut samples[i]).figures();
        report(cases[i].0, count, &figures);
        figures
    })
}

fn report(case: &str, count: Option<usize>, f: &Figures) {
    let count = count.map_or_else(|| "-".to_owned(), |c| c.to_string());
    println!(
        "| {case} | {count} | {} | {} | {} | {} | {:.0} | {:.2} cores |",
        f.calls,
        micros(f.p50),
        micros(f.p99),
        micros(f.p999),
        f.per_second,
        f.others
    );
}

/// Whole µs, with two decimals below 10 µs.
fn micros(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2}")
    } else {
        format!("{us:.0}")
    }
}

/// Latencies (µs) taken over some seconds, and what other processes used meanwhile.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<f64>,
    seconds: f64,
    /// CPU seconds of other processes.
    others: f64,
}

impl Samples {
    fn add(&mut self, more: Samples) {
        self.latencies.extend(more.latencies);
        self.seconds += more.seconds;
        self.others += more.others;
    }

    fn figures(mut self) -> Figures {
        let all = &mut self.latencies;
        all.sort_by(f64::total_cmp);
        let at = |q: f64| {
            all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Figures {
            calls: all.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            per_second: all.len() as f64 / self.seconds,
            others: self.others / self.seconds,
        }
    }
}

/// Runs `call` from `concurrency` tasks, each starting calls until `duration` has passed.
/// Every call must succeed.
async fn measure(duration: Duration, concurrency: usize, channel: &Channel, call: Call) -> Samples {
    let scraped = matches!(call, Call::DiscoverTopScraped);
    SCRAPING.store(scraped, std::sync::atomic::Ordering::Relaxed);
    let cpu = CpuClock::start();
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    call.once(channel.clone()).await.expect("call succeeds");
                    latencies.push(began.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller task"));
    }
    SCRAPING.store(false, std::sync::atomic::Ordering::Relaxed);
    Samples {
        latencies,
        seconds: start.elapsed().as_secs_f64(),
        others: cpu.other_seconds(),
    }
}

/// Calls `Balancer::discover_top` directly from one task for `duration`: the balancer's own
/// share of a DiscoverTopServices call.
async fn measure_direct(duration: Duration, balancer: &Balancer) -> Result<Figures, BoxError> {
    let cpu = CpuClock::start();
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < duration {
        let began = Instant::now();
        let found = balancer.discover_top("", SERVICE, 1).await?;
        latencies.push(began.elapsed().as_secs_f64() * 1e6);
        assert_eq!(found.len(), 1, "one location offered");
        // Leaves the worker thread to the monitors now and then.
        if latencies.len() % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(Samples {
        latencies,
        seconds: start.elapsed().as_secs_f64(),
        others: cpu.other_seconds(),
    }
    .figures())
}

// ---------------------------------------------------------------------------------------
// The floor: a unary echo service written by hand against tonic's server API, no protos.

mod echo {
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::net::SocketAddr;
    use std::task::{Context, Poll};

    use tokio::sync::oneshot;
    use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
    use tonic::server::{Grpc, NamedService, UnaryService};
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response, Status};

    pub const PATH: &str = "/quaestor.bench.Echo/Echo";

    /// `message Message { string text = 1; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(string, tag = "1")]
        pub text: String,
    }

    /// `service Echo { rpc Echo(Message) returns (Message); }`
    #[derive(Debug, Clone, Copy, Default)]
    pub struct EchoService;

    impl NamedService for EchoService {
        const NAME: &'static str = "quaestor.bench.Echo";
    }

    impl<B> Service<http::Request<B>> for EchoService
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            if request.uri().path() != PATH {
                return Box::pin(async { Ok(Status::unimplemented("only Echo").into_http()) });
            }
            Box::pin(async move {
                let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Message, Message>::default());
                Ok(grpc.unary(EchoMethod, request).await)
            })
        }
    }

    struct EchoMethod;

    impl UnaryService<Message> for EchoMethod {
        type Response = Message;
        type Future = Ready<Result<Response<Message>, Status>>;

        fn call(&mut self, request: Request<Message>) -> Self::Future {
            ready(Ok(Response::new(request.into_inner())))
        }
    }

    /// A plain tonic server with the echo service and nothing else; stops when dropped.
    pub struct EchoServer {
        pub addr: SocketAddr,
        _stop: oneshot::Sender<()>,
    }

    impl EchoServer {
        pub async fn start() -> std::io::Result<Self> {
            let listener = tokio::net::TcpListener::bind(super::localhost()).await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(EchoService)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    }),
            );
            Ok(EchoServer { addr, _stop: stop })
        }
    }
}

use echo::EchoServer;

// ---------------------------------------------------------------------------------------
// The C# Quaestor's strategy, as a second discovery server.

/// `DiscoverTopServices` as the C# Quaestor answered it: on every query, every registered
/// location of the service is asked for its health and then, if SERVING, for its load (all
/// locations at once, each one's two calls in turn, as `GetLoadQualifiedServices` awaited
/// them); those that answered with a capacity other than 0 are ranked with the C# order (host
/// utilisation over the locations that answered), locations handed out within the last
/// `recently_used_timeout` move to the end, and the best are answered. One channel per
/// location, kept between queries (the C# channel cache).
///
/// Differences, all in the fan-out's favour: the recently-used set is a hash map, not a queue
/// searched once per location; there is no second round with a 30 s timeout when nobody
/// answers (everybody answers here). `DiscoverServices` is not measured, so not served.
#[derive(Debug, Clone)]
struct FanOutDiscovery {
    inner: Arc<FanOut>,
}

#[derive(Debug)]
struct FanOut {
    targets: Vec<(ServiceLocation, Channel)>,
    response_timeout: Duration,
    recently_used_timeout: Duration,
    /// When each target (by index) was last handed out.
    recently_used: Mutex<HashMap<usize, Instant>>,
}

/// One location's answers.
struct LoadAnswer {
    target: usize,
    known_load_rate: f64,
    current_requests: i64,
    capacity: i64,
}

impl FanOutDiscovery {
    fn new(
        locations: Vec<ServiceLocation>,
        response_timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let targets = locations
            .into_iter()
            .map(|location| {
                let channel =
                    Endpoint::from_shared(format!("http://{}", location.control_endpoint()))?
                        .connect_timeout(response_timeout)
                        .tcp_nodelay(true)
                        .connect_lazy();
                Ok((location, channel))
            })
            .collect::<Result<_, tonic::transport::Error>>()?;
        Ok(FanOutDiscovery {
            inner: Arc::new(FanOut {
                targets,
                response_timeout,
                recently_used_timeout: BalancerOptions::default().recently_used_timeout,
                recently_used: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl FanOut {
    /// Asks every location of the service, all at once, and waits for every answer.
    async fn load_answers(&self, scope: &str, service: &str) -> Vec<LoadAnswer> {
        let mut probes = JoinSet::new();
        for (target, (location, channel)) in self.targets.iter().enumerate() {
            if location.scope != scope || location.service != service {
                continue;
            }
            let (channel, timeout) = (channel.clone(), self.response_timeout);
            let (scope, service) = (location.scope.clone(), location.service.clone());
            probes.spawn(async move {
                let (known_load_rate, current_requests, capacity) =
                    ask_health_and_load(channel, scope, service, timeout).await?;
                Some(LoadAnswer {
                    target,
                    known_load_rate,
                    current_requests,
                    capacity,
                })
            });
        }
        let mut answers = Vec::with_capacity(probes.len());
        while let Some(joined) = probes.join_next().await {
            if let Ok(Some(answer)) = joined {
                answers.push(answer);
            }
        }
        answers
    }

    /// Target indices, best first, by the C# order.
    fn rank(&self, answers: &[LoadAnswer]) -> Vec<usize> {
        let mut by_host: HashMap<&str, (i64, i64)> = HashMap::new();
        for answer in answers {
            let host = by_host
                .entry(self.targets[answer.target].0.host.as_str())
                .or_default();
            host.0 += answer.current_requests;
            host.1 += answer.capacity;
        }
        let mut candidates: Vec<(usize, Candidate<'_>)> = answers
            .iter()
            .map(|answer| {
                let location = &self.targets[answer.target].0;
                let (current, capacity) = by_host[location.host.as_str()];
                let host_utilization = if capacity == 0 {
                    f64::NAN
                } else {
                    current as f64 / capacity as f64
                };
                let candidate = Candidate {
                    location,
                    known_load_rate: answer.known_load_rate,
                    current_requests: answer.current_requests,
                    capacity: answer.capacity,
                    host_utilization,
                    request_time: None,
                };
                (answer.target, candidate)
            })
            .collect();
        candidates.sort_by(|a, b| QuaestorRanking.compare(&a.1, &b.1));
        candidates.into_iter().map(|(target, _)| target).collect()
    }

    /// Moves the recently used to the end, keeps the best `max_count` (≤ 0: all) and counts
    /// them as used.
    fn hand_out(&self, mut ranked: Vec<usize>, max_count: i32) -> Vec<usize> {
        let now = Instant::now();
        let mut used = self
            .recently_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        used.retain(|_, at| now.saturating_duration_since(*at) <= self.recently_used_timeout);
        if ranked.len() > 1 && !used.is_empty() {
            let (recent, fresh): (Vec<usize>, Vec<usize>) =
                ranked.into_iter().partition(|t| used.contains_key(t));
            ranked = fresh;
            ranked.extend(recent);
        }
        if let Ok(max) = usize::try_from(max_count)
            && max > 0
        {
            ranked.truncate(max);
        }
        for target in &ranked {
            used.insert(*target, now);
        }
        ranked
    }
}

/// Health, then load, of one location; its (known load rate, current, capacity) when it is
/// SERVING and reports a capacity other than 0.
async fn ask_health_and_load(
    channel: Channel,
    scope: String,
    service: String,
    timeout: Duration,
) -> Option<(f64, i64, i64)> {
    let mut health = HealthClient::new(channel.clone());
    let check = health.check(HealthCheckRequest {
        service: service.clone(),
    });
    let status = tokio::time::timeout(timeout, check)
        .await
        .ok()?
        .ok()?
        .into_inner()
        .status;
    if status != ServingStatus::Serving as i32 {
        return None;
    }
    let mut load = LoadReportingGrpcClient::new(channel);
    let ask = load.report_load(LoadReportRequest {
        scope,
        service_name: service,
    });
    let report = tokio::time::timeout(timeout, ask)
        .await
        .ok()?
        .ok()?
        .into_inner();
    let stats = report.server_stats?;
    (stats.request_capacity != 0).then_some((
        report.known_load_rate,
        i64::from(stats.current_requests),
        i64::from(stats.request_capacity),
    ))
}

#[tonic::async_trait]
impl ServiceDiscoveryGrpc for FanOutDiscovery {
    async fn discover_services(
        &self,
        _request: Request<DiscoverServicesRequest>,
    ) -> Result<Response<DiscoverServicesResponse>, Status> {
        Err(Status::unimplemented(
            "the fan-out benchmark server answers DiscoverTopServices only",
        ))
    }

    async fn discover_top_services(
        &self,
        request: Request<DiscoverServicesRequest>,
    ) -> Result<Response<DiscoverServicesResponse>, Status> {
        let r = request.into_inner();
        if r.service_name.is_empty() {
            return Err(Status::invalid_argument(
                "the service name must not be empty",
            ));
        }
        let answers = self.inner.load_answers(&r.scope, &r.service_name).await;
        let ranked = self.inner.rank(&answers);
        let chosen = self.inner.hand_out(ranked, r.max_count);
        let service_locations = chosen
            .into_iter()
            .map(|target| {
                let location = &self.inner.targets[target].0;
                ServiceLocationMsg {
                    scope: location.scope.clone(),
                    service_name: location.service.clone(),
                    host_name: location.host.clone(),
                    port: i32::from(location.port),
                }
            })
            .collect();
        Ok(Response::new(DiscoverServicesResponse {
            service_locations,
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Reports.

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn print_memory(sizes: &[AtSize]) {
    println!();
    println!("## Balancer memory and monitoring cost");
    println!();
    println!(
        "VmRSS (/proc/self/status) of the benchmark's process, which holds the balancer, before the balancer is created and once every location has answered health and load and one more probe interval has passed (steady state). The callers, the echo server and, later, the fan-out server live in the same process: the difference is the balancer's, but memory an earlier size freed and the allocator kept can be reused by a later one. The reporters' side of the connections is in the other process (its RSS is shown). Monitoring CPU: over 5 idle probe intervals, the balancer's process (following the pushed load: keep-alives) + the reporters' (sending them); MB = 10^6 bytes."
    );
    println!();
    println!(
        "| locations | all monitored after | RSS before MB | RSS after MB | difference MB | per location KB | monitoring CPU | reporters' process RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in sizes {
        let m = &s.monitored;
        let delta = m.rss_after_kib.saturating_sub(m.rss_before_kib);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} + {:.2} cores | {:.1} |",
            s.count,
            m.ready_text(s.count),
            mb(m.rss_before_kib),
            mb(m.rss_after_kib),
            mb(delta),
            m.per_location_kb(s.count),
            m.idle_cores.0,
            m.idle_cores.1,
            mb(m.reporters_rss_kib)
        );
    }
}

/// The HTTP side's cost: DiscoverTopServices scraped against not, at each size (issue 18:
/// within 5 %).
fn print_http_cost(sizes: &[AtSize]) {
    println!();
    println!(
        "## The HTTP side's cost (/metrics and /status.json scraped every {} s, interleaved with the plain case)",
        SCRAPE_EVERY.as_secs()
    );
    println!();
    println!(
        "| locations | scrapes | p50 scraped / plain | p99 scraped / plain | calls/s scraped / plain |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for s in sizes {
        println!(
            "| {} | {} | {:.3}x | {:.3}x | {:.3}x |",
            s.count,
            s.scrapes,
            s.scraped.p50 / s.top.p50,
            s.scraped.p99 / s.top.p99,
            s.scraped.per_second / s.top.per_second
        );
    }
}

fn print_ratios(sizes: &[AtSize], fan_out: &[(usize, Figures)]) {
    println!();
    println!("## Ratios (bare = the echo server measured at the same size, balancer monitoring)");
    println!();
    println!(
        "| locations | quaestor p50 / bare p50 | quaestor calls/s / bare calls/s | fan-out p50 / quaestor p50 | fan-out calls/s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for s in sizes {
        let fan = fan_out.iter().find(|(c, _)| *c == s.count).map(|(_, f)| f);
        println!(
            "| {} | {:.2}x | {:.2}x | {} | {} |",
            s.count,
            s.top.p50 / s.bare.p50,
            s.top.per_second / s.bare.per_second,
            fan.map_or("-".into(), |f| {
                let note = if s.count >= FAN_OUT_ONE_CALLER {
                    " (fan-out: 1 caller)"
                } else {
                    ""
                };
                format!("{:.1}x{note}", f.p50 / s.top.p50)
            }),
            fan.map_or("-".into(), |f| format!("{:.1}", f.per_second)),
        );
    }
    if let (Some(s), Some((_, f))) = (
        sizes.iter().find(|s| s.count == RATIO_AT),
        fan_out.iter().find(|(c, _)| *c == RATIO_AT),
    ) {
        println!();
        println!(
            "fan-out / quaestor p50 at {RATIO_AT} locations: {:.1}x ({:.0} µs / {:.0} µs)",
            f.p50 / s.top.p50,
            f.p50,
            s.top.p50
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

fn print_targets(floor: &Figures, sizes: &[AtSize], fan_out: &[(usize, Figures)]) {
    println!();
    println!("## Targets");
    println!();
    if sizes.is_empty() {
        println!("no size could be measured");
        return;
    }
    let ratios: Vec<String> = sizes
        .iter()
        .map(|s| format!("{}: {:.2}x", s.count, s.top.p50 / s.bare.p50))
        .collect();
    let p50s: Vec<String> = sizes
        .iter()
        .map(|s| format!("{}: {:.0} µs", s.count, s.top.p50))
        .collect();
    let below = sizes
        .iter()
        .all(|s| s.top.p50 <= TARGET_P50_RATIO * s.bare.p50);
    let (low, high) = sizes.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| {
        (lo.min(s.top.p50), hi.max(s.top.p50))
    });
    let covered = sizes.iter().any(|s| s.count == 10) && sizes.iter().any(|s| s.count == 10_000);
    let flat = high / low <= TARGET_FLAT && covered;
    let relative = sizes.iter().map(|s| s.top.p50 / s.bare.p50);
    let (low_ratio, high_ratio) =
        relative.fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    println!(
        "- DiscoverTopServices p50 <= {TARGET_P50_RATIO}x bare RPC and flat from 10 to 10000: {} (<= {TARGET_P50_RATIO}x at every size: {}, {}; flat, highest/lowest p50 <= {TARGET_FLAT}: {}, {:.2}, {}; the bare echo alone: {:.0} µs; for context, highest/lowest of p50 / bare: {:.2})",
        verdict(below && flat),
        verdict(below),
        ratios.join(", "),
        verdict(flat),
        high / low,
        p50s.join(", "),
        floor.p50,
        high_ratio / low_ratio
    );

    let throughput: Vec<String> = sizes
        .iter()
        .map(|s| {
            format!(
                "{}: {:.2}x ({:.0}/{:.0} calls/s)",
                s.count,
                s.top.per_second / s.bare.per_second,
                s.top.per_second,
                s.bare.per_second
            )
        })
        .collect();
    let fast = sizes
        .iter()
        .all(|s| s.top.per_second >= TARGET_THROUGHPUT_RATIO * s.bare.per_second);
    println!(
        "- throughput >= {TARGET_THROUGHPUT_RATIO}x bare at every size: {} ({})",
        verdict(fast),
        throughput.join(", ")
    );

    match (
        sizes.iter().find(|s| s.count == RATIO_AT),
        fan_out.iter().find(|(c, _)| *c == RATIO_AT),
    ) {
        (Some(s), Some((_, f))) => println!(
            "- fan-out >= {TARGET_FAN_OUT_RATIO}x slower at {RATIO_AT} locations (p50): {} ({:.1}x: {:.0} µs against {:.0} µs)",
            verdict(f.p50 >= TARGET_FAN_OUT_RATIO * s.top.p50),
            f.p50 / s.top.p50,
            f.p50,
            s.top.p50
        ),
        _ => println!("- fan-out at {RATIO_AT} locations: not measured"),
    }

    match sizes.iter().find(|s| s.count == 10_000) {
        Some(s) => {
            let s = &s.monitored;
            let delta = mb(s.rss_after_kib.saturating_sub(s.rss_before_kib));
            println!(
                "- balancer RSS < {TARGET_RSS_MB} MB at 10000 locations: {} ({delta:.1} MB: VmRSS difference of the balancer's process)",
                verdict(delta < TARGET_RSS_MB)
            );
            println!(
                "- idle CPU of the balancer's process < {TARGET_IDLE_CORES} cores at 10000 pushing locations: {} ({:.3} cores over {IDLE_INTERVALS} probe intervals; the reporters' process: {:.3})",
                verdict(s.idle_cores.0 < TARGET_IDLE_CORES),
                s.idle_cores.0,
                s.idle_cores.1
            );
        }
        None => println!("- RSS at 10000 locations: not measured"),
    }
}

// ---------------------------------------------------------------------------------------
// The machine and this process, from /proc.

struct Machine {
    cores: usize,
    model: String,
}

impl Machine {
    fn read() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// VmRSS of this process in KiB.
fn vm_rss_kib() -> u64 {
    vm_rss_kib_of("self")
}

fn vm_rss_kib_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Waits (at most 30 s) until the connections of the previous case are closed.
async fn wait_for_fds(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds() > baseline + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raises the soft limit of open files to `needed` (the hard one too where allowed); returns
/// the soft limit in force.
fn raise_fd_limit(needed: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft >= needed {
        return soft;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, needed, hard.max(needed)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft)
}

/// Linux reports CPU time in /proc in units of USER_HZ, 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU used by the benchmark's two processes and by the whole machine since it started.
struct CpuClock {
    at: Instant,
    this: u64,
    reporters: u64,
    machine: u64,
}

impl CpuClock {
    fn start() -> Self {
        CpuClock {
            at: Instant::now(),
            this: process_ticks("self"),
            reporters: reporters_ticks(),
            machine: machine_busy_ticks(),
        }
    }

    fn cores(&self, ticks: u64) -> f64 {
        ticks as f64 / TICKS_PER_SECOND / self.at.elapsed().as_secs_f64()
    }

    /// Cores' worth of CPU this process and the reporters' used since the start.
    fn own_cores(&self) -> (f64, f64) {
        (
            self.cores(process_ticks("self").saturating_sub(self.this)),
            self.cores(reporters_ticks().saturating_sub(self.reporters)),
        )
    }

    /// CPU seconds every other process used since the start.
    fn other_seconds(&self) -> f64 {
        let own = process_ticks("self").saturating_sub(self.this)
            + reporters_ticks().saturating_sub(self.reporters);
        let machine = machine_busy_ticks().saturating_sub(self.machine);
        machine.saturating_sub(own) as f64 / TICKS_PER_SECOND
    }
}

fn reporters_ticks() -> u64 {
    REPORTERS_PID
        .get()
        .map_or(0, |pid| process_ticks(&pid.to_string()))
}

/// utime + stime of a process (fields 14 and 15 of /proc/PID/stat).
fn process_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0)
}

/// Busy time of all CPUs (/proc/stat: all but idle and iowait).
fn machine_busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?;
            let fields: Vec<u64> = line
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest is counted in user).
            Some(
                fields
                    .iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .map(|(_, v)| v)
                    .sum(),
            )
        })
        .unwrap_or(0)
}
