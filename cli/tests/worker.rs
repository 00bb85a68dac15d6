//! The reference worker as a process: turns NOT_SERVING and exits on cue, stops gracefully on
//! SIGTERM, fails cleanly on a port in use, pushes its load (quaestor.push.v1).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use quaestor_test_support::{Finished, quaestor_bin, run, spawn_worker, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    quaestor_bin(env!("CARGO_BIN_EXE_quaestor"))
}

fn quaestor(args: &[&str]) -> Finished {
    run(&bin(), args, TIMEOUT)
}

#[test]
fn turns_not_serving_after_the_given_time() {
    let worker = spawn_worker(
        &bin(),
        &[
            "--unhealthy-after",
            "1s",
            "--service",
            "A",
            "--service",
            "B",
        ],
    );
    let addr = worker.addr.to_string();
    let not_serving = |service: &str| {
        let out = quaestor(&["health", &addr, service]);
        (out.code == Some(1) && out.stdout.trim() == "NOT_SERVING").then_some(())
    };
    wait_for("A to turn NOT_SERVING", TIMEOUT, || not_serving("A"));
    not_serving("B").expect("every service flips");
    not_serving("").expect("the worker as a whole flips too");
}

#[test]
fn exits_with_the_given_code_after_the_given_time() {
    let mut worker = spawn_worker(&bin(), &["--exit-after", "500ms", "--exit-code", "7"]);
    let status = worker.process.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(7));
}

#[test]
fn sigterm_stops_gracefully_with_0() {
    let mut worker = spawn_worker(&bin(), &[]);
    let addr = worker.addr.to_string();
    assert_eq!(quaestor(&["health", &addr]).code, Some(0));
    worker.process.signal(Signal::SIGTERM);
    let status = worker.process.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let after = quaestor(&["health", &addr, "--timeout", "2s"]);
    assert_eq!(
        after.code,
        Some(2),
        "nothing listens after the stop: {after:?}"
    );
}

/// A signal sent the moment the worker announces its port is handled, not met by the default
/// action: SIGUSR1 turns it NOT_SERVING (it keeps running), SIGTERM stops it with 0. (The
/// handlers were once installed after the announcement, and a fast test killed the worker.)
#[test]
fn signals_sent_as_soon_as_the_port_is_announced_are_handled() {
    for _ in 0..5 {
        let worker = spawn_worker(&bin(), &[]);
        worker.process.signal(Signal::SIGUSR1);
        let addr = worker.addr.to_string();
        let out = quaestor(&["health", &addr]);
        assert_eq!(
            (out.code, out.stdout.trim()),
            (Some(1), "NOT_SERVING"),
            "{out:?}"
        );
        let mut worker = spawn_worker(&bin(), &[]);
        worker.process.signal(Signal::SIGTERM);
        let status = worker.process.wait_exit(TIMEOUT);
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

#[test]
fn port_in_use_fails_with_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = quaestor(&["worker", "--port", &port]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot listen on"), "{out:?}");
}

/// quaestor's load push from the worker: a call in flight and SIGUSR1 are pushed, SIGTERM
/// ends the stream with NOT_SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_load_and_health_and_ends_the_push_at_sigterm() {
    use quaestor_core::proto::example::WorkRequest;
    use quaestor_core::proto::example::work_client::WorkClient;
    use quaestor_core::proto::push::WatchLoadRequest;
    use quaestor_core::proto::push::load_push_client::LoadPushClient;

    use quaestor_test_support::message_until;

    let mut worker = spawn_worker(&bin(), &[]);
    let uri = format!("http://{}", worker.addr);
    let mut updates = LoadPushClient::connect(uri.clone())
        .await
        .expect("connect")
        .watch_load(WatchLoadRequest {
            service_name: "Worker".into(),
            ..Default::default()
        })
        .await
        .expect("WatchLoad")
        .into_inner();
    message_until(&mut updates, TIMEOUT, "the first update", |u| {
        u.health == 1 && u.load.is_some_and(|l| l.current_requests == 0)
    })
    .await;

    let mut work = WorkClient::connect(uri).await.expect("connect");
    let call = tokio::spawn(async move {
        work.do_work(WorkRequest {
            milliseconds: 2_000,
            service_name: String::new(),
        })
        .await
    });
    message_until(&mut updates, TIMEOUT, "the call in flight", |u| {
        u.load.is_some_and(|l| l.current_requests == 1)
    })
    .await;
    call.abort();

    worker.process.signal(Signal::SIGUSR1);
    message_until(&mut updates, TIMEOUT, "NOT_SERVING", |u| u.health == 2).await;
    worker.process.signal(Signal::SIGUSR2);
    message_until(&mut updates, TIMEOUT, "SERVING again", |u| u.health == 1).await;

    worker.process.signal(Signal::SIGTERM);
    message_until(&mut updates, TIMEOUT, "NOT_SERVING at the stop", |u| {
        u.health == 2
    })
    .await;
    let end = tokio::time::timeout(TIMEOUT, async {
        while let Ok(Some(_)) = updates.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the push ends when the worker stops");
    assert_eq!(worker.process.wait_exit(TIMEOUT).code(), Some(0));
}

/// `--work-ms 2000 --max-concurrent 4`: of 8 calls at once, 4 run and 4 wait in the worker.
/// The load report counts the waiting ones too (current requests above the capacity of 4),
/// and the second four finish only after the first (the total is at least two service times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_queues_the_rest_and_reports_them_as_current() {
    use quaestor_core::proto::example::WorkRequest;
    use quaestor_core::proto::example::work_client::WorkClient;
    use quaestor_core::proto::load_reporting::LoadReportRequest;
    use quaestor_core::proto::load_reporting::load_reporting_grpc_client::LoadReportingGrpcClient;

    const WORK: Duration = Duration::from_millis(2000);
    let worker = spawn_worker(&bin(), &["--work-ms", "2000", "--max-concurrent", "4"]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", worker.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let start = std::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = WorkClient::new(channel.clone());
            // Asks for 1 ms: --work-ms decides.
            tokio::spawn(async move {
                client
                    .do_work(WorkRequest {
                        milliseconds: 1,
                        service_name: String::new(),
                    })
                    .await
            })
        })
        .collect();

    let mut reports = LoadReportingGrpcClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let stats = loop {
        let report = reports
            .report_load(LoadReportRequest {
                scope: String::new(),
                service_name: "Worker".into(),
            })
            .await
            .expect("load report")
            .into_inner();
        let stats = report.server_stats.expect("server stats");
        if stats.current_requests > 4 {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never more than 4 current requests: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(stats.request_capacity, 4, "capacity = --max-concurrent");

    let mut seen_at_arrival = Vec::new();
    for call in calls {
        let answer = call.await.expect("task").expect("DoWork").into_inner();
        seen_at_arrival.push(answer.current_requests);
    }
    let took = start.elapsed();
    assert!(
        took >= 2 * WORK,
        "8 calls of {WORK:?} with 4 at a time took only {took:?}"
    );
    assert!(
        seen_at_arrival.iter().any(|&n| n > 4),
        "some call arrived while others waited: {seen_at_arrival:?}"
    );
}
