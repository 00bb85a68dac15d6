//! systemd's service notification protocol (`sd_notify`), written here: one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for an
//! abstract socket). Without `NOTIFY_SOCKET` every call does nothing.
//!
//! What the servers send: `READY=1` once they serve (the cluster: once every member that is
//! not Failed is Ready), `STATUS=` lines, `RELOADING=1` (with `MONOTONIC_USEC=`, as systemd
//! 253 and later want) then `READY=1` around a reload, `STOPPING=1` at shutdown, and
//! `WATCHDOG=1` every half of `WATCHDOG_USEC` when systemd set it for this process
//! (`WATCHDOG_PID` unset or ours).
//!
//! The members a cluster starts do not inherit these variables (the spawner removes them):
//! the socket is the supervisor's.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quaestor_core::supervisor::cluster::MemberView;
use quaestor_core::supervisor::member::State;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The socket systemd listens on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog period in microseconds (a keep-alive is due within it).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A connection to systemd's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A socket that cannot be used
    /// is logged and ignored: the server runs without notifying.
    pub fn from_env() -> Arc<Notifier> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let target = var(NOTIFY_SOCKET).and_then(|name| match open(&name) {
            Ok((socket, addr)) => Some((socket, addr, name)),
            Err(error) => {
                tracing::warn!(%error, "{NOTIFY_SOCKET}={name:?} cannot be used; systemd is not notified");
                None
            }
        });
        let for_us =
            var(WATCHDOG_PID).is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = var(WATCHDOG_USEC)
            .filter(|_| for_us)
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(Duration::from_micros);
        Arc::new(Notifier { target, watchdog })
    }

    /// Whether there is a socket to notify.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `message` (`KEY=VALUE` lines); a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((socket, addr, name)) = &self.target else {
            return;
        };
        match socket.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => tracing::debug!(message, "notified systemd"),
            Err(error) => tracing::warn!(%error, message, "cannot notify systemd at {name}"),
        }
    }

    /// `READY=1`: the service is up.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=text` (one line).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// `RELOADING=1` with the monotonic time systemd ≥ 253 expects; `READY=1` ends it.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends `WATCHDOG=1` every half of `WATCHDOG_USEC` from a task of the runtime (so a
    /// stuck runtime misses its keep-alives); None when no watchdog is asked for.
    pub fn start_watchdog(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let period = self.watchdog.filter(|_| self.is_active())? / 2;
        let notifier = Arc::clone(self);
        tracing::debug!(?period, "systemd watchdog keep-alives");
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                notifier.send("WATCHDOG=1");
            }
        }))
    }
}

/// An unbound datagram socket and the address of `name` (`@name`: abstract).
fn open(name: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        }
        None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or @name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // Never block the runtime on a full socket queue: a lost keep-alive is logged.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u128 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_micros())
        .unwrap_or_default()
}

/// How the members of a cluster are, for `STATUS=`: "3/4 ready, 1 failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub members: usize,
    pub ready: usize,
    pub failed: usize,
    /// Every member is Ready, Failed, or stopped (by an operator) after it ran.
    pub settled: bool,
}

impl Summary {
    pub fn of(members: &[MemberView]) -> Summary {
        let mut summary = Summary {
            members: members.len(),
            ready: 0,
            failed: 0,
            settled: true,
        };
        for member in members {
            let status = member.status.borrow();
            match status.state {
                State::Ready { .. } => summary.ready += 1,
                State::Failed { .. } => summary.failed += 1,
                State::Stopped if status.starts > 0 => {}
                _ => summary.settled = false,
            }
        }
        summary
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ready, {} failed",
            self.ready, self.members, self.failed
        )
    }
}

/// The cluster's notifications: `STATUS=` on every change of its [`Summary`], `READY=1`
/// when it settles after the start and after each reload.
pub struct ClusterNotifier {
    notifier: Arc<Notifier>,
    /// True while a `READY=1` is due (at the start, after a reload).
    ready_due: Arc<AtomicBool>,
    /// True during a reload: no `READY=1` before it is applied.
    reloading: Arc<AtomicBool>,
    wake: Arc<Notify>,
    follower: JoinHandle<()>,
    watchdog: Option<JoinHandle<()>>,
}

