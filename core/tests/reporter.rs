//! The reporter over real gRPC on loopback: load reports, health Check and Watch, reflection,
//! request cancellation, embedding in a worker's own server, TLS and mutual TLS, graceful stop.

use std::collections::BTreeSet;
use std::time::Duration;

use quaestor_core::client::{ClientError, Target};
use quaestor_core::proto::example::work_client::WorkClient;
use quaestor_core::proto::example::{WorkRequest, WorkResponse};
use quaestor_core::proto::health::HealthCheckRequest;
use quaestor_core::proto::health::health_client::HealthClient;
use quaestor_core::reporter::Reporter;
use quaestor_core::server::health::ServingStatus;
use quaestor_core::server::{ServerError, ServerHandle};
use quaestor_core::tls::{ClientTls, ServerTls, TlsError};
use quaestor_demo::WorkService;
use quaestor_test_support::{TestPki, wait_for_async};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

const TIMEOUT: Duration = Duration::from_secs(10);

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

async fn serve(reporter: &Reporter) -> (ServerHandle, Target) {
    let server = reporter
        .server()
        .add_service(WorkService::new(reporter.clone(), "Worker", "test"))
        .bind(loopback())
        .await
        .expect("bind loopback");
    let target = Target::new(&server.local_addr().to_string(), None, TIMEOUT).expect("target");
    (server, target)
}

async fn next_status(
    stream: &mut tonic::Streaming<quaestor_core::proto::health::HealthCheckResponse>,
) -> Option<ServingStatus> {
    let message = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("a Watch message within the timeout")?;
    Some(ServingStatus::try_from(message.expect("Watch message").status).expect("known status"))
}

/// A DoWork call of 60 s on a task of its own: a request in flight until the task is aborted.
fn long_call(work: &WorkClient<Channel>) -> JoinHandle<Result<Response<WorkResponse>, Status>> {
    let mut work = work.clone();
    tokio::spawn(async move {
        work.do_work(WorkRequest {
            milliseconds: 60_000,
            service_name: String::new(),
        })
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_report_follows_requests_in_flight() {
    let reporter = Reporter::new();
    let load = reporter.add_service("Worker", 8).expect("add");
    load.set_known_load_rate(1.5);
    let (server, target) = serve(&reporter).await;
    let channel = target.connect().await.expect("connect");

    let mut work = WorkClient::new(channel.clone());
    let calls: Vec<_> = (0..3).map(|_| long_call(&work)).collect();
    let report = wait_for_async("3 calls in the load report", TIMEOUT, || async {
        let report = target
            .report_load(channel.clone(), "", "Worker")
            .await
            .expect("report");
        report
            .server_stats
            .is_some_and(|s| s.current_requests == 3)
            .then_some(report)
    })
    .await;
    let stats = report.server_stats.expect("stats");
    assert_eq!(stats.request_capacity, 8);
    assert_eq!(report.known_load_rate, 1.5);
    assert!(report.timestamp_ticks > quaestor_core::load::UNIX_EPOCH_DOTNET_TICKS);
    assert!((0.0..=100.0).contains(&stats.server_memory_usage_percent));

    // Cancelled calls end their requests too.
    for call in &calls {
        call.abort();
    }
    wait_for_async("cancelled calls to end their requests", TIMEOUT, || async {
        (load.current_requests() == 0).then_some(())
    })
    .await;

    let short = work
        .do_work(WorkRequest {
            milliseconds: 1,
            service_name: "Worker".into(),
        })
        .await
        .expect("short work")
        .into_inner();
    assert_eq!(
        (short.service_name.as_str(), short.current_requests),
        ("Worker", 1)
    );
    assert_eq!(short.pid, std::process::id());
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_out_of_range() {
    let reporter = Reporter::new();
    reporter.add_service("Worker", 1).expect("add");
    let (_server, target) = serve(&reporter).await;
    let channel = target.connect().await.expect("connect");
    for name in ["Nope", ""] {
        let error = target
            .report_load(channel.clone(), "", name)
            .await
            .expect_err("unknown");
        assert_eq!(error.code(), Some(Code::OutOfRange), "{name:?}: {error}");
    }
    let error = WorkClient::new(channel)
        .do_work(WorkRequest {
            milliseconds: 700_000,
            service_name: String::new(),
        })
        .await
        .expect_err("too long");
    assert_eq!(error.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_watch_follow_flips_and_end_on_shutdown() {
    let reporter = Reporter::new();
    reporter.add_service("Worker", 1).expect("add");
    let (server, target) = serve(&reporter).await;
    let channel = target.connect().await.expect("connect");

    assert_eq!(
        target
            .check_health(channel.clone(), "")
            .await
            .expect("overall"),
        ServingStatus::Serving
    );
    assert_eq!(
        target
            .check_health(channel.clone(), "Nope")
            .await
            .expect("unknown"),
        ServingStatus::ServiceUnknown
    );

    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "Worker".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));
    reporter.set_serving("Worker", false);
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );
    reporter.set_serving("Worker", true);
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));
    assert_eq!(
        target
            .check_health(channel.clone(), "Worker")
            .await
            .expect("check"),
        ServingStatus::Serving
    );

    // An open Watch must not hold up a graceful stop: it gets NOT_SERVING, then its end.
    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("shutdown is not held up by a Watch")
        .expect("shutdown");
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        next_status(&mut watch).await,
        None,
        "the Watch ends at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_of_unknown_service_follows_it_when_it_appears() {
    let reporter = Reporter::new();
    let (_server, target) = serve(&reporter).await;
    let channel = target.connect().await.expect("connect");
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "Later".into(),
        })
        .await
        .expect("watch of an unknown service is not an error")
        .into_inner();
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::ServiceUnknown)
    );
    assert_eq!(
        target.check_health(channel, "Later").await.expect("check"),
        ServingStatus::ServiceUnknown,
        "being watched does not make a service known"
    );
    reporter.add_service("Later", 1).expect("add");
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));
}

