//! `quaestor load-balancer` as a process, configured like the C# load balancer, with real
//! `quaestor worker` processes, real etcd, and `quaestor discover` as the client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_test_support::etcd::EtcdCluster;
use quaestor_test_support::{
    Finished, TestPki, Worker, go_build, quaestor_bin, run, spawn_listening, spawn_reading,
    spawn_registration, spawn_worker, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

/// A config with `loadBalancerConfig` (a load probe every 100 ms) plus `extra` lines.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_probing(dir, 100, extra)
}

/// A config with `loadBalancerConfig` (a load probe every `probe_ms`) plus `extra` lines,
/// written to `dir`.
fn write_config_probing(dir: &Path, probe_ms: u32, extra: &str) -> PathBuf {
    let path = dir.join("quaestor.loadbalancer.config.yml");
    let text = format!(
        "# written by the test\nloadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 5150\n  probeIntervalMs: {probe_ms}\n  serviceResponseTimeoutSeconds: 1\n{extra}"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A KeyValueStore agent: the given etcd is the registry.
fn etcd_agent(etcd: &EtcdCluster) -> String {
    let endpoint = etcd.endpoint(0);
    let port = endpoint.rsplit(':').next().expect("port");
    format!(
        "agents:\n  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {port} ]\n"
    )
}

/// A Worker agent over the given workers' ports.
fn worker_agent(workers: &[Worker]) -> String {
    let ports: Vec<String> = workers.iter().map(|w| w.addr.port().to_string()).collect();
    format!(
        "agents:\n  - agentType: Worker\n    hostName: 127.0.0.1\n    ports: [ {} ]\n    serviceNames: [ Worker ]\n",
        ports.join(", ")
    )
}

fn start_balancer(config: &Path) -> Worker {
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

/// `quaestor discover` answers as sorted `host:port` lines.
fn discover(balancer: &Worker, extra: &[&str]) -> Vec<String> {
    let addr = balancer.addr.to_string();
    let mut args = vec!["discover", addr.as_str(), "Worker"];
    args.extend(extra);
    let out = quaestor(&args);
    assert!(matches!(out.code, Some(0) | Some(1)), "{out:?}");
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn addresses(workers: &[&Worker]) -> Vec<String> {
    let mut all: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    all.sort();
    all
}

#[test]
fn worker_agents_are_balanced_and_unhealthy_ones_leave() {
    let dir = tempfile::tempdir().expect("dir");
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| spawn_worker(&bin(), &["--capacity", "4"]))
        .collect();
    let config = write_config(dir.path(), &worker_agent(&workers));
    let balancer = start_balancer(&config);
    let all = addresses(&workers.iter().collect::<Vec<_>>());
    assert_eq!(discover(&balancer, &[]), all);
    assert_eq!(discover(&balancer, &["--top"]), all);
    assert_eq!(discover(&balancer, &["--top", "--max", "1"]).len(), 1);
    // The health names the C# configs check the balancer under.
    let addr = balancer.addr.to_string();
    for service in [
        "",
        "ServiceDiscoveryGrpc",
        "Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc",
        "grpc.lb.v1.LoadBalancer",
    ] {
        assert_eq!(
            quaestor(&["health", &addr, service]).code,
            Some(0),
            "{service:?}"
        );
    }

    workers[0].process.signal(Signal::SIGUSR1);
    let rest = addresses(&[&workers[1], &workers[2]]);
    wait_for("the NOT_SERVING worker to leave", TIMEOUT, || {
        (discover(&balancer, &[]) == rest).then_some(())
    });
    workers[0].process.signal(Signal::SIGUSR2);
    wait_for("the worker to come back", TIMEOUT, || {
        (discover(&balancer, &[]) == all).then_some(())
    });

    workers[1].process.signal(Signal::SIGKILL);
    workers[1].process.wait_exit(TIMEOUT);
    let alive = addresses(&[&workers[0], &workers[2]]);
    wait_for("the killed worker to leave", TIMEOUT, || {
        (discover(&balancer, &["--top"]) == alive).then_some(())
    });
}

#[test]
fn the_top_worker_is_the_least_loaded() {
    let dir = tempfile::tempdir().expect("dir");
    let busy = spawn_worker(&bin(), &["--capacity", "4", "--busy", "3"]);
    let idle = spawn_worker(&bin(), &["--capacity", "4", "--busy", "1"]);
    let workers = [busy, idle];
    let balancer = start_balancer(&write_config(dir.path(), &worker_agent(&workers)));
    let addr = balancer.addr.to_string();
    let out = quaestor(&["discover", &addr, "Worker", "--top"]);
    let order: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        order,
        [workers[1].addr.to_string(), workers[0].addr.to_string()],
        "{out:?}"
    );
}

#[test]
fn a_key_value_store_agent_makes_etcd_the_registry() {
    let dir = tempfile::tempdir().expect("dir");
    let etcd = EtcdCluster::single();
    let worker = spawn_worker(&bin(), &[]);
    let config = write_config(dir.path(), &etcd_agent(&etcd));
    let balancer = start_balancer(&config);
    assert!(
        discover(&balancer, &[]).is_empty(),
        "nothing registered yet"
    );

    let mut registration = spawn_registration(
        &bin(),
        &etcd.endpoint(0),
        "127.0.0.1",
        worker.addr.port(),
        &[],
    );
    let found = vec![worker.addr.to_string()];
    wait_for("the registered worker", TIMEOUT, || {
        (discover(&balancer, &["--top"]) == found).then_some(())
    });

    registration.signal(Signal::SIGTERM);
    registration.wait_exit(TIMEOUT);
    wait_for("the deregistered worker to leave", TIMEOUT, || {
        discover(&balancer, &[]).is_empty().then_some(())
    });
}

#[test]
fn unreachable_etcd_falls_back_to_the_worker_agents() {
    let dir = tempfile::tempdir().expect("dir");
    let worker = spawn_worker(&bin(), &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let agents = format!(
        "{}  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {closed_port} ]\n",
        worker_agent(std::slice::from_ref(&worker))
    );
    let balancer = start_balancer(&write_config(dir.path(), &agents));
    assert_eq!(discover(&balancer, &[]), vec![worker.addr.to_string()]);
}

#[test]
fn a_bad_config_names_file_line_and_key_and_exits_64() {
    let dir = tempfile::tempdir().expect("dir");
    let config = write_config(
        dir.path(),
        "agents:\n  - agentType: Worker\n    prots: [ 5161 ]\n",
    );
    let out = quaestor(&["load-balancer", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(64), "{out:?}");
    let expected = format!("{}:9:5: key `agents[0].prots`", config.display());
    assert!(
        out.stderr.contains(&expected),
        "{expected} in {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `ports`"),
        "{}",
        out.stderr
    );

    let missing = quaestor(&[
        "load-balancer",
        "--config-dir",
        dir.path().join("nowhere").to_str().expect("utf-8"),
    ]);
    assert_eq!(missing.code, Some(64), "{missing:?}");
}

/// The server certificate followed by the CA: the chain clients are checked against too.
fn certificate_chain(pki: &TestPki, dir: &Path) -> PathBuf {
    let chain = dir.join("chain.pem");
    let text = std::fs::read_to_string(&pki.server_cert).expect("cert")
        + &std::fs::read_to_string(&pki.ca).expect("ca");
    std::fs::write(&chain, text).expect("write chain");
    chain
}

#[test]
fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new();
    let chain = certificate_chain(&pki, dir.path());
    let worker = spawn_worker(&bin(), &[]);
    let tls = |mutual: bool| {
        format!(
            "  certificate: {}\n  privateKeyFile: {}\n  enforceMutualTls: {mutual}\n{}",
            chain.display(),
            pki.server_key.display(),
            worker_agent(std::slice::from_ref(&worker))
        )
    };
    let ca = pki.ca.to_str().expect("utf-8");
    let (cert, key) = (
        pki.client_cert.to_str().expect("utf-8"),
        pki.client_key.to_str().expect("utf-8"),
    );
    let (stranger_cert, stranger_key) = (
        pki.stranger_cert.to_str().expect("utf-8"),
        pki.stranger_key.to_str().expect("utf-8"),
    );

    let server = start_balancer(&write_config(dir.path(), &tls(false)));
    let https = format!("https://localhost:{}", server.addr.port());
    let found = quaestor(&["discover", &https, "Worker", "--ca", ca]);
    assert_eq!(found.stdout.trim(), worker.addr.to_string(), "{found:?}");
    let untrusted = quaestor(&["discover", &https, "Worker", "--timeout", "2s"]);
    assert_eq!(
        untrusted.code,
        Some(2),
        "the system roots do not trust the test CA: {untrusted:?}"
    );
    drop(server);

    let mutual = start_balancer(&write_config(dir.path(), &tls(true)));
    let https = format!("https://localhost:{}", mutual.addr.port());
    let with_cert = quaestor(&[
        "discover", &https, "Worker", "--ca", ca, "--cert", cert, "--key", key,
    ]);
    assert_eq!(with_cert.code, Some(0), "{with_cert:?}");
    let without = quaestor(&["discover", &https, "Worker", "--ca", ca, "--timeout", "2s"]);
    assert_ne!(without.code, Some(0), "no client certificate: {without:?}");
    let stranger = quaestor(&[
        "discover",
        &https,
        "Worker",
        "--ca",
        ca,
        "--cert",
        stranger_cert,
        "--key",
        stranger_key,
    ]);
    assert_ne!(
        stranger.code,
        Some(0),
        "a certificate of another CA: {stranger:?}"
    );
}

/// A grpc-go client with the grpclb policy and no quaestor code balances over the workers
/// through `quaestor load-balancer`, and moves off a worker that turns NOT_SERVING.
#[test]
fn a_grpc_go_grpclb_client_balances_and_moves_off_a_not_serving_worker() {
    let dir = tempfile::tempdir().expect("dir");
    let client_bin = go_build("go-client", dir.path());
    let workers: Vec<Worker> = (0..3)
        .map(|_| spawn_worker(&bin(), &["--capacity", "4"]))
        .collect();
    let balancer = start_balancer(&write_config(dir.path(), &worker_agent(&workers)));
    let served_by = addresses(&workers.iter().collect::<Vec<_>>());

    let balancer_addr = balancer.addr.to_string();
    let (client, lines) = spawn_reading(
        &client_bin,
        &["-balancer", &balancer_addr, "-service", "Worker"],
    );
    let next_worker = || {
        lines
            .next(TIMEOUT)
            .strip_prefix("worker ")
            .map(str::to_owned)
    };

    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        if let Some(worker) = next_worker() {
            assert!(
                served_by.contains(&worker),
                "served by an unknown worker {worker}"
            );
            seen.insert(worker);
        }
    }
    // Worker 0 turns NOT_SERVING: grpclb's next server list leaves it out.
    let flipped = workers[0].addr.to_string();
    workers[0].process.signal(Signal::SIGUSR1);
    let mut others_in_a_row = 0;
    while others_in_a_row < 30 {
        match next_worker() {
            Some(worker) if worker == flipped => others_in_a_row = 0,
            Some(_) => others_in_a_row += 1,
            None => {}
        }
    }
    // Serving again: it gets calls again.
    workers[0].process.signal(Signal::SIGUSR2);
    while next_worker().as_deref() != Some(flipped.as_str()) {}
    drop(client);
}

/// Ten real workers registered in real etcd: 50 simultaneous DiscoverTopServices spread over
/// them, and a worker turned NOT_SERVING or killed leaves the answers long before the next
/// load probe (60 s away here), through the health Watch. (Ranking by load end to end:
/// `the_top_worker_is_the_least_loaded` and the Python parity test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_workers_in_etcd_spread_rank_and_leave_through_the_watch() {
    use quaestor_core::client::Target;
    use quaestor_core::registry::ServiceLocation;
    use quaestor_core::registry::etcd::{EtcdOptions, EtcdRegistrar};

    let dir = tempfile::tempdir().expect("dir");
    let etcd = EtcdCluster::single();
    let mut workers: Vec<Worker> = (0..10)
        .map(|_| spawn_worker(&bin(), &["--capacity", "4"]))
        .collect();
    let registrar = EtcdRegistrar::connect(EtcdOptions::new(etcd.endpoints()))
        .await
        .expect("registrar");
    for worker in &workers {
        let location =
            ServiceLocation::new("", "Worker", "127.0.0.1", worker.addr.port()).expect("location");
        registrar.register(&location).await.expect("register");
    }
    // A load probe every 60 s: only the health Watch can make changes visible in time below.
    let config = write_config_probing(dir.path(), 60_000, &etcd_agent(&etcd));
    let balancer = start_balancer(&config);
    let target = Target::new(&balancer.addr.to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");
    assert_eq!(
        target
            .discover(channel.clone(), "", "Worker", 0, false)
            .await
            .expect("discover")
            .len(),
        10
    );

    // 50 clients at once, each taking the top worker: no worker gets more than 20 %.
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (target, channel) = (target.clone(), channel.clone());
            tokio::spawn(async move { target.discover(channel, "", "Worker", 1, true).await })
        })
        .collect();
    let mut handed = std::collections::HashMap::<i32, usize>::new();
    for call in calls {
        let chosen = call.await.expect("task").expect("discover");
        assert_eq!(chosen.len(), 1);
        *handed.entry(chosen[0].port).or_default() += 1;
    }
    assert!(
        handed.values().all(|&n| n <= 10),
        "no worker over 20 %: {handed:?}"
    );

    // NOT_SERVING and killed workers leave within the deadline, far inside one probe interval.
    let not_serving = workers[0].addr.port() as i32;
    workers[0].process.signal(Signal::SIGUSR1);
    let killed = workers[1].addr.port() as i32;
    workers[1].process.signal(Signal::SIGKILL);
    workers[1].process.wait_exit(TIMEOUT);
    quaestor_test_support::wait_for_async(
        "both to leave the answers",
        Duration::from_secs(10),
        || async {
            let found = target
                .discover(channel.clone(), "", "Worker", 0, false)
                .await
                .expect("discover");
            let ports: Vec<i32> = found.iter().map(|l| l.port).collect();
            (ports.len() == 8 && !ports.contains(&not_serving) && !ports.contains(&killed))
                .then_some(())
        },
    )
    .await;
}

