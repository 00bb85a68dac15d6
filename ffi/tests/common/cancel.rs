//! Request cancellation as every language's cancel worker must show it: requests started on
//! behalf of users in environments, and `ProcessAdministrationGrpc/Cancel` called over real
//! gRPC (a tonic client) on the worker's reporter.
//!
//! A cancel worker serves the service `Worker` on 127.0.0.1 (a free port), prints `listening on
//! 127.0.0.1:PORT`, then reads commands from stdin, one per line: `start USER ENV` (a request
//! starts as USER in ENV; `ok N`, N: requests in flight), `cancelled I` (`ok 1` if the I-th
//! request started, from 0, is cancelled, else `ok 0`), `end I` (the I-th request ends;
//! `ok N`), `quit` (ends what is left, frees everything, exits 0 when no request is left in
//! flight).

use std::time::Duration;

use quaestor_core::proto::process_admin::CancelRequest;
use quaestor_core::proto::process_admin::process_administration_grpc_client::ProcessAdministrationGrpcClient;

use super::SampleWorker;

/// `Cancel(user_name, environment)` on `127.0.0.1:port`: its `success`.
pub fn cancel(port: u16, user_name: &str, environment: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let call = async {
            let mut client =
                ProcessAdministrationGrpcClient::connect(format!("http://127.0.0.1:{port}"))
                    .await
                    .expect("connect to the reporter");
            client
                .cancel(CancelRequest {
                    environment: environment.into(),
                    service_name: "Worker".into(),
                    user_name: user_name.into(),
                    password: String::new(),
                })
                .await
                .expect("Cancel")
                .into_inner()
                .success
        };
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("Cancel answers in time")
    })
}

/// The conversation every cancel worker must hold.
pub fn drive_cancel(mut worker: SampleWorker) {
    let port = worker.port;
    assert_eq!(worker.command("start alice prod"), 1);
    assert_eq!(worker.command("start bob prod"), 2);
    assert_eq!(worker.command("start alice test"), 3);
    assert_eq!(worker.command("cancelled 0"), 0, "not cancelled yet");

    assert!(!cancel(port, "carol", "prod"), "no request of carol");
    assert!(!cancel(port, "alice", "Prod"), "environments match exactly");
    assert_eq!(worker.command("cancelled 0"), 0);

    assert!(cancel(port, "alice", "prod"), "alice's request in prod");
    assert_eq!(worker.command("cancelled 0"), 1, "cancelled");
    assert_eq!(worker.command("cancelled 1"), 0, "bob's is not");
    assert_eq!(worker.command("cancelled 2"), 0, "alice's in test is not");

    assert_eq!(worker.command("end 0"), 2, "a cancelled request still ends");
    assert!(
        !cancel(port, "alice", "prod"),
        "an ended request is not matched"
    );
    assert!(cancel(port, "bob", "prod"));
    assert_eq!(worker.command("cancelled 1"), 1);
    assert_eq!(worker.quit(), Some(0));
}
