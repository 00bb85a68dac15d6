"""Stock xDS clients (grpcio, grpc-go, grpc-java, no quaestor code in them) balance over real
`quaestor worker`s registered in real etcd, through the ADS server of `quaestor load-balancer`.

Each client is one of tests/xds-clients/grpcio_client.py, tests/go-client and tests/xds-java:
with `-target xds:///Worker` and GRPC_XDS_BOOTSTRAP naming the balancer, it calls
quaestor.example.Work/DoWork every 20 ms and prints `worker HOST:PORT` or `error CODE` for
each call. One client process goes through every phase in order: the calls spread over the
three workers; a worker turned NOT_SERVING (SIGUSR1) gets no call later than 1 s after the
signal (the issue's bound); SERVING again (SIGUSR2), it gets calls again; a killed worker
(SIGKILL; its registration stays) stops getting calls and the others keep answering; a
worker registered later gets calls.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import balancer_config, missing_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
# The first answer: the JVM's start, the ADS exchange (LDS, RDS, CDS, EDS) and a connection.
FIRST_ANSWER_TIMEOUT = 45.0
# Any later condition (a worker seen again, a newcomer seen).
CONDITION_TIMEOUT = 15.0
# The bound: no call reaches a worker later than this after it turned NOT_SERVING.
NOT_SERVING_BOUND = 1.0
# A call's line is read a little after the call reached its worker (the answer, the print,
# the pipe): this much is allowed on top of the bound.
PRINT_SLACK = 0.05
# How long the flipped worker is watched after the bound, and the fewest calls the others
# must answer meanwhile (the client calls every 20 ms).
OBSERVATION_WINDOW = 2.0
MIN_CALLS_IN_WINDOW = 20
# Calls in a row that the survivors answer once a worker was killed.
IN_A_ROW = 30
BUILD_TIMEOUT = 600
# The tests build and run the clients; pytest.ini's 60 s is not enough for a cold build.
pytestmark = pytest.mark.timeout(300)

CLIENTS = ["grpcio", "grpc-go", "grpc-java"]


def _build_go(out_dir: Path) -> list:
    if shutil.which("go") is None:
        missing_tool("go is not installed: the grpc-go client (tests/go-client) needs it")
    binary = out_dir / "go-client"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=REPO_ROOT / "tests/go-client",
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )
    assert built.returncode == 0, f"go build of tests/go-client failed:\n{built.stderr}"
    return [str(binary)]


def _build_java() -> list:
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            missing_tool(f"{tool} is not installed: the grpc-java xDS client (tests/xds-java) needs it")
    project = REPO_ROOT / "tests/xds-java"
    jar = project / "target/xds-client.jar"
    sources = [project / "pom.xml", *(project / "src").rglob("*")]
    if not jar.exists() or any(s.stat().st_mtime > jar.stat().st_mtime for s in sources):
        # Offline: scripts/setup.sh fetched the dependencies (and built the jar).
        built = subprocess.run(
            ["mvn", "-o", "-q", "-B", "package", "-DskipTests"], cwd=project,
            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )
        assert built.returncode == 0, (
            f"mvn -o package of tests/xds-java failed (run scripts/setup.sh first):\n{built.stdout}{built.stderr}"
        )
    return ["java", "-jar", str(jar)]


@pytest.fixture(scope="session", params=CLIENTS)
def xds_client(request, tmp_path_factory) -> tuple:
    """(name, argv) of a stock xDS client, built if needed."""
    name = request.param
    if name == "grpcio":
        return name, [sys.executable, str(REPO_ROOT / "tests/xds-clients/grpcio_client.py")]
    if name == "grpc-go":
        return name, _build_go(tmp_path_factory.mktemp("go-client"))
    return name, _build_java()


def bootstrap(quaestor_bin: Path, balancer, path: Path) -> Path:
    """The bootstrap file naming `balancer` as the xDS server, as `quaestor xds bootstrap`
    prints it."""
    done = subprocess.run(
        [str(quaestor_bin), "xds", "bootstrap", "--server", balancer.address, "--node-id", "wire-test"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, f"quaestor xds bootstrap failed: {done}"
    document = json.loads(done.stdout)
    assert document["xds_servers"][0]["server_uri"] == balancer.address, document
    path.write_text(done.stdout)
    return path


def start_balancer(start_server, tmp_path: Path, etcd: str):
    """`quaestor load-balancer` whose registry is `etcd`, probing every 100 ms."""
    port = etcd.rsplit(":", 1)[1]
    config = balancer_config(
        tmp_path,
        "  - agentType: KeyValueStore\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {port} ]\n",
        settings="  serviceResponseTimeoutSeconds: 1\n",
    )
    return start_server("load-balancer", "--config", str(config), "--port", "0")


def register(start_process, quaestor_bin: Path, etcd: str, worker) -> None:
    """Registers `worker` as a Worker location in etcd, until the test ends."""
    registrar = start_process(
        str(quaestor_bin), "registry", "register", "--service", "Worker",
        "--host", worker.host, "--port", str(worker.port), "--etcd", etcd,
    )
    registrar.wait_for_line("`registered` line", CONDITION_TIMEOUT, lambda line: line.startswith("registered "))


class Calls:
    """The client's per-call lines: (time read, worker or None for an error)."""

    def __init__(self, client, known):
        self.client = client
        self.known = known
        self.errors = []

    def next(self, timeout: float):
        item = self.client.next_line(timeout)
        if item is None:
            return None
        at, line = item
        if line.startswith("worker "):
            worker = line[len("worker "):]
            assert worker in self.known, f"answered by an unknown worker {worker!r} (known: {self.known})"
            return at, worker
        assert line.startswith("error "), f"not a line of the client's interface: {line!r}"
        self.errors.append(line)
        return at, None

    def until(self, what: str, timeout: float, done) -> None:
        """Reads calls until `done(at, worker)` is true, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (call := self.next(deadline - time.monotonic())) is not None:
            if done(*call):
                return
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; errors so far: {self.errors[-5:]}; "
            f"client stderr:\n{self.client.stderr_tail()}"
        )


def test_a_stock_xds_client_follows_health_and_registrations(
    xds_client, quaestor_bin, etcd, start_worker, start_server, start_process, tmp_path
):
    name, argv = xds_client
    workers = [start_worker("--capacity", "4") for _ in range(3)]
    for worker in workers:
        register(start_process, quaestor_bin, etcd, worker)
    balancer = start_balancer(start_server, tmp_path, etcd)
    env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap(quaestor_bin, balancer, tmp_path / "bootstrap.json")))
    known = {w.address for w in workers}

    started = time.monotonic()
    client = start_process(*argv, "-target", "xds:///Worker", "-interval", "20ms", env=env)
    calls = Calls(client, known)

    # 1. The calls spread over all three workers.
    seen = set()
    first = []

    def spread(at, worker):
        if worker is not None:
            first.append(at)
            seen.add(worker)
        return seen == known or None

    calls.until("calls on all 3 workers", FIRST_ANSWER_TIMEOUT, spread)
    print(f"{name}: first answer {first[0] - started:.2f} s after the start, all 3 workers after "
          f"{time.monotonic() - started:.2f} s")

    # 2. NOT_SERVING: no call reaches it later than 1 s after the signal, while the others
    # keep answering.
    flipped = workers[0]
    flipped.process.send_signal(signal.SIGUSR1)
    flipped_at = time.monotonic()
    late = []
    answered = []
    on_flipped = []
    while (now := time.monotonic()) < flipped_at + NOT_SERVING_BOUND + OBSERVATION_WINDOW:
        call = calls.next(flipped_at + NOT_SERVING_BOUND + OBSERVATION_WINDOW - now)
        if call is None:
            continue
        at, worker = call
        if worker == flipped.address:
            on_flipped.append(at - flipped_at)
        if at > flipped_at + NOT_SERVING_BOUND + PRINT_SLACK:
            if worker == flipped.address:
                late.append(at - flipped_at)
            elif worker is not None:
                answered.append(worker)
    assert not late, (
        f"{name}: the NOT_SERVING worker still got calls {[f'{t:.3f}' for t in late]} s after SIGUSR1; "
        f"client stderr:\n{client.stderr_tail()}"
    )
    assert len(answered) >= MIN_CALLS_IN_WINDOW, (
        f"{name}: only {len(answered)} calls answered by the serving workers in {OBSERVATION_WINDOW} s "
        f"(errors: {calls.errors[-5:]}); client stderr:\n{client.stderr_tail()}"
    )
    assert set(answered) == known - {flipped.address}, answered
    print(f"{name}: calls on the NOT_SERVING worker read after SIGUSR1: {len(on_flipped)}"
          + (f", the last {on_flipped[-1]:.3f} s after" if on_flipped else ""))

    # 3. SERVING again: it gets calls again.
    flipped.process.send_signal(signal.SIGUSR2)
    calls.until("a call on the worker SERVING again", CONDITION_TIMEOUT,
                lambda at, worker: worker == flipped.address or None)

    # 4. Killed (its registration stays): the survivors answer every call, many in a row.
    killed = workers[1]
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(timeout=5)
    in_a_row = [0]

    def survivors_answer(at, worker):
        assert worker != killed.address, f"{name}: a killed worker answered"
        in_a_row[0] = in_a_row[0] + 1 if worker is not None else 0
        return in_a_row[0] >= IN_A_ROW or None

    calls.until(f"{IN_A_ROW} calls in a row answered by the survivors", CONDITION_TIMEOUT, survivors_answer)

    # 5. A worker registered later gets calls.
    newcomer = start_worker("--capacity", "4")
    known.add(newcomer.address)
    register(start_process, quaestor_bin, etcd, newcomer)
    calls.until("a call on the worker registered later", CONDITION_TIMEOUT,
                lambda at, worker: worker == newcomer.address or None)
