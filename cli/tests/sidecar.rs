//! `quaestor sidecar` end to end, with real etcd and real processes: workers with no
//! quaestor code of their own become discoverable through `quaestor load-balancer` while
//! healthy, are withdrawn when not, signed up again when they recover; a killed sidecar's
//! lease expires; `-- COMMAND` restarts a crashing worker; sidecars serving discovery agree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{
    ChildProcess, Finished, OutputLines, Worker, free_port, quaestor_bin, run, spawn_listening,
    spawn_reading, spawn_worker, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// A sidecar and its stdout; its control address once it serves.
struct Running {
    process: ChildProcess,
    lines: OutputLines,
    control: String,
}

fn sidecar(etcd: &EtcdCluster, service: &str, port: u16, extra: &[&str]) -> Running {
    let port = port.to_string();
    let endpoint = etcd.endpoint(0);
    let mut args = vec![
        "sidecar",
        "--service",
        service,
        "--port",
        &port,
        "--etcd",
        &endpoint,
        "--interval",
        "100ms",
        "--timeout",
        "1s",
        "--ttl",
        "2s",
    ];
    args.extend_from_slice(extra);
    let (process, lines) = spawn_reading(&bin(), &args);
    let control = lines.expect("`listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("listening on ").map(str::to_owned)
    });
    Running {
        process,
        lines,
        control,
    }
}

fn key(service: &str, port: u16) -> String {
    format!("services//{service}/127.0.0.1/{port}/http")
}

/// Waits until the registered keys are exactly `keys`.
fn registered(etcd: &EtcdCluster, keys: &[String]) {
    let mut want = keys.to_vec();
    want.sort();
    wait_for(&format!("registrations {want:?}"), TIMEOUT, || {
        let mut have = etcd.get_prefix_keys("services/");
        have.sort();
        (have == want).then_some(())
    });
}

/// A `quaestor load-balancer` over `etcd`.
fn balancer(etcd: &EtcdCluster, dir: &Path) -> Worker {
    let port = etcd
        .endpoint(0)
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let config = dir.join("quaestor.loadbalancer.config.yml");
    std::fs::write(
        &config,
        format!(
            "loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 1\n  probeIntervalMs: 100\n\
             agents:\n  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {port} ]\n"
        ),
    )
    .expect("write");
    spawn_listening(
        &bin(),
        &[
            "load-balancer",
            "--config",
            config.to_str().expect("utf-8"),
            "--port",
            "0",
        ],
    )
}

/// What `quaestor discover ADDR SERVICE` answers, sorted (empty when nothing).
fn discovered(balancer: &str, service: &str) -> Vec<String> {
    let out = quaestor(&["discover", balancer, service]);
    let mut found: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    found.sort();
    found
}

#[test]
fn a_grpc_worker_is_offered_while_serving_and_withdrawn_while_not() {
    let etcd = EtcdCluster::single();
    let dir = tempfile::tempdir().expect("dir");
    let mut worker = spawn_worker(&bin(), &["--busy", "1"]);
    let port = worker.addr.port();
    let mut side = sidecar(&etcd, "Worker", port, &[]);
    registered(&etcd, &[key("Worker", port)]);
    let lb = balancer(&etcd, dir.path());
    let lb_addr = lb.addr.to_string();
    let worker_addr = format!("127.0.0.1:{port}");
    wait_for("the balancer to offer the worker", TIMEOUT, || {
        (discovered(&lb_addr, "Worker") == [worker_addr.clone()]).then_some(())
    });
    // The worker's own load report, mirrored on the control port.
    wait_for("the mirrored load", TIMEOUT, || {
        let out = quaestor(&["load", &side.control, "Worker", "--json"]);
        out.stdout.contains("\"current_requests\":1").then_some(())
    });

    worker.process.signal(Signal::SIGUSR1); // NOT_SERVING
    registered(&etcd, &[]);
    assert_eq!(quaestor(&["health", &side.control, "Worker"]).code, Some(1));
    worker.process.signal(Signal::SIGUSR2); // SERVING again
    registered(&etcd, &[key("Worker", port)]);
    assert_eq!(quaestor(&["health", &side.control, "Worker"]).code, Some(0));

    worker.process.signal(Signal::SIGKILL); // death
    worker.process.wait_exit(TIMEOUT);
    registered(&etcd, &[]);
    wait_for("the balancer to drop the worker", TIMEOUT, || {
        discovered(&lb_addr, "Worker").is_empty().then_some(())
    });

    side.process.signal(Signal::SIGTERM);
    assert_eq!(side.process.wait_exit(TIMEOUT).code(), Some(0));
}

