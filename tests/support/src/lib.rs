//! Helpers shared by quaestor's tests, in one place so that no test copies them:
//! waiting for a condition with a deadline, child processes that are killed (by pid, with
//! their process group) when the test ends, the reference worker, and a throwaway PKI.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub mod etcd;

/// Polls `probe` until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    within(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `probe` until it returns `Some`, at most `timeout`; `None` if it never did (for
/// checks that something does *not* happen in a while).
pub fn within<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Like [`wait_for`], for probes that are futures (gRPC calls); waits without blocking the
/// runtime.
pub async fn wait_for_async<T, F>(what: &str, timeout: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// `count` distinct ports that were free a moment ago: all are held until all are picked, so
/// that the system does not hand out the same one twice.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Whether process `pid` is running: it exists and is not a zombie waiting to be reaped.
pub fn process_running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// The command line (argv) of process `pid`; `None` if it is gone (or a zombie, which has
/// none).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// Every running process (but this one) with `needle` in an argument of its command line,
/// and that command line: e.g. what is left of the processes started with files of a
/// test's temporary folder.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, Vec<String>)> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && process_running(pid))
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, argv)| argv.iter().any(|arg| arg.contains(needle)))
        .collect()
}

/// A child process in its own process group. Dropping it kills the group (SIGKILL) and
/// reaps the child, so no test leaves a process behind, whatever happens.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    name: String,
}

