"""`quaestor.generated`: the grpcio modules the C# Quaestor's Python package shipped, under its
import paths, with its packages and field numbers, working against a real balancer and worker,
failing clearly without the `generated` extra, and up to date with proto/.

Every import of `quaestor.generated.*` happens in a child Python: its modules register
`service_discovery.proto` and the other files in protobuf's default pool, and the `wire`
fixture of this session registers the same messages under other file names (`wire/...`), which
protobuf refuses in one process ("duplicate symbol").
"""

import json
import re
import runpy
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import version

import pytest

from support import CHANGE_TIMEOUT, REPO_ROOT

GENERATED = REPO_ROOT / "bindings" / "python" / "python" / "quaestor" / "generated"
SCRIPT = REPO_ROOT / "scripts" / "gen-python-protos.py"
INSTALL_HINT = "pip install 'quaestor[generated]'"

# The C# Quaestor's protos: file, package, messages with their fields' numbers, services with
# their methods (request, response).
EXPECTED = {
    "service_discovery_pb2": {
        "file": "service_discovery.proto",
        "package": "Quaestor.ServiceDiscovery",
        "messages": {
            "Quaestor.ServiceDiscovery.DiscoverServicesRequest": {"scope": 1, "service_name": 2, "max_count": 3},
            "Quaestor.ServiceDiscovery.DiscoverServicesResponse": {"service_locations": 1},
            "Quaestor.ServiceDiscovery.ServiceLocationMsg": {"scope": 1, "service_name": 2, "host_name": 3, "port": 4},
        },
        "services": {
            "Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc": {
                "DiscoverServices": ["DiscoverServicesRequest", "DiscoverServicesResponse"],
                "DiscoverTopServices": ["DiscoverServicesRequest", "DiscoverServicesResponse"],
            }
        },
    },
    "process_admin_pb2": {
        "file": "process_admin.proto",
        "package": "Quaestor.ProcessAdministration",
        "messages": {
            "Quaestor.ProcessAdministration.CancelRequest": {
                "environment": 1,
                "service_name": 2,
                "user_name": 3,
                "password": 4,
            },
            "Quaestor.ProcessAdministration.CancelResponse": {"success": 1},
        },
        "services": {
            "Quaestor.ProcessAdministration.ProcessAdministrationGrpc": {"Cancel": ["CancelRequest", "CancelResponse"]}
        },
    },
    "load_reporting_pb2": {
        "file": "load_reporting.proto",
        "package": "Quaestor.LoadReporting",
        "messages": {
            "Quaestor.LoadReporting.LoadReportRequest": {"scope": 1, "service_name": 2},
            "Quaestor.LoadReporting.LoadReportResponse": {
                "timestamp_ticks": 1,
                "known_load_rate": 2,
                "server_stats": 3,
            },
            "Quaestor.LoadReporting.ServerStats": {
                "request_capacity": 1,
                "current_requests": 2,
                "server_utilization": 3,
                "server_memory_usage_percent": 4,
            },
        },
        "services": {
            "Quaestor.LoadReporting.LoadReportingGrpc": {"ReportLoad": ["LoadReportRequest", "LoadReportResponse"]}
        },
    },
}

# Put first on sys.meta_path in a child, it makes the named top-level modules not installed.
HIDE = """
import sys
from importlib.abc import MetaPathFinder

class Hide(MetaPathFinder):
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if any(name == n or name.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide(sys.argv[1:]))
"""


