"""Fixtures of the multi-host tests: one lab per session (see netlab.py), with etcd in its own
namespace, a `quaestor cluster` of workers on each of the hosts a, b and c, and a
`quaestor load-balancer` on host a. The tests share it and leave it as they found it."""

import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The wire tests' helpers (wait_for, missing_tool, compile_protos, ...); appended, so that this
# folder's conftest stays the one `import conftest` finds.
sys.path.append(str(REPO_ROOT / "tests" / "python"))

from support import compile_protos, in_ci, missing_tool, quaestor_bin_from_env, wait_for  # noqa: E402

from netlab import Lab, LabError  # noqa: E402

# The registrars' lease TTL: `quaestor cluster` uses the registry's default (DESIGN.md: 10 s;
# no config key sets it).
LEASE_TTL = 10.0
# The balancer's side (loadBalancerConfig below): a worker silent for
# serviceResponseTimeoutSeconds is not offered; probes every probeIntervalMs.
SERVICE_RESPONSE_TIMEOUT = 1.0
PROBE_INTERVAL = 0.2
# How stale one answer may be: one `quaestor discover` round trip (a process start, in debug).
POLL_SLACK = 2.0
# A worker cut off leaves the answers within this: its lease expires (TTL) or, sooner, the
# balancer's probes see it silent.
DETECTION_BOUND = LEASE_TTL + SERVICE_RESPONSE_TIMEOUT + PROBE_INTERVAL + POLL_SLACK
# A host that etcd hears again re-registers within: the registrar's retry backoff (at most
# 2 s, jittered), a keep-alive timeout (3 s), a new lease and its puts; plus the balancer's
# watch and first probes.
RETURN_BOUND = 15.0
# Starting everything (debug binaries, 8 workers) on a shared 2-core machine.
START_TIMEOUT = 60.0

ETCD_PORT = 2379
BALANCER_PORT = 5150
WORKER_PORTS = {"a": [7001, 7002], "b": [7001, 7002, 7003], "c": [7001, 7002, 7003]}
WORKER_CAPACITY = 4
HOSTS = ("a", "b", "c")
SERVICE = "Worker"

FIGURES: List[str] = []


def figure(text: str) -> None:
    """Records a measured figure, printed in the run's summary (and at once, with -s)."""
    FIGURES.append(text)
    print(f"figure: {text}")


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("multi-host figures")
        for text in FIGURES:
            terminalreporter.write_line(text)


Location = Tuple[str, int]


@dataclass
class MultiHost:
    """The running lab and what the tests ask of it."""

    lab: Lab
    quaestor: Path
    protos_dir: Path
    clusters: Dict[str, object]
    control: Dict[str, Path]
    configs: Dict[str, Path]
    # Faults in place: hosts cut off, hosts whose route to etcd is a blackhole.
    cut_hosts: Set[str] = field(default_factory=set)
    blackholed: Set[str] = field(default_factory=set)
    keep_faults: bool = False
    # Host c's member pids when it was cut off.
    pids_before_cut: Dict[str, int] = field(default_factory=dict)

    @property
    def etcd_url(self) -> str:
        return f"http://{Lab.address('etcd')}:{ETCD_PORT}"

    @property
    def balancer(self) -> str:
        return f"{Lab.address('a')}:{BALANCER_PORT}"

    def workers(self, host: str) -> Set[Location]:
        """The locations the cluster of `host` registers."""
        return {(Lab.address(host), port) for port in WORKER_PORTS[host]}

    def all_workers(self) -> Set[Location]:
        return set().union(*(self.workers(h) for h in HOSTS))

    def discover(self, top: bool = False) -> Optional[List[Location]]:
        """What `quaestor discover` run on host a gets from the balancer (best first with
        `top`); [] when none serves, None when the balancer did not answer."""
        args = [str(self.quaestor), "-q", "discover", self.balancer, SERVICE, "--json", "--timeout", "3s"]
        done = self.lab.exec("a", *args, *(["--top"] if top else []), timeout=10)
        if done.returncode == 0:
            return [(l["host_name"], l["port"]) for l in json.loads(done.stdout)]
        if done.returncode == 1 and "no location" in done.stderr:
            return []
        return None

    def registered(self) -> Optional[Set[Location]]:
        """The worker locations in etcd, as etcdctl in the etcd namespace lists them (None
        when etcdctl failed)."""
        done = self.lab.exec("etcd", "etcdctl", f"--endpoints={self.etcd_url}", "get",
                             f"services//{SERVICE}/", "--prefix", "--keys-only")
        if done.returncode != 0:
            return None
        found = set()
        for key in done.stdout.split():
            # services/{scope}/{service}/{host}/{port}/{http|https}
            parts = key.split("/")
            found.add((parts[3], int(parts[4])))
        return found

    def health(self, location: Location) -> str:
        """`quaestor health HOST:PORT` from host a: SERVING, NOT_SERVING, ... or the error."""
        done = self.lab.exec("a", str(self.quaestor), "-q", "health", f"{location[0]}:{location[1]}",
                             "--timeout", "3s", timeout=10)
        return done.stdout.strip() or done.stderr.strip()

    def current_requests(self, location: Location) -> Optional[int]:
        """The current requests `quaestor load` (from host a) gets from the worker."""
        done = self.lab.exec("a", str(self.quaestor), "-q", "load", f"{location[0]}:{location[1]}", SERVICE,
                             "--json", "--timeout", "3s", timeout=10)
        return json.loads(done.stdout)["current_requests"] if done.returncode == 0 else None

    def member_pids(self, host: str) -> Dict[str, int]:
        """Member name → pid, from `quaestor cluster status --json` over host's control socket."""
        done = self.lab.exec(host, str(self.quaestor), "-q", "cluster", "status", "--json",
                             "--config", str(self.configs[host]), "--control", str(self.control[host]))
        assert done.returncode == 0, f"cluster status on host {host}: {done.stderr}"
        report = json.loads(done.stdout)
        return {m["member"]: m["pid"] for m in report["members"]}

    def check_running(self) -> None:
        """Fails, with its output, if a process of the lab has exited unasked."""
        for started in self.lab.started:
            if not started.wanted:
                continue
            assert started.running(), f"{started.name} exited ({started.process.returncode}):\n{started.tail()}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _preconditions() -> None:
    """Root and a usable `ip netns`, or a skip (a failure under CI) saying why."""
    if os.geteuid() != 0:
        missing_tool("the multi-host tests need root (network namespaces); run them as root")
    if shutil.which("ip") is None:
        missing_tool("`ip` (iproute2) is not installed; scripts/setup.sh installs it")
    for tool in ("etcd", "etcdctl"):
        if shutil.which(tool) is None:
            missing_tool(f"{tool} is not installed; scripts/setup.sh installs it")


