//! `quaestor cluster` as a process: members from a C#-style config, the in-process balancer
//! over them, a graceful stop, no orphans after `kill -9`, bad configs, config reload, status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use quaestor_core::supervisor::control::ClusterReport;
use quaestor_test_support::{
    ChildProcess, OutputLines, Worker, free_port, free_ports, process_running, spawn_listening,
    spawn_reading, wait_for,
};

mod common;
use common::{TIMEOUT, bin, quaestor, start_logged, try_status};

/// A cluster config: `count` reference workers on ephemeral ports, the balancer on a free port.
fn write_config(dir: &Path, count: u32) -> PathBuf {
    let balancer_port = free_port();
    let text = format!(
        "clusterConfig:\n  name: test\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
         loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {balancer_port}\n  probeIntervalMs: 100\n\
         agents:\n  - agentType: Worker\n    executablePath: {}\n    commandLineArguments: worker --host {{HostName}} --port {{Port}}\n    \
         processCount: {count}\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
        bin().display()
    );
    let path = dir.join("quaestor.config.yml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_cluster(config: &Path) -> Worker {
    spawn_listening(
        &bin(),
        &["cluster", "--config", config.to_str().expect("utf-8")],
    )
}

/// The workers the balancer offers (once `count` of them serve).
fn serving_workers(balancer: &Worker, count: usize) -> Vec<String> {
    let addr = balancer.addr.to_string();
    wait_for("the members to serve", TIMEOUT, || {
        let out = quaestor(&["discover", &addr, "Worker"]);
        let found: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        (found.len() == count).then_some(found)
    })
}

fn listening(address: &str) -> bool {
    std::net::TcpStream::connect(address).is_ok()
}

#[test]
fn members_serve_behind_the_balancer_and_stop_with_the_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cluster = start_cluster(&write_config(dir.path(), 2));
    let workers = serving_workers(&cluster, 2);
    assert!(workers.iter().all(|w| listening(w)));
    cluster.process.signal(Signal::SIGTERM);
    assert_eq!(cluster.process.wait_exit(TIMEOUT).code(), Some(0));
    for worker in &workers {
        assert!(!listening(worker), "{worker} stopped with the cluster");
    }
}

#[test]
fn members_do_not_outlive_a_killed_cluster() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cluster = start_cluster(&write_config(dir.path(), 2));
    let workers = serving_workers(&cluster, 2);
    // SIGKILL to the supervisor alone, not to its group: only the parent-death signal can
    // take the members down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cluster.process.pid() as i32),
        Signal::SIGKILL,
    )
    .expect("kill");
    cluster.process.wait_exit(TIMEOUT);
    for worker in &workers {
        wait_for("the member to die with the cluster", TIMEOUT, || {
            (!listening(worker)).then_some(())
        });
    }
}