def python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `code` with `args` in a child of this interpreter and returns it when it has exited."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"child python exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_each_module_imports_by_the_csharp_import_paths_without_touching_sys_path():
    out = ok(
        python(
            """
            import json, sys
            path = list(sys.path)
            # As the C# package's service_discovery.py imported them.
            from quaestor.generated import service_discovery_pb2 as service_util
            from quaestor.generated import service_discovery_pb2_grpc as discovery_service
            import quaestor.generated.process_admin_pb2
            import quaestor.generated.process_admin_pb2_grpc
            import quaestor.generated.load_reporting_pb2
            import quaestor.generated.load_reporting_pb2_grpc
            from quaestor.generated import process_admin_pb2, process_admin_pb2_grpc, load_reporting_pb2, load_reporting_pb2_grpc
            assert sys.path == path, f"sys.path changed: {sys.path}"
            flat = sorted(n for n in sys.modules if n.endswith("_pb2") or n.endswith("_pb2_grpc"))
            stubs = {
                m.__name__: sorted(n for n in dir(m) if n.endswith(("Stub", "Servicer", "_to_server")))
                for m in (discovery_service, process_admin_pb2_grpc, load_reporting_pb2_grpc)
            }
            # Each _grpc module's messages are its _pb2's, not a second copy.
            assert discovery_service.service__discovery__pb2 is service_util
            described = {}
            for module in (service_util, process_admin_pb2, load_reporting_pb2):
                file = module.DESCRIPTOR
                described[module.__name__.rsplit(".", 1)[1]] = {
                    "file": file.name,
                    "package": file.package,
                    "messages": {
                        m.full_name: {f.name: f.number for f in m.fields}
                        for m in file.message_types_by_name.values()
                    },
                    "services": {
                        s.full_name: {x.name: [x.input_type.name, x.output_type.name] for x in s.methods}
                        for s in file.services_by_name.values()
                    },
                }
            print(json.dumps({"flat": flat, "stubs": stubs, "described": described}))
            """
        )
    )
    found = json.loads(out)
    assert found["described"] == EXPECTED
    # Only the package's modules, no flat `service_discovery_pb2` from a folder put on sys.path.
    assert all(name.startswith("quaestor.generated.") for name in found["flat"]), found["flat"]
    assert found["stubs"] == {
        "quaestor.generated.service_discovery_pb2_grpc": [
            "ServiceDiscoveryGrpcServicer",
            "ServiceDiscoveryGrpcStub",
            "add_ServiceDiscoveryGrpcServicer_to_server",
        ],
        "quaestor.generated.process_admin_pb2_grpc": [
            "ProcessAdministrationGrpcServicer",
            "ProcessAdministrationGrpcStub",
            "add_ProcessAdministrationGrpcServicer_to_server",
        ],
        "quaestor.generated.load_reporting_pb2_grpc": [
            "LoadReportingGrpcServicer",
            "LoadReportingGrpcStub",
            "add_LoadReportingGrpcServicer_to_server",
        ],
    }


def test_a_message_encodes_with_the_csharp_field_numbers():
    out = ok(
        python(
            """
            from quaestor.generated import service_discovery_pb2
            request = service_discovery_pb2.DiscoverServicesRequest(scope="s", service_name="Worker", max_count=3)
            print(request.SerializeToString().hex())
            """
        )
    )
    # Field 1 (scope) "s", field 2 (service_name) "Worker", field 3 (max_count) varint 3.
    assert bytes.fromhex(out.strip()) == b"\x0a\x01s" + b"\x12\x06Worker" + b"\x18\x03"


@pytest.mark.parametrize(
    "hidden, module, needs",
    [
        ("google.protobuf", "quaestor.generated.service_discovery_pb2", "protobuf"),
        ("google.protobuf", "quaestor.generated.process_admin_pb2_grpc", "protobuf"),
        ("grpc", "quaestor.generated.service_discovery_pb2_grpc", "grpcio"),
        ("grpc", "quaestor.generated.process_admin_pb2_grpc", "grpcio"),
        ("grpc", "quaestor.generated.load_reporting_pb2_grpc", "grpcio"),
    ],
)
def test_without_the_extra_the_import_error_says_what_to_install(hidden, module, needs):
    out = ok(
        python(
            HIDE
            + f"""
import importlib
import quaestor  # the core package needs neither protobuf nor grpcio
with quaestor.Reporter() as reporter:
    reporter.add_service("Worker", capacity=1)
try:
    importlib.import_module({module!r})
except ImportError as error:
    print(type(error).__name__, error.name, error, sep="|")
else:
    raise SystemExit("{module} imported with {hidden} hidden")
""",
            hidden,
        )
    )
    kind, name, message = out.strip().split("|")
    assert kind == "ImportError"
    assert name == hidden
    assert message.startswith(f"quaestor.generated needs {needs}>="), message
    assert message.endswith(f"which is not installed: {INSTALL_HINT}"), message


def test_the_protobuf_modules_need_no_grpcio():
    out = ok(
        python(
            HIDE
            + """
from quaestor.generated import load_reporting_pb2
print(load_reporting_pb2.LoadReportRequest(service_name="Worker").service_name)
""",
            "grpc",
        )
    )
    assert out.strip() == "Worker"


