//! The soak with fault injection: a real 3-member etcd, one `quaestor cluster` supervising
//! 20 `quaestor worker`s plus 2 members that ignore SIGTERM, and 2 `quaestor load-balancer`s
//! on that etcd, under a stream of discovery calls and real calls to the chosen workers, while
//! faults chosen at random from a seed hit them every few seconds. Everything a balancer
//! answers is checked against the ground truth the soak keeps (which workers it killed,
//! stopped or flipped NOT_SERVING, and which worker processes run, from /proc); one summary
//! line at the end, exit 1 if a figure is above its bound (see docs/soak.md).
//!
//!     cargo bench -p quaestor-cli --bench soak -- [--seconds N] [--seed S] [--keep]
//!         [--window-ms MS]
//!
//! Every process it starts is killed by pid (process group) when it ends, fails or gets
//! Ctrl-C (which ends the faults early and stops as at the end): the etcd members, the
//! balancers and the cluster by their handles; whatever still mentions the soak's temporary
//! folder (members, guards) by a sweep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quaestor_core::proto::example::WorkRequest;
use quaestor_core::proto::example::work_client::WorkClient;
use quaestor_core::proto::service_discovery::DiscoverServicesRequest;
use quaestor_core::proto::service_discovery::service_discovery_grpc_client::ServiceDiscoveryGrpcClient;
use quaestor_core::registry::etcd::DEFAULT_LEASE_TTL;
use quaestor_test_support::etcd::{EtcdCluster, etcdctl_bin};
use quaestor_test_support::{
    ChildProcess, OutputLines, cmdline, free_ports, process_running, processes_mentioning,
    quaestor_bin, run_command, wait_for,
};
use tonic::transport::{Channel, Endpoint};

/// Plain workers (the `Worker` agent), and how many a reload may add (20 ↔ 21).
const WORKERS: usize = 20;
/// Members that ignore SIGTERM (the `Sturdy` agent: a shell that ignores it and runs a worker
/// in a session of its own, out of reach of the signal to its group).
const STURDY: usize = 2;
/// The supervisor's heartbeat and health-check timeout, and the wait between a stop signal
/// and SIGKILL (the least the supervisor waits).
const HEARTBEAT_S: u64 = 1;
const MEMBER_TIMEOUT_S: u64 = 1;
const SHUTDOWN_S: u64 = 1;
/// Failed heartbeats in a row before the supervisor restarts a worker: short faults (a
/// NOT_SERVING flip, a SIGSTOP) may end before it does.
const FAILURES_BEFORE_RESTART: u32 = 4;
/// The balancers' probe interval and response timeout: a silent (stopped) worker is dropped
/// after about their sum.
const PROBE_INTERVAL_MS: u64 = 500;
const BALANCER_TIMEOUT_S: u64 = 1;
/// The detection window: how long after a fault a balancer may still name the faulted
/// worker (probe interval + response timeout + 1.5 s margin for scheduling on a loaded
/// machine and the ranking's refresh). Bound of `max detection`; answers later are `dead`.
const WINDOW: Duration =
    Duration::from_millis(PROBE_INTERVAL_MS + BALANCER_TIMEOUT_S * 1000 + 1500);
/// The cluster's registrar lease TTL (the default; the cluster has no key for it). A healthy
/// worker missing from etcd longer than this is a lost registration.
const LEASE_TTL: Duration = DEFAULT_LEASE_TTL;
/// Discovery clients per balancer, and the pace of each: 2 × 4 × 154/s ≈ 1230 calls/s.
const CLIENTS_PER_BALANCER: usize = 4;
const DISCOVERY_PERIOD: Duration = Duration::from_micros(6500);
/// Every this many answers, a client calls the top worker (DoWork).
const CALL_EVERY: u64 = 8;
/// The deadline of one discovery or worker call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A failed call is not counted when its worker had a fault (or its process ended) from
/// WINDOW before the call to this long after it: the call was in flight, or the balancer
/// could not know yet.
const CALL_AFTER_MARGIN: Duration = Duration::from_secs(2);
/// A healthy worker, in etcd for this long, that a balancer (up this long) did not name for
/// this long, counts as unseen (a balancer blind to part of the registry).
const UNSEEN_BOUND: Duration = Duration::from_secs(10);
/// After the lease was revoked, etcd must hold every healthy worker again within this long:
/// the lease TTL, as for any lost registration. The registrar sees the revoke at its next
/// renewal (a third of the TTL) and puts everything again at once; when an etcd member dies
/// at the same time, its keep-alive first moves to another member (a request timeout and
/// a backoff more): 6.6 s was seen in a 600 s run.
const REREGISTRATION_BOUND: Duration = LEASE_TTL;
/// How often the worker processes are looked up in /proc.
const SCAN_PERIOD: Duration = Duration::from_millis(100);
/// Workers younger than this are not checked for registration (they register once SERVING).
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(5);
/// The pause between two faults: uniformly 1 to 3 s.
const FAULT_GAP_MS: std::ops::Range<u64> = 1000..3000;
/// RSS bound: end ≤ 2 × start + 10 MiB.
const RSS_SLACK_KIB: u64 = 10 * 1024;
/// After the cluster stopped, how long its processes may take to go before they count as
/// orphans (the guards' 5 s grace, and some).
const ORPHAN_GRACE: Duration = Duration::from_secs(10);
/// How long starting everything may take.
const STARTUP: Duration = Duration::from_secs(90);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Ground truth

