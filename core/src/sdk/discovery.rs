//! [`DiscoveryClient`]: asking one balancer, over one connection kept between calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tonic::transport::Channel;

use crate::blocking::{BlockingError, MadeIn};
use crate::client::{ClientError, Target};
use crate::error::Error;
use crate::proto::service_discovery::ServiceLocationMsg;
use crate::tls::ClientTls;

use super::driven::DrivenRuntime;

/// How many shared clients ([`DiscoveryClient::shared`]) a process keeps at most.
pub const SHARED_CLIENTS: usize = 64;

/// Where a service is served, as a balancer answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Empty: the default scope.
    pub scope: String,
    pub service: String,
    pub host: String,
    /// 0 when the balancer answered a port outside 1-65535.
    pub port: u16,
}

/// Asks the balancer at one address which workers serve a service
/// (`Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc`), over one HTTP/2 connection made on the
/// first call and kept for the next ones. A connection that fails is dropped, and the next call
/// connects again; so is one inherited through a fork (the child connects on its own).
/// Clones of the channel serve concurrent calls: share one client between threads.
///
/// The `*_blocking` calls have a connection of their own, on a single-threaded runtime of the
/// client's that the calling thread drives while it waits (several threads may wait at once;
/// see `driven.rs`): a blocking call then costs no hand-over to other threads and back, which
/// on a loopback round trip of ~100 µs is a third of the time.
#[derive(Debug)]
pub struct DiscoveryClient {
    target: Target,
    channel: Mutex<Option<(MadeIn, Channel)>>,
    blocking: Mutex<Option<Blocking>>,
}

/// The blocking calls' runtime and connection, and the process they belong to.
#[derive(Debug)]
struct Blocking {
    made_in: MadeIn,
    runtime: Arc<DrivenRuntime>,
    channel: Option<Channel>,
}

impl DiscoveryClient {
    /// `address` is `host:port`, `http://host:port` or `https://host:port`; `tls` (or https)
    /// means TLS. `timeout` bounds connecting and each call. Nothing is connected yet: an
    /// unreachable balancer fails the first call, not this.
    pub fn new(address: &str, tls: Option<ClientTls>, timeout: Duration) -> Result<Self, Error> {
        Ok(DiscoveryClient {
            target: Target::new(address, tls, timeout)?,
            channel: Mutex::new(None),
            blocking: Mutex::new(None),
        })
    }

