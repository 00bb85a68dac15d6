//! Real etcd servers for tests: a cluster of 1 or more members on 127.0.0.1, each a child
//! process of the test, with its data and its log in a temporary folder.
//!
//! Tests that need etcd fail (they do not skip) when it is not installed: the binaries come
//! from `ETCD_BIN` / `ETCDCTL_BIN`, else from `PATH` or `/usr/bin` (Debian's `etcd-server`
//! and `etcd-client` packages).
//!
//! etcd's own output goes to `mN.log` in the cluster's folder, not to the test's output. When
//! a test panics while a cluster is alive, the end of each member's log is printed then.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{ChildProcess, Finished, run_command, wait_for};

/// How long a member may take to answer `endpoint health` after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the running members may take to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a member may take to exit after SIGTERM (or SIGKILL).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `etcdctl` run may take before it is killed. etcdctl's own limits (dial 2 s,
/// command 5 s) are well below it, so it normally reports its errors itself.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times [`EtcdCluster::start`] starts over when a port it picked was taken.
const START_ATTEMPTS: usize = 3;
/// Raft timings (ms), shorter than etcd's defaults (100/1000) so that a new leader is
/// elected quickly after a test kills the old one.
const HEARTBEAT_MS: &str = "50";
const ELECTION_MS: &str = "500";
/// How many lines of each member's log to print when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// The `etcd` server binary: `ETCD_BIN`, else `etcd` on `PATH` or in `/usr/bin`. Panics when
/// there is none.
pub fn etcd_bin() -> PathBuf {
    find_program("etcd", "ETCD_BIN", "etcd-server")
}

/// The `etcdctl` client binary: `ETCDCTL_BIN`, else `etcdctl` on `PATH` or in `/usr/bin`.
/// Panics when there is none.
pub fn etcdctl_bin() -> PathBuf {
    find_program("etcdctl", "ETCDCTL_BIN", "etcd-client")
}

fn find_program(name: &str, env_var: &str, debian_package: &str) -> PathBuf {
    let missing = |why: String| -> ! {
        panic!(
            "{name} not found ({why}): install Debian {debian_package} (scripts/setup.sh does), \
             or set {env_var} to the binary. Tests that need etcd fail without it."
        )
    };
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            missing(format!("{env_var}={} is not a file", path.display()));
        }
        return path;
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| missing("not on PATH nor in /usr/bin".to_owned()))
}

/// One etcd member: where it listens and keeps its data, and its process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    /// Clients speak TLS to it.
    tls: bool,
    client_port: u16,
    peer_port: u16,
    process: Option<ChildProcess>,
}

impl Member {
    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// What one member says of itself in `etcdctl endpoint status`.
struct MemberView {
    /// Its index in the cluster.
    index: usize,
    /// Its raft id.
    id: u64,
    /// The raft id of the leader it knows; 0 when it knows none.
    leader: u64,
}

/// Why a start did not reach a healthy cluster (other than by timing out, which panics).
enum StartFailure {
    /// Member `index` exited; its log says a port was already in use.
    PortTaken(usize),
    /// Member `index` exited for another reason.
    Exited(usize),
}

impl StartFailure {
    /// The member that exited.
    fn member(&self) -> usize {
        match *self {
            StartFailure::PortTaken(i) | StartFailure::Exited(i) => i,
        }
    }
}

/// A running etcd cluster. Dropping it kills every member and removes its folder.
#[derive(Debug)]
pub struct EtcdCluster {
    // Declared before `dir`, so the members are killed before their folder is removed.
    members: Vec<Member>,
    /// Distinguishes this cluster from any other on the machine, so members never join a
    /// stranger's cluster by a reused port.
    token: String,
    /// Certificates of a cluster whose clients must use mutual TLS.
    tls: Option<EtcdTls>,
    /// `user:password` that etcdctl passes, once authentication is on.
    etcdctl_user: Option<String>,
    dir: tempfile::TempDir,
}

/// The files of an etcd cluster that serves clients over TLS and requires client
/// certificates signed by `ca`.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// What etcdctl presents.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl From<&crate::TestPki> for EtcdTls {
    fn from(pki: &crate::TestPki) -> Self {
        EtcdTls {
            ca: pki.ca.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
            client_cert: pki.client_cert.clone(),
            client_key: pki.client_key.clone(),
        }
    }
}