/// `quaestor load-balancer --config CONFIG --port 0` with its log (stderr) piped too: the
/// balancer once it listens, and its log lines.
fn start_balancer_logging(config: &Path) -> (Worker, quaestor_test_support::OutputLines) {
    let mut command = std::process::Command::new(bin());
    command
        .args(["load-balancer", "--config", config.to_str().expect("utf-8")])
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut process = quaestor_test_support::ChildProcess::spawn("load-balancer", command);
    let stdout = quaestor_test_support::OutputLines::of(&mut process);
    let log = quaestor_test_support::OutputLines::of_stderr(&mut process);
    let addr = stdout.expect("`listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("listening on ")?.trim().parse().ok()
    });
    stdout.drain();
    (Worker { process, addr }, log)
}

/// Finding 1 of issue 14: a balancer started while its etcd is down serves the Worker agents,
/// and switches to etcd once etcd answers (it used to stay on the Worker agents for good).
#[test]
fn a_balancer_started_before_its_etcd_serves_the_worker_agents_then_etcd() {
    let dir = tempfile::tempdir().expect("dir");
    let fallback = spawn_worker(&bin(), &[]);
    let registered = spawn_worker(&bin(), &[]);
    let etcd_port = quaestor_test_support::free_port();
    let agents = format!(
        "{}  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {etcd_port} ]\n",
        worker_agent(std::slice::from_ref(&fallback))
    );
    let (balancer, log) = start_balancer_logging(&write_config(dir.path(), &agents));
    assert_eq!(
        discover(&balancer, &["--top"]),
        vec![fallback.addr.to_string()],
        "the Worker agents serve while etcd is down"
    );
    log.expect("the warning that etcd is unreachable", TIMEOUT, |line| {
        (line.contains("WARN") && line.contains("etcd unreachable")).then_some(())
    });

    let etcd = EtcdCluster::single_at(etcd_port, None);
    let _registration = spawn_registration(
        &bin(),
        &etcd.endpoint(0),
        "127.0.0.1",
        registered.addr.port(),
        &[],
    );
    let found = vec![registered.addr.to_string()];
    wait_for(
        "the etcd-registered worker instead of the Worker agents",
        TIMEOUT,
        || (discover(&balancer, &["--top"]) == found).then_some(()),
    );
    log.expect("the switch to etcd, logged", TIMEOUT, |line| {
        (line.contains("INFO") && line.contains("etcd answers")).then_some(())
    });
    log.drain();
}