impl ChildProcess {
    /// Spawns `command` in a new process group.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        ChildProcess {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the child's process group.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Waits for the child to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().expect("try_wait")
        })
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The `quaestor` binary: `QUAESTOR_BIN` if set, else `fallback` (the test's
/// `env!("CARGO_BIN_EXE_quaestor")`).
pub fn quaestor_bin(fallback: &str) -> PathBuf {
    std::env::var_os("QUAESTOR_BIN").map_or_else(|| PathBuf::from(fallback), PathBuf::from)
}

/// The repository's `tests/NAME` folder (a stock client or server of another gRPC stack).
pub fn test_program_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// Builds the Go program of `tests/NAME` (a stock grpc-go client or server; its modules are
/// fetched by scripts/setup.sh) into `out` and returns the binary. Fails, naming the program,
/// if Go is missing or the build fails.
pub fn go_build(name: &str, out: &Path) -> PathBuf {
    let source = test_program_dir(name);
    let binary = out.join(name);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` (install Go; tests/{name} needs it): {e}"));
    assert!(built.success(), "go build of {} failed", source.display());
    binary
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin ARGS...` to its end (at most `timeout`, then it is killed) and collects its output.
pub fn run(bin: &Path, args: &[&str], timeout: Duration) -> Finished {
    let mut command = Command::new(bin);
    command.args(args);
    run_command(command, timeout)
}

/// Like [`run`], for a command the caller has prepared (environment, working directory...).
/// Its stdout and stderr are replaced by pipes.
pub fn run_command(mut command: Command, timeout: Duration) -> Finished {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let name = format!("{command:?}");
    let mut process = ChildProcess::spawn(&name, command);
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let child = process.child_mut();
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let status = process.wait_exit(timeout);
    Finished {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A running quaestor server process and the address it listens on.
#[derive(Debug)]
pub struct Worker {
    pub process: ChildProcess,
    pub addr: SocketAddr,
}

/// The stdout of a running child, line by line, read on a thread of its own (so the child
/// never blocks on a full pipe).
#[derive(Debug)]
pub struct OutputLines {
    lines: mpsc::Receiver<String>,
}

impl OutputLines {
    /// Takes the child's piped stdout.
    pub fn of(process: &mut ChildProcess) -> Self {
        let stdout = process.child_mut().stdout.take().expect("stdout is piped");
        Self::reading(stdout)
    }

    /// Takes the child's piped stderr (its log).
    pub fn of_stderr(process: &mut ChildProcess) -> Self {
        let stderr = process.child_mut().stderr.take().expect("stderr is piped");
        Self::reading(stderr)
    }

    fn reading(output: impl std::io::Read + Send + 'static) -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        OutputLines { lines }
    }

    /// The next line; panics after `timeout` or at the end of the output.
    pub fn next(&self, timeout: Duration) -> String {
        self.expect("a line", timeout, |line| Some(line.to_owned()))
    }

    /// Returns the first line for which `pick` gives something, skipping (and echoing to
    /// stderr) the others; panics naming `what` after `timeout` or at the end of the output.
    pub fn expect<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match pick(&line) {
                    Some(found) => return found,
                    None => eprintln!("[child] {line}"),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no line with {what} within {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the output ended without {what}")
                }
            }
        }
    }
}

impl OutputLines {
    /// Echoes the rest of the output to stderr, in the background, until it ends.
    pub fn drain(self) {
        std::thread::spawn(move || {
            for line in self.lines {
                eprintln!("[child] {line}");
            }
        });
    }
}

/// Starts `bin ARGS...` with its stdout piped to an [`OutputLines`].
pub fn spawn_reading(bin: &Path, args: &[&str]) -> (ChildProcess, OutputLines) {
    let mut command = Command::new(bin);
    command.args(args).stdout(Stdio::piped());
    let mut process =
        ChildProcess::spawn(&format!("{} {}", bin.display(), args.join(" ")), command);
    let lines = OutputLines::of(&mut process);
    (process, lines)
}

/// Starts `quaestor registry register --etcd ENDPOINT --service Worker --host HOST --port PORT
/// EXTRA...` and waits (with a deadline) until it says it registered; it holds the
/// registration until it is stopped.
pub fn spawn_registration(
    bin: &Path,
    etcd: &str,
    host: &str,
    port: u16,
    extra: &[&str],
) -> ChildProcess {
    let port = port.to_string();
    let base = [
        "registry",
        "register",
        "--etcd",
        etcd,
        "--service",
        "Worker",
        "--host",
        host,
        "--port",
        &port,
    ];
    let args: Vec<&str> = base.iter().chain(extra).copied().collect();
    let (process, lines) = spawn_reading(bin, &args);
    lines.expect("`registered KEY`", Duration::from_secs(30), |line| {
        line.starts_with("registered ").then_some(())
    });
    lines.drain();
    process
}

/// Starts `quaestor worker --port 0 ARGS...` and waits (with a deadline) for the line
/// `listening on ADDR` it prints once it serves.
pub fn spawn_worker(bin: &Path, args: &[&str]) -> Worker {
    let args: Vec<&str> = ["worker", "--port", "0"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    spawn_listening(bin, &args)
}

/// Starts `bin ARGS...` (a quaestor server: worker, load-balancer, ...) and waits (with a
/// deadline) for the line `listening on ADDR` it prints once it serves.
pub fn spawn_listening(bin: &Path, args: &[&str]) -> Worker {
    let (process, lines) = spawn_reading(bin, args);
    let addr = lines.expect("`listening on ADDR`", Duration::from_secs(30), |line| {
        line.strip_prefix("listening on ")?.trim().parse().ok()
    });
    lines.drain();
    Worker { process, addr }
}

/// A throwaway certificate authority with a server certificate (for `localhost` and
/// `127.0.0.1`) and a client certificate, written as PEM files into a temporary folder.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second CA that signed nothing the server trusts, and a client certificate of it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let (ca_pem, ca) = new_ca("quaestor test CA");
        let (server_cert, server_key) = leaf(&ca, &["localhost", "127.0.0.1"]);
        let (client_cert, client_key) = leaf(&ca, &["client.test"]);
        let (_, stranger_ca) = new_ca("stranger CA");
        let (stranger_cert, stranger_key) = leaf(&stranger_ca, &["stranger.test"]);
        TestPki {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            stranger_cert: write("stranger.pem", stranger_cert),
            stranger_key: write("stranger.key", stranger_key),
            _dir: dir,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn new_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = rcgen::CertificateParams::new(names).expect("leaf params");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// Reads a gRPC stream until a message satisfies `done`, and returns it with how many were
/// read; panics when none comes within `timeout`, on an error and at the end of the stream,
/// naming `what` was awaited.
pub async fn message_until<T>(
    stream: &mut tonic::Streaming<T>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&T) -> bool,
) -> (T, usize) {
    let mut count = 0;
    loop {
        let message = tokio::time::timeout(timeout, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no message within {timeout:?} waiting for {what}"))
            .unwrap_or_else(|status| panic!("an error waiting for {what}: {status}"))
            .unwrap_or_else(|| panic!("the stream ended before {what}"));
        count += 1;
        if done(&message) {
            return (message, count);
        }
    }
}