/// A fault (or an exit) that made a worker bad, from `since`.
#[derive(Debug, Clone)]
struct Bad {
    since: Instant,
    why: &'static str,
    /// The latest discovery (by its sending) that still named the worker after `since`.
    named_last: Option<Instant>,
}

#[derive(Debug)]
struct PortTruth {
    /// The worker process serving the port; 0 once it is gone.
    pid: i32,
    /// Of the `Sturdy` agent (its wrapper's pid), else 0.
    wrapper: i32,
    born: Instant,
    /// Since when it has been good (born, or recovered from its last fault).
    good_since: Instant,
    bad: Option<Bad>,
    /// When it was first seen healthy and missing from etcd (reset when found or bad).
    missing_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Truth {
    /// The detection window ([`WINDOW`] unless `--window-ms` says otherwise).
    window: Duration,
    ports: HashMap<u16, PortTruth>,
    /// Every fault or exit, by port (what excuses a failed call).
    events: HashMap<u16, Vec<Instant>>,
    /// The longest detection so far: seconds, and what it was.
    max_detection: (f64, String),
    dead_answers: u64,
    dead_examples: Vec<String>,
    lost_registrations: u64,
    lost_examples: Vec<String>,
    unknown_ports: u64,
    /// Successful reads of etcd's registrations.
    etcd_reads: u64,
    /// Since when each port has been in etcd (without a read missing it).
    registered_since: HashMap<u16, Instant>,
    /// When balancer N last named each port.
    named: HashMap<(usize, u16), Instant>,
    /// Healthy registered workers a balancer that runs did not name for longer than
    /// UNSEEN_BOUND (once per episode), and the episodes open.
    unseen: u64,
    unseen_examples: Vec<String>,
    unseen_open: HashSet<(usize, u16)>,
    /// When the registrar's lease was last revoked, until etcd holds every healthy worker
    /// again; the longest such time.
    revoked_at: Option<Instant>,
    max_reregistration: Duration,
}

impl Truth {
    /// Marks `port` bad from now, for `why` (a fault the soak makes).
    fn fault(&mut self, port: u16, why: &'static str) {
        let now = Instant::now();
        self.events.entry(port).or_default().push(now);
        if let Some(truth) = self.ports.get_mut(&port) {
            if truth.bad.is_none() {
                truth.bad = Some(Bad {
                    since: now,
                    why,
                    named_last: None,
                });
            }
            truth.missing_since = None;
        }
    }

    /// Ends `port`'s bad episode (its process serves again), taking its detection time.
    fn recovered(&mut self, port: u16) {
        let Some(truth) = self.ports.get_mut(&port) else {
            return;
        };
        truth.good_since = Instant::now();
        if let Some(bad) = truth.bad.take() {
            self.close(port, &bad);
        }
    }

    fn close(&mut self, port: u16, bad: &Bad) {
        let took = bad
            .named_last
            .map_or(0.0, |last| (last - bad.since).as_secs_f64());
        if took > self.max_detection.0 {
            self.max_detection = (took, format!("{} of :{port}", bad.why));
        }
    }

    /// Closes every open episode (at the end).
    fn close_all(&mut self) {
        let open: Vec<(u16, Bad)> = self
            .ports
            .iter()
            .filter_map(|(port, t)| Some((*port, t.bad.clone()?)))
            .collect();
        for (port, bad) in open {
            self.close(port, &bad);
        }
    }

    /// One answer of balancer `balancer`, asked at `sent`, naming `ports`.
    fn answer(&mut self, balancer: usize, sent: Instant, ports: &[u16]) {
        for port in ports {
            self.named.insert((balancer, *port), sent);
            self.unseen_open.remove(&(balancer, *port));
            let Some(truth) = self.ports.get_mut(port) else {
                self.unknown_ports += 1;
                continue;
            };
            let Some(bad) = truth.bad.as_mut() else {
                continue;
            };
            if sent <= bad.since {
                continue;
            }
            bad.named_last = Some(bad.named_last.map_or(sent, |t| t.max(sent)));
            let late = sent - bad.since;
            if late > self.window {
                self.dead_answers += 1;
                if self.dead_examples.len() < 5 {
                    self.dead_examples.push(format!(
                        "balancer {balancer} named :{port} {:.1} s after {}",
                        late.as_secs_f64(),
                        bad.why
                    ));
                }
            }
        }
    }

    /// One look at the worker processes: port → (pid, wrapper pid).
    fn scanned(&mut self, found: &HashMap<u16, (i32, i32)>) {
        let now = Instant::now();
        for (port, truth) in &mut self.ports {
            if truth.pid != 0 && found.get(port).is_none_or(|(pid, _)| *pid != truth.pid) {
                truth.pid = 0;
                self.events.entry(*port).or_default().push(now);
                if truth.bad.is_none() {
                    truth.bad = Some(Bad {
                        since: now,
                        why: "exit",
                        named_last: None,
                    });
                }
            }
        }
        for (&port, &(pid, wrapper)) in found {
            let fresh = self.ports.get(&port).is_none_or(|t| t.pid != pid);
            if fresh {
                self.recovered(port);
                self.ports.insert(
                    port,
                    PortTruth {
                        pid,
                        wrapper,
                        born: now,
                        good_since: now,
                        bad: None,
                        missing_since: None,
                    },
                );
            } else if let Some(truth) = self.ports.get_mut(&port) {
                truth.wrapper = wrapper;
            }
        }
    }

