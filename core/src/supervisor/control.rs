//! The control endpoint of a running cluster: a Unix socket that answers `status` with every
//! member's state, pid, port, restarts, last health and uptime (as JSON), so that
//! `quaestor cluster status` can show them, and takes the operator's orders.
//!
//! The protocol (version [`PROTOCOL_VERSION`]) is one request line, words separated by
//! spaces, and a JSON answer; the server closes the connection after it:
//!
//! - `status` → a [`ClusterReport`];
//! - `version` → `{"version": 1, "commands": [...]}`;
//! - `stop|start|restart|drain|undrain NAME...` → an [`OrderAnswer`], once every named
//!   member is stopped / started / restarted (its next process spawned) / drained (out of the
//!   registry) / undrained; NAME is a member (`Worker[1]`), an agent (`Worker#2`) or an agent
//!   type (all its members);
//! - `logs COUNT NAME...` → the last COUNT lines of the members, one [`LogEntry`] per line
//!   (JSON Lines); `follow COUNT NAME...` the same, then every new line until the client
//!   hangs up.
//!
//! An error is `{"error": "...", "kind": "..."}` (`unknown_member`, `unknown_command`,
//! `bad_request`, `timeout`).
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
use super::logbook::{LogBook, LogLine};
use super::member::{Exit, State};
use super::runner::{MemberStatus, Order, member_state_name};
use crate::wallclock::{rfc3339, rfc3339_millis};

/// The version of the request/answer protocol; bumped when a command changes meaning.
pub const PROTOCOL_VERSION: u32 = 1;
/// The commands the server knows.
pub const COMMANDS: &[&str] = &[
    "status", "version", "stop", "start", "restart", "drain", "undrain", "logs", "follow",
];
/// How long the server waits for orders to take effect (a stop may wait for
/// `memberMaxShutdownTimeSeconds`, then SIGKILL).
pub const ORDER_WAIT: Duration = Duration::from_secs(120);

/// How long one side waits for the other to speak.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A request longer than this is not one of ours (it names members: room for thousands).
const MAX_REQUEST: u64 = 64 * 1024;
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
    /// The cluster understood the request and said no (an unknown member, say).
    #[error("{message}")]
    Refused { kind: String, message: String },
}

/// What the cluster did with an order, member by member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAnswer {
    pub version: u32,
    pub members: Vec<OrderOutcome>,
}

/// One member's part of an [`OrderAnswer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderOutcome {
    /// E.g. `Worker[1]`.
    pub member: String,
    /// E.g. `stopped`, `restarted (pid 4242)`, `already running`, `drained`.
    pub outcome: String,
}

/// One line of a member's output, as `logs` and `follow` send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// E.g. `Worker[1]`.
    pub member: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the supervisor read it (RFC 3339, UTC).
    pub time: String,
    pub line: String,
}

impl From<&LogLine> for LogEntry {
    fn from(line: &LogLine) -> Self {
        LogEntry {
            member: line.member.clone(),
            stream: line.stream.as_str().to_owned(),
            time: rfc3339_millis(line.time),
            line: line.text.clone(),
        }
    }
}

/// An order of the operator to some members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Stop,
    Start,
    Restart,
    Drain,
    Undrain,
}

impl Command {
    /// Its word in the protocol.
    pub fn word(self) -> &'static str {
        match self {
            Command::Stop => "stop",
            Command::Start => "start",
            Command::Restart => "restart",
            Command::Drain => "drain",
            Command::Undrain => "undrain",
        }
    }

    fn parse(word: &str) -> Option<Command> {
        Some(match word {
            "stop" => Command::Stop,
            "start" => Command::Start,
            "restart" => Command::Restart,
            "drain" => Command::Drain,
            "undrain" => Command::Undrain,
            _ => return None,
        })
    }
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
    /// Starting, Ready, Unhealthy, Recycling, Restarting, Stopping, BackingOff, Failed or
    /// Stopped.
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
    /// Drained by the operator: out of the registry while it runs on.
    #[serde(default)]
    pub drained: bool,
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
/// members `members` holds at that moment; orders go to their runners; `logs` read `logs`.
pub async fn serve(
    listener: UnixListener,
    name: Option<String>,
    config: PathBuf,
    members: watch::Receiver<Vec<MemberView>>,
    logs: LogBook,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (name, config, members, logs) =
            (name.clone(), config.clone(), members.clone(), logs.clone());
        tokio::spawn(async move {
            if let Err(error) = answer(stream, name, config, members, logs).await {
                tracing::debug!(%error, "control connection");
            }
        });
    }
}

