//! Request cancellation: `Quaestor.ProcessAdministration.ProcessAdministrationGrpc/Cancel`, as
//! the C# Quaestor's `RequestAdmin` does it.
//!
//! A worker starts a request with a user name and an environment
//! ([`ServiceLoad::start_request_as`]); it counts like any other request and is registered,
//! with a cancellation token, in its service's [`RequestAdmin`] until it ends. `Cancel` walks
//! the services of a reporter and cancels every registered request whose user name and
//! environment are exactly those asked for (the service name and password of the request are
//! not looked at, as in C#). The handler's code polls [`CancellableRequest::is_cancelled`] or
//! awaits [`CancellableRequest::cancelled`] and stops its work.
//!
//! One difference from C#, on purpose: the answer's `success` says whether any running
//! request matched (C# always answers true).
//!
//! Plain requests ([`ServiceLoad::start_request`]) never touch the registry: only a request
//! started with a user name pays for a lock and an allocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tonic::{Request, Response, Status};

use crate::load::ServiceLoad;
use crate::proto::process_admin::process_administration_grpc_server::{
    ProcessAdministrationGrpc, ProcessAdministrationGrpcServer,
};
use crate::proto::process_admin::{CancelRequest, CancelResponse};

/// The running requests of one service that were started with a user name and an environment.
#[derive(Debug, Default)]
pub struct RequestAdmin {
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Registered>>,
}

#[derive(Debug)]
struct Registered {
    user_name: Box<str>,
    environment: Box<str>,
    token: CancellationToken,
}

impl RequestAdmin {
    /// Registers a running request; its id and its cancellation token.
    fn register(&self, user_name: &str, environment: &str) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let entry = Registered {
            user_name: user_name.into(),
            environment: environment.into(),
            token: token.clone(),
        };
        self.lock().insert(id, entry);
        (id, token)
    }

    fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Cancels every running request of exactly this user name and environment; how many
    /// matched (requests cancelled before count again while they run).
    pub fn cancel(&self, user_name: &str, environment: &str) -> usize {
        let running = self.lock();
        let mut matched = 0;
        for request in running.values() {
            if *request.user_name == *user_name && *request.environment == *environment {
                request.token.cancel();
                matched += 1;
            }
        }
        matched
    }

    /// Cancels every running request; how many there were.
    pub fn cancel_all(&self) -> usize {
        let running = self.lock();
        for request in running.values() {
            request.token.cancel();
        }
        running.len()
    }

    /// Running requests started with a user name and an environment.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request started with a user name and an environment
/// ([`ServiceLoad::start_request_as`]): counted as in flight and cancellable through `Cancel`
/// until it ends, when it is dropped or [`end`](Self::end)ed (also while unwinding).
#[must_use = "the request ends when it is dropped"]
#[derive(Debug)]
pub struct CancellableRequest {
    load: Arc<ServiceLoad>,
    id: u64,
    token: CancellationToken,
}

impl CancellableRequest {
    pub(crate) fn start(load: Arc<ServiceLoad>, user_name: &str, environment: &str) -> Self {
        load.start_request();
        let (id, token) = load.request_admin().register(user_name, environment);
        CancellableRequest { load, id, token }
    }

    /// `true` once a `Cancel` for this request's user name and environment arrived.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the request is cancelled (at once if it is already). Cancel-safe.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A token that is cancelled with this request, e.g. to hand to a spawned task. Cancelling
    /// it cancels this request alone.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The service the request counts on.
    pub fn service_load(&self) -> &Arc<ServiceLoad> {
        &self.load
    }

    /// Ends the request (as dropping it does): one request fewer in flight, no longer
    /// cancellable.
    pub fn end(self) {}
}

impl Drop for CancellableRequest {
    fn drop(&mut self) {
        self.load.request_admin().unregister(self.id);
        self.load.end_request();
    }
}