    /// What etcd holds (the ports registered), read at `at`.
    /// `balancers`: since when each balancer that runs has run.
    fn registered(&mut self, at: Instant, ports: &HashSet<u16>, balancers: &[(usize, Instant)]) {
        self.etcd_reads += 1;
        let back = self
            .ports
            .iter()
            .all(|(port, t)| t.pid == 0 || t.bad.is_some() || ports.contains(port));
        match self.revoked_at {
            Some(revoked) if at > revoked && back => {
                self.max_reregistration = self.max_reregistration.max(at - revoked);
                self.revoked_at = None;
            }
            _ => {}
        }
        self.registered_since.retain(|port, _| ports.contains(port));
        for port in ports {
            self.registered_since.entry(*port).or_insert(at);
        }
        for (port, truth) in &self.ports {
            let settled = |since: Instant| at.saturating_duration_since(since) > UNSEEN_BOUND;
            let expected = truth.pid != 0
                && truth.bad.is_none()
                && settled(truth.good_since)
                && self.registered_since.get(port).is_some_and(|t| settled(*t));
            if !expected {
                continue;
            }
            for &(b, up) in balancers {
                let last = self.named.get(&(b, *port)).copied();
                let seen = last.is_some_and(|t| !settled(t));
                if settled(up) && !seen && self.unseen_open.insert((b, *port)) {
                    self.unseen += 1;
                    if self.unseen_examples.len() < 5 {
                        self.unseen_examples.push(format!(
                            "balancer {b} did not name healthy registered :{port} for over {} s",
                            UNSEEN_BOUND.as_secs()
                        ));
                    }
                }
            }
        }
        for (port, truth) in &mut self.ports {
            let healthy = truth.pid != 0
                && truth.bad.is_none()
                && at.duration_since(truth.born) > STARTUP_ALLOWANCE;
            if !healthy || ports.contains(port) {
                truth.missing_since = None;
                continue;
            }
            let since = *truth.missing_since.get_or_insert(at);
            if at - since > LEASE_TTL {
                self.lost_registrations += 1;
                if self.lost_examples.len() < 5 {
                    self.lost_examples.push(format!(
                        ":{port} (pid {}) healthy and missing from etcd for {:.1} s",
                        truth.pid,
                        (at - since).as_secs_f64()
                    ));
                }
                truth.missing_since = None; // counted once per episode (restarts the clock)
            }
        }
    }

    /// The healthy plain (or sturdy) workers: (port, pid, wrapper).
    fn healthy(&self, sturdy: bool) -> Vec<(u16, i32, i32)> {
        let mut all: Vec<_> = self
            .ports
            .iter()
            .filter(|(_, t)| t.pid != 0 && t.bad.is_none() && (t.wrapper != 0) == sturdy)
            .map(|(port, t)| (*port, t.pid, t.wrapper))
            .collect();
        all.sort_unstable(); // deterministic picks for a seed
        all
    }

    /// Whether a call to `port` from `start` to `end` failed with no excuse.
    fn unexcused(&self, port: u16, start: Instant, end: Instant) -> bool {
        let from = start.checked_sub(self.window).unwrap_or(start);
        let to = end + CALL_AFTER_MARGIN;
        !self
            .events
            .get(&port)
            .is_some_and(|events| events.iter().any(|t| *t >= from && *t <= to))
    }
}

/// The worker processes of the soak (argv[0] is its `bin/quaestor` link): port → (pid, the
/// pid of its `Sturdy` wrapper or 0).
fn scan_workers(link: &str, wrapper_script: &str) -> HashMap<u16, (i32, i32)> {
    let mut found = HashMap::new();
    for (pid, argv) in processes_mentioning(link) {
        if argv.first().map(String::as_str) != Some(link)
            || argv.get(1).map(String::as_str) != Some("worker")
        {
            continue;
        }
        let Some(port) = argv
            .iter()
            .position(|a| a == "--port")
            .and_then(|i| argv.get(i + 1)?.parse::<u16>().ok())
        else {
            continue;
        };
        let wrapper = parent(pid)
            .filter(|ppid| cmdline(*ppid).is_some_and(|a| a.iter().any(|x| x == wrapper_script)))
            .unwrap_or(0);
        found.insert(port, (pid, wrapper));
    }
    found
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The processes

struct Balancer {
    process: Option<ChildProcess>,
    port: u16,
    spawned: Instant,
    /// VmRSS (KiB) of the current process, 5 s after it started.
    rss_start: Option<u64>,
    restarts: usize,
}

fn spawn_balancer(dir: &Path, index: usize, port: u16) -> ChildProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("balancer{index}.log")))
        .expect("balancer log");
    let mut command = Command::new(bin());
    command
        .args(["load-balancer", "--config"])
        .arg(dir.join("balancer.yml"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(log);
    let mut process = ChildProcess::spawn(&format!("balancer {index}"), command);
    let lines = OutputLines::of(&mut process);
    lines.expect("`listening on`", STARTUP, |l| {
        l.starts_with("listening on ").then_some(())
    });
    lines.drain();
    process
}

fn cluster_yaml(dir: &Path, etcd: &[String], workers: usize) -> String {
    let link = dir.join("bin/quaestor");
    let sturdy = dir.join("sturdy.sh");
    let agent = |kind: &str, program: &Path, args: &str, count: usize| {
        format!(
            "  - agentType: {kind}
    executablePath: {program}
    commandLineArguments: \"{args}\"
    processCount: {count}
    clusterShutdownAction: Kill
    serviceNames: [ Worker ]
    healthCheck:
      failuresBeforeRestart: {FAILURES_BEFORE_RESTART}
    restartBackoff:
      initialSeconds: 0.2
      maxSeconds: 2
      resetAfterSeconds: 10
",
            program = program.display()
        )
    };
    format!(
        "clusterConfig:
  name: soak
  heartBeatIntervalSeconds: {HEARTBEAT_S}
  memberResponseTimeOutSeconds: {MEMBER_TIMEOUT_S}
  memberMaxShutdownTimeSeconds: {SHUTDOWN_S}
  memberMaxStartupRetries: 1000
  etcd: [ {etcd} ]
agents:
{workers}{sturdy}",
        etcd = etcd.join(", "),
        workers = agent("Worker", &link, "worker --port {Port}", workers),
        sturdy = agent("Sturdy", &sturdy, "{Port}", STURDY),
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Kills (SIGKILL, by pid) whatever still mentions the soak's folder, on every exit.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    KillSturdy,
    RestartSturdy,
    FlipNotServing,
    KillEtcd,
    KillBalancer,
    StopWorker,
    RevokeLease,
    Reload,
}

const FAULTS: [Fault; 9] = [
    Fault::KillWorker,
    Fault::KillSturdy,
    Fault::RestartSturdy,
    Fault::FlipNotServing,
    Fault::KillEtcd,
    Fault::KillBalancer,
    Fault::StopWorker,
    Fault::RevokeLease,
    Fault::Reload,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "kill -9 worker",
            Fault::KillSturdy => "kill -9 TERM-ignoring member",
            Fault::RestartSturdy => "restart TERM-ignoring member (escalation)",
            Fault::FlipNotServing => "NOT_SERVING flip",
            Fault::KillEtcd => "kill -9 etcd member",
            Fault::KillBalancer => "kill -9 balancer",
            Fault::StopWorker => "SIGSTOP worker",
            Fault::RevokeLease => "revoke registrar lease",
            Fault::Reload => "reload config",
        }
    }
}

