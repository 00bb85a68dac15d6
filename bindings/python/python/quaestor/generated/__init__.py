"""grpcio modules of quaestor's protos, where the C# Quaestor's Python package had them.

Code written for that package keeps importing them as it did::

    from quaestor.generated import service_discovery_pb2, service_discovery_pb2_grpc

    with grpc.insecure_channel("127.0.0.1:5150") as channel:
        stub = service_discovery_pb2_grpc.ServiceDiscoveryGrpcStub(channel)
        request = service_discovery_pb2.DiscoverServicesRequest(service_name="Worker", max_count=1)
        locations = stub.DiscoverTopServices(request).service_locations

The modules, each a `_pb2` (messages) and a `_pb2_grpc` (stub, servicer):

- `service_discovery`: Quaestor.ServiceDiscovery, the balancer's DiscoverServices and
  DiscoverTopServices;
- `process_admin`: Quaestor.ProcessAdministration, a worker's Cancel;
- `load_reporting`: Quaestor.LoadReporting, a worker's ReportLoad.

They need protobuf (`_pb2`) and grpcio (`_pb2_grpc`), which the rest of quaestor does not:
``pip install 'quaestor[generated]'`` installs both. Without them, or with older versions than
the code was generated for (`_versions.py`), importing them raises an ImportError that says so.

The modules are generated from proto/quaestor/ by scripts/gen-python-protos.py and committed
(bindings/python/tests/test_generated.py fails when they are out of date). Unlike the C#
package, this one does not put its folder on sys.path: the `_pb2_grpc` modules import their
`_pb2` relatively, and a flat `import service_discovery_pb2` does not find them.

Like every protoc module, they register their files (`service_discovery.proto`, ...) and full
names (`Quaestor.ServiceDiscovery.DiscoverServicesRequest`, ...) in protobuf's default pool, so
one process cannot also import modules generated from the same protos under other file names
(protobuf raises TypeError: duplicate symbol): use these instead.
"""

import importlib
import re
from types import ModuleType

from ._versions import PROTOBUF

_INSTALL = "pip install 'quaestor[generated]'"


def _require(module: str, distribution: str, oldest: tuple[int, int, int]) -> ModuleType:
    """`module` imported, or an ImportError naming the extra if it is missing or older than
    `oldest` (its `__version__`)."""
    wanted = ".".join(map(str, oldest))
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"quaestor.generated needs {distribution}>={wanted}, which is not installed: {_INSTALL}",
            name=module,
        ) from error
    found = getattr(imported, "__version__", "")
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", found)
    if match and tuple(map(int, match.groups())) < oldest:
        raise ImportError(
            f"quaestor.generated needs {distribution}>={wanted}, but {distribution} {found} is "
            f"installed: {_INSTALL.replace('install', 'install -U', 1)}",
            name=module,
        )
    return imported


_require("google.protobuf", "protobuf", PROTOBUF)