/// The KeyValueStore agent's `etcdOptions` reach an etcd with TLS (client certificates) and
/// authentication on; with a wrong password the balancer says etcd refused it (instead of
/// falling back to nothing without a word).
#[test]
fn a_key_value_store_agent_with_tls_and_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new();
    let mut etcd = EtcdCluster::single_tls((&pki).into());
    etcd.enable_auth();
    let port = etcd
        .endpoint(0)
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let worker = spawn_worker(&bin(), &[]);
    let (ca, cert, key) = (
        pki.ca.to_str().expect("utf-8"),
        pki.client_cert.to_str().expect("utf-8"),
        pki.client_key.to_str().expect("utf-8"),
    );
    let _registration = spawn_registration(
        &bin(),
        &etcd.endpoint(0),
        "127.0.0.1",
        worker.addr.port(),
        &[
            "--etcd-ca",
            ca,
            "--etcd-cert",
            cert,
            "--etcd-key",
            key,
            "--etcd-user",
            EtcdCluster::USER,
            "--etcd-password",
            EtcdCluster::PASSWORD,
        ],
    );
    let agent = |password_file: &str| {
        format!(
            "agents:\n  - agentType: KeyValueStore\n    hostName: 127.0.0.1\n    ports: [ {port} ]\n    useTLS: true\n    etcdOptions:\n      caFile: {ca}\n      certFile: {cert}\n      keyFile: {key}\n      user: {}\n      passwordFile: {password_file}\n",
            EtcdCluster::USER
        )
    };
    std::fs::write(
        dir.path().join("right"),
        format!("{}\n", EtcdCluster::PASSWORD),
    )
    .expect("write");
    std::fs::write(dir.path().join("wrong"), "wrong\n").expect("write");

    let right_dir = dir.path().join("a");
    std::fs::create_dir(&right_dir).expect("dir");
    let balancer = start_balancer(&write_config(&right_dir, &agent("../right")));
    let found = vec![worker.addr.to_string()];
    wait_for(
        "the worker registered in the TLS+auth etcd",
        TIMEOUT,
        || (discover(&balancer, &["--top"]) == found).then_some(()),
    );

    let wrong_dir = dir.path().join("b");
    std::fs::create_dir(&wrong_dir).expect("dir");
    let (refused, log) = start_balancer_logging(&write_config(&wrong_dir, &agent("../wrong")));
    log.expect("the refusal in the log", TIMEOUT, |line| {
        (line.contains("WARN")
            && line.contains("etcd refused user quaestor: authentication failed"))
        .then_some(())
    });
    log.drain();
    assert!(discover(&refused, &[]).is_empty());
}