#[test]
fn a_bad_cluster_config_exits_64_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("quaestor.config.yml");
    std::fs::write(&path, "clusterConfig:\n  heartBeatIntervalSecond: 5\n").expect("write");
    let out = quaestor(&["cluster", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(
        out.stderr
            .contains(":2:3: key `clusterConfig.heartBeatIntervalSecond`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("did you mean `heartBeatIntervalSeconds`"),
        "{}",
        out.stderr
    );
}

/// A KeyValueStore agent is the cluster's own etcd: started first, members registered in it
/// (as etcdctl sees), the balancer reading it; everything stops with the cluster.
#[test]
fn a_key_value_store_agent_is_the_clusters_etcd() {
    let dir = tempfile::tempdir().expect("dir");
    let [etcd_port, peer_port, balancer_port] = free_ports(3)[..] else {
        unreachable!()
    };
    let etcd = quaestor_test_support::etcd::etcd_bin();
    let data = dir.path().join("etcd-data");
    let text = format!(
        "clusterConfig:\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  memberMaxShutdownTimeSeconds: 5\n\
         loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {balancer_port}\n  probeIntervalMs: 100\n\
         agents:\n\
         \x20 - agentType: KeyValueStore\n    executablePath: {etcd}\n    commandLineArguments: >-\n      \
         --name kvs --data-dir {data} --listen-client-urls http://127.0.0.1:{{Port}} --advertise-client-urls http://127.0.0.1:{{Port}}\n      \
         --listen-peer-urls http://127.0.0.1:{peer_port} --initial-advertise-peer-urls http://127.0.0.1:{peer_port}\n      \
         --initial-cluster kvs=http://127.0.0.1:{peer_port}\n    \
         processCount: 1\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    ports: [ {etcd_port} ]\n\
         \x20 - agentType: Worker\n    executablePath: {bin}\n    commandLineArguments: worker --host {{HostName}} --port {{Port}}\n    \
         processCount: 2\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
        etcd = etcd.display(),
        data = data.display(),
        bin = bin().display(),
    );
    let config = dir.path().join("quaestor.config.yml");
    std::fs::write(&config, text).expect("write config");
    let mut cluster = start_cluster(&config);
    let workers = serving_workers(&cluster, 2);
    let socket = quaestor_core::supervisor::control::default_socket_path(&config);
    ready(&socket, &["KeyValueStore[0]", "Worker[0]", "Worker[1]"]);

    let etcdctl = |args: &[&str]| {
        let mut command = std::process::Command::new(quaestor_test_support::etcd::etcdctl_bin());
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://127.0.0.1:{etcd_port}"))
            .args(args);
        quaestor_test_support::run_command(command, TIMEOUT)
    };
    let keys = etcdctl(&["get", "--prefix", "--keys-only", "services/"]);
    let mut listed: Vec<&str> = keys.stdout.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    let mut expected: Vec<String> = workers
        .iter()
        .map(|w| format!("services//Worker/{}/http", w.replace(':', "/")))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{keys:?}");

    cluster.process.signal(Signal::SIGTERM);
    assert_eq!(cluster.process.wait_exit(TIMEOUT).code(), Some(0));
    assert!(
        !listening(&format!("127.0.0.1:{etcd_port}")),
        "etcd stopped with the cluster"
    );
    for worker in &workers {
        assert!(!listening(worker), "{worker} stopped with the cluster");
    }
}

// ---- reload and status ---------------------------------------------------------------------

/// The running cluster's status, as `quaestor cluster status --json` gives it.
fn status(socket: &Path) -> ClusterReport {
    try_status(socket).expect("the cluster answers")
}

/// Waits until every member in the status is Ready and their tags are `tags`; returns the
/// pid of each, by tag.
fn ready(socket: &Path, tags: &[&str]) -> BTreeMap<String, u32> {
    let mut want: Vec<&str> = tags.to_vec();
    want.sort_unstable();
    wait_for(&format!("members {tags:?} Ready"), TIMEOUT, || {
        let report = try_status(socket)?;
        let mut have: Vec<&str> = report.members.iter().map(|m| m.member.as_str()).collect();
        have.sort_unstable();
        let all_ready = report
            .members
            .iter()
            .all(|m| m.state == "Ready" && m.pid.is_some());
        (have == want && all_ready).then(|| {
            report
                .members
                .iter()
                .map(|m| (m.member.clone(), m.pid.expect("ready")))
                .collect()
        })
    })
}

/// An agent running `quaestor worker` for service `service` (also its agent type).
fn worker_agent(service: &str, extra: &str) -> String {
    format!(
        "  - agentType: {service}\n    executablePath: {bin}\n    \
         commandLineArguments: worker --host {{HostName}} --port {{Port}} --service {service} {extra}\n    \
         clusterShutdownAction: Kill\n    serviceNames: [ {service} ]\n",
        bin = bin().display()
    )
}

fn cluster_config(agents: &[String]) -> String {
    format!(
        "clusterConfig:\n  name: reloading\n  heartBeatIntervalSeconds: 1\n  memberResponseTimeOutSeconds: 2\n  \
         memberMaxShutdownTimeSeconds: 5\nagents:\n{}",
        agents.concat()
    )
}

/// SIGHUP and file changes apply the config again: added agents start, removed ones stop,
/// changed ones restart, and the members of unchanged agents keep running (same pid), also
/// when only their timing settings changed. A config that does not load changes nothing.
#[test]
fn reload_adds_removes_and_changes_agents_and_leaves_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let socket = dir.path().join("control.sock");
    let v1 = cluster_config(&[
        worker_agent("Staying", ""),
        worker_agent("Changing", ""),
        worker_agent("Leaving", ""),
    ]);
    std::fs::write(&config, &v1).expect("write");
    let (mut cluster, log) = start_logged(&config, &socket);
    let before = ready(&socket, &["Staying[0]", "Changing[0]", "Leaving[0]"]);

    // SIGHUP with the file unchanged: applied, nothing touched (and SIGHUP does not end it).
    cluster.signal(Signal::SIGHUP);
    log.expect("the SIGHUP reload", TIMEOUT, |line| {
        line.contains("SIGHUP: config applied; no member to start or stop")
            .then_some(())
    });
    assert_eq!(
        ready(&socket, &["Staying[0]", "Changing[0]", "Leaving[0]"]),
        before
    );

    // A file that does not load: named in the log, nothing changes.
    std::fs::write(&config, format!("{v1}    processCount: many\n")).expect("write");
    let refused = log.expect("the refused reload", TIMEOUT, |line| {
        line.contains("the config does not load")
            .then(|| line.to_owned())
    });
    assert!(
        refused.contains("quaestor.config.yml:") && refused.contains("processCount"),
        "{refused}"
    );
    assert_eq!(
        ready(&socket, &["Staying[0]", "Changing[0]", "Leaving[0]"]),
        before
    );

    // Staying: only timing changes; Changing: another command line; Leaving: gone;
    // Arriving: new.
    let staying = worker_agent("Staying", "").replace(
        "    serviceNames",
        "    healthCheck:\n      failuresBeforeRestart: 2\n    restartBackoff:\n      initialSeconds: 0.2\n    serviceNames",
    );
    let v2 = cluster_config(&[
        staying,
        worker_agent("Changing", "--capacity 8"),
        worker_agent("Arriving", ""),
    ]);
    std::fs::write(&config, v2).expect("write");
    assert!(
        log.expect("the config stop in words", TIMEOUT, |line| {
            line.contains("Changing[0] (pid ")
                .then(|| line.contains("config changed; stopping it"))
        }),
        "logged at the stop, before the reload's summary"
    );
    let applied = log.expect("the file-change reload", TIMEOUT, |line| {
        line.contains("the config file changed: config applied")
            .then(|| line.to_owned())
    });
    assert!(applied.contains("kept=1"), "{applied}");
    let after = ready(&socket, &["Staying[0]", "Changing[0]", "Arriving[0]"]);
    assert_eq!(after["Staying[0]"], before["Staying[0]"], "untouched");
    assert_ne!(after["Changing[0]"], before["Changing[0]"], "restarted");
    assert!(
        !process_running(before["Leaving[0]"] as i32),
        "the removed member was stopped"
    );
    assert!(
        !process_running(before["Changing[0]"] as i32),
        "the changed member's old process was stopped"
    );
    let report = status(&socket);
    let staying = report
        .members
        .iter()
        .find(|m| m.member == "Staying[0]")
        .expect("Staying");
    assert_eq!(staying.restarts, 0);
    assert_eq!(staying.last_health.as_deref(), Some("SERVING"));
    assert_eq!(staying.last_reason, None, "never stopped: {staying:?}");
    let changing = report
        .members
        .iter()
        .find(|m| m.member == "Changing[0]")
        .expect("Changing");
    assert_eq!(changing.last_reason.as_deref(), Some("config changed"));
    assert_eq!((changing.config_restarts, changing.crashes), (1, 0));

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    for pid in after.values() {
        assert!(
            !process_running(*pid as i32),
            "{pid} stopped with the cluster"
        );
    }
    assert!(!socket.exists(), "the control socket is removed");
}

/// `quaestor cluster status` lists state, pid, port, restarts, health and uptime; it exits 2
/// when no cluster runs the config, and a second cluster on the same config is refused.
#[test]
fn status_lists_the_members_and_one_cluster_runs_a_config() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let config_arg = config.to_str().expect("utf-8");
    let out = quaestor(&["cluster", "status", "--config", config_arg]);
    assert_eq!(out.code, Some(64), "no config file: {out:?}");

    std::fs::write(&config, cluster_config(&[worker_agent("Worker", "")])).expect("write");
    let out = quaestor(&["cluster", "status", "--config", config_arg]);
    assert_eq!(out.code, Some(2), "no cluster runs it: {out:?}");
    assert!(out.stderr.contains("no cluster answers"), "{}", out.stderr);

    // The default control socket: found from the same --config.
    let (process, lines) = spawn_reading(&bin(), &["cluster", "--config", config_arg]);
    lines.drain();
    let socket = quaestor_core::supervisor::control::default_socket_path(&config);
    let pids = ready(&socket, &["Worker[0]"]);
    let out = quaestor(&["cluster", "status", "--config", config_arg]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("cluster reloading (pid ")),
        "{}",
        out.stdout
    );
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header[..7],
        [
            "MEMBER", "STATE", "PID", "PORT", "RESTARTS", "HEALTH", "UPTIME"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    let report = status(&socket);
    let member = &report.members[0];
    assert_eq!(
        row[..6],
        [
            "Worker[0]",
            "Ready",
            &pids["Worker[0]"].to_string(),
            &member.port.to_string(),
            "0",
            "SERVING"
        ]
    );
    assert!(row[6].ends_with('s') || row[6].ends_with('m'), "{row:?}");
    assert!(member.uptime_seconds.is_some_and(|s| s >= 0.0));
    assert_eq!(report.pid, process.pid());
    assert!(listening(&format!("127.0.0.1:{}", member.port)));

    let second = quaestor(&["cluster", "--config", config_arg]);
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(second.stderr.contains("already runs"), "{}", second.stderr);
    assert_eq!(
        ready(&socket, &["Worker[0]"]),
        pids,
        "the first is untouched"
    );
    process.signal(Signal::SIGTERM);
}

