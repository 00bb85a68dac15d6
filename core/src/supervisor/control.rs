//! The control endpoint of a running cluster: a Unix socket that answers `status` with every
//! member's state, pid, port, restarts, last health and uptime (as JSON), so that
//! `quaestor cluster status` can show them.
//!
//! The socket's default place follows from the config file's path, so the same `--config`
//! finds the cluster that runs it; a second cluster on the same config is refused while the
//! first answers there.

use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::cluster::MemberView;
use super::member::{Exit, State};
use super::runner::{member_state_name, rfc3339};

/// How long one side waits for the other to speak.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A request longer than this is not one of ours.
const MAX_REQUEST: u64 = 256;
/// Answers larger than this are refused by the client (a cluster of thousands of members
/// stays far below it).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("a cluster for this config already runs (its control socket {path} answers)")]
    AlreadyRunning { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cluster answers at {path}: {source}")]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the cluster at {path} gave an answer that is not a status: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// `clusterConfig.name`.
    pub name: Option<String>,
    /// The supervisor's pid.
    pub pid: u32,
    /// The config file it runs.
    pub config: PathBuf,
    pub members: Vec<MemberReport>,
}

/// One member in a [`ClusterReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// E.g. `Worker[1]`.
    pub member: String,
    pub agent_type: String,
    pub index: usize,
    /// Starting, Ready, Unhealthy, Recycling, Stopping, BackingOff, Failed or Stopped.
    pub state: String,
    pub pid: Option<u32>,
    pub port: u16,
    /// Starts after the first (crashes, failed health, recycling).
    pub restarts: u32,
    /// Failures in a row now.
    pub failures: u32,
    /// The last health check's answer (SERVING, NOT_SERVING, UNKNOWN); None before the first.
    pub last_health: Option<String>,
    /// How long the current process has run; None while there is none.
    pub uptime_seconds: Option<f64>,
    /// How the last process ended: its exit code (None when a signal killed it, or before
    /// the first exit).
    #[serde(default)]
    pub last_exit_code: Option<i32>,
    /// The signal that killed the last process (`SIGKILL`); None when it exited by itself.
    #[serde(default)]
    pub last_exit_signal: Option<String>,
    /// The last exit in words: `exited with code 3`, `killed by SIGKILL`.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// When the last process ended (RFC 3339, UTC).
    #[serde(default)]
    pub last_exit_at: Option<String>,
    /// Why it last stopped or restarted, in words: `heartbeat failed 2/2 (NOT_SERVING)`,
    /// `exited with code 3`, `startup timeout 8 s`, `recycled after 24 h while idle`, …
    #[serde(default)]
    pub last_reason: Option<String>,
    /// The cause that reason counts under: crash, health, recycle, config, operator or
    /// shutdown.
    #[serde(default)]
    pub last_reason_kind: Option<String>,
    /// Stops and restarts because it exited by itself or could not be started.
    #[serde(default)]
    pub crashes: u32,
    /// … because health checks failed, or it did not serve within its startup wait.
    #[serde(default)]
    pub health_restarts: u32,
    /// … to recycle it.
    #[serde(default)]
    pub recycles: u32,
    /// … because a config reload changed it.
    #[serde(default)]
    pub config_restarts: u32,
    /// … by an operator (restart, stop).
    #[serde(default)]
    pub operator_restarts: u32,
    /// When a BackingOff or Failed member is started next (RFC 3339, UTC); None otherwise.
    #[serde(default)]
    pub next_retry_at: Option<String>,
    /// Seconds from now until then.
    #[serde(default)]
    pub next_retry_seconds: Option<f64>,
}

/// Where the control socket of the cluster running `config` is, unless given:
/// `$XDG_RUNTIME_DIR/quaestor/` (or `/tmp/quaestor-UID/`) + `cluster-HASH.sock`, the hash
/// being of the config file's full path.
pub fn default_socket_path(config: &Path) -> PathBuf {
    let full = std::fs::canonicalize(config).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|dir| dir.join(config))
            .unwrap_or_else(|_| config.to_owned())
    });
    // FNV-1a: stable across builds and Rust versions (unlike the std hasher).
    let mut hash = Fnv1a::default();
    hash.write(full.as_os_str().as_encoded_bytes());
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(runtime) => PathBuf::from(runtime).join("quaestor"),
        None => std::env::temp_dir().join(format!("quaestor-{}", nix::unistd::getuid())),
    };
    dir.join(format!("cluster-{:016x}.sock", hash.finish()))
}

#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Binds the control socket at `path` (its folder made, private to the user, if missing).
/// A socket file left by a cluster that is gone is replaced; one that answers means a
/// cluster runs there already.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io_error)?;
    }
    UnixListener::bind(path).map_err(io_error)
}