/// Finding 7 of issue 14: `useTLS` workers whose certificates a private CA signed are offered
/// when `workerCaFile` names that CA, and mutual-TLS workers when `workerCertFile` and
/// `workerKeyFile` give a client certificate too; not otherwise.
#[test]
fn tls_workers_of_a_private_ca_are_probed_with_worker_ca_file() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = TestPki::new();
    let (ca, cert, key) = (
        pki.ca.to_str().expect("utf-8"),
        pki.client_cert.to_str().expect("utf-8"),
        pki.client_key.to_str().expect("utf-8"),
    );
    let server_tls = [
        "--tls-cert",
        pki.server_cert.to_str().expect("utf-8"),
        "--tls-key",
        pki.server_key.to_str().expect("utf-8"),
    ];
    let tls_worker = spawn_worker(&bin(), &server_tls);
    let mut mutual_args = server_tls.to_vec();
    mutual_args.extend(["--tls-client-ca", ca]);
    let mutual_worker = spawn_worker(&bin(), &mutual_args);
    let agents = format!(
        "agents:\n  - agentType: Worker\n    hostName: 127.0.0.1\n    useTLS: true\n    ports: [ {}, {} ]\n    serviceNames: [ Worker ]\n",
        tls_worker.addr.port(),
        mutual_worker.addr.port()
    );
    let balancer_with = |name: &str, keys: &str| {
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).expect("dir");
        start_balancer(&write_config(&folder, &format!("{keys}{agents}")))
    };
    let full = balancer_with(
        "full",
        &format!("  workerCaFile: {ca}\n  workerCertFile: {cert}\n  workerKeyFile: {key}\n"),
    );
    let ca_only = balancer_with("ca", &format!("  workerCaFile: {ca}\n"));
    let none = balancer_with("none", "");

    let both = addresses(&[&tls_worker, &mutual_worker]);
    wait_for(
        "both TLS workers, with CA and client certificate",
        TIMEOUT,
        || (discover(&full, &["--top"]) == both).then_some(()),
    );
    let tls_only = vec![tls_worker.addr.to_string()];
    wait_for("the TLS worker, with the CA only", TIMEOUT, || {
        (discover(&ca_only, &["--top"]) == tls_only).then_some(())
    });
    // Probed as long as the others by now: the system roots do not trust the test CA.
    assert!(discover(&none, &["--top"]).is_empty());
    assert_eq!(
        discover(&ca_only, &["--top"]),
        tls_only,
        "no client certificate"
    );
}