/// The C# Quaestor's own sample files (`core/tests/config/csharp`), run with quaestor's
/// programs: the cluster file unchanged but for the worker's path and the ports (free ones,
/// as every test takes), the load balancer's file beside it unchanged but for the ports. The
/// cluster finds its file by the C# name, runs `quaestor-worker {Port} 100` (the C#
/// WorkerProcess's arguments) four times and `quaestor-loadbalancer.exe` (found as
/// `quaestor-loadbalancer` next to the file), which reads its own file and offers the four.
#[test]
fn the_csharp_sample_configs_run_with_quaestors_programs() {
    let dir = tempfile::tempdir().expect("dir");
    for program in ["quaestor-worker", "quaestor-loadbalancer"] {
        std::os::unix::fs::symlink(bin(), dir.path().join(program)).expect("symlink");
    }
    let mut ports = free_ports(6);
    let (balancer, no_etcd) = (ports[4], ports[5]);
    ports.truncate(4);
    let workers = ports;
    let ports = workers
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/config/csharp");
    let sample = |file: &str| std::fs::read_to_string(samples.join(file)).expect("sample");
    let cluster_file = sample("Quaestor.Cluster.Console/quaestor.cluster.config.yml")
        .replace(
            r"..\..\..\..\..\examples\HelloWorld\WorkerProcess\bin\Debug\net8.0\WorkerProcess.exe",
            "quaestor-worker",
        )
        .replace("5161, 5162, 5163, 5164", &ports)
        .replace("    - 5150", &format!("    - {balancer}"));
    let balancer_file = sample("Quaestor.LoadBalancer.Console/quaestor.loadbalancer.config.yml")
        .replace("5161, 5162, 5163, 5164", &ports)
        .replace("port: 5150", &format!("port: {balancer}"))
        .replace("    - 2379", &format!("    - {no_etcd}"));
    std::fs::write(dir.path().join("quaestor.cluster.config.yml"), cluster_file).expect("write");
    std::fs::write(
        dir.path().join("quaestor.loadbalancer.config.yml"),
        balancer_file,
    )
    .expect("write");

    let socket = dir.path().join("control.sock");
    let mut command = std::process::Command::new(bin());
    command
        .arg("cluster")
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--control")
        .arg(&socket)
        .stdout(std::process::Stdio::piped());
    let mut cluster = ChildProcess::spawn("quaestor cluster (C# samples)", command);
    OutputLines::of(&mut cluster).drain();
    ready(
        &socket,
        &[
            "Worker[0]",
            "Worker[1]",
            "Worker[2]",
            "Worker[3]",
            "LoadBalancer[0]",
        ],
    );
    let offered = wait_for("the load balancer to offer the four", TIMEOUT, || {
        let out = quaestor(&["discover", &format!("127.0.0.1:{balancer}"), "Worker"]);
        let mut found: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        found.sort();
        (found.len() == 4).then_some(found)
    });
    let mut expected: Vec<String> = workers.iter().map(|p| format!("localhost:{p}")).collect();
    expected.sort();
    assert_eq!(offered, expected);

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    for port in workers.iter().chain([&balancer]) {
        assert!(
            !listening(&format!("127.0.0.1:{port}")),
            "{port} stopped with the cluster (clusterShutdownAction: Kill)"
        );
    }
}

