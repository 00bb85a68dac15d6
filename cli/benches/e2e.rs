//! End-to-end balancing with real processes: 8 `quaestor worker`s of limited concurrency
//! (K = 4; six take 40 ms a call, two take 120 ms), an open-loop Poisson load at 75 % of their
//! total capacity with 5 s deadlines, and five ways of choosing the worker for each call:
//!
//! - `random`, `round-robin`: the client picks among the 8 addresses;
//! - `discover-top`: DiscoverTopServices(max_count = 1) per call, over a reused channel, to a
//!   real `quaestor load-balancer` (a memory registry of Worker agents), then the call to the
//!   worker it named;
//! - `grpclb`: the stock grpc-go client of tests/go-client with the grpclb policy, against the
//!   same balancer;
//! - `xds-CLIENT-POLICY`: a stock xDS client (`go`: grpc-go, tests/go-client; `grpcio`: Python's
//!   C-core, tests/xds-clients; `java`: grpc-java, tests/xds-java) dialling
//!   `xds:///xds-POLICY` through the same balancer's ADS, with that service's LB policy
//!   (`rr` round_robin, `lr` least_request, `wrr` weighted_round_robin over ORCA, `pf`
//!   pick_first); the workers serve one `xds-POLICY` service per policy beside `Worker`;
//! - `haproxy`: HAProxy (Debian `haproxy`), `balance leastconn`, h2 on both sides, the proxy a
//!   user would run instead.
//!
//! Every policy replays the same arrival schedule (generated once here from `--seed`, written
//! to a file for the Go client). Latency counts from the scheduled arrival, so a slow client
//! does not hide queueing (no coordinated omission). Policies are interleaved over `--rounds`
//! because the machine is shared; the summary quotes medians over the rounds and p99 ratios
//! to HAProxy's.
//!
//!     cargo bench -p quaestor-cli --bench e2e -- [--seconds 30] [--rounds 2]
//!         [--policy haproxy,discover-top,...] [--seed N] [--utilization 0.75] [--write FILE]
//!
//! Needs `haproxy` and `go` on the PATH (`scripts/setup.sh --bench` installs HAProxy), and for
//! the xDS rows the repository's `.venv` (grpcio; or `QUAESTOR_PYTHON`) and the grpc-java
//! client's jar (built by `scripts/setup.sh`). Every process it starts is killed (its process
//! group, by pid) when it ends, fails or gets Ctrl-C.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use quaestor_core::config::LbPolicy;
use quaestor_core::proto::example::WorkRequest;
use quaestor_core::proto::example::work_client::WorkClient;
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_test_support::{ChildProcess, OutputLines, free_port, go_build, quaestor_bin};
use tonic::transport::{Channel, Endpoint};

/// Requests a worker runs at once.
const K: u32 = 4;
/// The service time of a fast worker; the others are the slow ones.
const FAST_MS: u64 = 40;
/// Service times of the workers: six fast, two slow.
const SERVICE_MS: [u64; 8] = [
    FAST_MS, FAST_MS, FAST_MS, FAST_MS, FAST_MS, FAST_MS, 120, 120,
];
/// The deadline of every call.
const DEADLINE: Duration = Duration::from_secs(5);
/// How long starting something may take before the bench gives up.
const STARTUP: Duration = Duration::from_secs(60);
/// The pause between two runs, so that the workers' queues and the balancer's view settle.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
enum Policy {
    Random,
    RoundRobin,
    DiscoverTop,
    Grpclb,
    Haproxy,
    XdsGoRr,
    XdsGoLr,
    XdsGoWrr,
    XdsGoPf,
    XdsGrpcioRr,
    XdsGrpcioLr,
    XdsGrpcioWrr,
    XdsGrpcioPf,
    XdsJavaRr,
    XdsJavaLr,
    XdsJavaWrr,
    XdsJavaPf,
}

/// A stock xDS client of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XdsClient {
    Go,
    Grpcio,
    Java,
}

impl Policy {
    /// What runs when `--policy` is not given: the five baselines and the xDS rows of the
    /// issue (`--policy` names the others, e.g. for the table of which client honours which
    /// LB policy).
    const DEFAULT: [Policy; 10] = [
        Policy::Random,
        Policy::RoundRobin,
        Policy::DiscoverTop,
        Policy::Grpclb,
        Policy::Haproxy,
        Policy::XdsGoLr,
        Policy::XdsGoWrr,
        Policy::XdsGrpcioRr,
        Policy::XdsGrpcioWrr,
        Policy::XdsJavaLr,
    ];

