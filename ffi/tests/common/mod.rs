//! What the native-language tests share: where libquaestor and its header are, compiling
//! programs against them, and driving a sample worker over its stdin.
//!
//! Every sample worker (C, C++, C#) speaks the same protocol, so that one test body drives
//! them all: `hello_worker PORT [ETCD_ENDPOINTS ADVERTISED_HOST]` serves health and load for
//! the service `Worker` (capacity 4) on 127.0.0.1:PORT (0: a free one), registers itself in
//! etcd when asked, prints `listening on 127.0.0.1:PORT`, then reads commands from stdin, one
//! per line, answering each with `ok N` (N: requests in flight after it):
//! `start` (a request starts and stays in flight), `end` (one ends), `not-serving`,
//! `serving`, `memory P` (the host's memory is reported as P percent in use; negative:
//! measured), `quit` (frees the reporter and exits 0). At the end of stdin it waits for
//! SIGTERM or SIGINT, then does the same as `quit`.

#![allow(dead_code)]

pub mod cancel;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quaestor_test_support::{ChildProcess, Finished, run_command};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned()
}

/// `ffi/include`: quaestor.h.
pub fn include_dir() -> PathBuf {
    repo().join("ffi/include")
}

/// The folder holding libquaestor.so and libquaestor.a as this test run built them (cargo
/// builds the library's every crate type into `deps/` for the tests).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let deps = exe.parent().expect("deps").to_owned();
    for lib in ["libquaestor.so", "libquaestor.a"] {
        assert!(
            deps.join(lib).is_file(),
            "{} missing: build quaestor-ffi (cargo build -p quaestor-ffi)",
            deps.join(lib).display()
        );
    }
    deps
}

/// The `quaestor` binary (built by `make test` before the tests run; `QUAESTOR_BIN` wins).
pub fn quaestor_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("QUAESTOR_BIN") {
        return PathBuf::from(bin);
    }
    let debug = lib_dir().parent().expect("target/debug").to_owned();
    let bin = debug.join("quaestor");
    assert!(
        bin.is_file(),
        "{} missing: build it first (cargo build -p quaestor-cli)",
        bin.display()
    );
    bin
}

/// Libraries a program linked with the static libquaestor.a also needs.
pub const STATIC_SYSTEM_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"];

/// Runs a build command (compiler, linker); panics with its output unless it succeeds.
pub fn build(command: Command) {
    let shown = format!("{command:?}");
    let finished = run_command(command, Duration::from_secs(300));
    assert_eq!(
        finished.code,
        Some(0),
        "build failed: {shown}\n{}\n{}",
        finished.stdout,
        finished.stderr
    );
}

/// Runs a program to its end; its outcome.
pub fn run(command: Command) -> Finished {
    run_command(command, TIMEOUT)
}

