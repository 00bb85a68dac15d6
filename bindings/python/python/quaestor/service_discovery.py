"""`ServiceDiscovery`: the C# Quaestor's Python client class, on quaestor's `discover()`.

Code written for that client keeps working as it is, with two differences:

- `ssl_channel_credentials` was a `grpc.ChannelCredentials`; quaestor does not use grpcio, so it
  takes the path of the CA certificate (PEM) that signed the balancer's certificate instead
  (None or "" for a plaintext connection, as before);
- failures raise `quaestor.QuaestorError` subclasses (`UnavailableError`, `TimeoutError`,
  `InvalidArgumentError`) instead of `grpc.RpcError`.
"""

import os
from collections.abc import Iterator

from ._quaestor import ServiceLocation, discover

__all__ = ["ServiceDiscovery"]


class ServiceDiscovery:
    """Asks the balancer at `host_name:port_nr` where `service_name` is served.

    :param host_name: host of the balancer (Quaestor.ServiceDiscovery)
    :param port_nr: port of the balancer
    :param service_name: the service to find
    :param ssl_channel_credentials: path (str or os.PathLike) of the CA certificate (PEM) to
        check the balancer's certificate with, for TLS; None for plaintext
    :param scope: the scope of the service; the default scope is ""
    :param max_count: at most this many locations per call; 0 or less means all
    """

    def __init__(
        self,
        host_name: str,
        port_nr: int,
        service_name: str,
        ssl_channel_credentials: str | os.PathLike[str] | None = None,
        scope: str = "",
        max_count: int = 1,
    ) -> None:
        self.host_name = host_name
        self.port_nr = port_nr
        self.service_name = service_name
        self.ssl_channel_credentials = _ca_path(ssl_channel_credentials)
        self.scope = scope
        self.max_count = max_count

    def discover_services(self) -> Iterator[ServiceLocation]:
        """The healthy locations of the service, in random order.

        The balancer is asked when iteration starts, as the C# Quaestor's client did.
        """
        yield from self._discover(top=False)

    def discover_top_services(self) -> Iterator[ServiceLocation]:
        """The healthy locations of the service that report their load, best first."""
        yield from self._discover(top=True)

    def _discover(self, top: bool) -> list[ServiceLocation]:
        return discover(
            _address(self.host_name, self.port_nr),
            self.service_name,
            max_count=self.max_count,
            scope=self.scope,
            top=top,
            ca=self.ssl_channel_credentials,
        )


def _ca_path(credentials: object) -> str | None:
    """The CA file named by `ssl_channel_credentials`, or None for plaintext."""
    if credentials is None:
        return None
    if isinstance(credentials, (str, os.PathLike)):
        # "" was "no credentials" for the C# Quaestor's client (it tested truthiness).
        return os.fsdecode(credentials) or None
    raise TypeError(
        "ssl_channel_credentials must be None or the path (str or os.PathLike) of the CA "
        "certificate (PEM) that signed the balancer's certificate, not "
        f"{type(credentials).__qualname__}; quaestor does not use grpcio, so pass the file "
        "given to grpc.ssl_channel_credentials(root_certificates=...) instead"
    )


def _address(host_name: str, port_nr: int) -> str:
    """`host:port`, with an IPv6 literal in brackets."""
    if ":" in host_name and not host_name.startswith("["):
        return f"[{host_name}]:{port_nr}"
    return f"{host_name}:{port_nr}"
