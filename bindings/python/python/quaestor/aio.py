"""quaestor for asyncio: the same clients and reporter, with coroutines for every call that
waits on the network.

The coroutines are real awaitables: the work runs on quaestor's own threads (its shared Rust
runtime) and resolves a future of the running event loop, so no thread of the caller's is
held while a balancer or etcd answers, and cancelling the awaiting task abandons the call::

    client = quaestor.aio.DiscoveryClient("127.0.0.1:5150")
    [best] = await client.discover_top("Worker", max_count=1)

    async with quaestor.aio.Reporter(port=5261) as reporter:
        load = reporter.add_service("Worker", capacity=4)
        await reporter.register(etcd="http://127.0.0.1:2379", host="127.0.0.1", port=5161)
        ...
"""

from os import PathLike
from types import TracebackType
from typing import Sequence

from . import _quaestor
from ._quaestor import ServiceLoad, ServiceLocation

__all__ = ["DiscoveryClient", "Reporter"]


class DiscoveryClient:
    """Asks the balancer at `address` (``host:port``, ``http://`` or ``https://``) over one
    connection kept between calls. `ca`: the CA certificate (PEM) of a balancer serving TLS;
    `timeout`: seconds for connecting and for each call."""

    def __init__(
        self,
        address: str,
        *,
        ca: "str | PathLike[str] | None" = None,
        timeout: float = 5.0,
    ) -> None:
        self._client = _quaestor.DiscoveryClient(address, ca=ca, timeout=timeout)

    @property
    def address(self) -> str:
        return self._client.address

    async def discover(
        self, service: str, max_count: int = 0, scope: str = ""
    ) -> list[ServiceLocation]:
        """The healthy locations of `service`, in random order; at most `max_count` (0: all)."""
        return await self._client.discover_async(service, max_count, scope)

    async def discover_top(
        self, service: str, max_count: int = 0, scope: str = ""
    ) -> list[ServiceLocation]:
        """The healthy locations that report load, best first (max_count=1: the one to call)."""
        return await self._client.discover_top_async(service, max_count, scope)

    def __repr__(self) -> str:
        return f"aio.{self._client!r}"


class Reporter:
    """`quaestor.Reporter` with `register`, `deregister` and `close` as coroutines, and
    `async with`. Starting it (binding its port) does not wait on the network."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: "tuple[str | PathLike[str], str | PathLike[str]] | None" = None,
    ) -> None:
        self._reporter = _quaestor.Reporter(host, port, tls)

    @property
    def host(self) -> str:
        return self._reporter.host

    @property
    def port(self) -> int:
        return self._reporter.port

    @property
    def address(self) -> str:
        return self._reporter.address

    @property
    def closed(self) -> bool:
        return self._reporter.closed

    def add_service(self, name: str, capacity: int = 4) -> ServiceLoad:
        return self._reporter.add_service(name, capacity)

    def service_load(self, name: str) -> ServiceLoad:
        return self._reporter.service_load(name)

    def set_serving(self, serving: bool, service: str | None = None) -> None:
        self._reporter.set_serving(serving, service)

    async def register(
        self,
        etcd: "str | Sequence[str]",
        host: str,
        port: int | None = None,
        scope: str = "",
        ttl: float = 10.0,
        *,
        etcd_ca: "str | PathLike[str] | None" = None,
        etcd_cert: "str | PathLike[str] | None" = None,
        etcd_key: "str | PathLike[str] | None" = None,
        etcd_user: str | None = None,
        etcd_password: str | None = None,
    ) -> None:
        """As `quaestor.Reporter.register`."""
        await self._reporter.register_async(
            etcd,
            host,
            port,
            scope,
            ttl,
            etcd_ca=etcd_ca,
            etcd_cert=etcd_cert,
            etcd_key=etcd_key,
            etcd_user=etcd_user,
            etcd_password=etcd_password,
        )

    async def deregister(self) -> None:
        await self._reporter.deregister_async()

    async def close(self) -> None:
        """Deregisters, then stops serving (calls in flight get up to 5 s)."""
        await self._reporter.close_async()

    async def __aenter__(self) -> "Reporter":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"aio.{self._reporter!r}"