/// `clusterConfig.etcd` names an etcd that runs elsewhere: members are registered in it while
/// they serve and removed when the cluster stops.
#[test]
fn a_clusterconfig_etcd_list_is_the_registry() {
    let etcd = quaestor_test_support::etcd::EtcdCluster::single();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let text = cluster_config(&[worker_agent("Worker", "")]).replace(
        "  name: reloading\n",
        &format!("  name: external\n  etcd: [ {} ]\n", etcd.endpoint(0)),
    );
    std::fs::write(&config, text).expect("write");
    let socket = dir.path().join("control.sock");
    let (mut cluster, log) = start_logged(&config, &socket);
    log.drain();
    ready(&socket, &["Worker[0]"]);
    let port = status(&socket).members[0].port;
    let key = format!("services//Worker/127.0.0.1/{port}/http");
    wait_for("the member's registration in etcd", TIMEOUT, || {
        (etcd.get_prefix_keys("services/") == [key.clone()]).then_some(())
    });
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    assert!(
        etcd.get_prefix_keys("services/").is_empty(),
        "deregistered when the cluster stopped"
    );
}

/// Finding 1 of issue 14: a cluster whose `clusterConfig.etcd` does not answer yet starts
/// anyway (it used to exit 2 with nothing started), registers its members once etcd answers,
/// and its in-process balancer then offers them.
#[test]
fn a_cluster_started_before_its_etcd_registers_the_members_once_etcd_answers() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("quaestor.config.yml");
    let [etcd_port, balancer_port] = free_ports(2)[..] else {
        unreachable!("two ports")
    };
    let text = cluster_config(&[worker_agent("Worker", "")]).replace(
        "  name: reloading\n",
        &format!("  etcd: http://127.0.0.1:{etcd_port}\n"),
    ) + &format!(
        "loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {balancer_port}\n  probeIntervalMs: 100\n"
    );
    std::fs::write(&config, text).expect("write");
    let socket = dir.path().join("control.sock");
    let (mut cluster, log) = start_logged(&config, &socket);
    ready(&socket, &["Worker[0]"]);
    log.expect("the warning that etcd does not answer", TIMEOUT, |line| {
        (line.contains("WARN") && line.contains("etcd")).then_some(())
    });
    log.drain();
    let port = status(&socket).members[0].port;

    let etcd = quaestor_test_support::etcd::EtcdCluster::single_at(etcd_port, None);
    let key = format!("services//Worker/127.0.0.1/{port}/http");
    wait_for(
        "the member's registration once etcd answers",
        TIMEOUT,
        || (etcd.get_prefix_keys("services/") == [key.clone()]).then_some(()),
    );
    let balancer = format!("127.0.0.1:{balancer_port}");
    let member = format!("127.0.0.1:{port}");
    wait_for(
        "the in-process balancer to offer the member",
        TIMEOUT,
        || {
            let out = quaestor(&["discover", &balancer, "Worker", "--top"]);
            (out.stdout.trim() == member).then_some(())
        },
    );
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    assert!(etcd.get_prefix_keys("services/").is_empty());
}

