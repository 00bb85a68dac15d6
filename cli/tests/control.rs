//! The operator's commands on a running cluster, with real members: `stop`, `start`,
//! `restart`, `drain`, `undrain`, `logs`, `status --watch`; and how members' output reads in
//! the cluster's log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use quaestor_core::supervisor::control::{ClusterReport, MemberReport};
use quaestor_test_support::{
    ChildProcess, Finished, OutputLines, free_ports, process_running, quaestor_bin, run, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// `quaestor cluster ARGS... --control SOCKET`.
fn control(socket: &Path, args: &[&str]) -> Finished {
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--control", socket.to_str().expect("utf-8")]);
    quaestor(&all)
}

/// Two reference workers (heartbeat 1 s) behind the in-process balancer on `balancer_port`.
fn config(dir: &Path, balancer_port: u16) -> PathBuf {
    let text = format!(
        "clusterConfig:\n  name: control\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
         loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {balancer_port}\n  probeIntervalMs: 100\n\
         agents:\n  - agentType: Worker\n    executablePath: {}\n    commandLineArguments: worker --host {{HostName}} --port {{Port}}\n    \
         processCount: 2\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
        bin().display()
    );
    let path = dir.join("quaestor.config.yml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `quaestor cluster` with its log (stderr) to read; `rust_log` is its RUST_LOG.
fn start(config: &Path, socket: &Path, rust_log: &str) -> (ChildProcess, OutputLines) {
    let mut command = std::process::Command::new(bin());
    command
        .args(["cluster", "--config"])
        .arg(config)
        .arg("--control")
        .arg(socket)
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut process = ChildProcess::spawn("quaestor cluster", command);
    let log = OutputLines::of_stderr(&mut process);
    (process, log)
}

fn try_status(socket: &Path) -> Option<ClusterReport> {
    let out = control(socket, &["status", "--json"]);
    if out.code == Some(2) {
        return None;
    }
    assert_eq!(out.code, Some(0), "{out:?}");
    Some(serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout)))
}

fn member(socket: &Path, tag: &str) -> MemberReport {
    try_status(socket)
        .expect("the cluster answers")
        .members
        .into_iter()
        .find(|m| m.member == tag)
        .unwrap_or_else(|| panic!("no {tag}"))
}

/// Waits until every member is Ready; their pids by tag, in order.
fn all_ready(socket: &Path, count: usize) -> Vec<(String, u32)> {
    wait_for("every member Ready", TIMEOUT, || {
        let report = try_status(socket)?;
        (report.members.len() == count
            && report
                .members
                .iter()
                .all(|m| m.state == "Ready" && m.pid.is_some()))
        .then(|| {
            report
                .members
                .iter()
                .map(|m| (m.member.clone(), m.pid.expect("ready")))
                .collect()
        })
    })
}

/// The addresses the balancer offers for Worker, sorted.
fn offered(balancer: &str) -> Vec<String> {
    let out = quaestor(&["discover", balancer, "Worker"]);
    let mut found: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    found.sort();
    found
}

/// stop keeps a member stopped (through several heartbeats) until start; restart changes its
/// pid without counting a failure; an unknown name is refused with the members' names; no
/// cluster → exit 2.
#[test]
fn stop_start_and_restart_one_member() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("control.sock");
    let out = control(&socket, &["stop", "Worker[0]"]);
    assert_eq!(out.code, Some(2), "no cluster yet: {out:?}");
    assert!(out.stderr.contains("no cluster answers"), "{}", out.stderr);

    let [balancer_port] = free_ports(1)[..] else {
        unreachable!()
    };
    let (mut cluster, log) = start(&config(dir.path(), balancer_port), &socket, "info");
    log.expect("the ready line", TIMEOUT, |line| {
        line.contains("cluster ready: 2/2 SERVING").then_some(())
    });
    let pids = all_ready(&socket, 2);
    let (w0, w1) = (pids[0].1, pids[1].1);

    let out = control(&socket, &["stop", "Worker[9]"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("no member Worker[9]; members are Worker[0..1]"),
        "{}",
        out.stderr
    );

    let out = control(&socket, &["stop", "Worker[1]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Worker[1]: stopped");
    assert!(!process_running(w1 as i32), "its process is gone");
    let stopped = member(&socket, "Worker[1]");
    assert_eq!((stopped.state.as_str(), stopped.pid), ("Stopped", None));
    // Several heartbeat intervals (1 s): nothing starts it again. (A negative: time must pass.)
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let now = member(&socket, "Worker[1]");
        assert_eq!((now.state.as_str(), now.pid), ("Stopped", None), "{now:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = control(&socket, &["stop", "Worker[1]"]);
    assert_eq!(out.stdout.trim(), "Worker[1]: already stopped", "{out:?}");
    // A reload that does not change it leaves it stopped.
    cluster.signal(Signal::SIGHUP);
    log.expect("the SIGHUP reload", TIMEOUT, |line| {
        line.contains("SIGHUP: config applied").then_some(())
    });
    let now = member(&socket, "Worker[1]");
    assert_eq!((now.state.as_str(), now.pid), ("Stopped", None), "{now:?}");

    let out = control(&socket, &["start", "Worker[1]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("Worker[1]: started (pid "),
        "{}",
        out.stdout
    );
    let after = all_ready(&socket, 2);
    assert_eq!(after[0].1, w0, "the other member is untouched");
    assert_ne!(after[1].1, w1);

    let out = control(&socket, &["restart", "Worker[0]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("Worker[0]: restarted (pid "),
        "{}",
        out.stdout
    );
    log.expect("the operator's restart in the log", TIMEOUT, |line| {
        (line.contains("restarted by the operator") && line.contains("Worker[0]")).then_some(())
    });
    let restarted = all_ready(&socket, 2);
    assert_ne!(restarted[0].1, w0, "a new process");
    assert!(!process_running(w0 as i32), "the old one is gone");
    let report = member(&socket, "Worker[0]");
    assert_eq!(report.failures, 0, "not counted as a crash: {report:?}");

    // An agent type names all its members.
    let out = control(&socket, &["restart", "Worker"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    let again = all_ready(&socket, 2);
    assert!(again.iter().zip(&restarted).all(|(a, b)| a.1 != b.1));

    log.drain();
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}

/// drain takes a member out of the registry (the in-process balancer stops offering it)
/// without stopping it; undrain brings it back.
#[test]
fn drain_and_undrain_a_member() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("control.sock");
    let [balancer_port] = free_ports(1)[..] else {
        unreachable!()
    };
    let balancer = format!("127.0.0.1:{balancer_port}");
    let (mut cluster, log) = start(&config(dir.path(), balancer_port), &socket, "info");
    log.drain();
    let pids = all_ready(&socket, 2);
    let both = wait_for("the balancer to offer both", TIMEOUT, || {
        let found = offered(&balancer);
        (found.len() == 2).then_some(found)
    });
    let drained_addr = format!("127.0.0.1:{}", member(&socket, "Worker[0]").port);
    assert!(both.contains(&drained_addr));

    let out = control(&socket, &["drain", "Worker[0]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Worker[0]: drained");
    wait_for("the balancer to drop the drained member", TIMEOUT, || {
        let found = offered(&balancer);
        (found.len() == 1 && !found.contains(&drained_addr)).then_some(())
    });
    let drained = member(&socket, "Worker[0]");
    assert!(drained.drained, "{drained:?}");
    assert_eq!(drained.state, "Ready", "it runs on");
    assert_eq!(drained.pid, Some(pids[0].1), "not restarted");
    let table = control(&socket, &["status"]);
    assert!(table.stdout.contains("Ready,drained"), "{}", table.stdout);

    let out = control(&socket, &["undrain", "Worker[0]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("the balancer to offer it again", TIMEOUT, || {
        (offered(&balancer) == both).then_some(())
    });
    assert!(!member(&socket, "Worker[0]").drained);
    assert_eq!(all_ready(&socket, 2), pids, "nobody restarted");

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}

/// logs prints what a member printed, with its stream; -f follows new lines (of a restart).
/// status --watch draws the table again and again.
#[test]
fn logs_and_status_watch() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("control.sock");
    let [balancer_port] = free_ports(1)[..] else {
        unreachable!()
    };
    let (mut cluster, log) = start(&config(dir.path(), balancer_port), &socket, "info");
    log.drain();
    all_ready(&socket, 2);
    let port = member(&socket, "Worker[0]").port;

    let out = control(&socket, &["logs", "Worker[0]", "-n", "50"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let listening = format!("Worker[0] stdout: listening on 127.0.0.1:{port}");
    assert!(out.stdout.contains(&listening), "{}", out.stdout);
    assert!(
        out.stdout.lines().all(|l| l.contains("Worker[0]")),
        "{}",
        out.stdout
    );
    let out = control(&socket, &["logs", "Worker[0]", "-n", "1"]);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let out = control(&socket, &["logs", "Nobody"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no member Nobody"), "{}", out.stderr);

    // -f: a restart's new lines arrive.
    let mut command = std::process::Command::new(bin());
    command
        .args(["cluster", "logs", "Worker[0]", "-f", "-n", "1", "--control"])
        .arg(&socket)
        .stdout(std::process::Stdio::piped());
    let mut follow = ChildProcess::spawn("quaestor cluster logs -f", command);
    let followed = OutputLines::of(&mut follow);
    // The last line first: the server follows the member from before it sent that line.
    followed.next(TIMEOUT);
    let out = control(&socket, &["restart", "Worker[0]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    followed.expect("the restarted member's line", TIMEOUT, |line| {
        line.contains("Worker[0] stdout: listening on")
            .then_some(())
    });
    follow.signal(Signal::SIGINT);
    assert_eq!(follow.wait_exit(TIMEOUT).code(), Some(0), "Ctrl-C ends it");

    // status --watch: the table at least twice.
    let mut command = std::process::Command::new(bin());
    command
        .args(["cluster", "status", "--watch", "--control"])
        .arg(&socket)
        .stdout(std::process::Stdio::piped());
    let mut watch = ChildProcess::spawn("quaestor cluster status --watch", command);
    let frames = OutputLines::of(&mut watch);
    for _ in 0..2 {
        frames.expect("a table header", TIMEOUT, |line| {
            line.starts_with("MEMBER").then_some(())
        });
    }
    watch.signal(Signal::SIGINT);
    assert_eq!(watch.wait_exit(TIMEOUT).code(), Some(0));

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}

/// How many RFC 3339 timestamps (`2026-12-01T09:56:45`) a line holds.
fn timestamps(line: &str) -> usize {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(19))
        .filter(|&i| {
            let d = |j: usize| b[i + j].is_ascii_digit();
            d(0) && d(1)
                && d(2)
                && d(3)
                && b[i + 4] == b'-'
                && d(5)
                && d(6)
                && b[i + 7] == b'-'
                && d(8)
                && d(9)
                && b[i + 10] == b'T'
                && d(11)
                && d(12)
                && b[i + 13] == b':'
        })
        .count()
}

/// A member's log line appears once in the cluster's log, with the member and its stream,
/// stamped once; the KeyValueStore member (etcd) logs at DEBUG unless it warns.
#[test]
fn member_output_is_logged_once_and_etcd_at_debug() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("control.sock");
    let [etcd_port, peer_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let data = dir.path().join("etcd-data");
    let text = format!(
        "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
         agents:\n\
         \x20 - agentType: KeyValueStore\n    executablePath: {etcd}\n    commandLineArguments: >-\n      \
         --name kvs --data-dir {data} --listen-client-urls http://127.0.0.1:{{Port}} --advertise-client-urls http://127.0.0.1:{{Port}}\n      \
         --listen-peer-urls http://127.0.0.1:{peer_port} --initial-advertise-peer-urls http://127.0.0.1:{peer_port}\n      \
         --initial-cluster kvs=http://127.0.0.1:{peer_port}\n    \
         processCount: 1\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    ports: [ {etcd_port} ]\n\
         \x20 - agentType: Worker\n    executablePath: {bin}\n    commandLineArguments: worker --host {{HostName}} --port {{Port}}\n    \
         processCount: 1\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
        etcd = quaestor_test_support::etcd::etcd_bin().display(),
        data = data.display(),
        bin = bin().display(),
    );
    let config = dir.path().join("quaestor.config.yml");
    std::fs::write(&config, text).expect("write config");
    // The members inherit RUST_LOG: the worker logs at INFO with its own timestamps.
    let (mut cluster, log) = start(&config, &socket, "info,quaestor::member=debug");
    let mut worker_lines = Vec::new();
    let mut etcd_lines = Vec::new();
    log.expect("the ready line", TIMEOUT, |line| {
        if line.contains("member=\"Worker[0]\"") {
            worker_lines.push(line.to_owned());
        }
        if line.contains("member=\"KeyValueStore[0]\"") {
            etcd_lines.push(line.to_owned());
        }
        line.contains("cluster ready: 2/2 SERVING").then_some(())
    });
    log.drain();
    // The worker's own tracing line ("... INFO quaestor::...: listening ...") and its stdout.
    let traced: Vec<&String> = worker_lines
        .iter()
        .filter(|l| l.contains("stream=\"stderr\""))
        .collect();
    assert!(!traced.is_empty(), "{worker_lines:#?}");
    for line in &worker_lines {
        assert_eq!(timestamps(line), 1, "stamped once: {line}");
    }
    let stdout: Vec<&String> = worker_lines
        .iter()
        .filter(|l| l.contains("listening on") && l.contains("stream=\"stdout\""))
        .collect();
    assert_eq!(stdout.len(), 1, "once: {worker_lines:#?}");
    assert!(!etcd_lines.is_empty(), "etcd said something at DEBUG");
    for line in &etcd_lines {
        assert!(
            line.contains(" DEBUG ") || line.contains(" WARN ") || line.contains(" ERROR "),
            "etcd's chatter is not INFO: {line}"
        );
        assert_eq!(timestamps(line), 1, "etcd's ts is dropped: {line}");
    }
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
}
