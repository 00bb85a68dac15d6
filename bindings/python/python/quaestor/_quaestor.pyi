"""The native module of the `quaestor` package (Rust, pyo3). Import from `quaestor` instead."""

from asyncio import Future
from collections.abc import Callable, Sequence
from os import PathLike
from types import TracebackType
from typing import Any, TypeVar, final, overload

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "__version__",
    "Reporter",
    "ServiceLoad",
    "Request",
    "CancellableRequest",
    "ServiceLocation",
    "DiscoveryClient",
    "discover",
]

__version__: str

@final
class Request:
    """One request of a service while inside `with` (or `async with`), or around every call
    of a function it decorates."""

    def __enter__(self) -> Request: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def __aenter__(self) -> Request: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def __call__(self, func: _F) -> _F: ...

@final
class CancellableRequest:
    """One request started on behalf of a user in an environment, while inside `with` (or
    `async with`): a `ProcessAdministrationGrpc/Cancel` of that user name and environment
    (matched exactly) sets `cancelled`. Entered once; get one per request from
    `ServiceLoad.request(user_name=..., environment=...)`."""

    @property
    def cancelled(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def user_name(self) -> str: ...
    @property
    def environment(self) -> str: ...
    def __enter__(self) -> CancellableRequest: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def __aenter__(self) -> CancellableRequest: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class ServiceLoad:
    """The load of one service of a reporter: count requests on it."""

    @property
    def service_name(self) -> str: ...
    @property
    def current_requests(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @capacity.setter
    def capacity(self, value: int) -> None: ...
    @property
    def known_load_rate(self) -> float | None: ...
    @known_load_rate.setter
    def known_load_rate(self, value: float | None) -> None: ...
    @property
    def server_utilization(self) -> float | None: ...
    @server_utilization.setter
    def server_utilization(self, value: float | None) -> None: ...
    @property
    def memory_usage_percent(self) -> float | None: ...
    @memory_usage_percent.setter
    def memory_usage_percent(self, value: float | None) -> None: ...
    def start_request(self) -> None: ...
    def end_request(self) -> None: ...
    @overload
    def request(self, *, user_name: None = None, environment: None = None) -> Request: ...
    @overload
    def request(self, *, user_name: str, environment: str) -> CancellableRequest: ...
    def set_serving(self, serving: bool) -> None: ...

@final
class Reporter:
    """Serves grpc.health.v1.Health and Quaestor.LoadReporting for the services added to it,
    on a port of its own."""

    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[str | PathLike[str], str | PathLike[str]] | None = None,
    ) -> Reporter: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def add_service(self, name: str, capacity: int = 4) -> ServiceLoad: ...
    def service_load(self, name: str) -> ServiceLoad: ...
    def set_serving(self, serving: bool, service: str | None = None) -> None: ...
    def register(
        self,
        etcd: Sequence[str] | str,
        host: str,
        port: int | None = None,
        scope: str = "",
        ttl: float = 10.0,
        *,
        etcd_ca: str | PathLike[str] | None = None,
        etcd_cert: str | PathLike[str] | None = None,
        etcd_key: str | PathLike[str] | None = None,
        etcd_user: str | None = None,
        etcd_password: str | None = None,
    ) -> None: ...
    def register_async(
        self,
        etcd: Sequence[str] | str,
        host: str,
        port: int | None = None,
        scope: str = "",
        ttl: float = 10.0,
        *,
        etcd_ca: str | PathLike[str] | None = None,
        etcd_cert: str | PathLike[str] | None = None,
        etcd_key: str | PathLike[str] | None = None,
        etcd_user: str | None = None,
        etcd_password: str | None = None,
    ) -> Future[None]: ...
    def deregister(self) -> None: ...
    def deregister_async(self) -> Future[None]: ...
    def close(self) -> None: ...
    def close_async(self) -> Future[None]: ...
    def __enter__(self) -> Reporter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class ServiceLocation:
    """Where a service is served, as a balancer answers."""

    def __new__(cls, scope: str, service_name: str, host_name: str, port: int) -> ServiceLocation: ...
    @property
    def scope(self) -> str: ...
    @property
    def service_name(self) -> str: ...
    @property
    def host_name(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def discover(
    address: str,
    service: str,
    max_count: int = 0,
    scope: str = "",
    top: bool = False,
    timeout: float = 5.0,
    ca: str | PathLike[str] | None = None,
) -> list[ServiceLocation]: ...

@final
class DiscoveryClient:
    """A client of the balancer at `address` that keeps its connection between calls."""

    def __new__(
        cls, address: str, *, ca: str | PathLike[str] | None = None, timeout: float = 5.0
    ) -> DiscoveryClient: ...
    @property
    def address(self) -> str: ...
    def discover(self, service: str, max_count: int = 0, scope: str = "") -> list[ServiceLocation]: ...
    def discover_top(
        self, service: str, max_count: int = 0, scope: str = ""
    ) -> list[ServiceLocation]: ...
    def discover_async(
        self, service: str, max_count: int = 0, scope: str = ""
    ) -> Future[list[ServiceLocation]]: ...
    def discover_top_async(
        self, service: str, max_count: int = 0, scope: str = ""
    ) -> Future[list[ServiceLocation]]: ...