def _cluster_config(directory: Path, quaestor: Path, etcd_url: str, host: str) -> Path:
    address = Lab.address(host)
    ports = ", ".join(str(p) for p in WORKER_PORTS[host])
    config = directory / f"cluster-{host}.config.yml"
    config.write_text(
        "clusterConfig:\n"
        f"  name: host-{host}\n"
        "  heartBeatIntervalSeconds: 1\n"
        "  memberResponseTimeOutSeconds: 1\n"
        "  memberMaxShutdownTimeSeconds: 2\n"
        f"  etcd: [ {etcd_url} ]\n"
        "agents:\n"
        "  - agentType: Worker\n"
        f"    executablePath: {quaestor}\n"
        f"    commandLineArguments: \"worker --host {{HostName}} --port {{Port}} --capacity {WORKER_CAPACITY}\"\n"
        f"    hostName: {address}\n"
        f"    ports: [ {ports} ]\n"
        f"    serviceNames: [ {SERVICE} ]\n"
        "    clusterShutdownAction: Kill\n"
        "    environmentVariables:\n"
        "      RUST_LOG: warn\n"
    )
    return config


def _balancer_config(directory: Path, etcd_url: str) -> Path:
    config = directory / "balancer.config.yml"
    config.write_text(
        "clusterConfig:\n"
        f"  etcd: [ {etcd_url} ]\n"
        "loadBalancerConfig:\n"
        f"  hostName: {Lab.address('a')}\n"
        f"  port: {BALANCER_PORT}\n"
        f"  probeIntervalMs: {int(PROBE_INTERVAL * 1000)}\n"
        f"  serviceResponseTimeoutSeconds: {SERVICE_RESPONSE_TIMEOUT}\n"
        # No anti-herding: a hand-out does not count as a request, so DiscoverTopServices
        # ranks by the reported load alone and the ranking test can expect one exact order.
        "  recentlyUsedTimeoutSeconds: 0\n"
    )
    return config


@pytest.fixture(scope="session")
def multihost(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> MultiHost:
    _preconditions()
    quaestor = quaestor_bin_from_env().resolve()
    directory = tmp_path_factory.mktemp("multihost")
    lab = Lab(log_dir=directory)
    # Finalizer first: whatever fails below, processes are stopped and namespaces removed.
    request.addfinalizer(lab.close)
    # SIGTERM (a CI job cancelled, `timeout`) ends the run as Ctrl-C does, finalizers and all,
    # instead of leaving the namespaces and their processes behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, previous))
    try:
        lab.build()
    except LabError as error:
        message = f"cannot build the network namespaces: {error}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: the multi-host tests must run)", pytrace=False)
        pytest.skip(message)

    protos_dir = directory / "generated"
    protos_dir.mkdir()
    compile_protos(REPO_ROOT / "proto", ["quaestor/example/work.proto"], protos_dir)

    etcd_url = f"http://{Lab.address('etcd')}:{ETCD_PORT}"
    peer = "http://127.0.0.1:2380"
    lab.start("etcd", "etcd", "etcd", "--name", "mh", "--data-dir", str(directory / "etcd-data"),
              "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
              "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
              "--initial-cluster", f"mh={peer}")
    world = MultiHost(lab, quaestor, protos_dir, {}, {}, {})
    wait_for("etcd to answer in its namespace", START_TIMEOUT,
             lambda: (world.check_running(), world.registered())[1] is not None or None)

    for host in HOSTS:
        config = _cluster_config(directory, quaestor, etcd_url, host)
        control = directory / f"control-{host}.sock"
        world.configs[host] = config
        world.control[host] = control
        world.clusters[host] = lab.start(host, f"cluster-{host}", str(quaestor), "cluster",
                                         "--config", str(config), "--control", str(control))
    lab.start("a", "load-balancer", str(quaestor), "load-balancer",
              "--config", str(_balancer_config(directory, etcd_url)))

    expected = world.all_workers()
    wait_for("every worker of hosts a, b, c registered in etcd", START_TIMEOUT,
             lambda: (world.check_running(), world.registered() == expected)[1] or None)
    wait_for("the balancer on host a to offer every worker", START_TIMEOUT,
             lambda: (world.check_running(), set(world.discover() or []) == expected)[1] or None)
    return world
