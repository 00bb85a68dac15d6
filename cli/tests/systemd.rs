//! systemd's notification protocol, as `quaestor cluster` and `quaestor load-balancer` speak
//! it to a real datagram socket named by `NOTIFY_SOCKET` (a path, and an abstract `@name`):
//! READY=1 once the members are Ready, STATUS= lines, WATCHDOG=1 keep-alives, RELOADING=1
//! then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quaestor_test_support::{ChildProcess, Finished, OutputLines, free_port, quaestor_bin, run};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// What systemd would read: one datagram per message.
struct Listener {
    socket: UnixDatagram,
    /// Every message so far, oldest first.
    seen: Vec<String>,
}

impl Listener {
    fn new(socket: UnixDatagram) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Listener {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads messages until one satisfies `want` (it is returned); panics after `timeout`,
    /// listing what came.
    fn until(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut buffer = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buffer) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    self.seen.push(message.clone());
                    if want(&message) {
                        return message;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!("no {what} within {timeout:?}; got {:?}", self.seen);
    }

    /// The messages since the `from`th.
    fn since(&self, from: usize) -> &[String] {
        &self.seen[from..]
    }
}

/// `quaestor ARGS...` with `NOTIFY_SOCKET=socket` and a 400 ms watchdog, its log drained.
fn spawn_notifying(args: &[&str], socket: &str) -> ChildProcess {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped());
    let mut process = ChildProcess::spawn(&format!("quaestor {}", args.join(" ")), command);
    OutputLines::of(&mut process).drain();
    process
}

/// A signal to the process itself (not its group: the members have groups of their own).
fn signal(process: &ChildProcess, signal: Signal) {
    kill(Pid::from_raw(process.pid() as i32), signal).expect("kill");
}

/// The states `quaestor cluster status --json` reports for the members.
fn member_states(socket: &Path) -> Vec<String> {
    let out = quaestor(&[
        "cluster",
        "status",
        "--json",
        "--control",
        socket.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    report["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["state"].as_str().expect("state").to_owned())
        .collect()
}

fn count(messages: &[String], message: &str) -> usize {
    messages.iter().filter(|m| m.as_str() == message).count()
}

#[test]
fn the_cluster_notifies_ready_status_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let notify_path = dir.path().join("notify.sock");
    let mut systemd = Listener::new(UnixDatagram::bind(&notify_path).expect("bind"));
    let control = dir.path().join("control.sock");
    let config = dir.path().join("quaestor.config.yml");
    std::fs::write(
        &config,
        format!(
            "clusterConfig:\n  name: notify\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n\
             agents:\n  - agentType: Worker\n    executablePath: /bin/sh\n    \
             commandLineArguments: -c 'echo \"${{NOTIFY_SOCKET:-unset}} ${{WATCHDOG_USEC:-unset}}\" > {}/env-{{Port}}; exec {} worker --host {{HostName}} --port {{Port}}'\n    \
             processCount: 2\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
            dir.path().display(),
            bin().display()
        ),
    )
    .expect("write config");
    let mut cluster = spawn_notifying(
        &[
            "cluster",
            "--config",
            config.to_str().expect("utf-8"),
            "--control",
            control.to_str().expect("utf-8"),
        ],
        notify_path.to_str().expect("utf-8"),
    );

    systemd.until("READY=1", TIMEOUT, |m| m == "READY=1");
    // Sent once both members were Ready, and said so first.
    let before_ready = &systemd.seen[..systemd.seen.len() - 1];
    assert!(
        before_ready
            .iter()
            .any(|m| m == "STATUS=2/2 ready, 0 failed"),
        "{:?}",
        systemd.seen
    );
    assert!(
        before_ready
            .iter()
            .any(|m| m == "STATUS=0/2 ready, 0 failed"),
        "a status while starting: {:?}",
        systemd.seen
    );
    assert_eq!(member_states(&control), ["Ready", "Ready"]);
    assert_eq!(count(&systemd.seen, "READY=1"), 1);
    // The socket is the supervisor's: the members do not see it.
    let environments: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("env-"))
        .map(|e| std::fs::read_to_string(e.path()).expect("env file"))
        .collect();
    assert_eq!(environments, ["unset unset\n", "unset unset\n"]);

    // Keep-alives every 200 ms: several of them, however long that takes.
    let from = systemd.seen.len();
    for _ in 0..3 {
        systemd.until("WATCHDOG=1", TIMEOUT, |m| m == "WATCHDOG=1");
    }
    assert!(count(systemd.since(from), "WATCHDOG=1") >= 3);

    // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
    let from = systemd.seen.len();
    signal(&cluster, Signal::SIGHUP);
    let reloading = systemd.until("RELOADING=1", TIMEOUT, |m| m.starts_with("RELOADING=1"));
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().expect("a number") > 0, "{reloading:?}");
    systemd.until("READY=1 after the reload", TIMEOUT, |m| m == "READY=1");
    assert_eq!(count(systemd.since(from), "READY=1"), 1);

    // A stop: STOPPING=1, then a clean exit; no READY=1 after it.
    signal(&cluster, Signal::SIGTERM);
    systemd.until("STOPPING=1", TIMEOUT, |m| m == "STOPPING=1");
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    let stopping = systemd.seen.iter().position(|m| m == "STOPPING=1");
    let after = &systemd.seen[stopping.expect("STOPPING=1") + 1..];
    assert!(!after.iter().any(|m| m == "READY=1"), "{:?}", systemd.seen);
}

