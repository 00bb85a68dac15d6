//! The service registry: where the workers of each service are.
//!
//! Keys follow the C# Quaestor byte for byte (DESIGN.md "Registry"):
//! `services/{scope}/{service}/{host}/{port}/{http|https}`; the default scope is empty, so a key
//! looks like `services//Worker/localhost/5161/http`. Readers parse the key and never need the
//! value; quaestor writes a JSON value with the control endpoint and who registered, and accepts
//! anything else (the C# writer stores the bare service name).
//!
//! Two backends publish the same thing: [`memory::MemoryRegistry`] (from configuration) and
//! [`etcd::EtcdRegistry`] (leases, watch, failover). Readers get `tokio::sync::watch`
//! receivers: the whole registry ([`RegistryView`]) or one service ([`ServiceSet`]).

pub mod etcd;
pub mod memory;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// Every key quaestor reads or writes starts with this.
pub const KEY_PREFIX: &str = "services/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("the {what} must not be empty")]
    Empty { what: &'static str },
    #[error("the {what} {value:?} must not contain '/'")]
    Slash { what: &'static str, value: String },
    #[error("port {0} is outside 1-65535")]
    Port(i64),
    #[error(
        "key {key:?} is not services/{{scope}}/{{service}}/{{host}}/{{port}}/{{http|https}}: {reason}"
    )]
    Key { key: String, reason: String },
}

/// Where one instance of a service takes traffic, and where its health and load are asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceLocation {
    /// Empty: the default scope.
    pub scope: String,
    pub service: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `host:port` of the health and load server when it is not the service port.
    pub control: Option<String>,
    /// Who registered it (e.g. `quaestor cluster on host-a`), for operators.
    pub agent: Option<String>,
    /// The worker's process id, for operators.
    pub pid: Option<u32>,
}

impl ServiceLocation {
    /// A location in `scope` (may be empty); names must be non-empty and free of `/`.
    pub fn new(scope: &str, service: &str, host: &str, port: u16) -> Result<Self, LocationError> {
        check_name("scope", scope, true)?;
        check_name("service name", service, false)?;
        check_name("host name", host, false)?;
        if port == 0 {
            return Err(LocationError::Port(0));
        }
        Ok(ServiceLocation {
            scope: scope.to_owned(),
            service: service.to_owned(),
            host: host.to_owned(),
            port,
            tls: false,
            control: None,
            agent: None,
            pid: None,
        })
    }

    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Health and load are served at `control` (`host:port`) instead of the service port.
    pub fn with_control(mut self, control: impl Into<String>) -> Self {
        self.control = Some(control.into());
        self
    }

    pub fn with_agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// `host:port`: where clients send traffic.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Where health and load are asked: the control endpoint, else the service address.
    pub fn control_endpoint(&self) -> String {
        self.control.clone().unwrap_or_else(|| self.address())
    }

    /// The registry key, as the C# Quaestor writes it.
    pub fn key(&self) -> String {
        format!(
            "{KEY_PREFIX}{}/{}/{}/{}/{}",
            self.scope,
            self.service,
            self.host,
            self.port,
            if self.tls { "https" } else { "http" }
        )
    }

    /// The prefix of every key of one service.
    pub fn service_prefix(scope: &str, service: &str) -> String {
        format!("{KEY_PREFIX}{scope}/{service}/")
    }