    fn name(self) -> String {
        match self {
            Policy::Random => "random".into(),
            Policy::RoundRobin => "round robin".into(),
            Policy::DiscoverTop => "DiscoverTopServices(1) per call".into(),
            Policy::Grpclb => "grpclb (grpc-go)".into(),
            Policy::Haproxy => "HAProxy leastconn".into(),
            xds => {
                let (client, lb) = xds.xds().expect("an xDS policy");
                let client = match client {
                    XdsClient::Go => "grpc-go",
                    XdsClient::Grpcio => "grpcio",
                    XdsClient::Java => "grpc-java",
                };
                format!("xDS {client} {lb}")
            }
        }
    }

    /// The client and LB policy of an xDS row.
    fn xds(self) -> Option<(XdsClient, LbPolicy)> {
        use LbPolicy::{LeastRequest, PickFirst, RoundRobin, WeightedRoundRobin};
        Some(match self {
            Policy::XdsGoRr => (XdsClient::Go, RoundRobin),
            Policy::XdsGoLr => (XdsClient::Go, LeastRequest),
            Policy::XdsGoWrr => (XdsClient::Go, WeightedRoundRobin),
            Policy::XdsGoPf => (XdsClient::Go, PickFirst),
            Policy::XdsGrpcioRr => (XdsClient::Grpcio, RoundRobin),
            Policy::XdsGrpcioLr => (XdsClient::Grpcio, LeastRequest),
            Policy::XdsGrpcioWrr => (XdsClient::Grpcio, WeightedRoundRobin),
            Policy::XdsGrpcioPf => (XdsClient::Grpcio, PickFirst),
            Policy::XdsJavaRr => (XdsClient::Java, RoundRobin),
            Policy::XdsJavaLr => (XdsClient::Java, LeastRequest),
            Policy::XdsJavaWrr => (XdsClient::Java, WeightedRoundRobin),
            Policy::XdsJavaPf => (XdsClient::Java, PickFirst),
            _ => return None,
        })
    }
}