/// `Quaestor.ProcessAdministration.ProcessAdministrationGrpc` over the services of a reporter.
#[derive(Debug, Clone)]
pub struct ProcessAdministrationService {
    loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>,
}

impl ProcessAdministrationService {
    pub(crate) fn new(loads: Arc<RwLock<HashMap<String, Arc<ServiceLoad>>>>) -> Self {
        ProcessAdministrationService { loads }
    }

    /// The tonic service.
    pub fn into_server(self) -> ProcessAdministrationGrpcServer<Self> {
        ProcessAdministrationGrpcServer::new(self)
    }
}

/// Cancels the matching requests of every service in `loads`; how many matched.
pub(crate) fn cancel_in(
    loads: &RwLock<HashMap<String, Arc<ServiceLoad>>>,
    user_name: &str,
    environment: &str,
) -> usize {
    let loads: Vec<Arc<ServiceLoad>> = loads
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    loads
        .iter()
        .map(|load| load.request_admin().cancel(user_name, environment))
        .sum()
}

#[tonic::async_trait]
impl ProcessAdministrationGrpc for ProcessAdministrationService {
    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let request = request.into_inner();
        let matched = cancel_in(&self.loads, &request.user_name, &request.environment);
        tracing::info!(
            user_name = %request.user_name,
            environment = %request.environment,
            service_name = %request.service_name,
            matched,
            "Cancel"
        );
        Ok(Response::new(CancelResponse {
            success: matched > 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_matches_user_and_environment_exactly() {
        let load = Arc::new(ServiceLoad::new(4));
        let alice = load.start_request_as("alice", "prod");
        let alice_test = load.start_request_as("alice", "test");
        let bob = load.start_request_as("bob", "prod");
        let plain = load.request();
        assert_eq!(load.current_requests(), 4);
        assert_eq!(load.request_admin().running(), 3);

        assert_eq!(load.cancel_requests("alice", "Prod"), 0, "case matters");
        assert_eq!(load.cancel_requests("alice", ""), 0);
        assert!(!alice.is_cancelled());
        assert_eq!(load.cancel_requests("alice", "prod"), 1);
        assert!(alice.is_cancelled());
        assert!(!alice_test.is_cancelled() && !bob.is_cancelled());

        drop(plain);
        alice.end();
        assert_eq!(load.current_requests(), 2);
        assert_eq!(load.cancel_requests("alice", "prod"), 0, "ended: gone");
        assert_eq!(load.request_admin().cancel_all(), 2);
        assert!(alice_test.is_cancelled() && bob.is_cancelled());
        drop((alice_test, bob));
        assert_eq!(load.current_requests(), 0);
        assert_eq!(load.request_admin().running(), 0);
    }

    #[test]
    fn empty_names_are_names_too() {
        let load = Arc::new(ServiceLoad::new(1));
        let anonymous = load.start_request_as("", "");
        assert_eq!(load.cancel_requests("x", ""), 0);
        assert_eq!(load.cancel_requests("", ""), 1);
        assert!(anonymous.is_cancelled());
    }

    #[test]
    fn a_request_ends_when_its_handler_panics() {
        let load = Arc::new(ServiceLoad::new(1));
        let in_thread = Arc::clone(&load);
        let result = std::thread::spawn(move || {
            let _request = in_thread.start_request_as("u", "e");
            panic!("handler failed");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(load.current_requests(), 0);
        assert_eq!(load.request_admin().running(), 0);
    }

    #[tokio::test]
    async fn the_cancelled_future_completes_on_cancel() {
        let load = Arc::new(ServiceLoad::new(1));
        let request = load.start_request_as("u", "e");
        let token = request.token();
        let waiter = tokio::spawn(async move { token.cancelled().await });
        assert_eq!(load.cancel_requests("u", "e"), 1);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken by Cancel")
            .expect("task");
        // Already cancelled: at once.
        request.cancelled().await;
    }
}
