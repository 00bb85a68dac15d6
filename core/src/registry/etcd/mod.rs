//! The etcd registry: registrars hold one lease each with keep-alive; readers load the
//! `services/` prefix once, then follow a watch from the loaded revision. Both move to another
//! cluster member when theirs fails. When etcd cannot be reached at all, readers keep
//! publishing the last known set, marked stale, and resync when it returns.
//!
//! Neither needs etcd to be up when it starts ([`EtcdRegistry::start`],
//! [`EtcdRegistrar::start`]): both retry in the background with jittered backoff. Until its
//! first load, a reader publishes a fallback registry's view (the config's Worker agents, as
//! the C# balancer falls back), then switches to etcd's; both switches are logged.

mod connection;
mod registrar;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::task::JoinHandle;

use super::{
    KEY_PREFIX, LocationError, Publisher, RegistryReader, ServiceLocation, parse_entries,
    parse_entry,
};
use crate::tls::{ClientTls, TlsError};
use connection::{Connection, backoff};
pub use registrar::EtcdRegistrar;

/// How long a registration outlives a registrar that stopped renewing it (the C# default).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("cannot connect to etcd at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error("etcd {what} failed: {}", readable(.source))]
    Request {
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {what} got no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("the lease TTL must be at least 2 s (got {0:?})")]
    LeaseTtl(Duration),
    /// etcd answered, and said no: wrong credentials, none given to an etcd with
    /// authentication on, or a user without permission for the request.
    #[error("etcd refused {}: {reason}", refused_whom(.user))]
    Refused {
        /// The user given (`None`: none).
        user: Option<String>,
        /// `authentication failed`, `permission denied for ...`, ...
        reason: String,
    },
}

/// An etcd client error worded for an operator: a transport failure by its root cause
/// (`connection refused`), a gRPC status by its code and message; never a Debug dump.
pub(crate) fn readable(error: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let root = |first: Option<&(dyn std::error::Error + 'static)>| {
        let mut deepest = None;
        let mut source = first;
        while let Some(cause) = source {
            deepest = Some(cause);
            source = cause.source();
        }
        deepest.map(|cause| match cause.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() != std::io::ErrorKind::Other => io.kind().to_string(),
            _ => cause.to_string(),
        })
    };
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            root(status.source()).unwrap_or_else(|| match status.message() {
                "" => format!("{:?}", status.code()),
                message => format!("{:?}: {message}", status.code()),
            })
        }
        etcd_client::Error::TransportError(transport) => {
            root(transport.source()).unwrap_or_else(|| transport.to_string())
        }
        other => other.to_string(),
    }
}

impl EtcdError {
    /// Why, without the context the message around it already gives (for
    /// [`EtcdError::Unreachable`]'s reason).
    pub(crate) fn reason(&self) -> String {
        match self {
            EtcdError::Request { source, .. } => readable(source),
            EtcdError::Timeout { after, .. } => format!("no answer within {after:?}"),
            other => other.to_string(),
        }
    }
}

fn refused_whom(user: &Option<String>) -> String {
    match user {
        Some(user) => format!("user {user}"),
        None => "a client without user name".to_owned(),
    }
}