impl EtcdCluster {
    /// Starts a one-member cluster.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// Starts a cluster of `members` members (m0, m1, ...) on free ports of 127.0.0.1 and waits
    /// until each one answers `etcdctl endpoint health`. The ports are picked by binding port 0
    /// and releasing it, so another process may take one before etcd binds it: then the whole
    /// start is tried again, a few times.
    pub fn start(members: usize) -> Self {
        Self::start_with(members, None)
    }

    /// Starts a one-member cluster whose clients must use mutual TLS (`https://` URLs).
    pub fn single_tls(tls: EtcdTls) -> Self {
        Self::start_with(1, Some(tls))
    }

    /// Starts a one-member cluster whose client port is `client_port` (picked earlier with
    /// [`crate::free_port`], e.g. for a process started before its etcd); with `tls`, as
    /// [`EtcdCluster::single_tls`]. Panics if the port was taken meanwhile.
    pub fn single_at(client_port: u16, tls: Option<EtcdTls>) -> Self {
        let mut cluster = Self::launch_at(1, tls, Some(client_port));
        match cluster.wait_started() {
            Ok(()) => cluster,
            Err(failure) => panic!(
                "etcd member m{} on port {client_port} exited while starting",
                failure.member()
            ),
        }
    }

    /// The user with read and write permission on `services/` that [`EtcdCluster::enable_auth`]
    /// makes, and its password.
    pub const USER: &'static str = "quaestor";
    pub const PASSWORD: &'static str = "secret";
    /// A user with no permission at all, and its password.
    pub const POWERLESS_USER: &'static str = "nobody";
    pub const POWERLESS_PASSWORD: &'static str = "nothing";

