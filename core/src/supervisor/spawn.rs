//! Starting a member: its command line (`{HostName}` and `{Port}` replaced, words split as a
//! shell would split them, but never run through a shell), its executable (found as the C#
//! Quaestor finds it), its own process group, and its output, line by line, into the log.
//!
//! So that nothing a member starts outlives a supervisor killed with SIGKILL, the supervisor
//! can start it through a guard ([`guard_member`], behind a hidden `quaestor` subcommand): a
//! small process per member that gets a parent-death signal, is a child subreaper (orphaned
//! descendants, also those that called `setsid()`, become its children), starts the member
//! as the leader of a process group of its own (the guard is not in it), and exits with
//! the member's status (the same code, or the member's terminating signal raised on itself).
//! When the supervisor dies it ends the member's group and every descendant (SIGTERM, then
//! SIGKILL after [`GUARD_GRACE`]). The member itself is started through [`exec_member`]
//! (asks for a parent-death signal, then becomes the program: execve keeps the request), so
//! that it dies even if its guard is killed with SIGKILL. This keeps the crate free of
//! `unsafe` (a `pre_exec` hook would need it).

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("commandLineArguments {text:?} has an unbalanced quote")]
    Quotes { text: String },
    #[error("executable {name:?} not found (looked in {looked})")]
    NotFound { name: String, looked: String },
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to run for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the supervisor's environment.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
}

/// The arguments of `template` for a member on `host`:`port`: `{HostName}` and `{Port}`
/// replaced, then split into words with shell quoting rules (no shell runs them). No
/// template (`commandLineArguments:` with no value) means no arguments.
pub fn command_line(
    template: Option<&str>,
    host: &str,
    port: Option<u16>,
) -> Result<Vec<String>, SpawnError> {
    let Some(template) = template else {
        return Ok(Vec::new());
    };
    let port = port.map(|p| p.to_string()).unwrap_or_default();
    let text = template
        .replace("{HostName}", host)
        .replace("{Port}", &port);
    shlex::split(&text).ok_or(SpawnError::Quotes { text })
}