/// Answers on `listener` until dropped (abort the task): `status` → the report of the
/// members `members` holds at that moment.
pub async fn serve(
    listener: UnixListener,
    name: Option<String>,
    config: PathBuf,
    members: watch::Receiver<Vec<MemberView>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let report = {
            let name = name.clone();
            let config = config.clone();
            let members = members.clone();
            move || report(name, config, &members.borrow())
        };
        tokio::spawn(async move {
            if let Err(error) = answer(stream, report).await {
                tracing::debug!(%error, "control connection");
            }
        });
    }
}

async fn answer(stream: UnixStream, report: impl FnOnce() -> ClusterReport) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let body = match line.trim() {
        "status" => serde_json::to_string(&report()).map_err(io::Error::other)?,
        other => {
            serde_json::json!({ "error": format!("unknown command {other:?} (known: status)") })
                .to_string()
        }
    };
    write.write_all(body.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// The report of `members` now.
pub fn report(name: Option<String>, config: PathBuf, members: &[MemberView]) -> ClusterReport {
    let now = Instant::now();
    let wall_now = std::time::SystemTime::now();
    ClusterReport {
        name,
        pid: std::process::id(),
        config,
        members: members
            .iter()
            .map(|view| {
                let status = view.status.borrow();
                let next_retry = match &status.state {
                    State::BackingOff { until } => Some(*until),
                    State::Failed { retry_at, .. } => Some(*retry_at),
                    _ => None,
                }
                .map(|at| at.saturating_duration_since(now));
                let (last_exit_code, last_exit_signal) = match status.last_exit {
                    Some(Exit::Code(code)) => (Some(code), None),
                    Some(Exit::Signal(signal)) => (None, Some(Exit::signal_name(signal))),
                    Some(Exit::Unknown) | None => (None, None),
                };
                let counts = status.restarts_by;
                MemberReport {
                    member: status.tag.clone(),
                    agent_type: view.agent_type.clone(),
                    index: view.index,
                    state: member_state_name(&status.state).to_owned(),
                    pid: status.pid,
                    port: view.port,
                    restarts: status.starts.saturating_sub(1),
                    failures: status.failures,
                    last_health: status.last_health.map(|h| h.as_str_name().to_owned()),
                    uptime_seconds: status
                        .started
                        .map(|started| now.saturating_duration_since(started).as_secs_f64()),
                    last_exit_code,
                    last_exit_signal,
                    last_exit: status.last_exit.map(|exit| exit.to_string()),
                    last_exit_at: status.last_exit_at.map(rfc3339),
                    last_reason: status.last_reason.as_ref().map(ToString::to_string),
                    last_reason_kind: status
                        .last_reason
                        .as_ref()
                        .map(|r| r.kind().as_str().to_owned()),
                    crashes: counts.crashes,
                    health_restarts: counts.health,
                    recycles: counts.recycles,
                    config_restarts: counts.config,
                    operator_restarts: counts.operator,
                    next_retry_at: next_retry.map(|wait| rfc3339(wall_now + wait)),
                    next_retry_seconds: next_retry.map(|wait| wait.as_secs_f64()),
                }
            })
            .collect(),
    }
}

/// Asks the cluster at `path` for its status.
pub async fn ask_status(path: &Path) -> Result<ClusterReport, ControlError> {
    let not_running = |source| ControlError::NotRunning {
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(not_running)?;
        let io_error = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        stream.write_all(b"status\n").await.map_err(io_error)?;
        let mut body = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut body)
            .await
            .map_err(io_error)?;
        serde_json::from_slice(&body).map_err(|e| ControlError::BadAnswer {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(ControlError::Io {
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::TimedOut),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_socket_follows_the_config_path() {
        let a = default_socket_path(Path::new("/etc/quaestor/a.yml"));
        let b = default_socket_path(Path::new("/etc/quaestor/b.yml"));
        assert_ne!(a, b);
        assert_eq!(a, default_socket_path(Path::new("/etc/quaestor/a.yml")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("cluster-") && name.ends_with(".sock"),
            "{name}"
        );
        // Unix socket paths must stay short (108 bytes on Linux).
        assert!(a.as_os_str().len() < 100, "{}", a.display());
    }

    #[tokio::test]
    async fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let dir = std::env::temp_dir().join(format!("quaestor-control-{}", std::process::id()));
        let path = dir.join("c.sock");
        let listener = bind(&path).await.expect("bind");
        let (tx, rx) = watch::channel(Vec::new());
        let server = tokio::spawn(serve(listener, Some("t".into()), "t.yml".into(), rx));
        let again = bind(&path).await;
        assert!(
            matches!(again, Err(ControlError::AlreadyRunning { .. })),
            "{again:?}"
        );
        let report = ask_status(&path).await.expect("status");
        assert_eq!(report.name.as_deref(), Some("t"));
        assert_eq!(report.pid, std::process::id());
        assert!(report.members.is_empty());
        server.abort();
        let _ = server.await;
        drop(tx);
        // The file is left behind by the aborted server: stale, taken over.
        assert!(path.exists());
        let listener = bind(&path).await.expect("a stale socket is replaced");
        drop(listener);
        let gone = ask_status(&path).await;
        assert!(
            matches!(gone, Err(ControlError::NotRunning { .. })),
            "{gone:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