@pytest.mark.parametrize(
    "module, setup, needs",
    [
        ("quaestor.generated.service_discovery_pb2", "import google.protobuf as m", "protobuf 4.25.1 is installed"),
        ("quaestor.generated.service_discovery_pb2_grpc", "import grpc as m", "grpcio 1.62.0 is installed"),
    ],
)
def test_too_old_a_runtime_is_an_import_error_that_says_so(module, setup, needs):
    old = re.search(r"\d+\.\d+\.\d+", needs)[0]
    out = ok(
        python(
            f"""
            import importlib
            {setup}
            m.__version__ = {old!r}
            try:
                importlib.import_module({module!r})
            except ImportError as error:
                print(error)
            else:
                raise SystemExit("imported with {old}")
            """
        )
    )
    assert needs in out and "pip install -U 'quaestor[generated]'" in out, out


DISCOVER = """
import json, sys, time
import grpc
from quaestor.generated import service_discovery_pb2 as service_util
from quaestor.generated import service_discovery_pb2_grpc as discovery_service

balancer, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
request = service_util.DiscoverServicesRequest(service_name="Worker", max_count=1)
answers = {}
with grpc.insecure_channel(balancer) as channel:
    client = discovery_service.ServiceDiscoveryGrpcStub(channel)
    deadline = time.monotonic() + timeout
    for method in ("DiscoverServices", "DiscoverTopServices"):
        # Until the balancer has seen the registration, the health and the first load report
        # (and has dropped the reporters of earlier tests).
        while True:
            locations = [
                [l.scope, l.service_name, l.host_name, l.port]
                for l in getattr(client, method)(request, timeout=5).service_locations
            ]
            if [l[3] for l in locations] == [port] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        answers[method] = locations
print(json.dumps(answers))
"""


def test_a_stub_from_the_generated_modules_discovers_a_real_worker(load_balancer, etcd, reporter):
    reporter.add_service("Worker", capacity=4)
    reporter.register(etcd=[etcd.url], host="127.0.0.1")
    out = ok(python(DISCOVER, load_balancer, str(reporter.port), str(CHANGE_TIMEOUT), timeout=CHANGE_TIMEOUT + 30))
    expected = [["", "Worker", "127.0.0.1", reporter.port]]
    assert json.loads(out) == {"DiscoverServices": expected, "DiscoverTopServices": expected}


def test_a_stub_from_the_generated_modules_reads_a_real_workers_load(reporter):
    load = reporter.add_service("Worker", capacity=4)
    with load.request():
        out = ok(
            python(
                """
                import sys
                import grpc
                from quaestor.generated import load_reporting_pb2, load_reporting_pb2_grpc
                with grpc.insecure_channel(sys.argv[1]) as channel:
                    stub = load_reporting_pb2_grpc.LoadReportingGrpcStub(channel)
                    stats = stub.ReportLoad(load_reporting_pb2.LoadReportRequest(service_name="Worker"), timeout=5).server_stats
                print(stats.request_capacity, stats.current_requests)
                """,
                reporter.address,
            )
        )
    assert out.split() == ["4", "1"]


def test_the_committed_modules_are_what_the_protos_generate():
    # Another grpcio-tools writes other code: say so rather than show a diff.
    pins = {
        path: re.search(r"^grpcio-tools==(\S+)$", path.read_text(), re.MULTILINE)
        for path in (REPO_ROOT / "tests/python/requirements.txt", REPO_ROOT / "bindings/python/requirements-dev.txt")
    }
    assert all(pins.values()), f"grpcio-tools is not pinned in all of {list(pins)}"
    pinned = {m[1] for m in pins.values()}
    assert len(pinned) == 1, f"the grpcio-tools pins differ: {pins}"
    assert version("grpcio-tools") in pinned, (
        f"grpcio-tools {version('grpcio-tools')} is installed, the pin is {pinned}: "
        "pip install -r bindings/python/requirements-dev.txt"
    )
    result = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_the_extra_requires_the_versions_the_code_was_generated_for():
    versions = runpy.run_path(str(GENERATED / "_versions.py"))
    project = tomllib.loads((REPO_ROOT / "bindings/python/pyproject.toml").read_text())["project"]
    floor = lambda v: ".".join(map(str, v))  # noqa: E731
    assert project["optional-dependencies"]["generated"] == [
        f"protobuf>={floor(versions['PROTOBUF'])}",
        f"grpcio>={floor(versions['GRPCIO'])}",
    ]
    # The installed runtimes satisfy it (else the tests above would not import).
    assert tuple(map(int, version("protobuf").split(".")[:3])) >= versions["PROTOBUF"]
