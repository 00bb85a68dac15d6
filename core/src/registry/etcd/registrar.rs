//! A registrar: registers locations on one lease of its own and keeps that lease alive.
//!
//! - Keep-alive runs on its own task, renewing every third of the TTL; when its member fails
//!   it continues on another one with the same lease.
//! - If the lease was lost anyway (etcd said TTL 0, or a put found no lease), the registrar
//!   grants a new one and puts everything it owns again.
//! - Started with [`EtcdRegistrar::start`], it does not wait for etcd: registrations made
//!   while etcd cannot be reached are kept, and put as soon as it answers (the lease is
//!   granted in the background, retried with jittered backoff). A put or delete that failed
//!   is retried after the next successful renewal.
//! - [`EtcdRegistrar::stop`] revokes the lease: every entry vanishes at once. Dropping the
//!   registrar does the same in the background. A crashed process leaves its entries to
//!   expire with the TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::Code;

use super::connection::{Connection, backoff};
use super::{EtcdError, EtcdOptions, ServiceLocation};

#[derive(Debug)]
pub struct EtcdRegistrar {
    shared: Arc<Shared>,
    keeper: JoinHandle<()>,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    connection: Arc<Connection>,
    ttl: Duration,
    /// One lock for the lease and what hangs on it, so a re-grant and a registration never
    /// interleave.
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// `None` until etcd first answered (or after the lease was found lost).
    lease: Option<i64>,
    /// Key → value of everything this registrar registered.
    owned: BTreeMap<String, String>,
    /// Owned keys whose put on the current lease failed: put again after the next renewal.
    unput: BTreeSet<String>,
    /// Keys deregistered whose delete failed: deleted after the next renewal.
    undeleted: BTreeSet<String>,
}

impl EtcdRegistrar {
    /// Connects to the cluster and grants the registrar's lease; fails if etcd does not
    /// answer (see [`EtcdRegistrar::start`] for a registrar that waits for it).
    pub async fn connect(options: EtcdOptions) -> Result<Self, EtcdError> {
        Self::on(Arc::new(Connection::new(options.normalized())?)).await
    }

    /// A registrar that does not wait for etcd: its lease is granted in the background, and
    /// retried (jittered backoff) while etcd cannot be reached; what is registered meanwhile
    /// is put once it answers. Fails only on settings that cannot work (no endpoint, a TTL
    /// under 2 s, TLS files that do not load).
    pub fn start(options: EtcdOptions) -> Result<Self, EtcdError> {
        let options = options.normalized();
        if let Some(tls) = &options.tls {
            tls.load()?;
        }
        Self::with(Arc::new(Connection::new(options)?), None)
    }

    /// A registrar holding `locations`, for a worker that registers itself (the C ABI,
    /// Python): registered before this returns when etcd answers; when no member does (or in
    /// time), registered in the background once one does (see [`Self::start`]), and this
    /// still succeeds. A refusal (wrong password, no permission), a bad location or settings
    /// that cannot work fail, and nothing stays registered.
    pub async fn hold(
        options: EtcdOptions,
        locations: &[ServiceLocation],
    ) -> Result<Self, EtcdError> {
        let registrar = match Self::connect(options.clone()).await {
            Ok(registrar) => registrar,
            Err(error @ (EtcdError::Unreachable { .. } | EtcdError::Timeout { .. })) => {
                tracing::warn!(%error, "etcd does not answer: registering once it does");
                Self::start(options)?
            }
            Err(error) => return Err(error),
        };
        for location in locations {
            if let Err(error) = registrar.register(location).await {
                let _ = registrar.stop().await;
                return Err(error);
            }
        }
        Ok(registrar)
    }

    pub(super) async fn on(connection: Arc<Connection>) -> Result<Self, EtcdError> {
        check_ttl(connection.options().lease_ttl)?;
        let lease = grant(&connection, connection.options().lease_ttl).await?;
        Self::with(connection, Some(lease))
    }

    fn with(connection: Arc<Connection>, lease: Option<i64>) -> Result<Self, EtcdError> {
        let ttl = connection.options().lease_ttl;
        check_ttl(ttl)?;
        let shared = Arc::new(Shared {
            connection,
            ttl,
            state: Mutex::new(LeaseState {
                lease,
                ..LeaseState::default()
            }),
        });
        let keeper = tokio::spawn(keep_alive(Arc::clone(&shared)));
        Ok(EtcdRegistrar {
            shared,
            keeper,
            stopped: false,
        })
    }

    /// The lease the registrar's entries hang on now (`None` before etcd first answered).
    pub async fn lease_id(&self) -> Option<i64> {
        self.shared.state.lock().await.lease
    }