/// A sample worker, driven over its stdin.
pub struct SampleWorker {
    pub process: ChildProcess,
    pub port: u16,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl SampleWorker {
    /// Starts `command` (a sample worker with its arguments) and waits for its
    /// `listening on ADDR` line.
    pub fn start(mut command: Command) -> SampleWorker {
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut process = ChildProcess::spawn("sample worker", command);
        let stdin = process.child_mut().stdin.take().expect("stdin");
        let stdout = process.child_mut().stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut worker = SampleWorker {
            process,
            port: 0,
            stdin,
            lines,
        };
        let line = worker.line("`listening on ADDR`", |l| l.starts_with("listening on "));
        let addr: std::net::SocketAddr = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        worker.port = addr.port();
        worker
    }

    /// The next line `pick` accepts, other lines echoed; panics after [`TIMEOUT`].
    fn line(&self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pick(&line) => return line,
                Ok(line) => eprintln!("[sample] {line}"),
                Err(e) => panic!("no {what} from the sample worker: {e}"),
            }
        }
    }

    /// Sends one command; returns N of its `ok N` answer.
    pub fn command(&mut self, command: &str) -> i32 {
        writeln!(self.stdin, "{command}").expect("write to the sample");
        self.stdin.flush().expect("flush");
        let line = self.line(&format!("the answer to {command:?}"), |l| {
            l.starts_with("ok")
        });
        line["ok".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// `discover BALANCER`: which worker the sample's own discovery client was offered
    /// (`HOST:PORT`, or `none`).
    pub fn discover(&mut self, balancer: &str) -> String {
        writeln!(self.stdin, "discover {balancer}").expect("write to the sample");
        self.stdin.flush().expect("flush");
        let line = self.line("a `found` line", |l| l.starts_with("found "));
        self.line("the answer to discover", |l| l.starts_with("ok"));
        line["found ".len()..].trim().to_owned()
    }

    /// `quit`, then the exit code.
    pub fn quit(mut self) -> Option<i32> {
        writeln!(self.stdin, "quit").expect("write to the sample");
        self.stdin.flush().expect("flush");
        self.process.wait_exit(TIMEOUT).code()
    }
}

/// What `quaestor load 127.0.0.1:PORT Worker --json` says: current requests, or None if
/// it does not answer with a load.
pub fn current_requests(port: u16) -> Option<i64> {
    load_field(port, "current_requests")
}

/// The `server_memory_usage_percent` of the ReportLoad answer for `Worker`, as `quaestor
/// load --json` shows it.
pub fn memory_usage_percent(port: u16) -> Option<f64> {
    load_field(port, "server_memory_usage_percent")
}

/// The number `key` of what `quaestor load 127.0.0.1:PORT Worker --json` says (a real
/// ReportLoad), or None if it does not answer with a load.
fn load_field<T: std::str::FromStr>(port: u16, key: &str) -> Option<T> {
    let finished = quaestor_test_support::run(
        &quaestor_bin(),
        &["load", &format!("127.0.0.1:{port}"), "Worker", "--json"],
        TIMEOUT,
    );
    if finished.code != Some(0) {
        return None;
    }
    let key = format!("\"{key}\":");
    let at = finished.stdout.find(&key)? + key.len();
    let number: String = finished.stdout[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        .collect();
    number.parse().ok()
}

/// `application_utilization` of the first report of an ORCA stream
/// (`xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`, sent at once) from the worker on
/// 127.0.0.1:PORT, read by a tonic client.
pub fn orca_utilization(port: u16) -> f64 {
    use quaestor_core::proto::xds::service::orca::v3::OrcaLoadReportRequest;
    use quaestor_core::proto::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let mut orca = OpenRcaServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .expect("connect");
            let mut reports = orca
                .stream_core_metrics(OrcaLoadReportRequest::default())
                .await
                .expect("StreamCoreMetrics")
                .into_inner();
            let report = reports.message().await.expect("a report").expect("open");
            report.application_utilization
        })
        .await
        .expect("an ORCA report within the timeout")
    })
}

/// What `quaestor health 127.0.0.1:PORT Worker` exits with (0 SERVING, 1 NOT_SERVING).
pub fn health(port: u16) -> Option<i32> {
    quaestor_test_support::run(
        &quaestor_bin(),
        &["health", &format!("127.0.0.1:{port}"), "Worker"],
        TIMEOUT,
    )
    .code
}

