//! quaestor-demo: the demo service of `quaestor worker`, the reference worker (not part of
//! quaestor-core's API).
//!
//! The demo `quaestor.example.Work` service of the reference worker: each call holds for the
//! time asked (or a fixed service time) and is counted as one request of a service from its
//! arrival to its end, so a client can put a worker under a known load and watch it in the
//! load report. With a concurrency limit, calls beyond it wait in the worker (first come,
//! first served), counted as current requests too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use tonic::{Request, Response, Status};

use quaestor_core::proto::example::work_server::{Work, WorkServer};
use quaestor_core::proto::example::{WorkRequest, WorkResponse};
use quaestor_core::reporter::Reporter;

/// The longest simulated work one call may ask for.
pub const MAX_WORK: Duration = Duration::from_secs(600);

/// `quaestor.example.Work` over a reporter's services.
#[derive(Debug, Clone)]
pub struct WorkService {
    reporter: Reporter,
    default_service: String,
    worker: String,
    /// Every call takes this long; `None`: as long as it asks.
    service_time: Option<Duration>,
    /// One permit per call that may run at once; `None`: no limit.
    slots: Option<Arc<Semaphore>>,
}

impl WorkService {
    /// Calls without a service name count for `default_service`; `worker` (e.g. the
    /// `host:port` served on) is echoed in each answer so that clients see who worked.
    pub fn new(reporter: Reporter, default_service: &str, worker: &str) -> WorkServer<Self> {
        Self::paced(reporter, default_service, worker, None, None)
    }

    /// As [`new`](Self::new), every call taking `service_time` whatever it asks (`None`: as
    /// asked), at most `max_concurrent` at once (`None`: no limit).
    pub fn paced(
        reporter: Reporter,
        default_service: &str,
        worker: &str,
        service_time: Option<Duration>,
        max_concurrent: Option<usize>,
    ) -> WorkServer<Self> {
        WorkServer::new(WorkService {
            reporter,
            default_service: default_service.to_owned(),
            worker: worker.to_owned(),
            service_time,
            slots: max_concurrent.map(|k| Arc::new(Semaphore::new(k))),
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
        let duration = self
            .service_time
            .unwrap_or(Duration::from_millis(u64::from(request.milliseconds)));
        if duration > MAX_WORK {
            return Err(Status::invalid_argument(format!(
                "milliseconds must be at most {}",
                MAX_WORK.as_millis()
            )));
        }
        // Counted from arrival: a call waiting for a slot is a current request too. Ends the
        // request also when the client gives up (this future is dropped) while it waits or runs.
        let _request = load.request();
        let current_requests = load.current_requests();
        let _slot = match &self.slots {
            Some(slots) => Some(
                slots
                    .acquire()
                    .await
                    .map_err(|_| Status::unavailable("the worker is stopping"))?,
            ),
            None => None,
        };
        tokio::time::sleep(duration).await;
        Ok(Response::new(WorkResponse {
            worker: self.worker.clone(),
            pid: std::process::id(),
            service_name,
            current_requests,
        }))
    }
}
