//! `quaestor cluster` as a process: members from a C#-style config, the in-process balancer
//! over them, a graceful stop, no orphans after `kill -9`, bad configs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_test_support::{Finished, Worker, quaestor_bin, run, spawn_listening, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// A cluster config: `count` reference workers on ephemeral ports, the balancer on a free port.
fn write_config(dir: &Path, count: u32) -> PathBuf {
    let balancer_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
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
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (etcd_port, peer_port, balancer_port) = (free(), free(), free());
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