impl ClusterNotifier {
    /// Follows `members` (the list, and each member's status) when systemd is to be
    /// notified; None otherwise.
    pub fn start(members: watch::Receiver<Vec<MemberView>>) -> Option<ClusterNotifier> {
        let notifier = Notifier::from_env();
        if !notifier.is_active() {
            return None;
        }
        let ready_due = Arc::new(AtomicBool::new(true));
        let reloading = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let follower = tokio::spawn(follow(
            Arc::clone(&notifier),
            members,
            Arc::clone(&ready_due),
            Arc::clone(&reloading),
            Arc::clone(&wake),
        ));
        let watchdog = notifier.start_watchdog();
        Some(ClusterNotifier {
            notifier,
            ready_due,
            reloading,
            wake,
            follower,
            watchdog,
        })
    }

    /// A reload begins: `RELOADING=1`.
    pub fn reloading(&self) {
        self.reloading.store(true, Ordering::SeqCst);
        self.ready_due.store(true, Ordering::SeqCst);
        self.notifier.reloading();
    }

    /// The reload is applied (or refused): `READY=1` as soon as the members settle.
    pub fn reloaded(&self) {
        self.reloading.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The cluster stops: `STOPPING=1`, and nothing more but the watchdog's keep-alives
    /// (systemd still expects them while the members stop).
    pub fn stopping(&self) {
        self.follower.abort();
        self.notifier.status("stopping");
        self.notifier.stopping();
    }
}

impl Drop for ClusterNotifier {
    fn drop(&mut self) {
        self.follower.abort();
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
    }
}

/// Sends `STATUS=` when the summary changes and `READY=1` when one is due and the members
/// have settled; wakes on any change of the member list or of a member's status.
async fn follow(
    notifier: Arc<Notifier>,
    mut members: watch::Receiver<Vec<MemberView>>,
    ready_due: Arc<AtomicBool>,
    reloading: Arc<AtomicBool>,
    wake: Arc<Notify>,
) {
    let mut last: Option<String> = None;
    let mut watchers: Vec<JoinHandle<()>> = Vec::new();
    let mut list_changed = true;
    loop {
        let views = members.borrow_and_update().clone();
        if list_changed {
            for watcher in watchers.drain(..) {
                watcher.abort();
            }
            for view in &views {
                let mut status = view.status.clone();
                let wake = Arc::clone(&wake);
                watchers.push(tokio::spawn(async move {
                    while status.changed().await.is_ok() {
                        wake.notify_one();
                    }
                }));
            }
        }
        let summary = Summary::of(&views);
        let text = summary.to_string();
        if last.as_deref() != Some(text.as_str()) {
            notifier.status(&text);
            last = Some(text);
        }
        if summary.settled
            && !reloading.load(Ordering::SeqCst)
            && ready_due.swap(false, Ordering::SeqCst)
        {
            tracing::info!("systemd notified: ready ({summary})");
            notifier.ready();
        }
        tokio::select! {
            changed = members.changed() => {
                if changed.is_err() {
                    break;
                }
                list_changed = true;
            }
            () = wake.notified() => list_changed = false,
        }
    }
    for watcher in watchers {
        watcher.abort();
    }
}

/// A server's notifications (`load-balancer`, `sidecar`): `READY=1` once it serves,
/// `STOPPING=1` when it stops, and the watchdog's keep-alives in between.
pub struct ServerNotifier {
    notifier: Arc<Notifier>,
    watchdog: Option<JoinHandle<()>>,
}

impl ServerNotifier {
    /// Sends `READY=1` (with `STATUS=status`) and starts the watchdog, when systemd is to be
    /// notified.
    pub fn ready(status: &str) -> ServerNotifier {
        let notifier = Notifier::from_env();
        notifier.status(status);
        notifier.ready();
        let watchdog = notifier.start_watchdog();
        ServerNotifier { notifier, watchdog }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notifier.stopping();
    }
}

impl Drop for ServerNotifier {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
    }
}
