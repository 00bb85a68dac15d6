//! A Rust worker that reports its load with quaestor: its own gRPC service and quaestor's
//! health and load reporting share one port.
//!
//!     cargo run -p quaestor-core --example hello_worker -- 5161
//!     quaestor load 127.0.0.1:5161 Worker

use std::sync::Arc;
use std::time::Duration;

use quaestor_core::load::ServiceLoad;
use quaestor_core::proto::example::work_server::{Work, WorkServer};
use quaestor_core::proto::example::{WorkRequest, WorkResponse};
use quaestor_core::reporter::Reporter;
use tonic::{Request, Response, Status};

/// The worker's own service. Each call counts as one request while it runs.
struct HelloWorker {
    load: Arc<ServiceLoad>,
    address: String,
}

#[tonic::async_trait]
impl Work for HelloWorker {
    async fn do_work(
        &self,
        request: Request<WorkRequest>,
    ) -> Result<Response<WorkResponse>, Status> {
        // Ends the request when dropped: on return, on error, and when the client cancels.
        let _request = self.load.request();
        let milliseconds = request.into_inner().milliseconds.min(60_000);
        tokio::time::sleep(Duration::from_millis(u64::from(milliseconds))).await;
        Ok(Response::new(WorkResponse {
            worker: self.address.clone(),
            pid: std::process::id(),
            service_name: "Worker".into(),
            current_requests: self.load.current_requests(),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(5161), |p| p.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?.to_string();

    let reporter = Reporter::new();
    let load = reporter.add_service("Worker", 4)?;

    let mut routes = tonic::service::RoutesBuilder::default();
    reporter.add_to(&mut routes);
    routes.add_service(WorkServer::new(HelloWorker {
        load,
        address: address.clone(),
    }));

    println!("listening on {address}");
    let health = reporter.health().clone();
    tonic::transport::Server::builder()
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = tokio::signal::ctrl_c().await;
                // Health watchers see NOT_SERVING and let the stop complete.
                health.shutdown();
            },
        )
        .await?;
    Ok(())
}