/// What a fault leaves to be undone later.
enum Undo {
    Continue { port: u16, pid: i32 },
    Serve { port: u16, pid: i32 },
    RestartEtcd(usize),
    RestartBalancer(usize),
}

struct Soak {
    dir: PathBuf,
    truth: Arc<Mutex<Truth>>,
    etcd: Mutex<EtcdCluster>,
    balancers: Arc<Mutex<Vec<Balancer>>>,
    cluster_pid: i32,
    control: PathBuf,
    workers_now: Mutex<usize>,
}

#[derive(Default)]
struct FaultStats {
    done: BTreeMap<Fault, usize>,
    leaders_killed: usize,
    escalations: usize,
    escalation_failures: Vec<String>,
    max_escalation: Duration,
}

impl Soak {
    fn signal(pid: i32, signal: Signal) -> bool {
        process_running(pid) && kill(Pid::from_raw(pid), signal).is_ok()
    }

    /// Makes `fault` happen; `false` if it cannot now (nothing to hit).
    fn inject(
        &self,
        fault: Fault,
        rng: &mut fastrand::Rng,
        stats: &mut FaultStats,
        undo: &mut Vec<(Instant, Undo)>,
    ) -> bool {
        let later = |rng: &mut fastrand::Rng, ms: std::ops::Range<u64>| {
            Instant::now() + Duration::from_millis(rng.u64(ms))
        };
        match fault {
            Fault::KillWorker | Fault::FlipNotServing | Fault::StopWorker => {
                let healthy = lock(&self.truth).healthy(false);
                if healthy.is_empty() {
                    return false;
                }
                let (port, pid, _) = healthy[rng.usize(..healthy.len())];
                let (why, signal) = match fault {
                    Fault::KillWorker => ("kill -9", Signal::SIGKILL),
                    Fault::FlipNotServing => ("NOT_SERVING", Signal::SIGUSR1),
                    _ => ("SIGSTOP", Signal::SIGSTOP),
                };
                lock(&self.truth).fault(port, why);
                if !Self::signal(pid, signal) {
                    return true;
                }
                match fault {
                    Fault::FlipNotServing => {
                        undo.push((later(rng, 1500..8000), Undo::Serve { port, pid }));
                    }
                    // Longer than the heartbeat; sometimes longer than the failures the
                    // supervisor waits for (then it kills the worker).
                    Fault::StopWorker => {
                        undo.push((later(rng, 1500..10_000), Undo::Continue { port, pid }));
                    }
                    _ => {}
                }
            }
            Fault::KillSturdy => {
                let sturdy = lock(&self.truth).healthy(true);
                if sturdy.is_empty() {
                    return false;
                }
                let (port, _, wrapper) = sturdy[rng.usize(..sturdy.len())];
                lock(&self.truth).fault(port, "kill -9 of its TERM-ignoring member");
                Self::signal(wrapper, Signal::SIGKILL);
            }
            Fault::RestartSturdy => {
                // `cluster restart Sturdy` (the agent: both members): a graceful stop, which
                // they ignore, so the supervisor must escalate to SIGKILL.
                let sturdy = lock(&self.truth).healthy(true);
                if sturdy.is_empty() {
                    return false;
                }
                for (port, _, _) in &sturdy {
                    lock(&self.truth).fault(*port, "restart of a TERM-ignoring member");
                }
                let started = Instant::now();
                let mut command = Command::new(bin());
                command
                    .args(["cluster", "restart", "Sturdy", "--control"])
                    .arg(&self.control);
                let done = run_command(command, Duration::from_secs(60));
                let took = started.elapsed();
                stats.escalations += 1;
                stats.max_escalation = stats.max_escalation.max(took);
                if done.code != Some(0) {
                    stats.escalation_failures.push(format!(
                        "`cluster restart Sturdy` exited {:?}: {}",
                        done.code,
                        done.stderr.trim()
                    ));
                }
                for (_, _, wrapper) in sturdy {
                    if process_running(wrapper) {
                        stats
                            .escalation_failures
                            .push(format!("wrapper {wrapper} still runs after the restart"));
                    }
                }
            }
            Fault::KillEtcd => {
                let mut etcd = lock(&self.etcd);
                if etcd.running().len() < 3 {
                    return false;
                }
                // The leader in half the cases (and by chance in some of the others).
                let leader = etcd.leader();
                let member = if rng.bool() { leader } else { rng.usize(..3) };
                if member == leader {
                    stats.leaders_killed += 1;
                }
                etcd.kill(member);
                undo.push((later(rng, 1000..5000), Undo::RestartEtcd(member)));
            }
            Fault::KillBalancer => {
                let mut balancers = lock(&self.balancers);
                if balancers.iter().any(|b| b.process.is_none()) {
                    return false;
                }
                // Always the last one: the first lives through the whole soak, so that its
                // RSS at the start and at the end bound its growth over the run.
                let index = balancers.len() - 1;
                // SIGKILL to its group; the drop reaps it.
                drop(balancers[index].process.take());
                undo.push((later(rng, 500..3000), Undo::RestartBalancer(index)));
            }
            Fault::RevokeLease => {
                let etcd = lock(&self.etcd);
                let listed = etcd.etcdctl(&["lease", "list"]);
                let leases: Vec<String> = listed
                    .stdout
                    .lines()
                    .skip(1)
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect();
                if leases.is_empty() {
                    return false;
                }
                for lease in leases {
                    let _ = etcd.etcdctl(&["lease", "revoke", &lease]);
                }
                let mut truth = lock(&self.truth);
                truth.revoked_at = truth.revoked_at.or(Some(Instant::now()));
            }
            Fault::Reload => {
                let mut workers = lock(&self.workers_now);
                *workers = if *workers == WORKERS {
                    WORKERS + 1
                } else {
                    WORKERS
                };
                let endpoints = lock(&self.etcd).endpoints();
                let path = self.dir.join("cluster.yml");
                write_atomically(&path, &cluster_yaml(&self.dir, &endpoints, *workers));
                Self::signal(self.cluster_pid, Signal::SIGHUP);
            }
        }
        *stats.done.entry(fault).or_default() += 1;
        true
    }

