//! A registrar: registers locations on one lease of its own and keeps that lease alive.
//!
//! - Keep-alive runs on its own task, renewing every third of the TTL; when its member fails
//!   it continues on another one with the same lease.
//! - If the lease was lost anyway (etcd said TTL 0, or a put found no lease), the registrar
//!   grants a new one and puts everything it owns again.
//! - [`EtcdRegistrar::stop`] revokes the lease: every entry vanishes at once. Dropping the
//!   registrar does the same in the background. A crashed process leaves its entries to
//!   expire with the TTL.

use std::collections::BTreeMap;
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

#[derive(Debug)]
struct LeaseState {
    lease: i64,
    /// Key → value of everything this registrar registered.
    owned: BTreeMap<String, String>,
}

impl EtcdRegistrar {
    /// Connects to the cluster and grants the registrar's lease.
    pub async fn connect(options: EtcdOptions) -> Result<Self, EtcdError> {
        Self::on(Arc::new(Connection::new(options.normalized())?)).await
    }

    pub(super) async fn on(connection: Arc<Connection>) -> Result<Self, EtcdError> {
        let ttl = connection.options().lease_ttl;
        if ttl < Duration::from_secs(2) {
            return Err(EtcdError::LeaseTtl(ttl));
        }
        let lease = grant(&connection, ttl).await?;
        let shared = Arc::new(Shared {
            connection,
            ttl,
            state: Mutex::new(LeaseState {
                lease,
                owned: BTreeMap::new(),
            }),
        });
        let keeper = tokio::spawn(keep_alive(Arc::clone(&shared)));
        Ok(EtcdRegistrar {
            shared,
            keeper,
            stopped: false,
        })
    }

    /// The lease the registrar's entries hang on now.
    pub async fn lease_id(&self) -> i64 {
        self.shared.state.lock().await.lease
    }

    /// Puts `location` on the registrar's lease (again, if it was there already).
    pub async fn register(&self, location: &ServiceLocation) -> Result<(), EtcdError> {
        let key = location.key();
        let value = location.value();
        let mut state = self.shared.state.lock().await;
        match put(&self.shared.connection, &key, &value, state.lease).await {
            Err(error) if lease_is_gone(&error) => {
                state.owned.insert(key, value);
                self.shared.regrant(&mut state).await
            }
            Err(error) => Err(error),
            Ok(()) => {
                state.owned.insert(key, value);
                Ok(())
            }
        }
    }

    /// Deletes `location`'s entry.
    pub async fn deregister(&self, location: &ServiceLocation) -> Result<(), EtcdError> {
        let key = location.key();
        let mut state = self.shared.state.lock().await;
        state.owned.remove(&key);
        self.shared
            .connection
            .call("delete", |mut client| {
                let key = key.clone();
                async move { client.delete(key, None).await }
            })
            .await?;
        Ok(())
    }

    /// Stops renewing and revokes the lease: every entry of this registrar vanishes now.
    pub async fn stop(mut self) -> Result<(), EtcdError> {
        self.stopped = true;
        self.keeper.abort();
        let lease = self.shared.state.lock().await.lease;
        revoke(&self.shared.connection, lease).await
    }
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
                let lease = shared.state.lock().await.lease;
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
        tracing::warn!(
            old = state.lease,
            new = lease,
            entries = state.owned.len(),
            "registrar lease was lost; registering again on a new one"
        );
        state.lease = lease;
        for (key, value) in &state.owned {
            put(&self.connection, key, value, lease).await?;
        }
        Ok(())
    }

    /// Re-grants unless someone else already replaced `lost`.
    async fn regrant_if_still(&self, lost: i64) -> Result<(), EtcdError> {
        let mut state = self.state.lock().await;
        if state.lease != lost {
            return Ok(());
        }
        self.regrant(&mut state).await
    }
}

async fn keep_alive(shared: Arc<Shared>) {
    let interval = shared.ttl / 3;
    let timeout = shared.connection.options().request_timeout;
    let mut failures = 0;
    loop {
        if failures > 0 {
            backoff(failures).await;
        }
        let lease = shared.state.lock().await.lease;
        let Ok(member) = shared.connection.member().await else {
            failures += 1;
            continue;
        };
        let mut client = member.client.clone();
        let (mut keeper, mut responses) =
            match tokio::time::timeout(timeout, client.lease_keep_alive(lease)).await {
                Ok(Ok(pair)) => pair,
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
                Ok(Ok(Some(response))) if response.ttl() > 0 => failures = 0,
                Ok(Ok(Some(_))) => {
                    // etcd no longer knows the lease: its entries are gone.
                    if let Err(error) = shared.regrant_if_still(lease).await {
                        tracing::warn!(%error, "cannot re-register after losing the lease; retrying");
                        failures += 1;
                    }
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

/// etcd answers NOT_FOUND ("requested lease not found") for a lease that expired.
fn lease_is_gone(error: &EtcdError) -> bool {
    matches!(
        error,
        EtcdError::Request { source: etcd_client::Error::GRpcStatus(status), .. }
            if status.code() == Code::NotFound
    )
}