/// One HTTP/1.1 GET over a plain socket: the status line.
fn http_status(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// `QUAESTOR_HTTP` (as `--http`) opens the HTTP listener, announced after gRPC's; it stops
/// with the balancer (SIGTERM: exit 0, the port closed). A bad address is a usage error.
#[test]
fn the_http_listener_opens_from_the_environment_and_stops_with_the_balancer() {
    let dir = tempfile::tempdir().expect("dir");
    let worker = spawn_worker(&bin(), &[]);
    let config = write_config(dir.path(), &worker_agent(std::slice::from_ref(&worker)));
    let mut command = std::process::Command::new(bin());
    command
        .args(["load-balancer", "--config", config.to_str().expect("utf-8")])
        .args(["--port", "0"])
        .env("QUAESTOR_HTTP", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped());
    let mut process = quaestor_test_support::ChildProcess::spawn("load-balancer", command);
    let stdout = quaestor_test_support::OutputLines::of(&mut process);
    stdout.expect("`listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("listening on ").map(|_| ())
    });
    let http: std::net::SocketAddr = stdout.expect("`http listening on ADDR`", TIMEOUT, |line| {
        line.strip_prefix("http listening on ")?.trim().parse().ok()
    });
    assert!(http.ip().is_loopback());
    assert_eq!(
        http_status(http, "/healthz").expect("GET"),
        "HTTP/1.1 200 OK"
    );
    wait_for("/readyz to answer 200", TIMEOUT, || {
        (http_status(http, "/readyz").ok()? == "HTTP/1.1 200 OK").then_some(())
    });
    assert_eq!(
        http_status(http, "/nowhere").expect("GET"),
        "HTTP/1.1 404 Not Found"
    );
    process.signal(Signal::SIGTERM);
    assert!(process.wait_exit(TIMEOUT).success());
    assert!(
        std::net::TcpStream::connect(http).is_err(),
        "the HTTP port is closed once the balancer stopped"
    );

    let out = quaestor(&[
        "load-balancer",
        "--config",
        config.to_str().expect("utf-8"),
        "--http",
        "localhost",
    ]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("HOST:PORT"), "{}", out.stderr);
}