fn error_answer(kind: &str, message: impl std::fmt::Display) -> String {
    serde_json::json!({ "error": message.to_string(), "kind": kind }).to_string()
}

async fn answer(
    stream: UnixStream,
    name: Option<String>,
    config: PathBuf,
    members: watch::Receiver<Vec<MemberView>>,
    logs: LogBook,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    // A cut line could name other members than meant (`Worker[1` → `Worker`): refused.
    if !line.ends_with('\n') {
        return finish(
            write,
            error_answer("bad_request", "the request is not one whole line"),
        )
        .await;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let body = match words.as_slice() {
        ["status"] => {
            let report = report(name, config, &members.borrow());
            serde_json::to_string(&report).map_err(io::Error::other)?
        }
        ["version"] => {
            serde_json::json!({ "version": PROTOCOL_VERSION, "commands": COMMANDS }).to_string()
        }
        [word, names @ ..] if Command::parse(word).is_some() => {
            let command = Command::parse(word).expect("checked");
            let views = members.borrow().clone();
            match select(&views, names) {
                Err(message) => error_answer("unknown_member", message),
                Ok(chosen) => match carry_out(command, &chosen).await {
                    Ok(members) => serde_json::to_string(&OrderAnswer {
                        version: PROTOCOL_VERSION,
                        members,
                    })
                    .map_err(io::Error::other)?,
                    Err(message) => error_answer("timeout", message),
                },
            }
        }
        [word @ ("logs" | "follow"), count, names @ ..] => {
            let Ok(count) = count.parse::<usize>() else {
                let body = error_answer("bad_request", format!("{count:?} is not a line count"));
                return finish(write, body).await;
            };
            let views = members.borrow().clone();
            let chosen = match select(&views, names) {
                Ok(chosen) => chosen,
                Err(message) => {
                    return finish(write, error_answer("unknown_member", message)).await;
                }
            };
            let tags: Vec<String> = chosen
                .iter()
                .map(|v| v.status.borrow().tag.clone())
                .collect();
            // Follow before reading the past, so that no line falls in between.
            let mut feed = logs.follow();
            let past = logs.recent(&tags, count);
            let mut last = past.last().map(|l| l.seq);
            for line in &past {
                send_entry(&mut write, line).await?;
            }
            if *word == "follow" {
                loop {
                    match feed.recv().await {
                        Ok(line) => {
                            if last.is_some_and(|seq| line.seq <= seq)
                                || !tags.contains(&line.member)
                            {
                                continue;
                            }
                            last = Some(line.seq);
                            send_entry(&mut write, &line).await?;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            return write.shutdown().await;
        }
        _ => error_answer(
            "unknown_command",
            format!(
                "unknown command {:?} (known: {})",
                line.trim(),
                COMMANDS.join(", ")
            ),
        ),
    };
    finish(write, body).await
}

async fn send_entry(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    line: &LogLine,
) -> io::Result<()> {
    let mut text = serde_json::to_string(&LogEntry::from(line)).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

async fn finish(mut write: tokio::net::unix::OwnedWriteHalf, body: String) -> io::Result<()> {
    write.write_all(body.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// The members `names` stand for, in the cluster's order, each once: a member's tag
/// (`Worker[1]`), an agent's name (`Worker#2`), or an agent type (every member of it).
pub fn select(views: &[MemberView], names: &[&str]) -> Result<Vec<MemberView>, String> {
    if names.is_empty() {
        return Err(format!("no member named; members are {}", summary(views)));
    }
    let tag = |v: &MemberView| v.status.borrow().tag.clone();
    let agent = |v: &MemberView| {
        let tag = tag(v);
        tag.rsplit_once('[')
            .map(|(a, _)| a.to_owned())
            .unwrap_or(tag)
    };
    let mut chosen = vec![false; views.len()];
    for name in names {
        let exact: Vec<usize> = (0..views.len())
            .filter(|&i| tag(&views[i]) == *name)
            .collect();
        let matched = if exact.is_empty() {
            (0..views.len())
                .filter(|&i| views[i].agent_type == *name || agent(&views[i]) == *name)
                .collect()
        } else {
            exact
        };
        if matched.is_empty() {
            return Err(format!("no member {name}; members are {}", summary(views)));
        }
        for i in matched {
            chosen[i] = true;
        }
    }
    Ok(views
        .iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(v, _)| v.clone())
        .collect())
}

/// The members' tags, a run of an agent's members shortened: `Worker[0..3], LoadBalancer[0]`.
pub fn summary(views: &[MemberView]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for view in views {
        let tag = view.status.borrow().tag.clone();
        let (agent, index) = match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
            Some((agent, index)) => (agent.to_owned(), index.to_owned()),
            None => (tag.clone(), String::new()),
        };
        match groups.last_mut() {
            Some((last, indices)) if *last == agent => indices.push(index),
            _ => groups.push((agent, vec![index])),
        }
    }
    if groups.is_empty() {
        return "none".to_owned();
    }
    groups
        .iter()
        .map(|(agent, indices)| {
            let numbers: Option<Vec<usize>> = indices.iter().map(|i| i.parse().ok()).collect();
            match numbers {
                Some(n) if n.len() > 1 && n.windows(2).all(|w| w[1] == w[0] + 1) => {
                    format!("{agent}[{}..{}]", n[0], n[n.len() - 1])
                }
                _ => indices
                    .iter()
                    .map(|i| format!("{agent}[{i}]"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives `command` to every member of `chosen`, then waits (at most [`ORDER_WAIT`]) until it
/// took effect on each.
async fn carry_out(command: Command, chosen: &[MemberView]) -> Result<Vec<OrderOutcome>, String> {
    let waiting = |s: &MemberStatus| {
        matches!(
            s.state,
            State::Stopped | State::BackingOff { .. } | State::Failed { .. }
        )
    };
    let mut plans = Vec::new();
    for view in chosen {
        let before = view.status.borrow().clone();
        let (order, already) = match command {
            Command::Stop => (
                Order::Halt,
                (before.state == State::Stopped && before.pid.is_none())
                    .then_some("already stopped"),
            ),
            Command::Start => (
                Order::Start,
                (!waiting(&before)).then_some("already running"),
            ),
            Command::Restart => (Order::Restart, None),
            Command::Drain => (Order::Drain, before.drained.then_some("already drained")),
            Command::Undrain => (Order::Undrain, (!before.drained).then_some("not drained")),
        };
        if already.is_none() || command == Command::Stop {
            view.runner.order(order).await;
        }
        plans.push((view.clone(), before.starts, already));
    }
    let mut outcomes = Vec::new();
    for (view, starts_before, already) in plans {
        let mut status = view.status.clone();
        let tag = status.borrow().tag.clone();
        let outcome = if let Some(already) = already {
            already.to_owned()
        } else {
            let done = |s: &MemberStatus| match command {
                Command::Stop => s.state == State::Stopped && s.pid.is_none(),
                Command::Start | Command::Restart => s.starts > starts_before,
                Command::Drain => s.drained,
                Command::Undrain => !s.drained,
            };
            let reached = tokio::time::timeout(ORDER_WAIT, status.wait_for(done)).await;
            let pid = match reached {
                Ok(Ok(s)) => s.pid,
                Ok(Err(_)) => return Err(format!("{tag} is gone (the cluster stops or reloads)")),
                Err(_) => {
                    return Err(format!(
                        "{tag}: {} not done after {} s",
                        command.word(),
                        ORDER_WAIT.as_secs()
                    ));
                }
            };
            let with_pid = |what: &str| match pid {
                Some(pid) => format!("{what} (pid {pid})"),
                None => what.to_owned(),
            };
            match command {
                Command::Stop => "stopped".to_owned(),
                Command::Start => with_pid("started"),
                Command::Restart => with_pid("restarted"),
                Command::Drain => "drained".to_owned(),
                Command::Undrain => "undrained".to_owned(),
            }
        };
        outcomes.push(OrderOutcome {
            member: tag,
            outcome,
        });
    }
    Ok(outcomes)
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
                    drained: status.drained,
                }
            })
            .collect(),
    }
}

/// Asks the cluster at `path` for its status.
pub async fn ask_status(path: &Path) -> Result<ClusterReport, ControlError> {
    let body = exchange(path, "status", IO_TIMEOUT).await?;
    parse_answer(path, &body)
}

/// Gives the cluster at `path` an order for the members `names` stand for, and waits until
/// it is carried out.
pub async fn ask_order(
    path: &Path,
    command: Command,
    names: &[String],
) -> Result<OrderAnswer, ControlError> {
    let request = format!("{} {}", command.word(), names.join(" "));
    let body = exchange(path, &request, ORDER_WAIT + IO_TIMEOUT).await?;
    parse_answer(path, &body)
}

/// Reads the last `count` output lines of the members `names` stand for, calling `each` for
/// every one; with `follow`, goes on with every new line until the cluster stops (or the
/// caller stops polling the future).
pub async fn ask_logs(
    path: &Path,
    names: &[String],
    count: usize,
    follow: bool,
    mut each: impl FnMut(LogEntry),
) -> Result<(), ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let word = if follow { "follow" } else { "logs" };
    let mut stream = connect(path).await?;
    let request = format!("{word} {count} {}\n", names.join(" "));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    let mut lines = BufReader::new(stream).lines();
    loop {
        let next = if follow {
            lines.next_line().await
        } else {
            tokio::time::timeout(IO_TIMEOUT, lines.next_line())
                .await
                .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
        };
        let Some(line) = next.map_err(io_error)? else {
            return Ok(());
        };
        match serde_json::from_str::<LogEntry>(&line) {
            Ok(entry) => each(entry),
            Err(_) => return Err(refusal(path, line.as_bytes())),
        }
    }
}

async fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.to_owned(),
            source,
        })
}

/// Sends `request`, reads the whole answer.
async fn exchange(path: &Path, request: &str, wait: Duration) -> Result<Vec<u8>, ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let talk = async {
        let mut stream = connect(path).await?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(io_error)?;
        let mut body = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut body)
            .await
            .map_err(io_error)?;
        Ok(body)
    };
    tokio::time::timeout(wait, talk)
        .await
        .unwrap_or_else(|_| Err(io_error(io::Error::from(io::ErrorKind::TimedOut))))
}

/// The answer, or the cluster's refusal.
fn parse_answer<T: serde::de::DeserializeOwned>(
    path: &Path,
    body: &[u8],
) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|_| refusal(path, body))
}