/// The whole conversation every sample worker must hold: requests in flight show in the load
/// report and in ORCA's application_utilization, health flips show in the health service, `quit` exits 0 and closes the port.
pub fn drive_sample(mut worker: SampleWorker) {
    let port = worker.port;
    assert_eq!(health(port), Some(0), "SERVING at start");
    assert_eq!(current_requests(port), Some(0));
    assert_eq!(worker.command("start"), 1);
    assert_eq!(worker.command("start"), 2);
    assert_eq!(current_requests(port), Some(2), "two requests in flight");
    // ORCA's application_utilization: in flight over the capacity of 4.
    assert_eq!(orca_utilization(port), 0.5, "two requests in flight, ORCA");
    assert_eq!(worker.command("end"), 1);
    assert_eq!(current_requests(port), Some(1));
    assert_eq!(orca_utilization(port), 0.25, "one request in flight, ORCA");
    worker.command("not-serving");
    assert_eq!(health(port), Some(1), "NOT_SERVING");
    worker.command("serving");
    assert_eq!(health(port), Some(0), "SERVING again");
    // Two set figures in turn: a measured one could not match both.
    worker.command("memory 42.5");
    assert_eq!(
        memory_usage_percent(port),
        Some(42.5),
        "the set memory usage"
    );
    worker.command("memory 37.25");
    assert_eq!(memory_usage_percent(port), Some(37.25), "set again");
    worker.command("memory -1");
    let measured = memory_usage_percent(port).expect("a load");
    assert!(
        (0.0..=100.0).contains(&measured),
        "measured again: {measured}"
    );
    assert_eq!(worker.command("end"), 0);
    assert_eq!(orca_utilization(port), 0.0, "none in flight, ORCA");
    assert_eq!(worker.quit(), Some(0));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the reporter stopped with the worker"
    );
}

/// The worker `start(etcd_endpoints, advertised_host)` starts registers itself in a real etcd
/// and a real `quaestor load-balancer` over that etcd offers it; `quit` removes it again.
pub fn registered_and_discovered(start: impl FnOnce(&str, &str) -> SampleWorker) {
    let etcd = quaestor_test_support::etcd::EtcdCluster::single();
    let endpoint = etcd.endpoint(0);
    let worker = start(&endpoint, "127.0.0.1");
    let key = format!("services//Worker/127.0.0.1/{}/http", worker.port);
    assert_eq!(etcd.get_prefix_keys("services/"), [key], "registered");

    let etcd_port = endpoint.rsplit(':').next().expect("port").to_owned();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.loadbalancer.config.yml");
    std::fs::write(
        &config,
        format!(
            "loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 1\n  probeIntervalMs: 100\n\
             agents:\n  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {etcd_port} ]\n"
        ),
    )
    .expect("write");
    let balancer = quaestor_test_support::spawn_listening(
        &quaestor_bin(),
        &[
            "load-balancer",
            "--config",
            config.to_str().expect("utf-8"),
            "--port",
            "0",
        ],
    );
    let offered =
        quaestor_test_support::wait_for("the balancer to offer the worker", TIMEOUT, || {
            let out = quaestor_test_support::run(
                &quaestor_bin(),
                &["discover", "--top", &balancer.addr.to_string(), "Worker"],
                TIMEOUT,
            );
            (out.code == Some(0)).then(|| out.stdout.trim().to_owned())
        });
    assert_eq!(offered, format!("127.0.0.1:{}", worker.port));
    // The sample asks too, through its own discovery client (one connection for all three).
    let mut worker = worker;
    for _ in 0..3 {
        assert_eq!(
            worker.discover(&balancer.addr.to_string()),
            format!("127.0.0.1:{}", worker.port)
        );
    }
    assert_eq!(worker.quit(), Some(0));
    assert!(
        etcd.get_prefix_keys("services/").is_empty(),
        "deregistered when the reporter was freed"
    );
}

/// Runs a test program (`name`, for messages) to its end: it must exit 0, print `marker`,
/// and report no AddressSanitizer error and no panic caught inside libquaestor.
pub fn passes(command: Command, name: &str, marker: &str) {
    let finished = run(command);
    eprintln!("{}", finished.stdout);
    assert_eq!(
        finished.code,
        Some(0),
        "{name} failed:\n{}\n{}",
        finished.stdout,
        finished.stderr
    );
    assert!(
        finished.stdout.contains(marker),
        "{name}: {}",
        finished.stdout
    );
    for problem in ["AddressSanitizer", "panicked"] {
        assert!(
            !finished.stderr.contains(problem),
            "{name}: {problem}: {}",
            finished.stderr
        );
    }
}