impl EtcdError {
    /// Whether etcd could not be reached at all (as opposed to answering with a refusal or an
    /// error): the case a caller may wait out.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. }
        )
    }
}

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://host:2379`; a bare `host:port` gets the scheme
    /// that fits `tls`).
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// Bound of one request to one member; a request may go to several.
    pub request_timeout: Duration,
    pub tls: Option<ClientTls>,
    /// User name and password, for a cluster with authentication on.
    pub user: Option<(String, String)>,
    /// TTL of a registrar's lease.
    pub lease_ttl: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            tls: None,
            user: None,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// With TLS when `tls` says so or a CA or client identity (certificate, key) is given, and
    /// with `credentials` (user, password) when given: what every caller that takes etcd
    /// settings (config keys, flags, the SDK's arguments) builds.
    pub fn with_access(
        mut self,
        tls: bool,
        ca: Option<PathBuf>,
        identity: Option<(PathBuf, PathBuf)>,
        credentials: Option<(String, String)>,
    ) -> Self {
        if tls || ca.is_some() || identity.is_some() {
            self = self.with_tls(ClientTls {
                ca,
                identity,
                domain: None,
            });
        }
        match credentials {
            Some((user, password)) => self.with_user(user, password),
            None => self,
        }
    }

    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    fn normalized(mut self) -> Self {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        for endpoint in &mut self.endpoints {
            if !endpoint.contains("://") {
                *endpoint = format!("{scheme}://{endpoint}");
            }
        }
        self
    }
}

/// A reader of the etcd registry: a background task keeps the published view in step with
/// etcd. Dropping the registry stops the task.
#[derive(Debug)]
pub struct EtcdRegistry {
    connection: Arc<Connection>,
    publisher: Publisher,
    follower: JoinHandle<()>,
}

impl EtcdRegistry {
    /// Loads the registry, then follows it in the background. Fails if no member answers
    /// (callers may then fall back to a memory registry, as the C# balancer does).
    pub async fn connect(options: EtcdOptions) -> Result<Self, EtcdError> {
        let connection = Arc::new(Connection::new(options.normalized())?);
        let publisher = Publisher::default();
        let revision = load(&connection, &publisher).await?;
        let follower = tokio::spawn(follow(Arc::clone(&connection), publisher.clone(), revision));
        Ok(EtcdRegistry {
            connection,
            publisher,
            follower,
        })
    }

    /// Follows etcd in the background without waiting for it: until the first load succeeds
    /// (retried with jittered backoff), an empty view marked stale is published. Fails only
    /// on settings that cannot work (no endpoint, TLS files that do not load).
    pub fn start(options: EtcdOptions) -> Result<Self, EtcdError> {
        Self::starting(options, None::<super::memory::MemoryRegistry>)
    }

    /// As [`EtcdRegistry::start`], but until etcd first answers, what `fallback` publishes is
    /// published (marked stale), following its changes; then etcd's view replaces it for good.
    /// Logs a warning when etcd does not answer (or refuses the client) and the fallback
    /// serves, and an info when etcd takes over.
    pub fn start_with_fallback<F: RegistryReader + Send + Sync + 'static>(
        options: EtcdOptions,
        fallback: F,
    ) -> Result<Self, EtcdError> {
        Self::starting(options, Some(fallback))
    }

    fn starting<F: RegistryReader + Send + Sync + 'static>(
        options: EtcdOptions,
        fallback: Option<F>,
    ) -> Result<Self, EtcdError> {
        let options = options.normalized();
        if let Some(tls) = &options.tls {
            tls.load()?;
        }
        let connection = Arc::new(Connection::new(options)?);
        let publisher = Publisher::default();
        match &fallback {
            Some(fallback) => {
                let view = fallback.current();
                publisher.replace((*view.locations).clone(), true);
            }
            None => publisher.set_stale(true),
        }
        let follower = tokio::spawn({
            let connection = Arc::clone(&connection);
            let publisher = publisher.clone();
            async move {
                let revision = first_load(&connection, &publisher, fallback).await;
                follow(connection, publisher, revision).await;
            }
        });
        Ok(EtcdRegistry {
            connection,
            publisher,
            follower,
        })
    }

    /// Waits (at most `within`) until etcd's registry is loaded; false if it is not by then
    /// (the fallback, if any, serves meanwhile). For a caller that would rather start with
    /// etcd's view when etcd is up, without waiting long when it is not.
    pub async fn wait_loaded(&self, within: Duration) -> bool {
        let mut view = self.publisher.subscribe();
        tokio::time::timeout(within, view.wait_for(|view| !view.stale))
            .await
            .is_ok_and(|loaded| loaded.is_ok())
    }

    /// A registrar on the same connection, with its own lease.
    pub async fn registrar(&self) -> Result<EtcdRegistrar, EtcdError> {
        EtcdRegistrar::on(Arc::clone(&self.connection)).await
    }
}

