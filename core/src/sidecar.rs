//! The sidecar: makes one worker that knows nothing of quaestor balanceable. It probes the
//! worker's health (gRPC health, a TCP connect, an HTTP GET or a command), serves health and
//! load for the worker's service on a port of its own (mirroring the worker's health, and
//! its load when the worker reports one), and keeps the worker registered while, and only
//! while, it is healthy.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::Code;

use crate::balancer::counters::LatencyHistogram;
use crate::client::{ClientError, Target};
use crate::load::ServiceLoad;
use crate::registry::ServiceLocation;
use crate::registry::etcd::EtcdRegistrar;
use crate::reporter::{Reporter, ReporterError};
use crate::server::health::ServingStatus;

/// How the worker's health is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `grpc.health.v1.Health/Check` of the service (the default).
    Grpc,
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String },
    /// The command (split like a shell would, never run by one) exits 0.
    Exec { argv: Vec<String> },
}

impl FromStr for Check {
    type Err = String;

    /// `grpc`, `tcp`, `http:/PATH`, `exec:COMMAND ARGS`.
    fn from_str(text: &str) -> Result<Check, String> {
        match text.split_once(':') {
            None if text == "grpc" => Ok(Check::Grpc),
            None if text == "tcp" => Ok(Check::Tcp),
            Some(("http", path)) if path.starts_with('/') => Ok(Check::Http {
                path: path.to_owned(),
            }),
            Some(("exec", command)) => match shlex::split(command) {
                Some(argv) if !argv.is_empty() => Ok(Check::Exec { argv }),
                _ => Err(format!(
                    "exec:{command:?}: no command, or unbalanced quotes"
                )),
            },
            _ => Err(format!(
                "{text:?} is not a check: use grpc, tcp, http:/PATH or exec:COMMAND"
            )),
        }
    }
}

/// What the sidecar watches and how.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// The worker's service (the name served, reported and registered).
    pub service: String,
    /// Where the worker serves.
    pub host: String,
    pub port: u16,
    pub check: Check,
    /// Time between two probes.
    pub interval: Duration,
    /// Bound of one probe.
    pub timeout: Duration,
    /// Requests the worker takes at once, reported unless the worker reports its own load.
    pub capacity: i32,
}

/// The registration kept while the worker is healthy.
pub struct Registration {
    pub registrar: EtcdRegistrar,
    /// The worker's location, with the sidecar as control endpoint.
    pub location: ServiceLocation,
}

/// What the sidecar counts as it probes and registers (read by its HTTP listener).
#[derive(Debug, Default)]
pub struct SidecarCounters {
    /// Probes that found the worker healthy.
    pub probes_ok: AtomicU64,
    /// Probes that found it unhealthy (or got no answer within the timeout).
    pub probes_failed: AtomicU64,
    /// How long each probe took.
    pub probe_latency: LatencyHistogram,
    /// Whether the worker is registered now (false without etcd).
    pub registered: AtomicBool,
    /// Registrations or withdrawals that failed (retried at the next probe).
    pub registration_errors: AtomicU64,
}

/// One worker's sidecar: its reporter (serve it with [`Reporter::serve`]) and its probe loop
/// ([`Sidecar::run`]).
pub struct Sidecar {
    options: SidecarOptions,
    reporter: Reporter,
    load: Arc<ServiceLoad>,
    pid: Arc<AtomicU32>,
    healthy: watch::Sender<Option<bool>>,
    counters: Arc<SidecarCounters>,
}

