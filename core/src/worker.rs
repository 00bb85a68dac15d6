//! The demo `quaestor.example.Work` service of the reference worker: each call holds for the
//! time asked and is counted as one request of a service while it runs, so a client can put
//! a worker under a known load and watch it in the load report.

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::proto::example::work_server::{Work, WorkServer};
use crate::proto::example::{WorkRequest, WorkResponse};
use crate::reporter::Reporter;

/// The longest simulated work one call may ask for.
pub const MAX_WORK: Duration = Duration::from_secs(600);

/// `quaestor.example.Work` over a reporter's services.
#[derive(Debug, Clone)]
pub struct WorkService {
    reporter: Reporter,
    default_service: String,
    worker: String,
}

impl WorkService {
    /// Calls without a service name count for `default_service`; `worker` (e.g. the
    /// `host:port` served on) is echoed in each answer so that clients see who worked.
    pub fn new(reporter: Reporter, default_service: &str, worker: &str) -> WorkServer<Self> {
        WorkServer::new(WorkService {
            reporter,
            default_service: default_service.to_owned(),
            worker: worker.to_owned(),
        })
    }
}

#[tonic::async_trait]
impl Work for WorkService {
    async fn do_work(
        &self,
        request: Request<WorkRequest>,
    ) -> Result<Response<WorkResponse>, Status> {
        let request = request.into_inner();
        let service_name = if request.service_name.is_empty() {
            self.default_service.clone()
        } else {
            request.service_name
        };
        let load = self.reporter.service_load(&service_name).ok_or_else(|| {
            Status::not_found(format!("this worker does not serve {service_name:?}"))
        })?;
        let duration = Duration::from_millis(u64::from(request.milliseconds));
        if duration > MAX_WORK {
            return Err(Status::invalid_argument(format!(
                "milliseconds must be at most {}",
                MAX_WORK.as_millis()
            )));
        }
        // Ends the request also when the client gives up and this future is dropped.
        let _request = load.request();
        let current_requests = load.current_requests();
        tokio::time::sleep(duration).await;
        Ok(Response::new(WorkResponse {
            worker: self.worker.clone(),
            pid: std::process::id(),
            service_name,
            current_requests,
        }))
    }
}