/// Finds `name`: as given if absolute; else relative to the working directory, then to the
/// folder of the quaestor binary (the C# Quaestor's rule); a bare name also on `PATH`.
pub fn resolve_executable(
    name: &str,
    working_dir: &Path,
    quaestor_dir: Option<&Path>,
) -> Result<PathBuf, SpawnError> {
    let path = Path::new(name);
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let mut looked = vec![working_dir.to_owned()];
    looked.extend(quaestor_dir.map(Path::to_owned));
    if !name.contains('/') {
        looked.extend(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
    }
    // A C# file names Windows programs (`quaestor-loadbalancer.exe`): the same name without
    // `.exe` is taken when the name itself is nowhere.
    let names = [Some(name), strip_exe(name)];
    names
        .iter()
        .flatten()
        .flat_map(|name| looked.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        // Absolute: the member runs in its own working directory, where a path relative to
        // the supervisor's would name something else.
        .map(|found| std::path::absolute(&found).unwrap_or(found))
        .ok_or_else(|| SpawnError::NotFound {
            name: name.to_owned(),
            looked: looked
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn strip_exe(name: &str) -> Option<&str> {
    let split = name.len().checked_sub(4)?;
    let (stem, suffix) = (name.get(..split)?, name.get(split..)?);
    (suffix.eq_ignore_ascii_case(".exe") && !stem.is_empty() && !stem.ends_with('/'))
        .then_some(stem)
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Stdout => "stdout",
            Output::Stderr => "stderr",
        }
    }
}

/// Receives every line a member prints: (which output, the member's tag, its pid, the line).
pub type LineSink = Arc<dyn Fn(Output, &str, u32, &str) + Send + Sync>;

/// The default sink: the supervisor's log, tagged with the member and the stream (see
/// [`log_lines_quieting`]); no member is quiet.
pub fn log_lines() -> LineSink {
    log_lines_quieting(|_| false)
}

/// The supervisor's log, each line once, tagged with the member and the stream, without the
/// member's own timestamp (see [`tidy_line`]). A line the member logged as a warning or an
/// error is logged at WARN or ERROR; any other line at INFO (stderr is where most programs
/// log, so it is not a warning by itself), or at DEBUG for the members `quiet` names (the
/// cluster's etcd: its raft chatter is not news).
pub fn log_lines_quieting(quiet: impl Fn(&str) -> bool + Send + Sync + 'static) -> LineSink {
    Arc::new(move |output, member, _pid, line| {
        let (level, text) = tidy_line(line);
        let stream = output.as_str();
        match level {
            Some(tracing::Level::ERROR) => {
                tracing::error!(target: "quaestor::member", member, stream, "{text}")
            }
            Some(tracing::Level::WARN) => {
                tracing::warn!(target: "quaestor::member", member, stream, "{text}")
            }
            _ if quiet(member) => {
                tracing::debug!(target: "quaestor::member", member, stream, "{text}")
            }
            _ => tracing::info!(target: "quaestor::member", member, stream, "{text}"),
        }
    })
}

/// A member's output line made fit for the supervisor's log: the level it carries, if any,
/// and its text without a leading timestamp (RFC 3339, optionally in brackets) and the level
/// after it, as a `tracing`, `env_logger` or log4j line starts
/// (`2026-12-01T09:56:45.051807Z  WARN module: text` → WARN, `module: text`). A JSON line
/// with a `level` (etcd's, zap's) becomes its `msg` followed by its other fields but the
/// timestamp. A line without a timestamp that starts with a level in brackets
/// (`[WARNING] text`, as etcd's capnslog writes) loses the brackets. Any other line is kept
/// as it is.
pub fn tidy_line(line: &str) -> (Option<tracing::Level>, std::borrow::Cow<'_, str>) {
    use std::borrow::Cow;
    if line.starts_with('{') {
        if let Some(tidy) = tidy_json(line) {
            return tidy;
        }
    }
    let Some(rest) = strip_timestamp(line) else {
        // No timestamp: only a level in brackets counts (`[WARNING] text`).
        let level = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(word, text)| Some((level_named(word)?, text.trim_start())));
        return match level {
            Some((level, text)) => (Some(level), Cow::Borrowed(text)),
            None => (None, Cow::Borrowed(line)),
        };
    };
    let rest = rest.trim_start();
    let word_end = rest
        .find(|c: char| c.is_whitespace() || c == ':' || c == ']')
        .unwrap_or(rest.len());
    let word = rest[..word_end].trim_start_matches('[');
    match level_named(word) {
        Some(level) => {
            let after = rest[word_end..].trim_start_matches([']', ':']).trim_start();
            (Some(level), Cow::Borrowed(after))
        }
        None => (None, Cow::Borrowed(rest)),
    }
}

/// `line` after a leading RFC 3339 timestamp (`2026-12-01T09:56:45.051807Z`, a space for
/// the `T`, any fraction, `Z` or an offset or nothing, in brackets or not) and the
/// whitespace after it; None when it does not start with one.
fn strip_timestamp(line: &str) -> Option<&str> {
    let bracketed = line.starts_with('[');
    let text = if bracketed { &line[1..] } else { line };
    let bytes = text.as_bytes();
    let digits = |from: usize, count: usize| {
        bytes.len() >= from + count && bytes[from..from + count].iter().all(u8::is_ascii_digit)
    };
    let at = |i: usize, options: &[u8]| bytes.get(i).is_some_and(|b| options.contains(b));
    // YYYY-MM-DDTHH:MM:SS
    let shaped = digits(0, 4)
        && at(4, b"-")
        && digits(5, 2)
        && at(7, b"-")
        && digits(8, 2)
        && at(10, b"T ")
        && digits(11, 2)
        && at(13, b":")
        && digits(14, 2)
        && at(16, b":")
        && digits(17, 2);
    if !shaped {
        return None;
    }
    let mut end = 19;
    if at(end, b".,") {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    if at(end, b"Zz") {
        end += 1;
    } else if at(end, b"+-") && digits(end + 1, 2) {
        end += 3;
        if at(end, b":") {
            end += 1;
        }
        if digits(end, 2) {
            end += 2;
        }
    }
    if bracketed {
        if !at(end, b"]") {
            return None;
        }
        end += 1;
    }
    let rest = &text[end..];
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim_start())
}

/// The level a word names (`WARN`, `warning`, `E`rror, `fatal`, …).
fn level_named(word: &str) -> Option<tracing::Level> {
    use tracing::Level;
    let level = match word.to_ascii_lowercase().as_str() {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "info" | "information" | "notice" => Level::INFO,
        "warn" | "warning" => Level::WARN,
        "error" | "err" | "fatal" | "panic" | "dpanic" | "crit" | "critical" => Level::ERROR,
        _ => return None,
    };
    Some(level)
}

fn tidy_json(line: &str) -> Option<(Option<tracing::Level>, std::borrow::Cow<'_, str>)> {
    let serde_json::Value::Object(fields) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let level = fields
        .get("level")
        .or_else(|| fields.get("severity"))?
        .as_str()
        .and_then(level_named);
    let message = ["msg", "message"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(|m| m.as_str()))
        .unwrap_or_default();
    let mut text = message.to_owned();
    for (key, value) in &fields {
        let skip = [
            "level",
            "severity",
            "msg",
            "message",
            "ts",
            "time",
            "timestamp",
        ];
        if skip.contains(&key.as_str()) {
            continue;
        }
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!(" {key}={value}"));
    }
    Some((level, std::borrow::Cow::Owned(text.trim_start().to_owned())))
}

/// How to start members.
#[derive(Clone)]
pub struct Spawner {
    /// Start members through `SHIM exec-member -- PROGRAM ARGS` (the quaestor binary: the
    /// guard of [`guard_member`]), so that nothing they start outlives the supervisor; `None`
    /// starts them directly.
    pub shim: Option<PathBuf>,
    pub sink: LineSink,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("shim", &self.shim)
            .finish_non_exhaustive()
    }
}