impl Sidecar {
    /// The service starts NOT_SERVING, until the first probe says otherwise.
    pub fn new(options: SidecarOptions) -> Result<Sidecar, ReporterError> {
        let reporter = Reporter::new();
        let load = reporter.add_service(&options.service, options.capacity)?;
        reporter.set_all_serving(false);
        Ok(Sidecar {
            options,
            reporter,
            load,
            pid: Arc::new(AtomicU32::new(0)),
            healthy: watch::channel(None).0,
            counters: Arc::default(),
        })
    }

    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// The worker's process, whose CPU time is its utilisation when it reports no load of
    /// its own (0: none known).
    pub fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
    }

    /// What it watches and how.
    pub fn options(&self) -> &SidecarOptions {
        &self.options
    }

    /// Its probe and registration counts.
    pub fn counters(&self) -> &SidecarCounters {
        &self.counters
    }

    /// The worker's health as last probed (None before the first probe).
    pub fn healthy(&self) -> watch::Receiver<Option<bool>> {
        self.healthy.subscribe()
    }

    /// Probes the worker every interval, mirrors its health and load, and registers it while
    /// it is healthy, until `stop` resolves; then withdraws the registration (revoking its
    /// lease) and marks the service NOT_SERVING.
    pub async fn run(
        &self,
        registration: Option<Registration>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let target = Target::new(
            &format!("{}:{}", self.options.host, self.options.port),
            None,
            self.options.timeout,
        )
        .ok();
        let mut cpu = CpuSampler::default();
        let mut registered = false;
        loop {
            let started = Instant::now();
            let healthy = self.probe(target.as_ref()).await;
            let counters = &self.counters;
            counters.probe_latency.observe(started.elapsed());
            if healthy {
                counters.probes_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.probes_failed.fetch_add(1, Ordering::Relaxed);
            }
            if *self.healthy.borrow() != Some(healthy) {
                tracing::info!(service = %self.options.service, healthy, "worker health");
                self.reporter.set_all_serving(healthy);
                self.healthy.send_replace(Some(healthy));
            }
            if let Some(registration) = &registration {
                if healthy != registered {
                    let outcome = if healthy {
                        registration
                            .registrar
                            .register(&registration.location)
                            .await
                    } else {
                        registration
                            .registrar
                            .deregister(&registration.location)
                            .await
                    };
                    match outcome {
                        Ok(()) => {
                            registered = healthy;
                            counters.registered.store(registered, Ordering::Relaxed);
                            tracing::info!(location = %registration.location, registered, "registration");
                        }
                        Err(error) => {
                            counters.registration_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%error, "registration not changed; retried at the next probe")
                        }
                    }
                }
            }
            if healthy {
                self.mirror_load(target.as_ref(), &mut cpu).await;
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(self.options.interval) => {}
            }
        }
        if let Some(registration) = registration {
            self.counters.registered.store(false, Ordering::Relaxed);
            if let Err(error) = registration.registrar.stop().await {
                tracing::warn!(%error, "the registration's lease was not revoked; it expires by itself");
            }
        }
        self.reporter.set_all_serving(false);
    }

    async fn probe(&self, target: Option<&Target>) -> bool {
        let o = &self.options;
        let timeout = o.timeout;
        match &o.check {
            Check::Grpc => {
                let Some(target) = target else { return false };
                let Ok(channel) = target.connect().await else {
                    return false;
                };
                matches!(
                    target.check_health(channel, &o.service).await,
                    Ok(ServingStatus::Serving)
                )
            }
            Check::Tcp => tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((o.host.as_str(), o.port)),
            )
            .await
            .is_ok_and(|c| c.is_ok()),
            Check::Http { path } => {
                let status =
                    tokio::time::timeout(timeout, http_status(&o.host, o.port, path)).await;
                matches!(status, Ok(Ok(code)) if (200..400).contains(&code))
            }
            Check::Exec { argv } => {
                let mut command = tokio::process::Command::new(&argv[0]);
                command
                    .args(&argv[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .kill_on_drop(true);
                match tokio::time::timeout(timeout, command.status()).await {
                    Ok(Ok(status)) => status.success(),
                    _ => false,
                }
            }
        }
    }

    /// The worker's own load report when it has one; else the configured capacity and the
    /// worker process's CPU use.
    async fn mirror_load(&self, target: Option<&Target>, cpu: &mut CpuSampler) {
        if self.options.check == Check::Grpc {
            if let Some(target) = target {
                let report = match target.connect().await {
                    Ok(channel) => target.report_load(channel, "", &self.options.service).await,
                    Err(error) => Err(error),
                };
                match report {
                    Ok(report) => {
                        if let Some(stats) = report.server_stats {
                            self.load.reset_current_requests(stats.current_requests);
                            self.load.set_capacity(stats.request_capacity);
                            self.load
                                .set_server_utilization(Some(stats.server_utilization));
                            self.load
                                .set_memory_usage_percent(Some(stats.server_memory_usage_percent));
                        }
                        self.load.set_known_load_rate(report.known_load_rate);
                        return;
                    }
                    Err(ClientError::Rpc { status, .. })
                        if matches!(status.code(), Code::Unimplemented | Code::OutOfRange) => {}
                    Err(_) => return,
                }
            }
        }
        let pid = self.pid.load(Ordering::Relaxed);
        let utilization = (pid != 0).then(|| cpu.sample(pid)).flatten();
        self.load.set_server_utilization(utilization);
    }
}

/// The status code of `GET path` over plain HTTP/1.0.
async fn http_status(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: quaestor-sidecar\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

/// A process's CPU use between two samples, as a fraction of all cores.
#[derive(Debug, Default)]
struct CpuSampler {
    last: Option<(u32, Duration, Instant)>,
}

impl CpuSampler {
    fn sample(&mut self, pid: u32) -> Option<f64> {
        let now = Instant::now();
        let used = process_cpu_time_of(pid)?;
        let previous = self.last.replace((pid, used, now));
        let (last_pid, last_used, then) = previous?;
        let wall = now.saturating_duration_since(then).as_secs_f64();
        if last_pid != pid || wall <= 0.0 {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some((used.saturating_sub(last_used).as_secs_f64() / wall / cores).clamp(0.0, 1.0))
    }
}

/// User + system CPU time of process `pid` (from /proc; clock ticks are 1/100 s on Linux).
fn process_cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse() {
        assert_eq!("grpc".parse(), Ok(Check::Grpc));
        assert_eq!("tcp".parse(), Ok(Check::Tcp));
        assert_eq!(
            "http:/healthz".parse(),
            Ok(Check::Http {
                path: "/healthz".into()
            })
        );
        assert_eq!(
            "exec:test -f 'a b'".parse(),
            Ok(Check::Exec {
                argv: vec!["test".into(), "-f".into(), "a b".into()]
            })
        );
        for bad in ["", "http", "http:healthz", "exec:", "exec:'open", "udp"] {
            assert!(bad.parse::<Check>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_time_of_this_process_is_read_from_proc() {
        let mine = process_cpu_time_of(std::process::id()).expect("/proc/self/stat");
        // Burn some CPU, then it must have grown.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let later = process_cpu_time_of(std::process::id()).expect("/proc/self/stat");
        assert!(later > mine, "{mine:?} then {later:?}");
        assert_eq!(process_cpu_time_of(u32::MAX), None);
    }
}