    /// Puts `location` on the registrar's lease (again, if it was there already). Before
    /// etcd first answered, it is only kept (and `Ok`): it is put when etcd answers. A put that
    /// fails is also kept, and retried after the next successful renewal.
    pub async fn register(&self, location: &ServiceLocation) -> Result<(), EtcdError> {
        let key = location.key();
        let value = location.value();
        let mut state = self.shared.state.lock().await;
        state.owned.insert(key.clone(), value.clone());
        state.undeleted.remove(&key);
        let Some(lease) = state.lease else {
            tracing::debug!(%location, "no lease yet: put as soon as etcd grants one");
            return Ok(());
        };
        match put(&self.shared.connection, &key, &value, lease).await {
            Ok(()) => {
                state.unput.remove(&key);
                Ok(())
            }
            Err(error) if lease_is_gone(&error) => self.shared.regrant(&mut state).await,
            Err(error) => {
                state.unput.insert(key);
                Err(error)
            }
        }
    }

    /// Deletes `location`'s entry (retried after the next renewal if etcd fails now).
    pub async fn deregister(&self, location: &ServiceLocation) -> Result<(), EtcdError> {
        let key = location.key();
        let mut state = self.shared.state.lock().await;
        state.owned.remove(&key);
        state.unput.remove(&key);
        if state.lease.is_none() {
            return Ok(()); // never put
        }
        if let Err(error) = delete(&self.shared.connection, &key).await {
            state.undeleted.insert(key);
            return Err(error);
        }
        Ok(())
    }

    /// Stops renewing and revokes the lease: every entry of this registrar vanishes now.
    pub async fn stop(mut self) -> Result<(), EtcdError> {
        self.stopped = true;
        self.keeper.abort();
        match self.shared.state.lock().await.lease {
            Some(lease) => revoke(&self.shared.connection, lease).await,
            None => Ok(()),
        }
    }
}

fn check_ttl(ttl: Duration) -> Result<(), EtcdError> {
    if ttl < Duration::from_secs(2) {
        return Err(EtcdError::LeaseTtl(ttl));
    }
    Ok(())
}

impl Drop for EtcdRegistrar {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.keeper.abort();
        // Best effort: if the runtime is going away, the TTL removes the entries instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(&self.shared);
            runtime.spawn(async move {
                let Some(lease) = shared.state.lock().await.lease else {
                    return;
                };
                if let Err(error) = revoke(&shared.connection, lease).await {
                    tracing::warn!(%error, "could not revoke the registrar's lease; entries expire with it");
                }
            });
        }
    }
}

impl Shared {
    /// Grants a new lease and puts everything owned on it.
    async fn regrant(&self, state: &mut LeaseState) -> Result<(), EtcdError> {
        let lease = grant(&self.connection, self.ttl).await?;
        if let Some(old) = state.lease {
            tracing::warn!(
                old,
                new = lease,
                entries = state.owned.len(),
                "registrar lease was lost; registering again on a new one"
            );
        }
        self.put_all(state, lease).await
    }

    /// Makes `lease` the registrar's and puts everything owned on it.
    async fn put_all(&self, state: &mut LeaseState, lease: i64) -> Result<(), EtcdError> {
        state.lease = Some(lease);
        state.unput = state.owned.keys().cloned().collect();
        self.sync(state, lease).await
    }

    /// Puts what is owned but not put, deletes what is deregistered but not deleted.
    async fn sync(&self, state: &mut LeaseState, lease: i64) -> Result<(), EtcdError> {
        for key in state.unput.clone() {
            if let Some(value) = state.owned.get(&key) {
                put(&self.connection, &key, value, lease).await?;
            }
            state.unput.remove(&key);
        }
        for key in state.undeleted.clone() {
            delete(&self.connection, &key).await?;
            state.undeleted.remove(&key);
        }
        Ok(())
    }

    /// etcd no longer knows `lease` (it expired, or etcd lost its data): its entries are
    /// gone. The keeper grants a new lease and puts everything again.
    async fn lost(&self, lease: i64) {
        let mut state = self.state.lock().await;
        if state.lease == Some(lease) {
            tracing::warn!(
                lease,
                entries = state.owned.len(),
                "registrar lease was lost; registering again on a new one"
            );
            state.lease = None;
        }
    }

    /// After a renewal of `lease`: catches up on what failed before, if anything did.
    async fn catch_up(&self, lease: i64) {
        let mut state = self.state.lock().await;
        if state.lease != Some(lease) || (state.unput.is_empty() && state.undeleted.is_empty()) {
            return;
        }
        match self.sync(&mut state, lease).await {
            Ok(()) => tracing::info!("registrations caught up with etcd"),
            Err(error) => tracing::debug!(%error, "registrations not caught up yet"),
        }
    }
}

