//! The client commands as an operator meets them: a closed stdout (`| head -c1`) ends them
//! quietly, errors are human and distinct (with their exit codes), `--help` shows examples
//! and lists the command's own options before the log options.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{
    ChildProcess, Finished, TestPki, Worker, free_port, quaestor_bin, run, spawn_listening,
    spawn_registration, spawn_worker, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// A cluster of `count` reference workers behind its balancer, with a control socket.
fn start_cluster(dir: &Path, count: u32) -> (Worker, PathBuf) {
    let control = dir.join("control.sock");
    let config = dir.join("quaestor.config.yml");
    std::fs::write(
        &config,
        format!(
            "clusterConfig:\n  name: hygiene\n  heartBeatIntervalSeconds: 1\n\
             loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: {}\n  probeIntervalMs: 100\n\
             agents:\n  - agentType: Worker\n    executablePath: {}\n    commandLineArguments: worker --host {{HostName}} --port {{Port}}\n    \
             processCount: {count}\n    clusterShutdownAction: Kill\n    hostName: 127.0.0.1\n    serviceNames: [ Worker ]\n",
            free_port(),
            bin().display()
        ),
    )
    .expect("write config");
    let cluster = spawn_listening(
        &bin(),
        &[
            "cluster",
            "--config",
            config.to_str().expect("utf-8"),
            "--control",
            control.to_str().expect("utf-8"),
        ],
    );
    (cluster, control)
}

/// The workers the balancer offers, once `count` of them serve.
fn serving_workers(balancer: &str, count: usize) -> Vec<String> {
    wait_for("the members to serve", TIMEOUT, || {
        let out = quaestor(&["discover", balancer, "Worker"]);
        let found: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        (found.len() == count).then_some(found)
    })
}

/// How `quaestor ARGS...` ended when its stdout was closed after `read` bytes (0: at once,
/// before it printed anything): (exit code, or 128 + signal; stderr).
fn with_closed_stdout(args: &[&str], read: usize) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut command = Command::new(bin());
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = ChildProcess::spawn(&format!("quaestor {}", args.join(" ")), command);
    let mut stdout = process.child_mut().stdout.take().expect("stdout");
    let mut stderr = process.child_mut().stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut buffer = vec![0u8; read];
    stdout.read_exact(&mut buffer).expect("the first bytes");
    drop(stdout);
    let status = process.wait_exit(TIMEOUT);
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("a code or a signal");
    (code, log.join().expect("stderr reader"))
}

#[test]
fn a_closed_stdout_ends_client_commands_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let (cluster, control) = start_cluster(dir.path(), 3);
    let balancer = cluster.addr.to_string();
    let workers = serving_workers(&balancer, 3);
    let etcd = EtcdCluster::single();
    let endpoint = etcd.endpoint(0);
    let _registrations: Vec<ChildProcess> = (1..=4)
        .map(|port| spawn_registration(&bin(), &endpoint, "127.0.0.1", port, &[]))
        .collect();

    let control = control.to_str().expect("utf-8");
    let commands: [&[&str]; 5] = [
        &["load", &workers[0], "Worker"],
        &["discover", &balancer, "Worker"],
        &["registry", "list", "--etcd", &endpoint],
        &["cluster", "status", "--control", control],
        &["cluster", "status", "--json", "--control", control],
    ];
    for args in commands {
        for run in 0..20 {
            // `| head -c1`, and a reader gone before the first line.
            for read in [1, 0] {
                if read == 0 && run >= 5 {
                    continue;
                }
                let (code, stderr) = with_closed_stdout(args, read);
                assert!(
                    code == 0 || code == 141,
                    "{args:?} (run {run}, read {read}) exited {code}: {stderr}"
                );
                assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            }
        }
    }
}

#[test]
fn client_errors_are_human_and_distinct() {
    let dir = tempfile::tempdir().expect("dir");
    let (cluster, _control) = start_cluster(dir.path(), 1);
    let balancer = cluster.addr.to_string();
    let workers = serving_workers(&balancer, 1);

    // A worker asked for discovery.
    let out = quaestor(&["discover", &workers[0], "Worker"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "quaestor: {} does not serve Quaestor.ServiceDiscovery (it answered UNIMPLEMENTED): is it a worker, not a balancer?",
            workers[0]
        )
    );

    // A name in the wrong case; a name nobody serves.
    let out = quaestor(&["discover", &balancer, "worker"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim(),
        "quaestor: no location for 'worker' (names are case-sensitive; known: Worker)"
    );
    let out = quaestor(&["discover", &balancer, "Nobody"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.trim(), "quaestor: no location for 'Nobody'");

    // TLS to a plaintext server: unreachable, exit 2.
    let out = quaestor(&["discover", &format!("https://{balancer}"), "Worker"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "quaestor: cannot connect to {balancer}: it does not answer in TLS (TLS to a server that speaks plaintext?)"
        )
    );

    // A TLS server whose certificate the client does not trust: refused by TLS, exit 2.
    let pki = TestPki::new();
    let tls_worker = spawn_worker(
        &bin(),
        &[
            "--host",
            "127.0.0.1",
            "--tls-cert",
            pki.server_cert.to_str().expect("utf-8"),
            "--tls-key",
            pki.server_key.to_str().expect("utf-8"),
        ],
    );
    let out = quaestor(&["health", &format!("https://{}", tls_worker.addr)]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "quaestor: cannot connect to {}: refused by TLS: ",
            tls_worker.addr
        )) && out.stderr.contains("certificate"),
        "{out:?}"
    );

    // Plaintext to a TLS server: unreachable, exit 2.
    let out = quaestor(&["health", &tls_worker.addr.to_string()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "quaestor: cannot connect to {}: it closed the connection without an answer (plaintext to a server that speaks TLS? use https:// or --tls): ",
            tls_worker.addr
        )),
        "{out:?}"
    );

    // etcd that is not there: its root cause, no Debug dump; exit 2.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let etcd = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let out = quaestor(&["registry", "list", "--etcd", &etcd]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("quaestor: cannot connect to etcd at {etcd}: connection refused")
    );
}

#[test]
fn help_shows_examples_and_own_options_before_the_log_options() {
    for (args, own) in [
        (&["discover", "--help"][..], "--top"),
        (&["registry", "list", "--help"][..], "--json"),
        (&["load-balancer", "--help"][..], "--port"),
    ] {
        let out = quaestor(args);
        assert_eq!(out.code, Some(0), "{out:?}");
        let help = &out.stdout;
        let at = |text: &str| {
            help.find(text)
                .unwrap_or_else(|| panic!("{args:?}: no {text:?} in {help}"))
        };
        assert!(at(own) < at("Log options:"), "{help}");
        assert!(at("Log options:") < at("--verbose"), "{help}");
        assert!(at("--log-format") < at("Examples:"), "{help}");
        assert!(help[at("Examples:")..].contains("quaestor "), "{help}");
    }
}