    fn undo(&self, undo: Undo) {
        match undo {
            Undo::Continue { port, pid } | Undo::Serve { port, pid } => {
                let signal = if matches!(undo, Undo::Continue { .. }) {
                    Signal::SIGCONT
                } else {
                    Signal::SIGUSR2
                };
                let mut truth = lock(&self.truth);
                let same = truth.ports.get(&port).is_some_and(|t| t.pid == pid);
                if same && Self::signal(pid, signal) {
                    truth.recovered(port);
                }
            }
            Undo::RestartEtcd(member) => lock(&self.etcd).restart(member),
            Undo::RestartBalancer(index) => {
                let (port, dir) = (lock(&self.balancers)[index].port, self.dir.clone());
                let process = spawn_balancer(&dir, index, port);
                let mut balancers = lock(&self.balancers);
                let slot = &mut balancers[index];
                slot.process = Some(process);
                slot.spawned = Instant::now();
                slot.rss_start = None;
                slot.restarts += 1;
            }
        }
    }

    /// Injects faults until `end` (or until `interrupted`), then undoes what is pending.
    fn run_faults(&self, seed: u64, end: Instant, interrupted: &AtomicBool) -> FaultStats {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut stats = FaultStats::default();
        let mut pending: Vec<(Instant, Undo)> = Vec::new();
        let mut next = Instant::now() + Duration::from_millis(rng.u64(FAULT_GAP_MS));
        loop {
            let now = Instant::now();
            if let Some(i) = pending.iter().position(|(at, _)| *at <= now) {
                let (_, undo) = pending.swap_remove(i);
                self.undo(undo);
                continue;
            }
            if now >= end || interrupted.load(Ordering::Relaxed) {
                break;
            }
            if now >= next {
                // A fault that cannot happen now (e.g. an etcd member is already down)
                // gives way to another.
                for _ in 0..FAULTS.len() {
                    let fault = FAULTS[rng.usize(..FAULTS.len())];
                    if self.inject(fault, &mut rng, &mut stats, &mut pending) {
                        break;
                    }
                }
                next = Instant::now() + Duration::from_millis(rng.u64(FAULT_GAP_MS));
                continue;
            }
            let wake = pending
                .iter()
                .map(|(at, _)| *at)
                .chain([next, end])
                .min()
                .unwrap_or(end);
            std::thread::sleep(
                wake.saturating_duration_since(now)
                    .min(Duration::from_millis(50)),
            );
        }
        for (_, undo) in pending {
            self.undo(undo);
        }
        stats
    }
}

// ---------------------------------------------------------------------------------------
// Clients and checks