    /// Parses a key; the value, if any, fills in the optional fields.
    pub fn from_key(key: &str) -> Result<Self, LocationError> {
        let bad = |reason: &str| LocationError::Key {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = key
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| bad("no services/ prefix"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [scope, service, host, port, scheme] = parts[..] else {
            return Err(bad(&format!(
                "{} parts after services/, expected 5",
                parts.len()
            )));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
        let tls = match scheme {
            "http" => false,
            "https" => true,
            other => return Err(bad(&format!("{other:?} is neither http nor https"))),
        };
        let location =
            ServiceLocation::new(scope, service, host, port).map_err(|e| bad(&e.to_string()))?;
        Ok(location.with_tls(tls))
    }

    /// The JSON value quaestor stores under the key.
    pub fn value(&self) -> String {
        let mut value = format!("{{\"service\":{}", json_string(&self.service));
        if let Some(control) = &self.control {
            value.push_str(&format!(",\"control\":{}", json_string(control)));
        }
        if let Some(agent) = &self.agent {
            value.push_str(&format!(",\"agent\":{}", json_string(agent)));
        }
        if let Some(pid) = self.pid {
            value.push_str(&format!(",\"pid\":{pid}"));
        }
        value.push('}');
        value
    }

    /// Reads what the value adds to the key: a JSON object from quaestor, or anything else
    /// (the C# writer's bare service name), which adds nothing.
    pub fn with_value(mut self, value: &[u8]) -> Self {
        if let Ok(ValueFields {
            control,
            agent,
            pid,
        }) = serde_json::from_slice::<ValueFields>(value)
        {
            self.control = control.filter(|c| !c.is_empty());
            self.agent = agent;
            self.pid = pid;
        }
        self
    }
}

impl fmt::Display for ServiceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[derive(serde::Deserialize)]
struct ValueFields {
    control: Option<String>,
    agent: Option<String>,
    pid: Option<u32>,
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn check_name(what: &'static str, value: &str, may_be_empty: bool) -> Result<(), LocationError> {
    if value.is_empty() && !may_be_empty {
        return Err(LocationError::Empty { what });
    }
    if value.contains('/') {
        return Err(LocationError::Slash {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Checks a scope and service name asked for exactly as a registration is checked (scope may
/// be empty, the service name may not, neither may contain `/`), so that no name asked for
/// ever acts as a key prefix.
pub fn check_service_names(scope: &str, service: &str) -> Result<(), LocationError> {
    check_name("scope", scope, true)?;
    check_name("service name", service, false)
}

/// Parses what a registry holds into locations; a key that does not parse is skipped with a
/// warning (a foreign writer must not break readers).
pub fn parse_entries<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> BTreeMap<String, ServiceLocation> {
    let mut locations = BTreeMap::new();
    for (key, value) in entries {
        if let Some(location) = parse_entry(key, value) {
            locations.insert(location.key(), location);
        }
    }
    locations
}

/// One registry entry as a location, or `None` (with a warning) if its key does not parse.
pub fn parse_entry(key: &[u8], value: &[u8]) -> Option<ServiceLocation> {
    let Ok(key) = std::str::from_utf8(key) else {
        tracing::warn!(key = %String::from_utf8_lossy(key), "skipping a registry key that is not UTF-8");
        return None;
    };
    match ServiceLocation::from_key(key) {
        Ok(location) => Some(location.with_value(value)),
        Err(error) => {
            tracing::warn!(%error, "skipping a registry entry");
            None
        }
    }
}

/// The whole registry at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryView {
    /// By key.
    pub locations: Arc<BTreeMap<String, ServiceLocation>>,
    /// True while the backend cannot be reached: this is the last set known.
    pub stale: bool,
}

impl RegistryView {
    /// The locations of one service.
    pub fn service<'a>(
        &'a self,
        scope: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a ServiceLocation> + 'a {
        let prefix = ServiceLocation::service_prefix(scope, service);
        self.locations
            .range(prefix.clone()..)
            .take_while(move |(key, _)| key.starts_with(&prefix))
            .map(|(_, location)| location)
    }
}

/// The locations of one service at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSet {
    /// Sorted by key.
    pub locations: Vec<ServiceLocation>,
    /// True while the backend cannot be reached: this is the last set known.
    pub stale: bool,
}

/// What every registry offers its readers. Backends only say where their [`Publisher`] is.
pub trait RegistryReader {
    fn publisher(&self) -> &Publisher;

    /// Follows the whole registry.
    fn subscribe(&self) -> watch::Receiver<RegistryView> {
        self.publisher().subscribe()
    }

    /// Follows one service of one scope.
    fn subscribe_service(&self, scope: &str, service: &str) -> watch::Receiver<ServiceSet> {
        self.publisher().subscribe_service(scope, service)
    }

    /// The registry now.
    fn current(&self) -> RegistryView {
        self.publisher().current()
    }
}

/// What registries share: they publish a [`RegistryView`] and, for each service a reader asks
/// about, a [`ServiceSet`], both through `tokio::sync::watch` channels. Receivers see only
/// real changes.
#[derive(Debug, Clone)]
pub struct Publisher {
    view: watch::Sender<RegistryView>,
    services: Arc<Mutex<ServiceSenders>>,
    stats: Arc<RegistryStats>,
}

/// How a registry's backend is followed, for metrics: the last revision seen and the
/// reloads after the first load (etcd; a memory registry keeps both 0).
#[derive(Debug, Default)]
pub struct RegistryStats {
    revision: std::sync::atomic::AtomicI64,
    resyncs: std::sync::atomic::AtomicU64,
}

impl RegistryStats {
    /// The backend's revision of the last load or change seen (0: none).
    pub fn revision(&self) -> i64 {
        self.revision.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reloads after the first one (a broken watch, a compaction, an outage).
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn saw_revision(&self, revision: i64) {
        self.revision
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn resynced(&self) {
        self.resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One sender per followed (scope, service).
type ServiceSenders = HashMap<(String, String), watch::Sender<ServiceSet>>;

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            view: watch::Sender::new(RegistryView::default()),
            services: Arc::default(),
            stats: Arc::default(),
        }
    }
}

impl Publisher {
    /// Follows the whole registry.
    pub fn subscribe(&self) -> watch::Receiver<RegistryView> {
        self.view.subscribe()
    }

    /// Follows one service.
    pub fn subscribe_service(&self, scope: &str, service: &str) -> watch::Receiver<ServiceSet> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget services nobody follows any more.
        services.retain(|_, sender| sender.receiver_count() > 0);
        services
            .entry((scope.to_owned(), service.to_owned()))
            .or_insert_with(|| {
                watch::Sender::new(self.service_set(&self.view.borrow(), scope, service))
            })
            .subscribe()
    }

    /// How the backend is followed (shared by every clone of this publisher).
    pub fn stats(&self) -> Arc<RegistryStats> {
        Arc::clone(&self.stats)
    }

    /// The current view.
    pub fn current(&self) -> RegistryView {
        self.view.borrow().clone()
    }

    /// Replaces everything (after a load from the backend).
    pub fn replace(&self, locations: BTreeMap<String, ServiceLocation>, stale: bool) {
        self.update(|view| {
            view.locations = Arc::new(locations);
            view.stale = stale;
        });
    }

    /// Adds or replaces one location.
    pub fn insert(&self, location: ServiceLocation) {
        self.update(|view| {
            Arc::make_mut(&mut view.locations).insert(location.key(), location);
        });
    }

    /// Removes one location by key.
    pub fn remove(&self, key: &str) {
        self.update(|view| {
            Arc::make_mut(&mut view.locations).remove(key);
        });
    }

    /// Marks what is published as stale (backend unreachable) or fresh.
    pub fn set_stale(&self, stale: bool) {
        self.update(|view| view.stale = stale);
    }

    /// Applies `change`, then tells every follower whose part changed.
    pub fn update(&self, change: impl FnOnce(&mut RegistryView)) {
        let mut changed = false;
        self.view.send_if_modified(|view| {
            let before = view.clone();
            change(view);
            changed = *view != before;
            changed
        });
        if !changed {
            return;
        }
        let view = self.view.borrow().clone();
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for ((scope, service), sender) in services.iter() {
            let set = self.service_set(&view, scope, service);
            sender.send_if_modified(|current| {
                let modified = *current != set;
                if modified {
                    *current = set;
                }
                modified
            });
        }
    }

    fn service_set(&self, view: &RegistryView, scope: &str, service: &str) -> ServiceSet {
        ServiceSet {
            locations: view.service(scope, service).cloned().collect(),
            stale: view.stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_csharp_layout() {
        let location = ServiceLocation::new("", "Worker", "localhost", 5161).expect("valid");
        assert_eq!(location.key(), "services//Worker/localhost/5161/http");
        let tls = ServiceLocation::new("prod", "Worker", "h1", 443)
            .expect("valid")
            .with_tls(true);
        assert_eq!(tls.key(), "services/prod/Worker/h1/443/https");
        for key in [
            "services//Worker/localhost/5161/http",
            "services/prod/Worker/h1/443/https",
        ] {
            assert_eq!(ServiceLocation::from_key(key).expect("parses").key(), key);
        }
    }

    #[test]
    fn bad_names_and_keys_are_rejected() {
        assert!(matches!(
            ServiceLocation::new("", "", "h", 1),
            Err(LocationError::Empty { .. })
        ));
        assert!(matches!(
            ServiceLocation::new("", "a/b", "h", 1),
            Err(LocationError::Slash { .. })
        ));
        assert!(matches!(
            ServiceLocation::new("s/x", "a", "h", 1),
            Err(LocationError::Slash { .. })
        ));
        assert!(matches!(
            ServiceLocation::new("", "a", "", 1),
            Err(LocationError::Empty { .. })
        ));
        assert!(matches!(
            ServiceLocation::new("", "a", "h", 0),
            Err(LocationError::Port(0))
        ));
        for key in [
            "",
            "services/",
            "other//Worker/h/1/http",
            "services//Worker/h/1",
            "services//Worker/h/1/http/extra",
            "services//Worker/h/0/http",
            "services//Worker/h/65536/http",
            "services//Worker/h/-1/http",
            "services//Worker/h/x/http",
            "services//Worker/h/1/ftp",
            "services///h/1/http",
            "services//Worker//1/http",
        ] {
            assert!(
                ServiceLocation::from_key(key).is_err(),
                "{key:?} must not parse"
            );
        }
    }

    #[test]
    fn values_round_trip_and_foreign_values_are_accepted() {
        let location = ServiceLocation::new("", "Wor\"ker", "h", 1)
            .expect("valid")
            .with_control("h:2")
            .with_agent("cluster on h")
            .with_pid(42);
        let value = location.value();
        let parsed = ServiceLocation::from_key(&location.key())
            .expect("key")
            .with_value(value.as_bytes());
        assert_eq!(parsed, location);
        // The C# writer stores the bare service name; garbage is no reason to drop an entry.
        for foreign in [&b"Worker"[..], b"", b"{not json", b"[1,2]", b"\xff\xfe"] {
            let plain = ServiceLocation::from_key("services//Worker/h/1/http").expect("key");
            assert_eq!(plain.clone().with_value(foreign), plain);
        }
    }

    #[test]
    fn unparsable_entries_are_skipped() {
        let entries: Vec<(&[u8], &[u8])> = vec![
            (b"services//Worker/a/1/http", b"Worker"),
            (b"services//Worker/b/2/ftp", b"Worker"),
            (b"\xff", b""),
            (
                b"services//Other/c/3/https",
                b"{\"service\":\"Other\",\"control\":\"c:4\"}",
            ),
        ];
        let parsed = parse_entries(entries);
        let keys: Vec<&str> = parsed.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["services//Other/c/3/https", "services//Worker/a/1/http"]
        );
        assert_eq!(
            parsed["services//Other/c/3/https"].control_endpoint(),
            "c:4"
        );
        assert_eq!(
            parsed["services//Worker/a/1/http"].control_endpoint(),
            "a:1"
        );
    }

    #[test]
    fn publisher_tells_only_followers_whose_service_changed() {
        let publisher = Publisher::default();
        let mut worker = publisher.subscribe_service("", "Worker");
        let mut other = publisher.subscribe_service("", "Other");
        let mut all = publisher.subscribe();
        let a = ServiceLocation::new("", "Worker", "a", 1).expect("valid");
        publisher.insert(a.clone());
        assert!(worker.has_changed().expect("open"));
        assert!(!other.has_changed().expect("open"));
        assert!(all.has_changed().expect("open"));
        assert_eq!(worker.borrow_and_update().locations, vec![a.clone()]);
        all.borrow_and_update();

        publisher.insert(a.clone());
        assert!(
            !worker.has_changed().expect("open"),
            "same location again is no change"
        );
        assert!(!all.has_changed().expect("open"));

        publisher.set_stale(true);
        assert!(worker.borrow_and_update().stale && other.borrow_and_update().stale);
        publisher.remove(&a.key());
        assert!(worker.borrow_and_update().locations.is_empty());
        // A scope is part of the identity: "Worker" in scope "x" is another service.
        let scoped = publisher.subscribe_service("x", "Worker");
        publisher.insert(ServiceLocation::new("x", "Worker", "b", 2).expect("valid"));
        assert_eq!(scoped.borrow().locations.len(), 1);
        assert!(worker.borrow().locations.is_empty());
    }

    #[test]
    fn service_prefix_does_not_match_longer_names() {
        let view = RegistryView {
            locations: Arc::new(parse_entries(vec![
                (&b"services//Worker/a/1/http"[..], &b""[..]),
                (b"services//WorkerX/a/1/http", b""),
            ])),
            stale: false,
        };
        assert_eq!(view.service("", "Worker").count(), 1);
    }
}
