"""Fixtures of the Python package's tests: the quaestor binary ($QUAESTOR_BIN), a grpcio client
generated from the repository's protos, a real etcd, a real `quaestor load-balancer` over it,
and a reporter with a channel to it.

The grpcio stubs are generated when the session starts. protoc names the modules after the
proto files' folders, and the protos live in `proto/quaestor/`: generated as they are they
would be `quaestor.load_reporting_pb2`, inside the package under test. They are copied into a
folder `wire/` first, so the modules are `wire.load_reporting_pb2` and so on.
"""

import importlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import quaestor
from support import REPO_ROOT, Child, Etcd, Pki, compile_protos, wire_support

PROTO_DIR = REPO_ROOT / "proto"
PROTOS = [
    "quaestor/load_reporting.proto",
    "quaestor/service_discovery.proto",
    "quaestor/push/load_push.proto",
    "quaestor/example/work.proto",
    "quaestor/process_admin.proto",
]
WIRE = "wire"
# The reporter's service in most tests, as in the C# Quaestor's samples.
SERVICE = "Worker"


@pytest.fixture(scope="session")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The grpcio modules generated from proto/: `load_reporting_pb2`, `load_reporting_pb2_grpc`,
    `service_discovery_pb2`, `service_discovery_pb2_grpc`, `load_push_pb2`, `load_push_pb2_grpc`,
    `work_pb2`, `work_pb2_grpc`, `process_admin_pb2`, `process_admin_pb2_grpc`."""
    root = tmp_path_factory.mktemp("wire")
    sources = root / "src" / WIRE
    sources.mkdir(parents=True)
    for proto in PROTOS:
        text = (PROTO_DIR / proto).read_text()
        # A copied file's imports would name files that are not in the copy.
        if re.search(r"^\s*import\s", text, re.MULTILINE):
            pytest.fail(f"{proto} imports other protos: copy those into {WIRE}/ as well", pytrace=False)
        (sources / Path(proto).name).write_text(text)
    out = root / "out"
    out.mkdir()
    names = [f"{WIRE}/{Path(proto).name}" for proto in PROTOS]
    # `wire` made a regular package, so that no other `wire` on sys.path can shadow it.
    compile_protos(root / "src", names, out)
    sys.path.insert(0, str(out))
    try:
        modules = {}
        for name in names:
            for suffix in ("_pb2", "_pb2_grpc"):
                module = importlib.import_module(name.removesuffix(".proto").replace("/", ".") + suffix)
                modules[module.__name__.rsplit(".", 1)[-1]] = module
        yield SimpleNamespace(**modules)
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="session")
def quaestor_bin() -> Path:
    """The quaestor binary, from $QUAESTOR_BIN (required)."""
    return wire_support.quaestor_bin_from_env()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """A real single-member etcd (the `etcd` on PATH), stopped by pid when the session ends."""
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.fail("etcd and etcdctl must be on PATH (Debian: etcd-server, etcd-client)", pytrace=False)
    server = Etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


def start_load_balancer(
    quaestor_bin: Path, etcd: Etcd, dir: Path, tls: Pki | None = None, port: int = 0
) -> tuple[Child, str]:
    """A real `quaestor load-balancer` over the etcd registry, once it listens, and the address
    it printed; with `tls`, serving TLS with the PKI's certificate; on `port` (0: a free one)."""
    config = dir / "quaestor.loadbalancer.config.yml"
    config.write_text(
        "loadBalancerConfig:\n"
        "  hostName: 127.0.0.1\n"
        # Overridden by --port 0.
        "  port: 1\n"
        "  probeIntervalMs: 100\n"
        + (f"  certificate: {json.dumps(str(tls.chain))}\n  privateKeyFile: {json.dumps(str(tls.key))}\n" if tls else "")
        + "agents:\n"
        "  - agentType: KeyValueStore\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {etcd.client_port} ]\n"
    )
    child = Child(
        "quaestor load-balancer",
        [quaestor_bin, "load-balancer", "--config", config, "--port", str(port)],
        dir / "load-balancer.log",
    )
    try:
        return child, child.wait_listening()
    except BaseException:
        child.stop()
        raise


@pytest.fixture(scope="session")
def load_balancer(quaestor_bin: Path, etcd: Etcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`HOST:PORT` of a real `quaestor load-balancer` over the etcd registry."""
    child, address = start_load_balancer(quaestor_bin, etcd, tmp_path_factory.mktemp("load-balancer"))
    yield address
    child.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA and a server certificate for localhost (made with `openssl`)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command must be on PATH (Debian: openssl)", pytrace=False)
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_load_balancer(quaestor_bin: Path, etcd: Etcd, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`HOST:PORT` of a real `quaestor load-balancer` serving TLS (certificate of `pki`) over
    the etcd registry."""
    child, address = start_load_balancer(quaestor_bin, etcd, tmp_path_factory.mktemp("tls-load-balancer"), pki)
    yield address
    child.stop()


@pytest.fixture
def reporter() -> Iterator[quaestor.Reporter]:
    """A reporter on a free 127.0.0.1 port, closed when the test ends."""
    with quaestor.Reporter() as reporter:
        yield reporter


@pytest.fixture
def load(reporter: quaestor.Reporter) -> quaestor.ServiceLoad:
    """The reporter's service `Worker`, capacity 4."""
    return reporter.add_service(SERVICE, capacity=4)


@pytest.fixture
def channel(reporter: quaestor.Reporter) -> Iterator[grpc.Channel]:
    """A grpcio channel to the reporter."""
    with grpc.insecure_channel(reporter.address) as channel:
        yield channel


@pytest.fixture
def report(wire: SimpleNamespace, channel: grpc.Channel) -> Callable[..., object]:
    """`report(service="Worker", scope="")`: the reporter's LoadReportResponse, over grpcio."""
    stub = wire.load_reporting_pb2_grpc.LoadReportingGrpcStub(channel)

    def report(service: str = SERVICE, scope: str = ""):
        request = wire.load_reporting_pb2.LoadReportRequest(scope=scope, service_name=service)
        return stub.ReportLoad(request, timeout=5)

    return report


@pytest.fixture
def health(channel: grpc.Channel) -> Callable[[str], str]:
    """`health(service)`: the reporter's grpc.health.v1 status of `service`, by name
    (`SERVING`, `NOT_SERVING`, ...), or the gRPC status code's name if Check fails."""
    stub = health_pb2_grpc.HealthStub(channel)

    def check(service: str) -> str:
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as error:
            return error.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    return check
