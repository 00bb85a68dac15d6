//! `grpc.health.v1.Health` with statuses the owner can flip at any time, from any thread,
//! without an async runtime (the C ABI and Python flip them too).
//!
//! Differences from tonic-health, on purpose: setters are synchronous; `Watch` on an unknown
//! service streams `SERVICE_UNKNOWN` and follows the service if it appears later (as the
//! health-checking spec asks); and [`HealthState::shutdown`] sets every service NOT_SERVING and
//! then ends every `Watch` stream, so that a graceful server stop is not held up by watchers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::health::health_server::{Health, HealthServer};
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};

pub use crate::proto::health::health_check_response::ServingStatus;

/// The overall health of a server: the empty service name.
pub const OVERALL: &str = "";

/// The health of the services of one server. Cheap to clone; clones share the statuses.
#[derive(Debug, Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    statuses: RwLock<HashMap<String, watch::Sender<ServingStatus>>>,
    stopping: watch::Sender<bool>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// Only the overall status (`""`), SERVING.
    pub fn new() -> Self {
        let state = HealthState {
            inner: Arc::new(Inner {
                statuses: RwLock::new(HashMap::new()),
                stopping: watch::Sender::new(false),
            }),
        };
        state.set(OVERALL, ServingStatus::Serving);
        state
    }

    /// Sets the status of `service` (`""` is the whole server) and wakes its watchers if it
    /// changed. After [`shutdown`](Self::shutdown) statuses stay NOT_SERVING.
    pub fn set(&self, service: &str, status: ServingStatus) {
        if self.is_shut_down() {
            return;
        }
        self.set_unchecked(service, status);
    }

    /// SERVING or NOT_SERVING.
    pub fn set_serving(&self, service: &str, serving: bool) {
        self.set(service, serving_status(serving));
    }

    /// Sets every known service, and the overall status, at once.
    pub fn set_all(&self, status: ServingStatus) {
        if !self.is_shut_down() {
            self.set_all_unchecked(status);
        }
    }

    /// The current status; `None` for a service never set.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.read()
            .get(service)
            .map(|sender| *sender.borrow())
            .filter(|status| *status != ServingStatus::ServiceUnknown)
    }

    /// The terminal state: every service NOT_SERVING, then every `Watch` stream ends.
    /// Servers call it when they begin a graceful stop.
    pub fn shutdown(&self) {
        if self.is_shut_down() {
            return;
        }
        // NOT_SERVING first, so that a watcher that sees the stop sends NOT_SERVING last.
        self.set_all_unchecked(ServingStatus::NotServing);
        if self.inner.stopping.send_replace(true) {
            return;
        }
        // A `set` that raced the first pass.
        self.set_all_unchecked(ServingStatus::NotServing);
    }

    /// Completes once [`shutdown`](Self::shutdown) was called (streams end then).
    pub async fn stopped(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// A receiver that turns `true` at [`shutdown`](Self::shutdown) (statuses are NOT_SERVING
    /// by then); for streams that must end when the server stops.
    pub fn subscribe_stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    pub fn is_shut_down(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// The gRPC service to add to a server.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            state: self.clone(),
        })
    }

    fn set_all_unchecked(&self, status: ServingStatus) {
        for sender in self.read().values() {
            // Names only watched, never set, stay unknown.
            if *sender.borrow() != ServingStatus::ServiceUnknown {
                update(sender, status);
            }
        }
    }

    fn set_unchecked(&self, service: &str, status: ServingStatus) {
        if let Some(sender) = self.read().get(service) {
            update(sender, status);
            return;
        }
        self.write()
            .entry(service.to_owned())
            .and_modify(|sender| update(sender, status))
            .or_insert_with(|| watch::Sender::new(status));
    }

    /// A receiver of the service's status; an unknown service is added as SERVICE_UNKNOWN so
    /// that a watcher sees it if it appears later.
    pub fn subscribe(&self, service: &str) -> watch::Receiver<ServingStatus> {
        if let Some(sender) = self.read().get(service) {
            return sender.subscribe();
        }
        self.write()
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(ServingStatus::ServiceUnknown))
            .subscribe()
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        self.inner
            .statuses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        self.inner
            .statuses
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// SERVING for `true`, NOT_SERVING for `false`.
pub fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn update(sender: &watch::Sender<ServingStatus>, status: ServingStatus) {
    sender.send_if_modified(|current| {
        let changed = *current != status;
        *current = status;
        changed
    });
}

/// The `grpc.health.v1.Health` implementation over a [`HealthState`].
#[derive(Debug, Clone)]
pub struct HealthService {
    state: HealthState,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.state.status(service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut statuses = self.state.subscribe(&request.get_ref().service);
        let mut stopping = self.state.inner.stopping.subscribe();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let status = *statuses.borrow_and_update();
                if tx.send(Ok(response(status))).await.is_err() {
                    return; // the watcher went away
                }
                if *stopping.borrow_and_update() {
                    return; // the last status (NOT_SERVING) was sent; end the stream
                }
                tokio::select! {
                    changed = statuses.changed() => if changed.is_err() { return },
                    _ = stopping.changed() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_set_and_read() {
        let health = HealthState::new();
        assert_eq!(health.status(OVERALL), Some(ServingStatus::Serving));
        assert_eq!(health.status("Worker"), None);
        health.set_serving("Worker", true);
        assert_eq!(health.status("Worker"), Some(ServingStatus::Serving));
        health.set_all(ServingStatus::NotServing);
        assert_eq!(health.status("Worker"), Some(ServingStatus::NotServing));
        assert_eq!(health.status(OVERALL), Some(ServingStatus::NotServing));
    }

    #[test]
    fn shutdown_is_terminal() {
        let health = HealthState::new();
        health.set_serving("Worker", true);
        health.shutdown();
        assert!(health.is_shut_down());
        assert_eq!(health.status("Worker"), Some(ServingStatus::NotServing));
        health.set_serving("Worker", true);
        assert_eq!(health.status("Worker"), Some(ServingStatus::NotServing));
    }

    #[test]
    fn subscribing_to_unknown_service_does_not_make_it_known() {
        let health = HealthState::new();
        let rx = health.subscribe("Later");
        assert_eq!(*rx.borrow(), ServingStatus::ServiceUnknown);
        assert_eq!(health.status("Later"), None);
        health.set_serving("Later", true);
        assert_eq!(*rx.borrow(), ServingStatus::Serving);
    }
}