/// `-- COMMAND`: a plain HTTP server (python3 -m http.server, no gRPC, no quaestor) checked
/// with `--check http:/`, restarted when it dies, stopped with the sidecar, whose exit code
/// is the worker's.
#[test]
fn command_mode_restarts_a_crashing_worker() {
    let etcd = EtcdCluster::single();
    let port = free_port();
    let mut side = sidecar(
        &etcd,
        "Web",
        port,
        &[
            "--check",
            "http:/",
            "--",
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "{Port}",
        ],
    );
    let started = |lines: &OutputLines| -> i32 {
        lines.expect("`worker started pid PID`", TIMEOUT, |line| {
            line.strip_prefix("worker started pid ")?.parse().ok()
        })
    };
    let first = started(&side.lines);
    registered(&etcd, &[key("Web", port)]);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).expect("kill");
    let second = started(&side.lines);
    assert_ne!(first, second);
    registered(&etcd, &[key("Web", port)]);
    assert!(quaestor_test_support::process_running(second));

    side.process.signal(Signal::SIGTERM);
    // python3's default SIGTERM handling ends it by the signal: 128 + 15.
    assert_eq!(side.process.wait_exit(TIMEOUT).code(), Some(143));
    assert!(!quaestor_test_support::process_running(second));
    assert!(
        etcd.get_prefix_keys("services/").is_empty(),
        "withdrawn first"
    );
}

#[test]
fn a_killed_sidecar_lets_the_lease_expire() {
    let etcd = EtcdCluster::single();
    let worker = spawn_worker(&bin(), &[]);
    let port = worker.addr.port();
    let mut side = sidecar(&etcd, "Worker", port, &["--check", "tcp"]);
    registered(&etcd, &[key("Worker", port)]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(side.process.pid() as i32),
        Signal::SIGKILL,
    )
    .expect("kill");
    side.process.wait_exit(TIMEOUT);
    // Nobody revokes it: the 2 s lease ends by itself.
    registered(&etcd, &[]);
}