/// The hidden subcommand of the quaestor binary that [`guard_member`] (and, with
/// [`SHIM_EXEC_FLAG`], [`exec_member`]) serves.
pub const SHIM_SUBCOMMAND: &str = "exec-member";

impl Spawner {
    /// Starts `command` in a process group of its own; `tag` (e.g. `Worker[2]`) names it in
    /// the log. `parent_death` starts it through the guard (needs a shim): the child (its exit
    /// status) is then the guard, whose status is the member's; the member's own pid, the id
    /// of its group, is [`Spawner::member_pid`].
    pub fn spawn(
        &self,
        command: &MemberCommand,
        tag: &str,
        parent_death: bool,
    ) -> Result<Child, SpawnError> {
        let mut process = match (&self.shim, parent_death) {
            (Some(shim), true) => {
                let mut process = Command::new(shim);
                process.args([
                    SHIM_SUBCOMMAND,
                    "--parent",
                    &std::process::id().to_string(),
                    "--",
                ]);
                process.arg(&command.program);
                process
            }
            _ => Command::new(&command.program),
        };
        process
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            // systemd's notification socket and watchdog are the supervisor's, not a member's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(dir) = &command.working_dir {
            process.current_dir(dir);
        }
        let mut child = process.spawn().map_err(|source| SpawnError::Start {
            program: command.program.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        if let Some(stdout) = child.stdout.take() {
            forward(
                stdout,
                Output::Stdout,
                tag.to_owned(),
                pid,
                Arc::clone(&self.sink),
            );
        }
        if let Some(stderr) = child.stderr.take() {
            forward(
                stderr,
                Output::Stderr,
                tag.to_owned(),
                pid,
                Arc::clone(&self.sink),
            );
        }
        Ok(child)
    }

    /// The member's own pid (its group's id) for `child` as [`Spawner::spawn`] made it with
    /// `parent_death`: through the guard, the guard's first child, looked up for up to 2 s
    /// while the guard starts it (else the guard's pid); otherwise the child's.
    pub async fn member_pid(&self, child: &Child, parent_death: bool) -> u32 {
        let pid = child.id().unwrap_or_default();
        if !(parent_death && self.shim.is_some()) || pid == 0 {
            return pid;
        }
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let first = std::fs::read_to_string(&children)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(member) = first {
                return member;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        pid
    }
}

fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Output,
    tag: String,
    pid: u32,
    sink: LineSink,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink(output, &tag, pid, &line);
        }
    });
}