    /// A client shared by every caller asking with the same address, CA and timeout, kept
    /// for the process (at most [`SHARED_CLIENTS`] at once; past that, the cache starts
    /// over): what one-shot calls (`quaestor.discover()`, `quaestor_discover`) use, so that
    /// they too reuse their connection.
    pub fn shared(
        address: &str,
        ca: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Arc<Self>, Error> {
        type Key = (String, Option<PathBuf>, Duration);
        static SHARED: Mutex<Option<HashMap<Key, Arc<DiscoveryClient>>>> = Mutex::new(None);
        let key = (address.to_owned(), ca, timeout);
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        let clients = shared.get_or_insert_with(HashMap::new);
        if let Some(client) = clients.get(&key) {
            return Ok(Arc::clone(client));
        }
        let tls = key.1.clone().map(ClientTls::with_ca);
        let client = Arc::new(DiscoveryClient::new(address, tls, timeout)?);
        if clients.len() >= SHARED_CLIENTS {
            clients.clear();
        }
        clients.insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// `host:port` of the balancer.
    pub fn address(&self) -> String {
        self.target.address()
    }

    pub fn timeout(&self) -> Duration {
        self.target.timeout()
    }

    /// The healthy locations of `service` in `scope`, in random order; at most `max_count`
    /// (≤ 0: all). An unknown service is an empty list.
    pub async fn discover(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<Location>, Error> {
        self.ask(scope, service, max_count, false).await
    }

    /// The healthy locations that report load, best (least loaded) first: `max_count` 1 is
    /// "which worker should I call now?".
    pub async fn discover_top(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<Location>, Error> {
        self.ask(scope, service, max_count, true).await
    }

    /// [`DiscoveryClient::discover`], waiting on the calling thread.
    pub fn discover_blocking(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<Location>, Error> {
        self.ask_blocking(scope, service, max_count, false)
    }

    /// [`DiscoveryClient::discover_top`], waiting on the calling thread.
    pub fn discover_top_blocking(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
    ) -> Result<Vec<Location>, Error> {
        self.ask_blocking(scope, service, max_count, true)
    }

    fn ask_blocking(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
        top: bool,
    ) -> Result<Vec<Location>, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BlockingError::InsideRuntime.into());
        }
        let (runtime, kept) = {
            let mut blocking = self.lock_blocking();
            if blocking.as_ref().is_some_and(|b| !b.made_in.is_here()) {
                // The parent's: its descriptors are shared with the parent; leave them be.
                std::mem::forget(blocking.take());
            }
            let current = match blocking.as_mut() {
                Some(current) => current,
                None => blocking.insert(Blocking {
                    made_in: MadeIn::here(),
                    runtime: Arc::new(DrivenRuntime::new().map_err(BlockingError::Start)?),
                    channel: None,
                }),
            };
            (Arc::clone(&current.runtime), current.channel.clone())
        };
        runtime.block_on(async {
            let channel = match kept {
                Some(channel) => channel,
                None => {
                    let channel = self.target.connect().await?;
                    if let Some(current) = self.lock_blocking().as_mut() {
                        current.channel = Some(channel.clone());
                    }
                    channel
                }
            };
            let answer = self
                .target
                .discover(channel, scope, service, max_count, top)
                .await;
            if answer.as_ref().is_err_and(ClientError::is_unreachable)
                && let Some(current) = self.lock_blocking().as_mut()
            {
                current.channel = None;
            }
            Ok(locations(answer?))
        })
    }

    async fn ask(
        &self,
        scope: &str,
        service: &str,
        max_count: i32,
        top: bool,
    ) -> Result<Vec<Location>, Error> {
        let channel = self.channel().await?;
        match self
            .target
            .discover(channel, scope, service, max_count, top)
            .await
        {
            Ok(found) => Ok(locations(found)),
            Err(error) => {
                if error.is_unreachable() {
                    self.lock().take();
                }
                Err(error.into())
            }
        }
    }

    /// The kept channel, or a new one.
    async fn channel(&self) -> Result<Channel, ClientError> {
        {
            let mut kept = self.lock();
            match kept.take() {
                Some((made_in, channel)) if made_in.is_here() => {
                    *kept = Some((made_in, channel.clone()));
                    return Ok(channel);
                }
                // The parent's: its connection task runs on threads this process lacks.
                Some(inherited) => std::mem::forget(inherited),
                None => {}
            }
        }
        let channel = self.target.connect().await?;
        *self.lock() = Some((MadeIn::here(), channel.clone()));
        Ok(channel)
    }

    fn lock(&self) -> MutexGuard<'_, Option<(MadeIn, Channel)>> {
        self.channel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_blocking(&self) -> MutexGuard<'_, Option<Blocking>> {
        self.blocking.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn locations(found: Vec<ServiceLocationMsg>) -> Vec<Location> {
    found
        .into_iter()
        .map(|l| Location {
            scope: l.scope,
            service: l.service_name,
            host: l.host_name,
            port: u16::try_from(l.port).unwrap_or(0),
        })
        .collect()
}

impl Drop for DiscoveryClient {
    fn drop(&mut self) {
        if let Some((made_in, channel)) = self.lock().take()
            && !made_in.is_here()
        {
            std::mem::forget(channel);
        }
        if let Some(blocking) = self.lock_blocking().take()
            && !blocking.made_in.is_here()
        {
            std::mem::forget(blocking);
        }
    }
}
