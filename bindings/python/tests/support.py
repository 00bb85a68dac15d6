"""Helpers of the Python package's tests: waits with deadlines, free ports, child processes
(stopped by pid), a real etcd and etcdctl. The conftest builds its fixtures from these; tests
import them for waits and processes of their own."""

import importlib.util
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]

# How long a process may take to print the line it is waited for, or etcd to answer.
START_TIMEOUT = 30.0
# How long a process may take to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT = 10.0
# How long a balancer or an etcd lease may take to show a change.
CHANGE_TIMEOUT = 20.0
LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)")


def _load_wire_support() -> ModuleType:
    """tests/python/support.py (the wire tests' helpers), under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        "quaestor_wire_support", REPO_ROOT / "tests" / "python" / "support.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire_support = _load_wire_support()
wait_for = wire_support.wait_for
compile_protos = wire_support.compile_protos


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listens on now (held together while picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Child:
    """A child process whose stdout lines are read on a thread (so it never blocks on a full
    pipe) and whose stderr goes to a log file. `stop()` ends it by pid: SIGTERM, then SIGKILL
    after STOP_TIMEOUT; the process is always reaped."""

    def __init__(self, name: str, args: Sequence[str | os.PathLike[str]], log: Path, **popen) -> None:
        self.name = name
        self.log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [os.fspath(a) for a in args],
                stdin=popen.pop("stdin", subprocess.DEVNULL),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                **popen,
            )
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_line(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first stdout line (not read before) that `pattern` matches in full."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name} printed no line like {pattern.pattern!r} within {timeout} s; "
                    f"stdout: {self.output}\n{self.log_tail()}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait(timeout=STOP_TIMEOUT)
                raise AssertionError(
                    f"{self.name} exited with code {code}; stdout: {self.output}\n{self.log_tail()}"
                )
            self.output.append(line)
            match = pattern.fullmatch(line)
            if match:
                return match

    def wait_listening(self) -> str:
        """`HOST:PORT` from the process's `listening on HOST:PORT` line."""
        match = self.wait_line(LISTENING)
        return f"{match['host']}:{match['port']}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log})"
        return f"--- last lines of {self.name}'s stderr ({self.log}) ---\n" + "\n".join(text[-lines:])

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code (negative: killed by that signal), waiting at most `timeout`."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s\n{self.log_tail()}") from None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(timeout=STOP_TIMEOUT)


class Etcd:
    """One etcd member on free 127.0.0.1 ports (or the given client port) with its data in `dir`."""

    def __init__(self, dir: Path, client_port: int | None = None) -> None:
        self.client_port, peer_port = free_ports(2)
        if client_port is not None:
            self.client_port = client_port
        self.url = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.child = Child(
            "etcd",
            [
                "etcd",
                "--name", "test",
                "--data-dir", str(dir / "data"),
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}",
                "--logger", "zap",
            ],
            dir / "etcd.log",
        )
        wait_for(f"etcd at {self.url} to be healthy\n{self.child.log_tail()}", START_TIMEOUT, self._healthy)

    def _healthy(self) -> bool | None:
        if self.child.process.poll() is not None:
            raise AssertionError(f"etcd exited with code {self.child.process.returncode}\n{self.child.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return json.load(response).get("health") == "true" or None
        except (OSError, ValueError):
            return None

    def etcdctl(self, *args: str) -> str:
        """Runs `etcdctl --endpoints URL ARGS...` and returns its stdout; fails on an error."""
        result = subprocess.run(
            ["etcdctl", "--endpoints", self.url, "--dial-timeout=2s", "--command-timeout=5s", *args],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        assert result.returncode == 0, f"etcdctl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def keys(self, prefix: str = "services/") -> set[str]:
        """The keys under `prefix` now."""
        out = self.etcdctl("get", "--prefix", prefix, "--keys-only")
        return {line for line in out.splitlines() if line}

    def value(self, key: str) -> str | None:
        out = self.etcdctl("get", key, "--print-value-only")
        return out.rstrip("\n") if out else None

    def stop(self) -> None:
        self.child.stop()


class Pki:
    """A CA and a server certificate for `localhost` and 127.0.0.1 it signed, made with the
    openssl command line in `dir`: `ca` (PEM), `chain` (server certificate then CA) and `key`."""

    def __init__(self, dir: Path) -> None:
        self.ca = dir / "ca.pem"
        self.key = dir / "server.key"
        self.chain = dir / "chain.pem"
        ca_key, csr, cert, extensions = (dir / n for n in ("ca.key", "server.csr", "server.pem", "server.ext"))
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        extensions.write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
        )
        for args in (
            ["req", "-x509", *ec, "-keyout", ca_key, "-out", self.ca, "-days", "2",
             "-subj", "/CN=quaestor test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
            ["req", *ec, "-keyout", self.key, "-out", csr, "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", extensions],
        ):
            result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{result.stderr}"
        self.chain.write_text(cert.read_text() + self.ca.read_text())