/// `clusterConfig.etcdOptions`: the TLS files and credentials (password from an environment
/// variable) of an etcd with client certificates and authentication on.
#[test]
fn a_cluster_registers_in_an_etcd_with_tls_and_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = quaestor_test_support::TestPki::new();
    let mut etcd = quaestor_test_support::etcd::EtcdCluster::single_tls((&pki).into());
    etcd.enable_auth();
    let config = dir.path().join("quaestor.config.yml");
    let text = cluster_config(&[worker_agent("Worker", "")]).replace(
        "  name: reloading\n",
        &format!(
            "  etcd: [ {} ]\n  etcdOptions:\n    caFile: {}\n    certFile: {}\n    keyFile: {}\n    user: {}\n    passwordEnv: QUAESTOR_TEST_ETCD_PASSWORD\n",
            etcd.endpoint(0),
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
            quaestor_test_support::etcd::EtcdCluster::USER,
        ),
    );
    std::fs::write(&config, text).expect("write");
    let socket = dir.path().join("control.sock");
    let mut command = std::process::Command::new(bin());
    command
        .args(["cluster", "--config"])
        .arg(&config)
        .arg("--control")
        .arg(&socket)
        .env(
            "QUAESTOR_TEST_ETCD_PASSWORD",
            quaestor_test_support::etcd::EtcdCluster::PASSWORD,
        );
    let mut cluster = ChildProcess::spawn("quaestor cluster", command);
    ready(&socket, &["Worker[0]"]);
    let port = status(&socket).members[0].port;
    let key = format!("services//Worker/127.0.0.1/{port}/http");
    wait_for(
        "the member's registration in the TLS+auth etcd",
        TIMEOUT,
        || (etcd.get_prefix_keys("services/") == [key.clone()]).then_some(()),
    );
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit(TIMEOUT).code(), Some(0));
    assert!(etcd.get_prefix_keys("services/").is_empty());
}