/// Sends `signal` to the process group whose id is `pid`: every process of the member's group
/// (`pid` is the member's own, [`Spawner::member_pid`]; the guard is not in its group).
pub fn signal_group(pid: u32, signal: Signal) -> nix::Result<()> {
    killpg(Pid::from_raw(pid as i32), signal)
}

/// Asks for SIGKILL when `parent` (the guard, or the supervisor) dies, then becomes
/// `program`. Returns only on failure.
pub fn exec_member(program: &OsStr, args: &[&OsStr], parent: u32) -> Result<Infallible, String> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("cannot ask for a parent-death signal: {e}"))?;
        // The supervisor may have died before the request: then nobody would signal us.
        if nix::unistd::getppid() != Pid::from_raw(parent as i32) {
            return Err("the supervisor is gone".to_owned());
        }
    }
    let to_c = |text: &OsStr| {
        CString::new(text.as_bytes()).map_err(|_| format!("{text:?} contains a NUL byte"))
    };
    let program_c = to_c(program)?;
    let mut argv = vec![program_c.clone()];
    for arg in args {
        argv.push(to_c(arg)?);
    }
    // A clean signal mask for the program (the guard blocks the signals it waits for, and a
    // mask survives fork and exec).
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("cannot clear the signal mask: {e}"))?;
    nix::unistd::execvp(&program_c, &argv)
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))
}

/// How long the guard of a member whose supervisor died waits between SIGTERM and SIGKILL
/// to the member's processes.
pub const GUARD_GRACE: Duration = Duration::from_secs(5);

/// How long the guard waits between SIGTERM and SIGKILL to what a member that exited left
/// running (its group, and descendants that left the group).
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// The flag of [`SHIM_SUBCOMMAND`] with which the guard starts the member itself: become
/// the program at once ([`exec_member`]) instead of guarding it.
pub const SHIM_EXEC_FLAG: &str = "--exec";

/// The guard (the default of [`SHIM_SUBCOMMAND`]): starts `program` (through `shim
/// exec-member --exec`, so that it gets a parent-death signal of its own) and stays with it,
/// until it exits, to
/// - keep its descendants: it is a child subreaper, so orphans (also those that called
///   `setsid()`) become its children;
/// - start it as the leader of a process group of its own (the member's pid, which the
///   supervisor finds with [`Spawner::member_pid`] and shows, is the group's id, so that
///   [`signal_group`] reaches the member's group) while the guard stays in a group of its
///   own, so that a SIGKILL to the member's group leaves the guard alive to end what escaped
///   the group;
/// - not be stopped by SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 or SIGUSR2 (blocked and
///   dropped): signals for the member go to its group (`kill -- -PID`, [`signal_group`]),
///   not to the guard;
/// - end every descendant once the member exits (SIGTERM, SIGKILL after [`LEFTOVER_GRACE`]),
///   and exit with the member's status: its exit code, or its terminating signal raised on
///   the guard itself;
/// - when the supervisor (`parent`) dies (parent-death signal, and a check of the parent
///   pid every second), end the member's group and every descendant (SIGTERM, SIGKILL after
///   [`GUARD_GRACE`]), reap them and exit.
///
/// Returns only if the member cannot be started. Elsewhere than on Linux, this is
/// [`exec_member`].
pub fn guard_member(
    shim: &Path,
    program: &OsStr,
    args: &[&OsStr],
    parent: u32,
) -> Result<Infallible, String> {
    #[cfg(target_os = "linux")]
    {
        guard::run(shim, program, args, parent)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = shim;
        exec_member(program, args, parent)
    }
}

