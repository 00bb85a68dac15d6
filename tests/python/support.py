"""Small helpers shared by the conftest and the tests (kept apart so that tests can import them)."""

import importlib.resources
import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

import pytest

T = TypeVar("T")

# Offset between .NET ticks (100 ns units since 0001-01-01 UTC) and the Unix epoch.
TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
TICKS_PER_SECOND = 10_000_000


def wait_for(what: str, timeout: float, probe: Callable[[], Optional[T]]) -> T:
    """Calls `probe` until it returns something other than None and returns that value.

    Fails the test, naming `what`, if `timeout` seconds pass first. The pause between two
    probes starts short and grows a little, so fast conditions are seen quickly without
    spinning on slow ones.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def now_in_ticks() -> int:
    """The current wall-clock time as .NET ticks, the unit of `timestamp_ticks`."""
    return TICKS_AT_UNIX_EPOCH + time.time_ns() // 100


def quaestor_bin_from_env() -> Path:
    """The quaestor binary under test, from $QUAESTOR_BIN (required: the run fails without)."""
    value = os.environ.get("QUAESTOR_BIN")
    if not value:
        pytest.fail(
            "QUAESTOR_BIN is not set: point it at the quaestor binary to test, "
            "e.g. QUAESTOR_BIN=\"$CARGO_TARGET_DIR/debug/quaestor\" (target/debug/quaestor by default)",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"QUAESTOR_BIN={value} is not an executable file", pytrace=False)
    return path


def in_ci() -> bool:
    """True under CI (CI=true), where a missing tool fails a test instead of skipping it."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing_tool(message: str) -> None:
    """Skips the test for a missing tool, or fails it under CI (never a silent skip there)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool fails the test)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A port that was free a moment ago (bound to 127.0.0.1:0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def compile_protos(proto_dir: Path, protos: Iterable[str], out_dir: Path) -> None:
    """Generates the grpcio modules (`_pb2`, `_pb2_grpc`) of `protos` (paths below
    `proto_dir`) into `out_dir`, with the well-known types that grpc_tools ships, and makes
    each of their folders a regular package. Fails the test if protoc fails."""
    # Imported here: the package's suite loads this module too, and not all of it needs protoc.
    from grpc_tools import protoc

    protos = list(protos)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        pytest.fail(f"protoc failed on {protos} in {proto_dir} (its errors are on stderr above)", pytrace=False)
    for package in {Path(proto).parent for proto in protos}:
        for folder in [package, *package.parents][:-1]:
            (out_dir / folder / "__init__.py").touch()


def balancer_config(directory: Path, agent: str, settings: str = "") -> Path:
    """Writes a C#-style quaestor.loadbalancer.config.yml into `directory` and returns it: the
    balancer on 127.0.0.1, probing every 100 ms, with `settings` (more YAML lines under
    `loadBalancerConfig:`) and one agent (`agent`: its YAML lines under `agents:`)."""
    config = directory / "quaestor.loadbalancer.config.yml"
    config.write_text(
        "loadBalancerConfig:\n"
        "  hostName: 127.0.0.1\n"
        "  port: 5150\n"
        "  probeIntervalMs: 100\n"
        f"{settings}"
        "agents:\n"
        f"{agent}"
    )
    return config


def start_etcd(start_process, data_dir: Path, client_port: int, name: str, timeout: float):
    """A real single-member etcd on 127.0.0.1:`client_port` (its peer port a free one), started
    with `start_process`; returns its process once it reports healthy."""
    if shutil.which("etcd") is None:
        missing_tool("etcd is not installed (scripts/setup.sh installs it)")
    url = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{free_port()}"
    server = start_process(
        "etcd", "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
    )

    def healthy():
        if server.process.poll() is not None:
            raise AssertionError(f"etcd exited with code {server.process.returncode}:\n{server.stderr_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                return json.load(answer).get("health") == "true" or None
        except (OSError, ValueError):
            return None

    wait_for("etcd to be healthy", timeout, healthy)
    return server