#[derive(Default)]
struct Counters {
    discovery: AtomicU64,
    discovery_errors: AtomicU64,
    empty_answers: AtomicU64,
    calls: AtomicU64,
}

/// A failed call to a worker: (port, start, end, what).
type FailedCall = (u16, Instant, Instant, String);

async fn client(
    balancer: usize,
    port: u16,
    truth: Arc<Mutex<Truth>>,
    counters: Arc<Counters>,
    failures: Arc<Mutex<Vec<FailedCall>>>,
    workers: Arc<Mutex<HashMap<u16, Channel>>>,
    stop: Arc<AtomicBool>,
) {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    let mut discovery = ServiceDiscoveryGrpcClient::new(channel);
    let mut tick = tokio::time::interval(DISCOVERY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answers = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let request = DiscoverServicesRequest {
            scope: String::new(),
            service_name: "Worker".into(),
            max_count: 0,
        };
        counters.discovery.fetch_add(1, Ordering::Relaxed);
        let answer =
            tokio::time::timeout(CALL_TIMEOUT, discovery.discover_top_services(request)).await;
        let locations = match answer {
            Ok(Ok(answer)) => answer.into_inner().service_locations,
            _ => {
                counters.discovery_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let ports: Vec<u16> = locations
            .iter()
            .filter_map(|l| u16::try_from(l.port).ok())
            .collect();
        if ports.is_empty() {
            counters.empty_answers.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        lock(&truth).answer(balancer, sent, &ports);
        answers += 1;
        if answers % CALL_EVERY != 0 {
            continue;
        }
        let top = ports[0];
        let channel = lock(&workers)
            .entry(top)
            .or_insert_with(|| {
                Endpoint::from_shared(format!("http://127.0.0.1:{top}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy()
            })
            .clone();
        let start = Instant::now();
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let called = tokio::time::timeout(
            CALL_TIMEOUT,
            WorkClient::new(channel).do_work(WorkRequest::default()),
        )
        .await;
        let failed = match called {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Some("timed out".to_owned()),
        };
        if let Some(what) = failed {
            lock(&failures).push((top, start, Instant::now(), what));
        }
    }
}

/// Reads etcd's registrations every second until `stop`.
fn registration_checker(
    endpoints: String,
    truth: Arc<Mutex<Truth>>,
    balancers: Arc<Mutex<Vec<Balancer>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let mut command = Command::new(etcdctl_bin());
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--command-timeout=2s", "--dial-timeout=1s"])
            .args(["get", "--prefix", "--keys-only", "--", "services/"]);
        let read = run_command(command, Duration::from_secs(10));
        if read.code == Some(0) {
            // services//Worker/127.0.0.1/PORT/http
            let ports: HashSet<u16> = read
                .stdout
                .lines()
                .filter_map(|key| key.rsplit('/').nth(1)?.parse().ok())
                .collect();
            let up: Vec<(usize, Instant)> = lock(&balancers)
                .iter()
                .enumerate()
                .filter(|(_, b)| b.process.is_some())
                .map(|(i, b)| (i, b.spawned))
                .collect();
            lock(&truth).registered(at, &ports, &up);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(at.elapsed()));
    }
}

// ---------------------------------------------------------------------------------------

struct Options {
    seconds: u64,
    seed: u64,
    /// Keep the temporary folder (configs, logs) even when the run passes.
    keep: bool,
    /// The detection window (to see the checks fail: `--window-ms 100` makes every SIGSTOP
    /// a dead answer).
    window: Duration,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 600,
        seed: fastrand::u64(..),
        keep: false,
        window: WINDOW,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds"),
            "--seed" => options.seed = value("--seed"),
            "--keep" => options.keep = true,
            "--window-ms" => options.window = Duration::from_millis(value("--window-ms")),
            "--bench" => {}
            other => {
                panic!("unknown argument {other:?} (--seconds N, --seed S, --keep, --window-ms MS)")
            }
        }
    }
    options
}

fn main() {
    let options = options();
    let passed = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(soak(options));
    std::process::exit(if passed { 0 } else { 1 });
}

async fn soak(options: Options) -> bool {
    let Options {
        seconds,
        seed,
        keep,
        window,
    } = options;
    println!(
        "soak: {seconds} s, seed {seed} (repeat: make soak SOAK_SECONDS={seconds} SOAK_SEED={seed})"
    );
    let dir = tempfile::Builder::new()
        .prefix("quaestor-soak-")
        .tempdir()
        .expect("temp dir");
    let dir_path = dir.path().to_path_buf();
    let dir_text = dir_path.display().to_string();
    let _sweep = Sweep(dir_text.clone());
    std::fs::create_dir(dir_path.join("bin")).expect("bin dir");
    let link = dir_path.join("bin/quaestor");
    std::os::unix::fs::symlink(bin(), &link).expect("link the binary");
    let link_text = link.display().to_string();
    let sturdy = dir_path.join("sturdy.sh");
    let sturdy_text = sturdy.display().to_string();
    std::fs::write(
        &sturdy,
        format!(
            "#!/bin/sh\n# A member that ignores SIGTERM: its worker runs in a session of its own.\n\
             trap '' TERM\nsetsid {link_text} worker --port \"$1\" &\nwait $!\n"
        ),
    )
    .expect("write sturdy.sh");
    let mut permissions = std::fs::metadata(&sturdy).expect("sturdy.sh").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&sturdy, permissions).expect("chmod sturdy.sh");

    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    std::fs::write(
        dir_path.join("balancer.yml"),
        format!(
            "clusterConfig:\n  etcd: [ {} ]\nloadBalancerConfig:\n  hostName: 127.0.0.1\n  \
             port: 1\n  serviceResponseTimeoutSeconds: {BALANCER_TIMEOUT_S}\n  probeIntervalMs: {PROBE_INTERVAL_MS}\n",
            endpoints.join(", ")
        ),
    )
    .expect("balancer config");
    write_atomically(
        &dir_path.join("cluster.yml"),
        &cluster_yaml(&dir_path, &endpoints, WORKERS),
    );
    let control = dir_path.join("control.sock");
    let cluster_log = std::fs::File::create(dir_path.join("cluster.log")).expect("cluster log");
    let mut command = Command::new(bin());
    command
        .args(["cluster", "--config"])
        .arg(dir_path.join("cluster.yml"))
        .arg("--control")
        .arg(&control)
        .stdout(cluster_log.try_clone().expect("log"))
        .stderr(cluster_log);
    let mut cluster = ChildProcess::spawn("quaestor cluster", command);
    let cluster_pid = cluster.pid() as i32;

    let ports = free_ports(2);
    let balancers: Vec<Balancer> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Balancer {
            process: Some(spawn_balancer(&dir_path, i, port)),
            port,
            spawned: Instant::now(),
            rss_start: None,
            restarts: 0,
        })
        .collect();
    let balancers = Arc::new(Mutex::new(balancers));
    let truth = Arc::new(Mutex::new(Truth {
        window,
        ..Truth::default()
    }));

    // The ground truth from /proc, every SCAN_PERIOD, until the end.
    let stop_scan = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (truth, stop, link, sturdy) = (
            Arc::clone(&truth),
            Arc::clone(&stop_scan),
            link_text.clone(),
            sturdy_text.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let found = scan_workers(&link, &sturdy);
                lock(&truth).scanned(&found);
                std::thread::sleep(SCAN_PERIOD);
            }
        })
    };

    // Ready: every member runs and both balancers name all of them.
    let members = WORKERS + STURDY;
    wait_for("every member to run", STARTUP, || {
        (lock(&truth).healthy(false).len() == WORKERS && lock(&truth).healthy(true).len() == STURDY)
            .then_some(())
    });
    for &port in &ports {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_lazy();
        let mut discovery = ServiceDiscoveryGrpcClient::new(channel);
        let start = Instant::now();
        loop {
            let answer = discovery
                .discover_top_services(DiscoverServicesRequest {
                    scope: String::new(),
                    service_name: "Worker".into(),
                    max_count: 0,
                })
                .await;
            if answer.is_ok_and(|a| a.into_inner().service_locations.len() == members) {
                break;
            }
            assert!(
                start.elapsed() < STARTUP,
                "the balancer on :{port} never named all {members} members (logs in {dir_text})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "soak: ready: etcd 3 members, cluster pid {cluster_pid} with {WORKERS} workers + {STURDY} \
         TERM-ignoring members, balancers on :{} and :{}",
        ports[0], ports[1]
    );

    // Clients and checkers.
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let failures = Arc::new(Mutex::new(Vec::new()));
    let worker_channels = Arc::new(Mutex::new(HashMap::new()));
    let mut clients = Vec::new();
    for (b, &port) in ports.iter().enumerate() {
        for _ in 0..CLIENTS_PER_BALANCER {
            clients.push(tokio::spawn(client(
                b,
                port,
                Arc::clone(&truth),
                Arc::clone(&counters),
                Arc::clone(&failures),
                Arc::clone(&worker_channels),
                Arc::clone(&stop),
            )));
        }
    }
    let checker = {
        let (truth, balancers, stop) = (
            Arc::clone(&truth),
            Arc::clone(&balancers),
            Arc::clone(&stop),
        );
        let endpoints = endpoints.join(",");
        std::thread::spawn(move || registration_checker(endpoints, truth, balancers, stop))
    };
    let sampler = {
        let (balancers, stop) = (Arc::clone(&balancers), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for b in lock(&balancers).iter_mut() {
                    let settled = b.spawned.elapsed() >= Duration::from_secs(5);
                    if b.rss_start.is_none() && settled {
                        b.rss_start = b.process.as_ref().and_then(|p| rss_kib(p.pid()));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let soak = Arc::new(Soak {
        dir: dir_path.clone(),
        truth: Arc::clone(&truth),
        etcd: Mutex::new(etcd),
        balancers: Arc::clone(&balancers),
        cluster_pid,
        control,
        workers_now: Mutex::new(WORKERS),
    });
    // Ctrl-C ends the faults early; the run then stops and cleans up as at its end.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("soak: interrupted; stopping");
                interrupted.store(true, Ordering::Relaxed);
            }
        });
    }
    let stats = {
        let (soak, interrupted) = (Arc::clone(&soak), Arc::clone(&interrupted));
        tokio::task::spawn_blocking(move || soak.run_faults(seed, end, &interrupted))
            .await
            .expect("the fault thread panicked")
    };
    // Faults undone: let the balancers settle for one window, still checked.
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = checker.join();
    let _ = sampler.join();
    let elapsed = started.elapsed().as_secs_f64();

    // RSS at the end, then the balancers stop.
    let rss: Vec<(u64, u64, usize)> = lock(&balancers)
        .iter()
        .map(|b| {
            let end = b
                .process
                .as_ref()
                .and_then(|p| rss_kib(p.pid()))
                .unwrap_or(0);
            (b.rss_start.unwrap_or(end), end, b.restarts)
        })
        .collect();
    for b in lock(&balancers).iter_mut() {
        drop(b.process.take());
    }

    // The cluster stops (SIGTERM to it alone); whatever of it remains after ORPHAN_GRACE is
    // an orphan.
    let _ = kill(Pid::from_raw(cluster_pid), Signal::SIGTERM);
    let cluster_exit = cluster.wait_exit(Duration::from_secs(60));
    stop_scan.store(true, Ordering::Relaxed);
    let _ = scanner.join();
    let grace_end = Instant::now() + ORPHAN_GRACE;
    let mut left = processes_mentioning(&dir_text);
    while !left.is_empty() && Instant::now() < grace_end {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&dir_text);
    }
    let orphans = left.len();
    for (pid, argv) in &left {
        eprintln!("soak: orphan {pid}: {}", argv.join(" "));
    }

    // Figures.
    let mut truth = lock(&truth);
    truth.close_all();
    let failures = lock(&failures);
    let failed: Vec<&FailedCall> = failures
        .iter()
        .filter(|(port, start, end, _)| truth.unexcused(*port, *start, *end))
        .collect();
    let discovery = counters.discovery.load(Ordering::Relaxed);
    let faults: usize = stats.done.values().sum();
    let window = window.as_secs_f64();
    let rss_ok = rss
        .iter()
        .all(|(start, end, _)| *end <= 2 * start + RSS_SLACK_KIB);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss_text = rss
        .iter()
        .map(|(start, end, restarts)| {
            let new = if *restarts > 0 {
                format!(" (restarted {restarts}x: the last one's start)")
            } else {
                String::new()
            };
            format!("{:.1}/{:.1} MiB{new}", mib(*start), mib(*end))
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!("soak: faults by kind:");
    for (fault, count) in &stats.done {
        println!("  {:<44} {count}", fault.name());
    }
    println!(
        "soak: etcd leaders killed {}; escalations {} (longest {:.1} s, failures {}); \
         discovery errors {} (balancer down or restarting), empty answers {} (e.g. lease \
         revoked, until re-registered); failed calls excused (fault within the window) {}; \
         answers naming unknown ports {}; etcd registration reads {}; cluster exit {:?}",
        stats.leaders_killed,
        stats.escalations,
        stats.max_escalation.as_secs_f64(),
        stats.escalation_failures.len(),
        counters.discovery_errors.load(Ordering::Relaxed),
        counters.empty_answers.load(Ordering::Relaxed),
        failures.len() - failed.len(),
        truth.unknown_ports,
        truth.etcd_reads,
        cluster_exit,
    );
    for what in stats
        .escalation_failures
        .iter()
        .chain(&truth.dead_examples)
        .chain(&truth.lost_examples)
        .chain(&truth.unseen_examples)
    {
        println!("soak:   {what}");
    }
    for (port, start, end, what) in failed.iter().take(5) {
        println!(
            "soak:   failed call to :{port} at +{:.1} s ({:.0} ms): {what}",
            (*start - started).as_secs_f64(),
            (*end - *start).as_secs_f64() * 1000.0
        );
    }
    println!(
        "soak: bounds: dead answers 0, lost registrations 0 (missing > lease TTL {} s), failed \
         calls 0 (excused: a fault or exit of the worker from {window:.1} s before to {} s \
         after the call), max detection <= window {window:.1} s (default: probe {PROBE_INTERVAL_MS} \
         ms + response timeout {BALANCER_TIMEOUT_S} s + 1.5 s), balancer RSS end <= 2 x start + \
         10 MiB, orphans 0 ({} s after the cluster stopped), escalation failures 0, unseen 0 \
         (healthy registered workers a running balancer did not name for {} s), re-registration \
         after a revoked lease <= {:.1} s; heartbeat {HEARTBEAT_S} s",
        LEASE_TTL.as_secs(),
        CALL_AFTER_MARGIN.as_secs(),
        ORPHAN_GRACE.as_secs(),
        UNSEEN_BOUND.as_secs(),
        REREGISTRATION_BOUND.as_secs_f64()
    );
    let reregistration_ok = truth.max_reregistration <= REREGISTRATION_BOUND;
    let pass = reregistration_ok
        && truth.dead_answers == 0
        && truth.lost_registrations == 0
        && failed.is_empty()
        && truth.max_detection.0 <= window
        && rss_ok
        && orphans == 0
        && stats.escalation_failures.is_empty()
        && truth.unseen == 0;
    println!(
        "soak: {seconds} s seed {seed} faults {faults} discovery {discovery} ({:.0}/s) calls {} \
         dead answers {} lost registrations {} failed calls {} max detection {:.1} s ({}) \
         balancer RSS {rss_text} orphans {orphans} unseen {} re-registration {:.1} s — {}",
        discovery as f64 / elapsed,
        counters.calls.load(Ordering::Relaxed),
        truth.dead_answers,
        truth.lost_registrations,
        failed.len(),
        truth.max_detection.0,
        if truth.max_detection.1.is_empty() {
            "none"
        } else {
            &truth.max_detection.1
        },
        truth.unseen,
        truth.max_reregistration.as_secs_f64(),
        if pass { "PASS" } else { "FAIL" }
    );
    if !pass || keep {
        // Keep the logs of a failed run.
        let kept = dir.keep();
        println!("soak: logs kept in {}", kept.display());
    }
    pass
}