/// Whether the keeper last found etcd answering, to log each switch once.
struct Reachability {
    unreachable: Option<String>,
}

impl Reachability {
    fn failed(&mut self, error: &EtcdError, owned: usize) {
        let text = error.to_string();
        if self.unreachable.as_ref() != Some(&text) {
            tracing::warn!(error = %text, registrations = owned, "etcd does not take the registrations; retrying until it does");
            self.unreachable = Some(text);
        }
    }

    fn answered(&mut self, owned: usize) {
        if self.unreachable.take().is_some() {
            tracing::info!(
                registrations = owned,
                "etcd answers: registrations are in etcd"
            );
        }
    }
}

async fn keep_alive(shared: Arc<Shared>) {
    let interval = shared.ttl / 3;
    let timeout = shared.connection.options().request_timeout;
    let mut failures = 0;
    let mut reach = Reachability { unreachable: None };
    loop {
        if failures > 0 {
            backoff(failures).await;
        }
        let known = shared.state.lock().await.lease;
        let lease = match known {
            Some(lease) => lease,
            None => {
                // Granted without the lock (it may take long); registrations meanwhile are
                // owned, and all put below.
                let granted = grant(&shared.connection, shared.ttl).await;
                let mut state = shared.state.lock().await;
                let owned = state.owned.len();
                let outcome = match granted {
                    Ok(lease) => shared.put_all(&mut state, lease).await.map(|()| lease),
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(lease) => {
                        reach.answered(owned);
                        failures = 0;
                        lease
                    }
                    Err(error) => {
                        reach.failed(&error, owned);
                        failures += 1;
                        continue;
                    }
                }
            }
        };
        let member = match shared.connection.member().await {
            Ok(member) => member,
            Err(error) => {
                reach.failed(&error, shared.state.lock().await.owned.len());
                failures += 1;
                continue;
            }
        };
        let mut client = member.client.clone();
        let (mut keeper, mut responses) =
            match tokio::time::timeout(timeout, client.lease_keep_alive(lease)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(error)) if unknown_lease(&error) => {
                    shared.lost(lease).await;
                    continue;
                }
                _ => {
                    shared.connection.failed(&member).await;
                    failures += 1;
                    continue;
                }
            };
        loop {
            let renewed = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(timeout, renewed).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    failures = 0;
                    reach.answered(shared.state.lock().await.owned.len());
                    shared.catch_up(lease).await;
                }
                Ok(Ok(Some(_))) => {
                    shared.lost(lease).await;
                    break;
                }
                Ok(Err(error)) if unknown_lease(&error) => {
                    shared.lost(lease).await;
                    break;
                }
                _ => {
                    tracing::info!(
                        lease,
                        "lease keep-alive interrupted; continuing on another member"
                    );
                    shared.connection.failed(&member).await;
                    failures += 1;
                    break;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

async fn grant(connection: &Connection, ttl: Duration) -> Result<i64, EtcdError> {
    let seconds = ttl.as_secs().max(1) as i64;
    let response = connection
        .call("lease grant", |mut client| async move {
            client.lease_grant(seconds, None).await
        })
        .await?;
    Ok(response.id())
}

async fn put(connection: &Connection, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
    connection
        .call("put", |mut client| {
            let (key, value) = (key.to_owned(), value.to_owned());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
    Ok(())
}

async fn delete(connection: &Connection, key: &str) -> Result<(), EtcdError> {
    connection
        .call("delete", |mut client| {
            let key = key.to_owned();
            async move { client.delete(key, None).await }
        })
        .await?;
    Ok(())
}

async fn revoke(connection: &Connection, lease: i64) -> Result<(), EtcdError> {
    match connection
        .call("lease revoke", |mut client| async move {
            client.lease_revoke(lease).await
        })
        .await
    {
        Err(error) if lease_is_gone(&error) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// etcd answers NOT_FOUND ("requested lease not found") for a lease it does not know.
/// (etcd-client reports it as a `LeaseKeepAliveError` when opening a keep-alive stream).
fn unknown_lease(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.code() == Code::NotFound,
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// etcd answers NOT_FOUND ("requested lease not found") for a lease that expired.
fn lease_is_gone(error: &EtcdError) -> bool {
    matches!(
        error,
        EtcdError::Request { source: etcd_client::Error::GRpcStatus(status), .. }
            if status.code() == Code::NotFound
    )
}