#[test]
fn sidecars_serving_discovery_give_the_same_answers() {
    let etcd = EtcdCluster::single();
    let workers = [spawn_worker(&bin(), &[]), spawn_worker(&bin(), &[])];
    let mut addresses: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    addresses.sort();
    let discovery = |running: &Running| {
        running
            .lines
            .expect("`discovery listening on ADDR`", TIMEOUT, |line| {
                line.strip_prefix("discovery listening on ")
                    .map(str::to_owned)
            })
    };
    let sides: Vec<(Running, String)> = workers
        .iter()
        .map(|w| {
            let running = sidecar(&etcd, "Worker", w.addr.port(), &["--serve-discovery", "0"]);
            let addr = discovery(&running);
            (running, addr)
        })
        .collect();
    for (_, addr) in &sides {
        wait_for("both workers offered", TIMEOUT, || {
            (discovered(addr, "Worker") == addresses).then_some(())
        });
        let out = quaestor(&["discover", "--top", addr, "Worker"]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    for (mut running, _) in sides {
        running.process.signal(Signal::SIGTERM);
        assert_eq!(running.process.wait_exit(TIMEOUT).code(), Some(0));
    }
    registered(&etcd, &[]);
}

/// The sidecar mirrors its worker's load through setters, and pushes what it mirrors
/// (quaestor.push.v1) on its control port: a call in flight at the worker and the worker
/// turning NOT_SERVING reach a `WatchLoad` on the sidecar, and the call's start and end reach
/// its ORCA stream (`application_utilization`); SIGTERM ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirrored_load_and_health_are_pushed() {
    use quaestor_core::proto::example::WorkRequest;
    use quaestor_core::proto::example::work_client::WorkClient;
    use quaestor_core::proto::push::WatchLoadRequest;
    use quaestor_core::proto::push::load_push_client::LoadPushClient;
    use quaestor_core::proto::xds::service::orca::v3::OrcaLoadReportRequest;
    use quaestor_core::proto::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;

    use quaestor_test_support::message_until;

    let etcd = EtcdCluster::single();
    let worker = spawn_worker(&bin(), &["--capacity", "6"]);
    let port = worker.addr.port();
    let mut side = sidecar(&etcd, "Worker", port, &[]);
    let mut updates = LoadPushClient::connect(format!("http://{}", side.control))
        .await
        .expect("connect")
        .watch_load(WatchLoadRequest {
            service_name: "Worker".into(),
            ..Default::default()
        })
        .await
        .expect("WatchLoad on the sidecar")
        .into_inner();
    message_until(
        &mut updates,
        TIMEOUT,
        "the worker's capacity, SERVING",
        |u| u.health == 1 && u.load.is_some_and(|l| l.request_capacity == 6),
    )
    .await;

    let mut work = WorkClient::connect(format!("http://{}", worker.addr))
        .await
        .expect("connect");
    let call = tokio::spawn(async move {
        work.do_work(WorkRequest {
            milliseconds: 3_000,
            service_name: String::new(),
        })
        .await
    });
    message_until(&mut updates, TIMEOUT, "the worker's call in flight", |u| {
        u.load.is_some_and(|l| l.current_requests == 1)
    })
    .await;
    // ORCA on the control port says the same: one in flight of 6 (reports every second).
    let mut reports = OpenRcaServiceClient::connect(format!("http://{}", side.control))
        .await
        .expect("connect")
        .stream_core_metrics(OrcaLoadReportRequest::default())
        .await
        .expect("StreamCoreMetrics on the sidecar")
        .into_inner();
    // (application_utilization is the mean over a report's interval: a whole interval busy.)
    message_until(&mut reports, TIMEOUT, "ORCA: the call in flight", |r| {
        r.named_metrics.get("current_requests") == Some(&1.0)
            && r.application_utilization == 1.0 / 6.0
    })
    .await;
    call.abort(); // the client gives up: the worker ends the request
    message_until(&mut reports, TIMEOUT, "ORCA: no call in flight", |r| {
        r.named_metrics.get("current_requests") == Some(&0.0) && r.application_utilization == 0.0
    })
    .await;
    drop(reports);

    worker.process.signal(Signal::SIGUSR1); // NOT_SERVING
    message_until(&mut updates, TIMEOUT, "NOT_SERVING", |u| u.health == 2).await;

    side.process.signal(Signal::SIGTERM);
    let end = tokio::time::timeout(TIMEOUT, async {
        while let Ok(Some(_)) = updates.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the push ends when the sidecar stops");
    assert_eq!(side.process.wait_exit(TIMEOUT).code(), Some(0));
}

/// Finding 1 of issue 14: a sidecar started while its etcd is down keeps running (it used to
/// exit 2), registers the worker once etcd answers, and its `--serve-discovery` then answers
/// from etcd.
#[test]
fn a_sidecar_started_before_its_etcd_registers_once_etcd_answers() {
    let worker = spawn_worker(&bin(), &[]);
    let port = worker.addr.port().to_string();
    let etcd_port = free_port();
    let endpoint = format!("http://127.0.0.1:{etcd_port}");
    let (mut process, lines) = spawn_reading(
        &bin(),
        &[
            "sidecar",
            "--service",
            "Worker",
            "--port",
            &port,
            "--etcd",
            &endpoint,
            "--interval",
            "100ms",
            "--ttl",
            "2s",
            "--serve-discovery",
            "0",
        ],
    );
    let discovery = lines.expect("`discovery listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("discovery listening on ")
            .map(str::to_owned)
    });
    lines.drain();

    let etcd = EtcdCluster::single_at(etcd_port, None);
    registered(&etcd, &[key("Worker", worker.addr.port())]);
    let worker_addr = worker.addr.to_string();
    wait_for(
        "the sidecar's discovery to answer from etcd",
        TIMEOUT,
        || (discovered(&discovery, "Worker") == [worker_addr.clone()]).then_some(()),
    );
    process.signal(Signal::SIGTERM);
    assert_eq!(process.wait_exit(TIMEOUT).code(), Some(0));
    registered(&etcd, &[]);
}

/// The sidecar's etcd flags (those of `quaestor registry`) reach an etcd with TLS (client
/// certificates) and authentication on; the password from a file.
#[test]
fn a_sidecar_registers_in_an_etcd_with_tls_and_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = quaestor_test_support::TestPki::new();
    let mut etcd = EtcdCluster::single_tls((&pki).into());
    etcd.enable_auth();
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{}\n", EtcdCluster::PASSWORD)).expect("write");
    let worker = spawn_worker(&bin(), &[]);
    let side = sidecar(
        &etcd,
        "Worker",
        worker.addr.port(),
        &[
            "--etcd-ca",
            pki.ca.to_str().expect("utf-8"),
            "--etcd-cert",
            pki.client_cert.to_str().expect("utf-8"),
            "--etcd-key",
            pki.client_key.to_str().expect("utf-8"),
            "--etcd-user",
            EtcdCluster::USER,
            "--etcd-password-file",
            password.to_str().expect("utf-8"),
        ],
    );
    side.lines.drain();
    let key = format!("services//Worker/127.0.0.1/{}/http", worker.addr.port());
    registered(&etcd, &[key]);
}