    /// Turns authentication on: users `root` (password `rootpw`, what etcdctl uses from now
    /// on), [`EtcdCluster::USER`] (read and write on the prefix `services/`) and
    /// [`EtcdCluster::POWERLESS_USER`] (no role).
    pub fn enable_auth(&mut self) {
        let user = format!("{}:{}", Self::USER, Self::PASSWORD);
        let powerless = format!("{}:{}", Self::POWERLESS_USER, Self::POWERLESS_PASSWORD);
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["user", "grant-role", "root", "root"],
            &["user", "add", &user],
            &["user", "add", &powerless],
            &["role", "add", "registry"],
            &[
                "role",
                "grant-permission",
                "registry",
                "readwrite",
                "services/",
                "--prefix=true",
            ],
            &["user", "grant-role", Self::USER, "registry"],
            &["auth", "enable"],
        ] {
            succeeded(&format!("etcdctl {args:?}"), self.etcdctl(args));
        }
        self.etcdctl_as("root:rootpw");
    }

    fn start_with(members: usize, tls: Option<EtcdTls>) -> Self {
        assert!(members > 0, "an etcd cluster needs at least one member");
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::launch(members, tls.clone());
            match cluster.wait_started() {
                Ok(()) => return cluster,
                Err(StartFailure::PortTaken(i)) if attempt < START_ATTEMPTS => {
                    eprintln!("etcd member m{i}: its port was taken; starting the cluster again");
                }
                // The cluster's drop prints the members' logs as this panic unwinds.
                Err(failure) => panic!(
                    "etcd member m{} exited while the cluster started (attempt {attempt})",
                    failure.member()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Picks ports, creates the folder and spawns every member, without waiting.
    fn launch(members: usize, tls: Option<EtcdTls>) -> Self {
        Self::launch_at(members, tls, None)
    }

    /// As [`EtcdCluster::launch`], member 0's client port `client_port` if given.
    fn launch_at(members: usize, tls: Option<EtcdTls>, client_port: Option<u16>) -> Self {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let mut ports = crate::free_ports(2 * members);
        if let Some(port) = client_port {
            if ports[1..].contains(&port) {
                ports = ports
                    .iter()
                    .map(|p| if *p == port { ports[0] } else { *p })
                    .collect();
            }
            ports[0] = port;
        }
        let mut cluster = EtcdCluster {
            members: (0..members)
                .map(|i| Member {
                    name: format!("m{i}"),
                    tls: tls.is_some(),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    process: None,
                })
                .collect(),
            token: format!(
                "quaestor-test-{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            ),
            tls,
            etcdctl_user: None,
            dir: tempfile::Builder::new()
                .prefix("quaestor-etcd-")
                .tempdir()
                .expect("temp dir for etcd"),
        };
        for i in 0..members {
            cluster.spawn_member(i, "new");
        }
        cluster
    }

    /// Spawns member `i`; `state` is etcd's `--initial-cluster-state` ("new" or "existing";
    /// etcd ignores it, and the rest of `--initial-cluster-*`, once the data folder exists).
    fn spawn_member(&mut self, i: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let log = self.open_log(i);
        let mut command = Command::new(etcd_bin());
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &member.client_url()])
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", HEARTBEAT_MS])
            .args(["--election-timeout", ELECTION_MS])
            .args(self.tls.iter().flat_map(|tls| {
                [
                    OsStr::new("--cert-file"),
                    tls.server_cert.as_os_str(),
                    OsStr::new("--key-file"),
                    tls.server_key.as_os_str(),
                    OsStr::new("--trusted-ca-file"),
                    tls.ca.as_os_str(),
                    OsStr::new("--client-cert-auth"),
                ]
            }))
            // The structured logger; etcd 3.4's default one is deprecated and says so.
            .args(["--logger", "zap"])
            .stdin(Stdio::null())
            // stderr too (not `--log-outputs`), so that a Go panic lands in the log as well.
            .stdout(log.try_clone().expect("clone the etcd log file"))
            .stderr(log);
        let process = ChildProcess::spawn(&format!("etcd {}", member.name), command);
        self.members[i].process = Some(process);
    }

    /// Member `i`'s log file, opened for appending (a restart continues the same log).
    fn open_log(&self, i: usize) -> File {
        let path = self.log_path(i);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// The last lines of member `i`'s log.
    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Waits until every member is healthy, or until one of them exits.
    fn wait_started(&mut self) -> Result<(), StartFailure> {
        (0..self.members.len()).try_for_each(|i| self.wait_healthy(i))
    }

    /// Waits (at most [`STARTUP_TIMEOUT`]) until member `i` answers `endpoint health`; stops
    /// early when any member that should run has exited, since it will not come back.
    fn wait_healthy(&mut self, i: usize) -> Result<(), StartFailure> {
        let what = format!("etcd member m{i} to be healthy");
        wait_for(&what, STARTUP_TIMEOUT, || {
            if let Some(gone) = self.exited_member() {
                return Some(Err(
                    if self.log_tail(gone).contains("address already in use") {
                        StartFailure::PortTaken(gone)
                    } else {
                        StartFailure::Exited(gone)
                    },
                ));
            }
            // etcdctl waits its whole dial timeout for a port nobody listens on yet; a plain
            // connect tells that at once.
            let addr = ([127, 0, 0, 1], self.members[i].client_port).into();
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            // The health check reads through raft, and a read sent before the member knows a
            // leader hangs until etcdctl's command timeout; `endpoint status` answers locally.
            let knows_leader = self.views(&[i])?.first()?.leader != 0;
            if !knows_leader {
                return None;
            }
            let health = self.etcdctl_on(
                &[i],
                &[
                    "endpoint",
                    "health",
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                ],
            );
            (health.code == Some(0)).then_some(Ok(()))
        })
    }

    /// A member that was started and has exited since (without being stopped through us).
    fn exited_member(&mut self) -> Option<usize> {
        self.members.iter_mut().position(|m| {
            m.process
                .as_mut()
                .is_some_and(|p| matches!(p.child_mut().try_wait(), Ok(Some(_))))
        })
    }

    /// The client URLs of all members, running or not, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// The temporary folder holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether member `i` was started and not killed or stopped through this cluster.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].process.is_some()
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref().map(ChildProcess::pid)
    }

    /// The indexes of the running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Kills member `i` (SIGKILL to its process group) and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.end_member(i, Signal::SIGKILL);
    }

    /// Stops member `i` cleanly (SIGTERM) and waits until it has exited.
    pub fn stop(&mut self, i: usize) {
        self.end_member(i, Signal::SIGTERM);
    }

    fn end_member(&mut self, i: usize, signal: Signal) {
        let mut process = self.members[i]
            .process
            .take()
            .unwrap_or_else(|| panic!("etcd member m{i} is not running"));
        process.signal(signal);
        process.wait_exit(EXIT_TIMEOUT);
    }

    /// Starts member `i` again, with its name, ports and data, and waits until it is healthy.
    /// The other members must hold a quorum (or `i` be the only member) for that.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "etcd member m{i} is already running");
        self.spawn_member(i, "existing");
        // A port of a member that is down may have been taken meanwhile; retrying with other
        // ports would make it a different member, so that case fails like any other.
        if let Err(failure) = self.wait_healthy(i) {
            panic!(
                "etcd member m{} exited while m{i} restarted",
                failure.member()
            );
        }
    }

    /// The index of the leader, once all running members agree on one that is among them
    /// (waits at most [`LEADER_TIMEOUT`], e.g. during an election).
    pub fn leader(&self) -> usize {
        wait_for(
            "the running etcd members to agree on a leader",
            LEADER_TIMEOUT,
            || self.current_leader(),
        )
    }

    /// One look at `endpoint status`: the leader, if every running member answered and all
    /// name the same leader, which is one of them.
    fn current_leader(&self) -> Option<usize> {
        let running = self.running();
        let views = self.views(&running)?;
        if views.len() != running.len() {
            return None;
        }
        let leader = views.first()?.leader;
        if views.iter().any(|view| view.leader != leader) {
            return None;
        }
        views
            .iter()
            .find(|view| view.id == leader)
            .map(|view| view.index)
    }

    /// What members `members` say of themselves (`etcdctl endpoint status`), for those that
    /// answered; `None` if etcdctl printed nothing readable.
    fn views(&self, members: &[usize]) -> Option<Vec<MemberView>> {
        let status = self.etcdctl_on(
            members,
            &["endpoint", "status", "-w", "json", "--command-timeout=2s"],
        );
        // Members that did not answer are missing from the JSON (and etcdctl exits with 1).
        let answers: Vec<Value> = serde_json::from_str(&status.stdout).ok()?;
        answers
            .iter()
            .map(|answer| {
                let endpoint = answer["Endpoint"].as_str()?;
                Some(MemberView {
                    index: self
                        .members
                        .iter()
                        .position(|m| m.client_url() == endpoint)?,
                    id: answer["Status"]["header"]["member_id"].as_u64()?,
                    leader: answer["Status"]["leader"].as_u64()?,
                })
            })
            .collect()
    }

    /// From now on etcdctl authenticates as `user_and_password` (`user:password`), e.g.
    /// after a test turned authentication on.
    pub fn etcdctl_as(&mut self, user_and_password: &str) {
        self.etcdctl_user = Some(user_and_password.to_owned());
    }

    /// Runs `etcdctl ARGS...` (API v3) against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> Finished {
        self.etcdctl_on(&self.running(), args)
    }

    /// Runs `etcdctl ARGS...` (API v3) against members `members` only, running or not.
    pub fn etcdctl_on(&self, members: &[usize], args: &[&str]) -> Finished {
        assert!(
            !members.is_empty(),
            "etcdctl needs at least one etcd member to talk to"
        );
        let endpoints = members
            .iter()
            .map(|&i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(etcdctl_bin());
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(
                self.etcdctl_user
                    .iter()
                    .flat_map(|user| ["--user", user.as_str()]),
            )
            .args(self.tls.iter().flat_map(|tls| {
                [
                    OsStr::new("--cacert"),
                    tls.ca.as_os_str(),
                    OsStr::new("--cert"),
                    tls.client_cert.as_os_str(),
                    OsStr::new("--key"),
                    tls.client_key.as_os_str(),
                ]
            }))
            .args(args);
        run_command(command, ETCDCTL_TIMEOUT)
    }

    /// Puts `key` = `value` through etcdctl; panics if that fails.
    pub fn put_plain(&self, key: &str, value: &str) {
        succeeded("put", self.etcdctl(&["put", "--", key, value]));
    }

    /// The keys that start with `prefix`, in etcd's (byte) order; panics if etcdctl fails.
    pub fn get_prefix_keys(&self, prefix: &str) -> Vec<String> {
        let found = succeeded(
            "get --prefix",
            self.etcdctl(&["get", "--prefix", "--keys-only", "--", prefix]),
        );
        // With --keys-only, etcdctl prints each key followed by an empty line.
        found
            .stdout
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // The members are killed and the folder removed by the fields' own drops; before
        // that, if the test failed, show what etcd said.
        if std::thread::panicking() {
            for i in 0..self.members.len() {
                eprintln!(
                    "--- last lines of etcd member m{i}'s log ({}) ---\n{}",
                    self.log_path(i).display(),
                    self.log_tail(i)
                );
            }
        }
    }
}

/// Returns `finished` if etcdctl exited with 0; panics with its output otherwise.
fn succeeded(what: &str, finished: Finished) -> Finished {
    assert_eq!(
        finished.code,
        Some(0),
        "etcdctl {what} failed:\nstdout: {}\nstderr: {}",
        finished.stdout,
        finished.stderr
    );
    finished
}