impl RegistryReader for EtcdRegistry {
    fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Reads every entry under `services/`, publishes them, and returns the revision read at.
async fn load(connection: &Connection, publisher: &Publisher) -> Result<i64, EtcdError> {
    let end = prefix_end(KEY_PREFIX.as_bytes());
    let mut from = KEY_PREFIX.as_bytes().to_vec();
    // 0 reads the current revision; the later pages read the first page's, so that the pages
    // make one consistent snapshot.
    let mut revision = 0;
    let mut locations: BTreeMap<String, ServiceLocation> = BTreeMap::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LOAD_PAGE)
            .with_revision(revision);
        let response = connection
            .call("load of services/", |mut client| {
                let (from, options) = (from.clone(), options.clone());
                async move { client.get(from, Some(options)).await }
            })
            .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        let kvs = response.kvs();
        locations.extend(parse_entries(kvs.iter().map(|kv| (kv.key(), kv.value()))));
        match kvs.last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    publisher.stats().saw_revision(revision);
    tracing::debug!(revision, count = locations.len(), "loaded the registry");
    publisher.replace(locations, false);
    Ok(revision)
}

/// Keys per range request when the registry is loaded: a page of registrations (about 150
/// bytes each) stays far below gRPC's 4 MiB message limit, which one range over 50 000
/// registrations exceeds.
const LOAD_PAGE: i64 = 1000;

/// The end of the range of keys that start with `prefix` (its last byte that is not 0xff
/// incremented, the rest dropped).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Loads the registry, retrying with backoff until etcd answers; meanwhile publishes what
/// `fallback` publishes. Returns the revision loaded at.
async fn first_load<F: RegistryReader>(
    connection: &Connection,
    publisher: &Publisher,
    fallback: Option<F>,
) -> i64 {
    let mut fallback_views = fallback.as_ref().map(|f| f.subscribe());
    let endpoints = connection.options().endpoints.join(",");
    let mut last_error: Option<String> = None;
    let mut failures = 0;
    loop {
        match load(connection, publisher).await {
            Ok(revision) => {
                if last_error.is_some() {
                    tracing::info!(%endpoints, locations = publisher.current().locations.len(), "etcd answers: the registry is etcd's from now on");
                } else {
                    tracing::info!(%endpoints, "registry: etcd");
                }
                return revision;
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    match &fallback_views {
                        Some(views) => tracing::warn!(
                            error = %text,
                            locations = views.borrow().locations.len(),
                            "etcd unreachable; serving the fallback registry (the config's Worker agents) until it answers"
                        ),
                        None => {
                            tracing::warn!(error = %text, "etcd unreachable; no registry until it answers")
                        }
                    }
                    last_error = Some(text);
                }
            }
        }
        failures += 1;
        let pause = backoff(failures);
        tokio::pin!(pause);
        loop {
            let Some(views) = fallback_views.as_mut() else {
                pause.await;
                break;
            };
            let gone = tokio::select! {
                () = &mut pause => break,
                changed = views.changed() => match changed {
                    Ok(()) => {
                        let view = views.borrow_and_update().clone();
                        publisher.replace((*view.locations).clone(), true);
                        false
                    }
                    Err(_) => true,
                },
            };
            if gone {
                fallback_views = None;
            }
        }
    }
}