#[cfg(target_os = "linux")]
mod guard {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::ffi::OsStr;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use nix::errno::Errno;
    use nix::sys::prctl;
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::signal::{SigSet, Signal, kill, killpg, raise};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{Pid, alarm, getpid, getppid};

    use super::{GUARD_GRACE, LEFTOVER_GRACE, SHIM_EXEC_FLAG, SHIM_SUBCOMMAND};

    /// The parent-death signal, and the tick that checks the parent pid (never forwarded).
    const TICK: Signal = Signal::SIGALRM;
    /// Meant for the supervisor (the guard is in its group): blocked and dropped.
    const DROPPED: [Signal; 6] = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ];

    struct Guard {
        me: Pid,
        member: Pid,
        /// Whether the guard left the member's group (else the group holds the guard too).
        status: Option<WaitStatus>,
    }

    pub(super) fn run(
        shim: &Path,
        program: &OsStr,
        args: &[&OsStr],
        parent: u32,
    ) -> Result<Infallible, String> {
        let parent = Pid::from_raw(parent as i32);
        let mut mask = SigSet::empty();
        for signal in DROPPED.iter().chain(&[Signal::SIGCHLD, TICK]) {
            mask.add(*signal);
        }
        // Blocked, not ignored: the member's shim (`exec_member`) clears the mask before it
        // becomes the program, while an ignored signal would stay ignored in it.
        mask.thread_block()
            .map_err(|e| format!("cannot block signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("cannot read signals: {e}"))?;
        prctl::set_pdeathsig(TICK)
            .map_err(|e| format!("cannot ask for a parent-death signal: {e}"))?;
        // The supervisor may have died before the request: then nobody would signal us.
        if getppid() != parent {
            return Err("the supervisor is gone".to_owned());
        }
        prctl::set_child_subreaper(true)
            .map_err(|e| format!("cannot become a child subreaper: {e}"))?;
        let me = getpid();
        let child = std::process::Command::new(shim)
            .arg(SHIM_SUBCOMMAND)
            .arg(SHIM_EXEC_FLAG)
            .arg("--parent")
            .arg(me.to_string())
            .arg("--")
            .arg(program)
            .args(args)
            // The member leads a group of its own (its pid is the group's id, as the
            // supervisor's status shows it); the guard stays out of it, so that a SIGKILL to
            // the member's group leaves the guard to end what left the group.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
        let member = Pid::from_raw(child.id() as i32);
        let mut guard = Guard {
            me,
            member,
            status: None,
        };
        alarm::set(1);
        loop {
            let info = match signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Cannot wait for signals any more: end the member rather than lose it.
                    eprintln!("quaestor exec-member: cannot read signals: {e}");
                    guard.end_all(GUARD_GRACE);
                    guard.exit();
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {
                    guard.reap();
                    if guard.status.is_some() {
                        guard.end_all(LEFTOVER_GRACE);
                        guard.exit();
                    }
                }
                Ok(TICK) => {
                    if getppid() != parent {
                        guard.end_all(GUARD_GRACE);
                        guard.exit();
                    }
                    alarm::set(1);
                }
                _ => {}
            }
        }
    }

    impl Guard {
        /// Reaps every child that exited; keeps the member's status.
        fn reap(&mut self) {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => return,
                    Ok(status) => {
                        if status.pid() == Some(self.member) {
                            self.status = Some(status);
                        }
                    }
                }
            }
        }

        /// Whether the guard has no descendant left, reaped or not.
        fn alone(&mut self) -> bool {
            self.reap();
            descendants(self.me).is_empty()
        }

        /// Ends the member's group and every descendant: `signal` first, SIGKILL after
        /// `grace`; returns once all are reaped (or, for processes SIGKILL cannot end, after
        /// a last 10 s).
        fn end_all(&mut self, grace: Duration) {
            self.send(Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if self.alone() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                self.send(Signal::SIGKILL);
                if self.alone() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn send(&self, signal: Signal) {
            let _ = killpg(self.member, signal);
            for pid in descendants(self.me) {
                let _ = kill(pid, signal);
            }
        }

        /// Exits as the member did: its code, or its terminating signal.
        fn exit(&self) -> ! {
            match self.status {
                Some(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Some(WaitStatus::Signaled(_, signal, _)) => {
                    // The member may have dumped core: the guard must not too.
                    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                    let mut set = SigSet::empty();
                    set.add(signal);
                    let _ = set.thread_unblock();
                    let _ = raise(signal);
                    // Ignored here (SIGPIPE, say): the shell's convention.
                    std::process::exit(128 + signal as i32)
                }
                // Never seen to exit (ended after the supervisor died, not reaped in time).
                _ => std::process::exit(128 + Signal::SIGKILL as i32),
            }
        }
    }

    /// Every process whose chain of parents leads to `root` (zombies too).
    fn descendants(root: Pid) -> Vec<Pid> {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `PID (COMM) STATE PPID ...`: COMM may hold anything, the last `)` ends it.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
        let mut found = Vec::new();
        let mut next = vec![root.as_raw()];
        while let Some(pid) = next.pop() {
            for &child in children.get(&pid).into_iter().flatten() {
                found.push(Pid::from_raw(child));
                next.push(child);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn command_lines_like_a_shell_without_one() {
        let args = command_line(
            Some("--port {Port} --host {HostName} --name 'a b' \"c d\" $HOME;x"),
            "h1",
            Some(5161),
        )
        .expect("valid");
        assert_eq!(
            args,
            [
                "--port", "5161", "--host", "h1", "--name", "a b", "c d", "$HOME;x"
            ]
        );
        assert_eq!(
            command_line(None, "h", Some(1)).expect("none"),
            Vec::<String>::new()
        );
        assert!(matches!(
            command_line(Some("--x 'open"), "h", None),
            Err(SpawnError::Quotes { .. })
        ));
    }

    #[test]
    fn executables_are_found_as_the_csharp_version_finds_them() {
        let work = tempfile::tempdir().expect("dir");
        let home = tempfile::tempdir().expect("dir");
        std::fs::write(work.path().join("local-tool"), "").expect("write");
        std::fs::create_dir(home.path().join("bin")).expect("mkdir");
        std::fs::write(home.path().join("bin/worker"), "").expect("write");
        let found = |name| resolve_executable(name, work.path(), Some(home.path()));
        assert_eq!(
            found("local-tool").expect("in the working dir"),
            work.path().join("local-tool")
        );
        assert_eq!(
            found("bin/worker").expect("next to quaestor"),
            home.path().join("bin/worker")
        );
        assert_eq!(
            found("bin/worker.EXE").expect("a C# file's Windows name"),
            home.path().join("bin/worker"),
        );
        std::fs::write(work.path().join("both.exe"), "").expect("write");
        std::fs::write(work.path().join("both"), "").expect("write");
        assert_eq!(
            found("both.exe").expect("the name itself first"),
            work.path().join("both.exe")
        );
        assert!(found(".exe").is_err());
        // Found relative to a relative folder: still right once the member runs elsewhere.
        let relative = resolve_executable("Cargo.toml", Path::new("."), None).expect("found");
        assert!(relative.is_absolute(), "{}", relative.display());
        assert!(relative.is_file());
        assert!(found("bin/.exe").is_err());
        assert_eq!(
            found("sh").expect("on PATH").file_name(),
            Some(OsStr::new("sh"))
        );
        assert_eq!(
            found("/bin/sh").expect("absolute"),
            PathBuf::from("/bin/sh")
        );
        let missing = found("bin/nope").expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains(&home.path().display().to_string()),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn members_run_in_their_own_group_and_their_output_is_tagged() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let spawner = Spawner {
            shim: None,
            sink: Arc::new(move |output, tag: &str, pid, line: &str| {
                let _ = tx.send((output, tag.to_owned(), pid, line.to_owned()));
            }),
        };
        // The member starts a child of its own: the group signal must reach it too.
        let command = MemberCommand {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo out; echo err >&2; sleep 600 & echo $!; wait".into(),
            ],
            env: vec![("QUAESTOR_TEST".into(), "1".into())],
            working_dir: None,
        };
        let mut child = spawner.spawn(&command, "Worker[0]", false).expect("spawn");
        let pid = child.id().expect("pid");
        assert_eq!(
            nix::unistd::getpgid(Some(Pid::from_raw(pid as i32))).expect("pgid"),
            Pid::from_raw(pid as i32)
        );
        let mut seen = Vec::new();
        let mut grandchild = None;
        while seen.len() < 3 {
            let (output, tag, line_pid, line) =
                tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("output in time")
                    .expect("sink open");
            assert_eq!((tag.as_str(), line_pid), ("Worker[0]", pid));
            if let Ok(n) = line.parse::<i32>() {
                grandchild = Some(Pid::from_raw(n));
            }
            seen.push((output, line));
        }
        assert!(
            seen.contains(&(Output::Stdout, "out".into()))
                && seen.contains(&(Output::Stderr, "err".into()))
        );
        signal_group(pid, Signal::SIGKILL).expect("killpg");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("exits")
            .expect("status");
        assert!(!status.success());
        let grandchild = grandchild.expect("the sleep's pid");
        quaestor_test_support::wait_for_async(
            "the member's own child to die",
            Duration::from_secs(10),
            || async {
                (!quaestor_test_support::process_running(grandchild.as_raw())).then_some(())
            },
        )
        .await;
    }

    #[test]
    fn member_lines_lose_their_timestamp_and_keep_their_level() {
        use tracing::Level;
        let tidy = |line| {
            let (level, text) = tidy_line(line);
            (level, text.into_owned())
        };
        assert_eq!(
            tidy("2026-12-01T09:56:45.051807Z  WARN quaestor::reporter: slow"),
            (Some(Level::WARN), "quaestor::reporter: slow".to_owned())
        );
        assert_eq!(
            tidy("2026-12-01T09:56:45Z INFO started"),
            (Some(Level::INFO), "started".to_owned())
        );
        assert_eq!(
            tidy("[2026-12-01 09:56:45.051+01:00] [ERROR] it broke"),
            (Some(Level::ERROR), "it broke".to_owned())
        );
        assert_eq!(
            tidy("2026-12-01T09:56:45-0500 no level here"),
            (None, "no level here".to_owned())
        );
        // Not a timestamp at the start: as it is.
        for line in [
            "listening on 127.0.0.1:5161",
            "2026-12-01 was a Tuesday",
            "20261201T095645Z x",
            "WARN without a time",
            "[not a level] x",
            "",
        ] {
            assert_eq!(tidy(line), (None, line.to_owned()), "{line:?}");
        }
        assert_eq!(
            tidy("[WARNING] Deprecated '--logger=capnslog' flag"),
            (
                Some(Level::WARN),
                "Deprecated '--logger=capnslog' flag".to_owned()
            )
        );
        // etcd's JSON lines.
        let (level, text) = tidy(
            r#"{"level":"warn","ts":"2026-12-01T09:56:45.051Z","caller":"etcdserver/x.go:1","msg":"slow fdatasync","took":"1.2s"}"#,
        );
        assert_eq!(level, Some(Level::WARN));
        assert!(text.starts_with("slow fdatasync "), "{text}");
        assert!(
            text.contains("took=1.2s") && !text.contains("2026"),
            "{text}"
        );
        assert_eq!(
            tidy(r#"{"level":"info","msg":"raft"}"#),
            (Some(Level::INFO), "raft".to_owned())
        );
        assert_eq!(
            tidy(r#"{"not":"a log"}"#),
            (None, r#"{"not":"a log"}"#.to_owned())
        );
    }

    #[test]
    fn spawn_errors_name_the_program() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        let spawner = Spawner {
            shim: None,
            sink: log_lines(),
        };
        let command = MemberCommand {
            program: "/nonexistent/worker".into(),
            args: vec![],
            env: vec![],
            working_dir: None,
        };
        let error = spawner
            .spawn(&command, "Worker[0]", false)
            .expect_err("missing program");
        assert!(error.to_string().contains("/nonexistent/worker"), "{error}");
    }
}
