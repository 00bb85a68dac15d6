//! The balancer's connections to control endpoints. Locations behind one control endpoint (a
//! worker serving several services, a sidecar reporting for several workers) share its
//! connection, as gRPC clients share subchannels by address: a connection costs about 35 KB, a
//! location on a shared one about 10 KB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::transport::{Channel, Endpoint};

use super::BalancerOptions;
use crate::registry::ServiceLocation;

/// Locations monitored over one connection at most. Each keeps a health Watch stream open
/// and polls load, and servers limit the streams of a connection (Kestrel to 100 by default).
pub const LOCATIONS_PER_CONNECTION: usize = 32;

/// The balancer's connections to control endpoints, shared by the locations behind them.
#[derive(Debug, Default)]
pub struct Connections {
    /// By endpoint URI: the connections and how many locations use each.
    open: Mutex<HashMap<String, Vec<Shared>>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Shared {
    id: u64,
    channel: Channel,
    users: usize,
}

/// A location's use of a shared connection; given back when dropped.
#[derive(Debug)]
pub(super) struct Lease {
    connections: Arc<Connections>,
    uri: String,
    id: u64,
}

impl Connections {
    /// Open connections (for status and tests).
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// A channel to `location`'s control endpoint: one with room for another location, or a
    /// new one.
    pub(super) fn lease(
        self: &Arc<Self>,
        location: &ServiceLocation,
        options: &BalancerOptions,
    ) -> Result<(Channel, Lease), String> {
        let scheme = if location.tls { "https" } else { "http" };
        let uri = format!("{scheme}://{}", location.control_endpoint());
        let mut open = self.lock();
        let shared = open.entry(uri.clone()).or_default();
        let slot = match shared
            .iter_mut()
            .find(|s| s.users < LOCATIONS_PER_CONNECTION)
        {
            Some(slot) => slot,
            None => {
                let channel = match channel(&uri, location.tls, options) {
                    Ok(channel) => channel,
                    Err(reason) => {
                        if shared.is_empty() {
                            open.remove(&uri);
                        }
                        return Err(reason);
                    }
                };
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.push(Shared {
                    id,
                    channel,
                    users: 0,
                });
                shared.last_mut().expect("just pushed")
            }
        };
        slot.users += 1;
        let lease = Lease {
            connections: Arc::clone(self),
            uri,
            id: slot.id,
        };
        Ok((slot.channel.clone(), lease))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Shared>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        let Some(shared) = open.get_mut(&self.uri) else {
            return;
        };
        if let Some(index) = shared.iter().position(|s| s.id == self.id) {
            shared[index].users -= 1;
            if shared[index].users == 0 {
                shared.swap_remove(index);
            }
        }
        if shared.is_empty() {
            open.remove(&self.uri);
        }
    }
}

fn channel(uri: &str, tls: bool, options: &BalancerOptions) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(options.response_timeout)
        .tcp_nodelay(true);
    if tls {
        let tls = options.client_tls.clone().unwrap_or_default();
        endpoint = endpoint
            .tls_config(tls.load().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    // Connected on first use and reconnected by tonic after failures: one channel for life.
    Ok(endpoint.connect_lazy())
}