/// Follows the watch from `revision`; reloads after a broken watch or a compaction; while
/// etcd cannot be reached, marks the view stale and retries with backoff.
async fn follow(connection: Arc<Connection>, publisher: Publisher, mut revision: i64) {
    let mut failures = 0;
    loop {
        match watch_from(&connection, &publisher, revision).await {
            WatchEnd::Compacted => tracing::info!(revision, "registry watch compacted; reloading"),
            WatchEnd::Broken => {}
        }
        loop {
            match load(&connection, &publisher).await {
                Ok(loaded) => {
                    revision = loaded;
                    failures = 0;
                    publisher.stats().resynced();
                    break;
                }
                Err(error) => {
                    if failures == 0 {
                        tracing::warn!(%error, "etcd unreachable; serving the last known registry");
                    }
                    publisher.set_stale(true);
                    failures += 1;
                    backoff(failures).await;
                }
            }
        }
    }
}

enum WatchEnd {
    Broken,
    Compacted,
}

async fn watch_from(connection: &Connection, publisher: &Publisher, revision: i64) -> WatchEnd {
    let Ok(member) = connection.member().await else {
        return WatchEnd::Broken;
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut client = member.client.clone();
    let mut stream = match client.watch(KEY_PREFIX, Some(options)).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%error, "cannot open the registry watch");
            connection.failed(&member).await;
            return WatchEnd::Broken;
        }
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) | Err(_) => {
                tracing::info!("registry watch broken; reloading");
                connection.failed(&member).await;
                return WatchEnd::Broken;
            }
        };
        if response.compact_revision() > 0 {
            return WatchEnd::Compacted;
        }
        if response.canceled() {
            tracing::info!(
                reason = response.cancel_reason(),
                "registry watch cancelled"
            );
            connection.failed(&member).await;
            return WatchEnd::Broken;
        }
        if let Some(header) = response.header() {
            publisher.stats().saw_revision(header.revision());
        }
        publisher.update(|view| {
            let locations = Arc::make_mut(&mut view.locations);
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => {
                        if let Some(location) = parse_entry(kv.key(), kv.value()) {
                            locations.insert(location.key(), location);
                        }
                    }
                    EventType::Delete => {
                        locations.remove(String::from_utf8_lossy(kv.key()).as_ref());
                    }
                }
            }
            view.stale = false;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quaestor_test_support::etcd::EtcdCluster;
    use quaestor_test_support::wait_for_async;

    const TIMEOUT: Duration = Duration::from_secs(20);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_behind_a_compaction_reloads() {
        let etcd = EtcdCluster::single();
        etcd.put_plain("services//Worker/a/1/http", "Worker");
        let connection =
            Arc::new(Connection::new(EtcdOptions::new(etcd.endpoints())).expect("connection"));
        let publisher = Publisher::default();
        let loaded = load(&connection, &publisher).await.expect("load");
        assert_eq!(publisher.current().locations.len(), 1);

        // While nobody watches: more writes, then a compaction past the loaded revision.
        etcd.put_plain("services//Worker/b/2/http", "Worker");
        etcd.put_plain("services//Worker/c/3/http", "Worker");
        let status = etcd.etcdctl(&["get", "services/", "--prefix", "-w", "json"]);
        let revision = status
            .stdout
            .split("\"revision\":")
            .nth(1)
            .and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse::<i64>().ok())
            });
        let revision = revision.expect("etcdctl reports the revision").to_string();
        let compacted = etcd.etcdctl(&["compaction", &revision]);
        assert_eq!(compacted.code, Some(0), "{compacted:?}");

        assert!(
            matches!(
                watch_from(&connection, &publisher, loaded).await,
                WatchEnd::Compacted
            ),
            "a watch from before the compaction must report it"
        );

        // Following from the old revision ends up with everything, through a reload.
        let follower = tokio::spawn(follow(Arc::clone(&connection), publisher.clone(), loaded));
        let mut view = publisher.subscribe();
        wait_for_async("the reload after the compaction", TIMEOUT, || {
            let ready = view.borrow_and_update().locations.len() == 3;
            async move { ready.then_some(()) }
        })
        .await;
        follower.abort();
    }
}