/// An error answer as [`ControlError::Refused`]; anything else as a bad answer.
fn refusal(path: &Path, body: &[u8]) -> ControlError {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
        #[serde(default)]
        kind: String,
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => ControlError::Refused {
            kind: refusal.kind,
            message: refusal.error,
        },
        Err(e) => ControlError::BadAnswer {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    }
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
        let server = tokio::spawn(serve(
            listener,
            Some("t".into()),
            "t.yml".into(),
            rx,
            LogBook::default(),
        ));
        let again = bind(&path).await;
        assert!(
            matches!(again, Err(ControlError::AlreadyRunning { .. })),
            "{again:?}"
        );
        let report = ask_status(&path).await.expect("status");
        assert_eq!(report.name.as_deref(), Some("t"));
        assert_eq!(report.pid, std::process::id());
        assert!(report.members.is_empty());
        let version = exchange(&path, "version", IO_TIMEOUT)
            .await
            .expect("version");
        let version: serde_json::Value = serde_json::from_slice(&version).expect("json");
        assert_eq!(version["version"], PROTOCOL_VERSION);
        // A request cut short (no end of line) is refused, not read as another one.
        let mut raw = UnixStream::connect(&path).await.expect("connect");
        raw.write_all(b"stop Worker").await.expect("write");
        raw.shutdown().await.expect("half-close");
        let mut cut = String::new();
        raw.read_to_string(&mut cut).await.expect("read");
        assert!(cut.contains("bad_request"), "{cut}");
        let unknown = ask_order(&path, Command::Stop, &["Worker[9]".into()]).await;
        assert!(
            matches!(&unknown, Err(ControlError::Refused { kind, message })
                if kind == "unknown_member" && message == "no member Worker[9]; members are none"),
            "{unknown:?}"
        );
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