#[test]
fn the_load_balancer_notifies_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("quaestor-test-{}-{}", std::process::id(), fastrand::u64(..));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let mut systemd = Listener::new(UnixDatagram::bind_addr(&addr).expect("bind"));
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.loadbalancer.config.yml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {port}\n\
             agents:\n  - agentType: Worker\n    hostName: 127.0.0.1\n    ports: [ 1 ]\n    serviceNames: [ Worker ]\n"
        ),
    )
    .expect("write config");
    let mut balancer = spawn_notifying(
        &["load-balancer", "--config", config.to_str().expect("utf-8")],
        &format!("@{name}"),
    );
    systemd.until("READY=1", TIMEOUT, |m| m == "READY=1");
    // Ready means serving: it answers at once.
    let health = quaestor(&["health", &format!("127.0.0.1:{port}")]);
    assert_eq!(health.stdout.trim(), "SERVING", "{health:?}");
    for _ in 0..2 {
        systemd.until("WATCHDOG=1", TIMEOUT, |m| m == "WATCHDOG=1");
    }
    signal(&balancer, Signal::SIGTERM);
    systemd.until("STOPPING=1", TIMEOUT, |m| m == "STOPPING=1");
    assert_eq!(balancer.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn the_sidecar_notifies_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let notify_path = dir.path().join("notify.sock");
    let mut systemd = Listener::new(UnixDatagram::bind(&notify_path).expect("bind"));
    let port = free_port().to_string();
    // It runs its worker: the worker must not see the socket either.
    let env_file = dir.path().join("worker-env");
    let script = format!(
        "echo \"${{NOTIFY_SOCKET:-unset}}\" > {}; exec {} worker --host 127.0.0.1 --port {port}",
        env_file.display(),
        bin().display()
    );
    let mut sidecar = spawn_notifying(
        &[
            "sidecar",
            "--service",
            "Worker",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--control-port",
            "0",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        notify_path.to_str().expect("utf-8"),
    );
    systemd.until("READY=1", TIMEOUT, |m| m == "READY=1");
    systemd.until("WATCHDOG=1", TIMEOUT, |m| m == "WATCHDOG=1");
    // The worker serves (its signal handlers are in place) before the stop.
    let health = quaestor_test_support::wait_for("the worker to serve", TIMEOUT, || {
        let out = quaestor(&["health", &format!("127.0.0.1:{port}")]);
        (out.code == Some(0)).then_some(out.stdout)
    });
    assert_eq!(health.trim(), "SERVING");
    signal(&sidecar, Signal::SIGTERM);
    systemd.until("STOPPING=1", TIMEOUT, |m| m == "STOPPING=1");
    assert_eq!(sidecar.wait_exit(TIMEOUT).code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&env_file).expect("the worker ran"),
        "unset\n"
    );
}
