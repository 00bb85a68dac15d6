"""The exceptions quaestor raises: one class per kind of failure of quaestor's core.

Each class's `kind` is the name of the core's error kind it stands for; the C ABI returns the
same kinds as `QUAESTOR_RESULT_*` codes, so a failure reads alike in C, C++, C# and Python.
Classes that mean "a bad value" also derive from `ValueError`, and "no such thing" from
`LookupError`, so code that catches the builtin classes keeps working.
"""

__all__ = [
    "AlreadyExistsError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "IoError",
    "NotFoundError",
    "QuaestorError",
    "RefusedError",
    "RemoteError",
    "TimeoutError",
    "TlsError",
    "UnavailableError",
]


class QuaestorError(Exception):
    """Base of every exception quaestor raises (besides TypeError, ValueError and
    OverflowError for Python arguments of the wrong type or range)."""

    kind: str = "internal"


class InvalidArgumentError(QuaestorError, ValueError):
    """An argument quaestor or the server refused: an empty or malformed name, a bad address,
    a TTL too short, half of a pair of credentials."""

    kind = "invalid_argument"


class AlreadyExistsError(InvalidArgumentError):
    """A service of that name was added before."""

    kind = "already_exists"


class NotFoundError(QuaestorError, LookupError):
    """No such service on this reporter."""

    kind = "not_found"


class IoError(QuaestorError, OSError):
    """The operating system said no: the port is in use, threads cannot be started."""

    kind = "io"


class TlsError(QuaestorError):
    """TLS files missing or unusable (certificate, key, CA), or TLS settings that do not fit."""

    kind = "tls"


class UnavailableError(QuaestorError):
    """The server (balancer, etcd) could not be reached."""

    kind = "unavailable"


class TimeoutError(QuaestorError):  # noqa: A001 - quaestor's own, as quaestor.TimeoutError
    """The server did not answer in time."""

    kind = "timeout"


class RemoteError(QuaestorError):
    """The server answered with an error."""

    kind = "remote"


class RefusedError(QuaestorError):
    """The server refused the caller (etcd: authentication failed, permission denied)."""

    kind = "refused"


class InvalidStateError(QuaestorError):
    """The object cannot do that now: registered already, nothing to register, closed, or made
    in the parent of a fork."""

    kind = "invalid_state"


class InternalError(QuaestorError):
    """A bug in quaestor."""

    kind = "internal"