async fn reflected_services(channel: Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("answer");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_the_served_services() {
    let reporter = Reporter::new();
    let server = reporter.serve(loopback(), None).await.expect("serve");
    let target = Target::new(&server.local_addr().to_string(), None, TIMEOUT).expect("target");
    let names = reflected_services(target.connect().await.expect("connect")).await;
    let expected: BTreeSet<String> = [
        "grpc.health.v1.Health",
        "Quaestor.LoadReporting.LoadReportingGrpc",
        "quaestor.push.v1.LoadPush",
        "Quaestor.ProcessAdministration.ProcessAdministrationGrpc",
        "xds.service.orca.v3.OpenRcaService",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
}

async fn cancel(channel: Channel, user_name: &str, environment: &str) -> bool {
    use quaestor_core::proto::process_admin::CancelRequest;
    use quaestor_core::proto::process_admin::process_administration_grpc_client::ProcessAdministrationGrpcClient;
    ProcessAdministrationGrpcClient::new(channel)
        .cancel(CancelRequest {
            environment: environment.into(),
            service_name: "Worker".into(),
            user_name: user_name.into(),
            password: "not checked".into(),
        })
        .await
        .expect("Cancel")
        .into_inner()
        .success
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_marks_the_running_requests_of_that_user_and_environment() {
    let reporter = Reporter::new();
    let worker = reporter.add_service("Worker", 4).expect("add");
    let other = reporter.add_service("Other", 4).expect("add");
    let server = reporter.serve(loopback(), None).await.expect("serve");
    let target = Target::new(&server.local_addr().to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");

    let alice = worker.start_request_as("alice", "prod");
    let alice_elsewhere = other.start_request_as("alice", "prod");
    let alice_test = worker.start_request_as("alice", "test");
    let bob = worker.start_request_as("bob", "prod");
    assert_eq!(worker.current_requests(), 3, "they count as requests");

    assert!(!cancel(channel.clone(), "carol", "prod").await, "no match");
    assert!(!cancel(channel.clone(), "alice", "").await, "no match");
    assert!(!alice.is_cancelled());

    assert!(cancel(channel.clone(), "alice", "prod").await);
    assert!(alice.is_cancelled() && alice_elsewhere.is_cancelled());
    tokio::time::timeout(TIMEOUT, alice.cancelled())
        .await
        .expect("the future is complete");
    assert!(!alice_test.is_cancelled() && !bob.is_cancelled());

    alice.end();
    alice_elsewhere.end();
    assert!(
        !cancel(channel.clone(), "alice", "prod").await,
        "ended requests are not matched"
    );
    assert_eq!(worker.current_requests(), 2);
    drop((alice_test, bob));
    assert_eq!(worker.current_requests(), 0);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_embedded_in_a_workers_own_server() {
    let reporter = Reporter::new();
    reporter.add_service("Worker", 2).expect("add");
    let mut routes = tonic::service::RoutesBuilder::default();
    reporter.add_to(&mut routes);
    routes.add_service(WorkService::new(reporter.clone(), "Worker", "own"));
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let health = reporter.health().clone();
    let own_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stopped.await;
                    health.shutdown();
                },
            ),
    );

    let target = Target::new(&addr.to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");
    assert_eq!(
        target
            .check_health(channel.clone(), "Worker")
            .await
            .expect("health"),
        ServingStatus::Serving
    );
    let report = target
        .report_load(channel.clone(), "", "Worker")
        .await
        .expect("load");
    assert_eq!(report.server_stats.expect("stats").request_capacity, 2);
    let request = reporter
        .service_load("Worker")
        .expect("added")
        .start_request_as("u", "e");
    assert!(
        cancel(channel.clone(), "u", "e").await,
        "Cancel on the own server"
    );
    assert!(request.is_cancelled());
    drop(request);
    let mut pushed = quaestor_core::proto::push::load_push_client::LoadPushClient::new(channel)
        .watch_load(quaestor_core::proto::push::WatchLoadRequest {
            service_name: "Worker".into(),
            ..Default::default()
        })
        .await
        .expect("WatchLoad on the worker's own server")
        .into_inner();
    let first = tokio::time::timeout(TIMEOUT, pushed.next())
        .await
        .expect("first update in time")
        .expect("first update")
        .expect("not an error");
    assert_eq!(first.load.expect("load").request_capacity, 2);

    stop.send(()).expect("server still running");
    tokio::time::timeout(TIMEOUT, own_server)
        .await
        .expect("own server stops")
        .expect("task")
        .expect("serve");
    assert!(!reporter.is_serving(), "shutdown leaves health NOT_SERVING");
    let mut ended = false;
    while let Some(update) = tokio::time::timeout(TIMEOUT, pushed.next())
        .await
        .expect("the push ends with the server")
    {
        ended = update.is_ok_and(|u| u.health == ServingStatus::NotServing as i32) || ended;
    }
    assert!(ended, "the push's last update is NOT_SERVING");
}

fn tls_target(server: &ServerHandle, tls: ClientTls) -> Target {
    let address = format!("localhost:{}", server.local_addr().port());
    Target::new(&address, Some(tls), TIMEOUT).expect("target")
}

async fn answers(target: &Target) -> Result<ServingStatus, ClientError> {
    let channel = target.connect().await?;
    target.check_health(channel, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_is_reached_only_by_clients_that_trust_it() {
    let pki = TestPki::new();
    let reporter = Reporter::new();
    let server = reporter
        .serve(
            loopback(),
            Some(ServerTls::new(&pki.server_cert, &pki.server_key)),
        )
        .await
        .expect("TLS server");

    let trusting = tls_target(
        &server,
        ClientTls {
            ca: Some(pki.ca.clone()),
            ..ClientTls::default()
        },
    );
    assert_eq!(
        answers(&trusting).await.expect("trusted"),
        ServingStatus::Serving
    );

    // The system roots do not know the test CA.
    let untrusting = tls_target(&server, ClientTls::default());
    assert!(
        answers(&untrusting).await.is_err(),
        "a client that does not trust the CA must fail"
    );

    // A plaintext client cannot talk to a TLS server.
    let plain = Target::new(
        &server.local_addr().to_string(),
        None,
        Duration::from_secs(2),
    )
    .expect("target");
    assert!(
        answers(&plain).await.is_err(),
        "plaintext against TLS must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = TestPki::new();
    let reporter = Reporter::new();
    let tls = ServerTls::new(&pki.server_cert, &pki.server_key).with_client_ca(&pki.ca);
    let server = reporter
        .serve(loopback(), Some(tls))
        .await
        .expect("mTLS server");
    let client = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>| ClientTls {
        ca: Some(pki.ca.clone()),
        identity,
        domain: None,
    };

    let with_cert = tls_target(
        &server,
        client(Some((pki.client_cert.clone(), pki.client_key.clone()))),
    );
    assert_eq!(
        answers(&with_cert)
            .await
            .expect("client with a certificate"),
        ServingStatus::Serving
    );

    let without = tls_target(&server, client(None));
    assert!(
        answers(&without).await.is_err(),
        "no client certificate must be refused"
    );

    let stranger = tls_target(
        &server,
        client(Some((pki.stranger_cert.clone(), pki.stranger_key.clone()))),
    );
    assert!(
        answers(&stranger).await.is_err(),
        "a certificate of another CA must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_named() {
    let pki = TestPki::new();
    let reporter = Reporter::new();
    let missing = ServerTls::new("/nonexistent/server.pem", &pki.server_key);
    match reporter.serve(loopback(), Some(missing)).await {
        Err(ServerError::Tls(TlsError::Read { path, .. })) => assert!(path.ends_with("server.pem")),
        other => panic!("expected a read error naming the file, got {other:?}"),
    }
    let not_pem = std::env::temp_dir().join(format!("quaestor-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let error = reporter
        .serve(loopback(), Some(ServerTls::new(&not_pem, &pki.server_key)))
        .await
        .expect_err("not PEM");
    let _ = std::fs::remove_file(&not_pem);
    assert!(
        matches!(error, ServerError::Tls(TlsError::NotPem { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("quaestor-not-pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_lets_calls_in_flight_finish_within_the_grace_period() {
    let reporter = Reporter::new();
    reporter.add_service("Worker", 2).expect("add");
    let server = reporter
        .server()
        .add_service(WorkService::new(reporter.clone(), "Worker", "test"))
        .with_grace_period(Duration::from_millis(300))
        .bind(loopback())
        .await
        .expect("bind");
    // A channel has no deadline of its own: only the server can end the endless call.
    let target = Target::new(&server.local_addr().to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");
    let load = reporter.service_load("Worker").expect("load");
    let call = |ms: u32| {
        let mut work = WorkClient::new(channel.clone());
        tokio::spawn(async move {
            work.do_work(WorkRequest {
                milliseconds: ms,
                service_name: String::new(),
            })
            .await
        })
    };
    let short = call(100);
    let endless = call(600_000);
    wait_for_async("2 calls in flight", TIMEOUT, || async {
        (load.current_requests() == 2).then_some(())
    })
    .await;

    tokio::time::timeout(TIMEOUT, server.shutdown())
        .await
        .expect("the grace period bounds the stop")
        .expect("shutdown");
    short
        .await
        .expect("task")
        .expect("a short call finishes during the stop");
    let cut = tokio::time::timeout(TIMEOUT, endless)
        .await
        .expect("the server cuts off a call longer than the grace period")
        .expect("task")
        .expect_err("a cut-off call fails");
    assert!(
        matches!(
            cut.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "cut off by the server, not by a client deadline: {cut:?}"
    );
}

/// ORCA out of band (`xds.service.orca.v3.OpenRcaService`): a report at once with the load as
/// the reporter knows it, then one per interval (at least the 1 s floor) with the request
/// rate since the report before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_reports_stream_the_load_at_the_interval_asked() {
    use quaestor_core::proto::xds::service::orca::v3::OrcaLoadReportRequest;
    use quaestor_core::proto::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;

    let reporter = Reporter::new();
    let load = reporter.add_service("Worker", 4).expect("add");
    load.set_server_utilization(Some(0.25));
    load.set_memory_usage_percent(Some(40.0));
    load.set_known_load_rate(1.5);
    load.start_request();
    load.start_request();
    let (server, target) = serve(&reporter).await;
    let channel = target.connect().await.expect("connect");
    let mut orca = OpenRcaServiceClient::new(channel);
    let mut reports = orca
        .stream_core_metrics(OrcaLoadReportRequest {
            // Below the floor: reports come at the floor.
            report_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            request_cost_names: Vec::new(),
        })
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(TIMEOUT, reports.next())
        .await
        .expect("a first report at once")
        .expect("open")
        .expect("report");
    assert_eq!(first.cpu_utilization, 0.25);
    assert_eq!(first.mem_utilization, 0.4);
    assert_eq!(first.application_utilization, 0.5);
    assert_eq!(first.rps_fractional, 0.0, "no rate before a second report");
    assert_eq!(first.named_metrics["current_requests"], 2.0);
    assert_eq!(first.named_metrics["capacity"], 4.0);
    assert_eq!(first.named_metrics["known_load_rate"], 1.5);
    assert_eq!(first.named_metrics["Worker.current_requests"], 2.0);

    for _ in 0..6 {
        load.start_request();
        load.end_request();
    }
    let second = tokio::time::timeout(TIMEOUT, reports.next())
        .await
        .expect("a second report")
        .expect("open")
        .expect("report");
    assert!(
        second.rps_fractional > 0.0,
        "six requests since the first report: {second:?}"
    );
    assert_eq!(second.named_metrics["current_requests"], 2.0);

    // A graceful stop ends the stream (the server does not wait for it).
    server.shutdown().await.expect("stopped");
    let end = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(_)) = reports.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the ORCA stream ended with the server");
}

/// The `endpoint-load-metrics-bin` trailer of a tonic answer, decoded.
fn per_call_report(
    metadata: &tonic::metadata::MetadataMap,
) -> Option<quaestor_core::proto::xds::data::orca::v3::OrcaLoadReport> {
    use prost::Message;
    let value = metadata.get_bin(quaestor_core::reporter::percall::TRAILER)?;
    let bytes = value.to_bytes().expect("base64");
    Some(quaestor_core::proto::xds::data::orca::v3::OrcaLoadReport::decode(bytes).expect("report"))
}

/// Per-call ORCA (gRFC A51): a service wrapped in the reporter's per-call layer answers with
/// the `endpoint-load-metrics-bin` trailer, the load as the call ends (the call itself no
/// longer counted, other calls in flight counted); error answers carry it too; the reporter's
/// own services do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_orca_reports_ride_in_the_trailers_of_wrapped_services() {
    let reporter = Reporter::new();
    let load = reporter.add_service("Worker", 4).expect("add");
    load.set_server_utilization(Some(0.125));
    let server = reporter
        .server()
        .add_service(reporter.per_call_orca().wrap(WorkService::new(
            reporter.clone(),
            "Worker",
            "test",
        )))
        .bind(loopback())
        .await
        .expect("bind loopback");
    let target = Target::new(&server.local_addr().to_string(), None, TIMEOUT).expect("target");
    let channel = target.connect().await.expect("connect");
    let mut work = WorkClient::new(channel.clone());
    let quick = || WorkRequest {
        milliseconds: 0,
        service_name: String::new(),
    };

    let answer = work.do_work(quick()).await.expect("DoWork");
    assert_eq!(answer.get_ref().current_requests, 1, "counted while it ran");
    // A unary answer's trailers are merged into its metadata by tonic.
    let report = per_call_report(answer.metadata()).expect("the per-call trailer");
    assert_eq!(report.named_metrics["current_requests"], 0.0);
    assert_eq!(report.named_metrics["Worker.current_requests"], 0.0);
    assert_eq!(report.named_metrics["capacity"], 4.0);
    assert_eq!(report.application_utilization, 0.0);
    assert_eq!(report.cpu_utilization, 0.125);
    assert_eq!(report.rps_fractional, 0.0, "no rate in the first report");

    // Another call in flight is counted.
    let long = long_call(&work);
    wait_for_async("the long call in flight", TIMEOUT, || async {
        (load.current_requests() == 1).then_some(())
    })
    .await;
    let answer = work.do_work(quick()).await.expect("DoWork");
    let report = per_call_report(answer.metadata()).expect("the per-call trailer");
    assert_eq!(report.named_metrics["current_requests"], 1.0);
    assert_eq!(report.application_utilization, 0.25);
    long.abort();

    // An error (answered trailers-only) carries it too.
    let failed = work
        .do_work(WorkRequest {
            milliseconds: 0,
            service_name: "NoSuchService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(failed.code(), Code::NotFound);
    assert!(per_call_report(failed.metadata()).is_some(), "{failed:?}");

    // The reporter's own services are not wrapped.
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "Worker".into(),
        })
        .await
        .expect("Check");
    assert!(per_call_report(health.metadata()).is_none());
    server.shutdown().await.expect("stopped");
}
