"""Fixtures for the wire tests.

The gRPC stubs are generated from the repository's proto/ directory when the session starts,
so the tests speak exactly the protocol that is checked in, and no generated code is kept
in the repository. Workers are real `quaestor worker` processes taken from $QUAESTOR_BIN.
"""

import importlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, List

import grpc
import pytest
from support import compile_protos, free_port, quaestor_bin_from_env, start_etcd

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
# (proto file, module prefix of its generated code)
PROTOS = [
    ("quaestor/load_reporting.proto", "quaestor.load_reporting"),
    ("quaestor/service_discovery.proto", "quaestor.service_discovery"),
    ("quaestor/example/work.proto", "quaestor.example.work"),
    ("xds/data/orca/v3/orca_load_report.proto", "xds.data.orca.v3.orca_load_report"),
    ("xds/service/orca/v3/orca.proto", "xds.service.orca.v3.orca"),
]

# How long a worker may take to print its `listening on` line.
LISTEN_TIMEOUT = 30.0
# How long a worker may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
LISTENING_LINE = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)")


@pytest.fixture(scope="session")
def protos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Compiles the repository's protos with grpc_tools and returns the generated modules.

    Attributes are named after the modules: `load_reporting_pb2`, `load_reporting_pb2_grpc`,
    `service_discovery_pb2`, ..., `work_pb2`, `work_pb2_grpc`.
    """
    out_dir = tmp_path_factory.mktemp("generated")
    # The generated modules live in a package named `quaestor`, like the Python package of
    # this repository that may be installed in the same environment: made regular packages
    # (by compile_protos) first on sys.path, they are the ones imported here.
    compile_protos(PROTO_DIR, (proto for proto, _ in PROTOS), out_dir)
    sys.path.insert(0, str(out_dir))
    try:
        modules = {}
        for _, prefix in PROTOS:
            for suffix in ("_pb2", "_pb2_grpc"):
                module = importlib.import_module(prefix + suffix)
                modules[module.__name__.rsplit(".", 1)[-1]] = module
        yield SimpleNamespace(**modules)
    finally:
        sys.path.remove(str(out_dir))


@pytest.fixture(scope="session")
def quaestor_bin() -> Path:
    """The quaestor binary under test, from $QUAESTOR_BIN (required)."""
    return quaestor_bin_from_env()


def _stop(process: subprocess.Popen) -> int:
    """Stops `process` if it still runs (SIGTERM, then SIGKILL after STOP_TIMEOUT), reaps it
    and returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    return process.returncode


@dataclass
class Worker:
    """A running `quaestor worker` and a channel to it."""

    process: subprocess.Popen
    host: str
    port: int
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address)

    @property
    def address(self) -> str:
        """`HOST:PORT` exactly as the worker printed it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        """Closes the channel, stops the worker and returns its exit code.

        The worker gets SIGTERM first; if it has not exited after STOP_TIMEOUT it gets
        SIGKILL. Either way the process is reaped before this returns.
        """
        self.channel.close()
        return _stop(self.process)


def _read_lines(stream, lines: "queue.Queue") -> None:
    """Forwards each line of `stream` to `lines`, then None at end of file, then closes it."""
    with stream:
        for line in stream:
            lines.put(line.rstrip("\n"))
    lines.put(None)


def _wait_until_listening(process: subprocess.Popen, lines: "queue.Queue") -> re.Match:
    """Waits, at most LISTEN_TIMEOUT, for the worker's `listening on HOST:PORT` line."""
    deadline = time.monotonic() + LISTEN_TIMEOUT
    seen: List[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"worker printed no `listening on` line within {LISTEN_TIMEOUT} s; stdout so far: {seen}"
            )
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            code = process.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(
                f"worker exited with code {code} before listening; stdout: {seen}"
            )
        match = LISTENING_LINE.fullmatch(line)
        if match:
            return match
        seen.append(line)


@pytest.fixture
def start_server(quaestor_bin: Path) -> Iterator[Callable[..., Worker]]:
    """Returns a function that starts `quaestor ARGS...` (a subcommand that prints
    `listening on HOST:PORT`, such as `worker` or `load-balancer`) and returns it once it
    listens. Every process started this way is stopped when the test ends."""
    servers: List[Worker] = []

    def start(*args: str) -> Worker:
        process = subprocess.Popen(
            [str(quaestor_bin), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: "queue.Queue" = queue.Queue()
        # The reader keeps draining stdout after the `listening on` line, so the process
        # never blocks on a full pipe.
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
        try:
            match = _wait_until_listening(process, lines)
        except BaseException:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            raise
        server = Worker(process, match["host"], int(match["port"]))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_worker(start_server: Callable[..., Worker]) -> Callable[..., Worker]:
    """Returns a function that starts `quaestor worker --port 0 ARGS...` once it listens."""

    def start(*args: str) -> Worker:
        return start_server("worker", "--port", "0", *args)

    return start


@dataclass
class Process:
    """A child process whose stdout lines are read as they come, each with the time
    (time.monotonic()) it was read; its stderr goes to a file, shown when a test fails."""

    process: subprocess.Popen
    stderr_path: Path
    lines: "queue.Queue" = field(default_factory=queue.Queue)

    @property
    def pid(self) -> int:
        return self.process.pid

    def next_line(self, timeout: float):
        """(time read, line) of the next stdout line, or None if none came within `timeout`.
        Fails if the process ended first."""
        try:
            item = self.lines.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        if item is None:
            raise AssertionError(
                f"{self.process.args[0]} exited with code {self.process.wait(timeout=STOP_TIMEOUT)}; "
                f"its stderr ends with:\n{self.stderr_tail()}"
            )
        return item

    def wait_for_line(self, what: str, timeout: float, accept: Callable[[str], bool]) -> str:
        """The first stdout line `accept` takes, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen: List[str] = []
        while True:
            item = self.next_line(deadline - time.monotonic())
            if item is None:
                raise AssertionError(
                    f"no {what} within {timeout} s; stdout: {seen[-20:]}; stderr:\n{self.stderr_tail()}"
                )
            if accept(item[1]):
                return item[1]
            seen.append(item[1])

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no stderr)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; reaped either way."""
        _stop(self.process)


def _read_timed_lines(stream, lines: "queue.Queue") -> None:
    """Forwards (time.monotonic(), line) for each line of `stream`, then None at the end."""
    with stream:
        for line in stream:
            lines.put((time.monotonic(), line.rstrip("\n")))
    lines.put(None)


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Returns a function that starts `ARGS...` (with optional `env` and `cwd`) as a Process.
    Every process started this way is stopped when the test ends."""
    started: List[Process] = []

    def start(*args: str, env=None, cwd=None) -> Process:
        stderr_path = tmp_path / f"stderr-{len(started)}-{Path(args[0]).name}.log"
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(
                list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                text=True, env=env, cwd=cwd,
            )
        child = Process(process, stderr_path)
        started.append(child)
        threading.Thread(target=_read_timed_lines, args=(process.stdout, child.lines), daemon=True).start()
        return child

    yield start
    for child in reversed(started):
        child.stop()


@pytest.fixture
def etcd(start_process: Callable[..., Process], tmp_path: Path) -> str:
    """A real single-member etcd on free ports; returns its client URL (http://127.0.0.1:PORT)."""
    client = free_port()
    start_etcd(start_process, tmp_path / "etcd", client, "wire", LISTEN_TIMEOUT)
    return f"http://127.0.0.1:{client}"
