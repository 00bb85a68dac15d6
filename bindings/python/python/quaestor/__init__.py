"""Report the load of Python gRPC workers to quaestor, and ask its balancer which worker to call.

A worker keeps a `Reporter`, which serves grpc.health.v1.Health and Quaestor.LoadReporting on a
port of its own, adds its services to it and counts each request on the service's
`ServiceLoad`::

    reporter = quaestor.Reporter(port=5261)
    load = reporter.add_service("Worker", capacity=4)
    reporter.register(etcd=["http://127.0.0.1:2379"], host="127.0.0.1", port=5161)

    def handle(request, context):
        with load.request():
            ...

A request started with `load.request(user_name=..., environment=...)` is a
`CancellableRequest`: the reporter's Quaestor.ProcessAdministration Cancel for that user name and
environment sets its `cancelled` (poll it and stop the work).

A client asks a balancer through a `DiscoveryClient`, which keeps its connection between
calls, or with `discover()` (over a client shared per address), or `ServiceDiscovery` (the C#
Quaestor's Python client class). `quaestor.aio` has the same with coroutines.

Every exception quaestor raises derives from `QuaestorError`, one class per kind of failure
(`.kind` names it, as the C ABI's result codes do); bad Python arguments raise `TypeError`,
`ValueError` or `OverflowError`.
"""

from . import aio
from ._errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    IoError,
    NotFoundError,
    QuaestorError,
    RefusedError,
    RemoteError,
    TimeoutError,
    TlsError,
    UnavailableError,
)
from ._quaestor import (
    CancellableRequest,
    DiscoveryClient,
    Reporter,
    Request,
    ServiceLoad,
    ServiceLocation,
    __version__,
    discover,
)
from .service_discovery import ServiceDiscovery

__all__ = [
    "AlreadyExistsError",
    "CancellableRequest",
    "DiscoveryClient",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "IoError",
    "NotFoundError",
    "QuaestorError",
    "RefusedError",
    "RemoteError",
    "Reporter",
    "Request",
    "ServiceDiscovery",
    "ServiceLoad",
    "ServiceLocation",
    "TimeoutError",
    "TlsError",
    "UnavailableError",
    "__version__",
    "aio",
    "discover",
]