/// The service the workers serve for xDS clients of one LB policy.
fn xds_service(policy: LbPolicy) -> String {
    format!("xds-{policy}")
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end balancing benchmark with real processes")]
struct Options {
    /// Seconds of load per policy and round.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Rounds; each runs every policy once (in a rotated order).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Policies to run (comma-separated) [default: all].
    #[arg(long, value_delimiter = ',')]
    policy: Vec<Policy>,
    /// Seed of the arrival schedule (the same for every policy).
    #[arg(long, default_value_t = 14)]
    seed: u64,
    /// Offered load as a share of the workers' total capacity (Σ K / service time).
    #[arg(long, default_value_t = 0.75)]
    utilization: f64,
    /// Also write the tables (Markdown) to this file.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What happened to one call.
#[derive(Debug, Clone)]
struct Outcome {
    /// From the scheduled arrival to the answer (or the failure).
    latency: Duration,
    result: CallResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallResult {
    /// Answered by the worker on this port.
    Ok(u16),
    DeadlineExceeded,
    /// Failed otherwise: the status code, or what was wrong with the answer.
    Error(String),
}

impl CallResult {
    /// The result of a call answered `Ok` by the worker named `host:port`.
    fn answered_by(worker: &str) -> CallResult {
        worker
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .map_or_else(
                || CallResult::Error(format!("an answer from {worker:?}")),
                CallResult::Ok,
            )
    }

    fn failed(code: tonic::Code) -> CallResult {
        match code {
            tonic::Code::DeadlineExceeded => CallResult::DeadlineExceeded,
            code => CallResult::Error(format!("{code:?}")),
        }
    }
}

/// The processes of the bench; dropping it kills each one's process group.
struct Fleet {
    workers: Vec<(ChildProcess, SocketAddr)>,
    _balancer: ChildProcess,
    balancer: SocketAddr,
    _haproxy: ChildProcess,
    haproxy: SocketAddr,
    /// The stock grpc-go client (tests/go-client): the grpclb row and the xDS rows of grpc-go.
    go_client: PathBuf,
    /// The bootstrap file naming the balancer.
    xds_bootstrap: PathBuf,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn slow_ports(&self) -> Vec<u16> {
        self.workers
            .iter()
            .zip(SERVICE_MS)
            .filter(|(_, ms)| *ms > FAST_MS)
            .map(|((_, addr), _)| addr.port())
            .collect()
    }
}

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

/// Starts `program ARGS...` (its log quiet), waits for `listening on ADDR` on its stdout.
fn spawn_listening(program: &Path, args: &[&str]) -> (ChildProcess, SocketAddr) {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let mut process = ChildProcess::spawn(&format!("{} {}", program.display(), args[0]), command);
    let lines = OutputLines::of(&mut process);
    let addr = lines.expect("`listening on ADDR`", STARTUP, |line| {
        line.strip_prefix("listening on ")?.trim().parse().ok()
    });
    lines.drain();
    (process, addr)
}

fn start_fleet() -> Fleet {
    let dir = tempfile::tempdir().expect("temporary directory");
    // `Worker` first: DoWork counts its calls there. The xDS services are the same workers
    // under other names, each with its LB policy.
    let services: Vec<String> = std::iter::once("Worker".to_owned())
        .chain(LbPolicy::ALL.map(xds_service))
        .collect();
    let workers: Vec<(ChildProcess, SocketAddr)> = SERVICE_MS
        .iter()
        .map(|ms| {
            let mut args: Vec<String> = [
                "worker",
                "--port",
                "0",
                "--work-ms",
                &ms.to_string(),
                "--max-concurrent",
                &K.to_string(),
            ]
            .map(str::to_owned)
            .to_vec();
            for service in &services {
                args.extend(["--service".to_owned(), service.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_listening(&bin(), &args)
        })
        .collect();
    let ports: Vec<String> = workers.iter().map(|(_, a)| a.port().to_string()).collect();

    // The balancer as a user would configure it: the C# file, Worker agents, defaults.
    let config = dir.path().join("quaestor.loadbalancer.config.yml");
    std::fs::write(
        &config,
        format!(
            "# written by cli/benches/e2e.rs\nloadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 5150\n  xdsLbPolicies:\n{}agents:\n  - agentType: Worker\n    hostName: 127.0.0.1\n    ports: [ {} ]\n    serviceNames: [ {} ]\n",
            LbPolicy::ALL
                .map(|p| format!("    {}: {p}\n", xds_service(p)))
                .concat(),
            ports.join(", "),
            services.join(", ")
        ),
    )
    .expect("write the balancer config");
    let (balancer_process, balancer) = spawn_listening(
        &bin(),
        &[
            "load-balancer",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--port",
            "0",
        ],
    );

    let (haproxy_process, haproxy) = start_haproxy(dir.path(), &workers);
    let go_client = go_build("go-client", dir.path());
    let xds_bootstrap = dir.path().join("xds-bootstrap.json");
    let bootstrap = Command::new(bin())
        .args(["xds", "bootstrap", "--server", &balancer.to_string()])
        .output()
        .expect("quaestor xds bootstrap");
    assert!(bootstrap.status.success(), "quaestor xds bootstrap failed");
    std::fs::write(&xds_bootstrap, bootstrap.stdout).expect("write the xDS bootstrap");
    Fleet {
        workers,
        _balancer: balancer_process,
        balancer,
        _haproxy: haproxy_process,
        haproxy,
        go_client,
        xds_bootstrap,
        dir,
    }
}

/// HAProxy in front of the workers: h2 (cleartext, prior knowledge) on the bind and to each
/// server, `balance leastconn`. `tune.h2.max-concurrent-streams` is raised from its default
/// of 100 so that the one client connection is not throttled by the proxy's own limit.
fn start_haproxy(dir: &Path, workers: &[(ChildProcess, SocketAddr)]) -> (ChildProcess, SocketAddr) {
    let port = free_port();
    let mut config = format!(
        "# written by cli/benches/e2e.rs\nglobal\n  maxconn 4000\n  tune.h2.max-concurrent-streams 1000\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\nfrontend grpc\n  bind 127.0.0.1:{port} proto h2\n  default_backend workers\n\nbackend workers\n  balance leastconn\n"
    );
    for (i, (_, addr)) in workers.iter().enumerate() {
        writeln!(config, "  server w{i} {addr} proto h2").expect("string");
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write the HAProxy config");
    let mut command = Command::new(haproxy_bin());
    command.args(["-db", "-q", "-f"]).arg(&path);
    let mut process = ChildProcess::spawn("haproxy", command);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = process.child_mut().try_wait().expect("try_wait") {
            panic!("haproxy exited ({status}) before it listened; its config: {path:?}");
        }
        assert!(
            start.elapsed() < STARTUP,
            "haproxy never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (process, addr)
}

/// `haproxy` on the PATH, else Debian's /usr/sbin/haproxy (sbin is not on every PATH).
fn haproxy_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("haproxy"))
            .find(|candidate| candidate.is_file())
    });
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"));
    assert!(
        bin.is_file(),
        "haproxy not found (install it: scripts/setup.sh --bench, or apt-get install haproxy)"
    );
    bin
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The command that starts an xDS client of the bench (its flags follow).
fn xds_command(fleet: &Fleet, client: XdsClient) -> Command {
    let mut command = match client {
        XdsClient::Go => Command::new(&fleet.go_client),
        XdsClient::Grpcio => {
            let python = std::env::var_os("QUAESTOR_PYTHON")
                .map_or_else(|| repository().join(".venv/bin/python"), PathBuf::from);
            assert!(
                python.exists(),
                "{} not found: run `make test` (or scripts/setup.sh) for the venv with grpcio, \
                 or set QUAESTOR_PYTHON",
                python.display()
            );
            let mut command = Command::new(python);
            command.arg(repository().join("tests/xds-clients/grpcio_client.py"));
            command
        }
        XdsClient::Java => {
            let jar = repository().join("tests/xds-java/target/xds-client.jar");
            assert!(
                jar.exists(),
                "{} not found: scripts/setup.sh builds it",
                jar.display()
            );
            let mut command = Command::new("java");
            command.arg("-jar").arg(jar);
            command
        }
    };
    command.env("GRPC_XDS_BOOTSTRAP", &fleet.xds_bootstrap);
    command
}

/// A connected channel to `addr`, retried until it answers a DoWork call (HAProxy starts
/// listening a moment after it starts).
async fn ready_channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let start = Instant::now();
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let answer = WorkClient::new(channel.clone())
                .do_work(WorkRequest::default())
                .await;
            if answer.is_ok() {
                return channel;
            }
        }
        assert!(start.elapsed() < STARTUP, "{addr} never answered DoWork");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seeded open-loop Poisson arrivals at `rate` per second for `seconds`: the offsets from
/// the start, exponential gaps of mean 1 / rate.
fn schedule(seed: u64, rate: f64, seconds: u64) -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = seconds as f64;
    let mut at = 0.0;
    let mut arrivals = Vec::new();
    loop {
        // 1 - u is in (0, 1]: the logarithm is finite.
        at += -(1.0 - rng.f64()).ln() / rate;
        if at >= end {
            return arrivals;
        }
        arrivals.push(Duration::from_secs_f64(at));
    }
}

/// How the in-process client picks the worker of a call.
enum Picker {
    /// Uniformly at random among the workers.
    Random(std::sync::Mutex<fastrand::Rng>),
    /// Each worker in turn.
    RoundRobin(AtomicUsize),
    /// The top of DiscoverTopServices(max_count = 1), asked per call.
    DiscoverTop(Channel),
    /// Always the one channel to HAProxy.
    Haproxy(Channel),
}

struct Client {
    picker: Picker,
    /// The workers' channels, in fleet order, and by port.
    workers: Vec<Channel>,
    by_port: HashMap<u16, usize>,
}

impl Client {
    async fn call(&self) -> CallResult {
        let channel = match &self.picker {
            Picker::Random(rng) => {
                let i = rng
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .usize(..self.workers.len());
                self.workers[i].clone()
            }
            Picker::RoundRobin(next) => {
                self.workers[next.fetch_add(1, Ordering::Relaxed) % self.workers.len()].clone()
            }
            Picker::DiscoverTop(balancer) => {
                let answer = ServiceDiscoveryGrpcClient::new(balancer.clone())
                    .discover_top_services(DiscoverServicesRequest {
                        scope: String::new(),
                        service_name: "Worker".into(),
                        max_count: 1,
                    })
                    .await;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(status) => return CallResult::failed(status.code()),
                };
                let top = answer.into_inner().service_locations.into_iter().next();
                let Some(i) = top.and_then(|l| {
                    let port = u16::try_from(l.port).ok()?;
                    self.by_port.get(&port).copied()
                }) else {
                    return CallResult::Error("no location from DiscoverTopServices".into());
                };
                self.workers[i].clone()
            }
            Picker::Haproxy(proxy) => proxy.clone(),
        };
        match WorkClient::new(channel)
            .do_work(WorkRequest::default())
            .await
        {
            Ok(answer) => CallResult::answered_by(&answer.into_inner().worker),
            Err(status) => CallResult::failed(status.code()),
        }
    }
}

/// Replays `arrivals` with one call each through `client`; the outcomes in arrival order.
async fn replay(client: Arc<Client>, arrivals: &[Duration]) -> Vec<Outcome> {
    let start = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(arrivals.len());
    for &offset in arrivals {
        let arrival = start + offset;
        tokio::time::sleep_until(arrival).await;
        let client = Arc::clone(&client);
        calls.push(tokio::spawn(async move {
            let result = tokio::time::timeout_at(arrival + DEADLINE, client.call())
                .await
                .unwrap_or(CallResult::DeadlineExceeded);
            Outcome {
                latency: arrival.elapsed(),
                result,
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(calls.len());
    for call in calls {
        outcomes.push(call.await.expect("a call task panicked"));
    }
    outcomes
}

/// Runs an external client (`command`: the grpc-go grpclb client, or an xDS client, with
/// its balancer's flags) over the schedule file (it warms up first, until `warmup` distinct
/// workers answered) and waits for it without blocking the runtime, so that Ctrl-C still
/// stops everything.
async fn replay_external(
    mut command: Command,
    name: &str,
    warmup: usize,
    fleet: &Fleet,
    schedule_file: &Path,
    round: usize,
) -> Vec<Outcome> {
    let out = fleet.dir.path().join(format!("{name}-{round}.txt"));
    command
        .arg("-schedule")
        .arg(schedule_file)
        .arg("-out")
        .arg(&out)
        .args(["-warmup", &warmup.to_string(), "-deadline"])
        .arg(format!("{}ms", DEADLINE.as_millis()))
        .stdout(Stdio::null());
    let mut client = ChildProcess::spawn(name, command);
    let status = loop {
        if let Some(status) = client.child_mut().try_wait().expect("try_wait") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the {name} client failed: {status:?}");
    let text = std::fs::read_to_string(&out).expect("the client's results");
    text.lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let (Some(us), Some(code), Some(worker)) =
                (fields.next(), fields.next(), fields.next())
            else {
                panic!("a bad line from the {name} client: {line:?}");
            };
            let latency = Duration::from_micros(us.parse().expect("microseconds"));
            let code: i32 = code.parse().expect("a status code");
            let result = match tonic::Code::from_i32(code) {
                tonic::Code::Ok => CallResult::answered_by(worker),
                // grpc-go sends its deadline as grpc-timeout, and a tonic server that sees it
                // expire first answers CANCELLED ("Timeout expired"): a timeout all the same.
                tonic::Code::Cancelled if latency + Duration::from_millis(100) >= DEADLINE => {
                    CallResult::DeadlineExceeded
                }
                code => CallResult::failed(code),
            };
            Outcome { latency, result }
        })
        .collect()
}

/// The figures of one run.
#[derive(Debug, Clone)]
struct Figures {
    calls: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    timeouts: usize,
    errors: usize,
    /// The errors (not the timeouts) by kind.
    error_kinds: std::collections::BTreeMap<String, usize>,
    /// Share of the answered calls that the slow workers answered.
    slow_share: f64,
}

fn figures(outcomes: &[Outcome], slow: &[u16]) -> Figures {
    let mut ms: Vec<f64> = outcomes
        .iter()
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        ms[rank - 1]
    };
    let answered: Vec<u16> = outcomes
        .iter()
        .filter_map(|o| match o.result {
            CallResult::Ok(port) => Some(port),
            _ => None,
        })
        .collect();
    let to_slow = answered.iter().filter(|p| slow.contains(p)).count();
    Figures {
        calls: outcomes.len(),
        p50: quantile(0.50),
        p99: quantile(0.99),
        p999: quantile(0.999),
        timeouts: outcomes
            .iter()
            .filter(|o| o.result == CallResult::DeadlineExceeded)
            .count(),
        errors: outcomes
            .iter()
            .filter(|o| matches!(o.result, CallResult::Error(_)))
            .count(),
        error_kinds: outcomes
            .iter()
            .filter_map(|o| match &o.result {
                CallResult::Error(kind) => Some(kind.clone()),
                _ => None,
            })
            .fold(Default::default(), |mut kinds, kind| {
                *kinds.entry(kind).or_default() += 1;
                kinds
            }),
        slow_share: to_slow as f64 / answered.len().max(1) as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn run_policy(
    policy: Policy,
    fleet: &Fleet,
    workers: &[Channel],
    arrivals: &[Duration],
    schedule_file: &Path,
    round: usize,
    seed: u64,
) -> Vec<Outcome> {
    let by_port = fleet
        .workers
        .iter()
        .enumerate()
        .map(|(i, (_, addr))| (addr.port(), i))
        .collect();
    if let Some((client, lb)) = policy.xds() {
        let mut command = xds_command(fleet, client);
        command.args(["-target", &format!("xds:///{}", xds_service(lb))]);
        // pick_first calls one worker only.
        let warmup = if lb == LbPolicy::PickFirst {
            1
        } else {
            fleet.workers.len()
        };
        let name = format!("xds-{client:?}-{lb}").to_lowercase();
        return replay_external(command, &name, warmup, fleet, schedule_file, round).await;
    }
    let picker = match policy {
        Policy::Grpclb => {
            let mut command = Command::new(&fleet.go_client);
            command.args([
                "-balancer",
                &fleet.balancer.to_string(),
                "-service",
                "Worker",
            ]);
            let warmup = fleet.workers.len();
            return replay_external(command, "grpclb", warmup, fleet, schedule_file, round).await;
        }
        Policy::Random => Picker::Random(std::sync::Mutex::new(fastrand::Rng::with_seed(
            seed ^ round as u64,
        ))),
        Policy::RoundRobin => Picker::RoundRobin(AtomicUsize::new(0)),
        Policy::DiscoverTop => {
            let channel = Endpoint::from_shared(format!("http://{}", fleet.balancer))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect to the balancer");
            Picker::DiscoverTop(channel)
        }
        Policy::Haproxy => Picker::Haproxy(ready_channel(fleet.haproxy).await),
        xds => unreachable!("{xds:?} is run by its client"),
    };
    let client = Arc::new(Client {
        picker,
        workers: workers.to_vec(),
        by_port,
    });
    // One call first (the balancer's first ask of a service probes synchronously).
    let _ = client.call().await;
    replay(client, arrivals).await
}

fn row(name: &str, f: &Figures) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} % |",
        f.calls,
        f.p50,
        f.p99,
        f.p999,
        f.timeouts,
        f.errors,
        f.slow_share * 100.0
    )
}

async fn run(options: Options) {
    let policies: Vec<Policy> = if options.policy.is_empty() {
        Policy::DEFAULT.to_vec()
    } else {
        let mut chosen = options.policy.clone();
        chosen.sort();
        chosen.dedup();
        chosen
    };
    let capacity: f64 = SERVICE_MS
        .iter()
        .map(|ms| f64::from(K) * 1000.0 / *ms as f64)
        .sum();
    let rate = capacity * options.utilization;
    let arrivals = schedule(options.seed, rate, options.seconds);

    let fleet = tokio::task::block_in_place(start_fleet);
    let schedule_file = fleet.dir.path().join("schedule.txt");
    let mut text = String::with_capacity(arrivals.len() * 10);
    for at in &arrivals {
        writeln!(text, "{}", at.as_micros()).expect("string");
    }
    std::fs::write(&schedule_file, text).expect("write the schedule");
    let mut workers = Vec::new();
    for (_, addr) in &fleet.workers {
        workers.push(ready_channel(*addr).await);
    }
    let slow = fleet.slow_ports();
    // Each worker's share of the capacity, summed over the slow ones.
    let ideal = SERVICE_MS
        .iter()
        .filter(|ms| **ms > FAST_MS)
        .map(|ms| f64::from(K) * 1000.0 / *ms as f64)
        .sum::<f64>()
        / capacity;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "8 workers (K = {K}; six 40 ms, two 120 ms), capacity {capacity:.1} calls/s, offered \
         {rate:.1} calls/s ({:.0} %), Poisson, seed {}, {} s x {} round(s), {} calls per run, \
         {} s deadline; {} cores, load average at start {}",
        options.utilization * 100.0,
        options.seed,
        options.seconds,
        options.rounds,
        arrivals.len(),
        DEADLINE.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{out}");
    let header = "| policy | calls | p50 ms | p99 ms | p99.9 ms | timeouts | errors | to slow workers |\n|---|---:|---:|---:|---:|---:|---:|---:|";
    let mut runs: HashMap<Policy, Vec<Figures>> = HashMap::new();
    let mut per_round = format!("{header}\n");
    let mut error_notes = Vec::new();
    for round in 0..options.rounds {
        // A rotated order each round, so that no policy always runs first or last.
        for k in 0..policies.len() {
            let policy = policies[(k + round) % policies.len()];
            tokio::time::sleep(SETTLE).await;
            let outcomes = run_policy(
                policy,
                &fleet,
                &workers,
                &arrivals,
                &schedule_file,
                round,
                options.seed,
            )
            .await;
            let f = figures(&outcomes, &slow);
            let line = row(&format!("{} (round {})", policy.name(), round + 1), &f);
            println!("{line}");
            per_round.push_str(&line);
            per_round.push('\n');
            if !f.error_kinds.is_empty() {
                let kinds = format!("  errors: {:?}", f.error_kinds);
                println!("{kinds}");
                error_notes.push(format!(
                    "- {} (round {}): {kinds}",
                    policy.name(),
                    round + 1
                ));
            }
            let _ = std::io::stdout().flush();
            runs.entry(policy).or_default().push(f);
        }
    }

    let haproxy_p99 = runs
        .get(&Policy::Haproxy)
        .map(|r| median(r.iter().map(|f| f.p99).collect()));
    let mut summary = String::from(
        "| policy | p50 ms | p99 ms | p99.9 ms | p99 / HAProxy | timeouts | errors | to slow workers |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for policy in &policies {
        let r = &runs[policy];
        let p99 = median(r.iter().map(|f| f.p99).collect());
        let calls: usize = r.iter().map(|f| f.calls).sum();
        let timeouts: usize = r.iter().map(|f| f.timeouts).sum();
        let errors: usize = r.iter().map(|f| f.errors).sum();
        let _ = writeln!(
            summary,
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} ({:.2} %) | {} | {:.1} % |",
            policy.name(),
            median(r.iter().map(|f| f.p50).collect()),
            p99,
            median(r.iter().map(|f| f.p999).collect()),
            haproxy_p99.map_or("-".into(), |h| format!("{:.2}x", p99 / h)),
            timeouts,
            timeouts as f64 * 100.0 / calls.max(1) as f64,
            errors,
            median(r.iter().map(|f| f.slow_share).collect()) * 100.0
        );
    }
    println!(
        "\nmedians over {} round(s); timeouts and errors summed over the rounds; share of the \
         answered calls that went to the slow workers (ideal {:.1} %):\n\n{summary}",
        options.rounds,
        ideal * 100.0
    );
    if let Some(path) = &options.write {
        let mut text = format!("{out}\n\nEach run:\n\n{per_round}\n");
        for note in &error_notes {
            let _ = writeln!(text, "{note}");
        }
        if !error_notes.is_empty() {
            text.push('\n');
        }
        let _ = write!(
            text,
            "Medians over the rounds (timeouts and errors summed; ideal share to the slow \
             workers {:.1} %):\n\n{summary}",
            ideal * 100.0
        );
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
        println!("written to {}", path.display());
    }
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    assert!(
        options.seconds > 0 && options.rounds > 0 && options.utilization > 0.0,
        "--seconds, --rounds and --utilization must be above 0"
    );
    // Ctrl-C drops the run, and with it every process it started.
    let interrupted = tokio::select! {
        () = run(options) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        eprintln!("interrupted: every process stopped");
        std::process::exit(130);
    }
}
