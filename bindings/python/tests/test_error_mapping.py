"""The same failures, driven through the C ABI (libquaestor.so, called with ctypes) and through
the Python package, read alike: the C result code and the Python exception class stand for the
same kind of the core's errors (`QuaestorError.kind` is the kind's name; the code is
`QUAESTOR_RESULT_<KIND>`, with REMOTE_ERROR for remote and PANIC for internal)."""

import ctypes
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import quaestor
from support import Etcd, free_ports

REPO = Path(__file__).resolve().parents[3]
HEADER = REPO / "ffi" / "include" / "quaestor.h"

# The C names of the kinds whose code is not simply QUAESTOR_RESULT_<KIND>.
C_NAME = {"remote": "REMOTE_ERROR", "internal": "PANIC"}

P = ctypes.c_void_p


def c_codes() -> dict[int, str]:
    """Result code → name, from the generated header."""
    text = HEADER.read_text()
    return {int(value): name for name, value in re.findall(r"QUAESTOR_RESULT_(\w+) = (\d+)", text)}


class Lib:
    """libquaestor with the signatures the test calls."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        u32, i32, u16, s = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint16, ctypes.c_char_p
        out = ctypes.POINTER(P)
        signatures = {
            "quaestor_discover": [s, s, s, i32, u32, out],
            "quaestor_discovery_client_new": [s, s, u32, out],
            "quaestor_discovery_client_discover": [P, s, s, i32, out],
            "quaestor_reporter_new": [s, u16, s, s, out],
            "quaestor_reporter_add_service": [P, s, i32, out],
            "quaestor_reporter_service_load": [P, s, out],
            "quaestor_reporter_register": [P, s, s, s, u16, u32],
        }
        for name, args in signatures.items():
            function = getattr(lib, name)
            function.argtypes = args
            function.restype = u32
        for name in [
            "quaestor_reporter_free",
            "quaestor_service_load_free",
            "quaestor_location_list_free",
            "quaestor_discovery_client_free",
        ]:
            getattr(lib, name).argtypes = [P]
            getattr(lib, name).restype = None
        self.lib = lib
        self.frees: list[Callable[[], None]] = []

    def call(self, name: str, *args: object) -> tuple[int, P]:
        """Calls `name` with `args` and an out-parameter (if it takes one): (code, object)."""
        function = getattr(self.lib, name)
        takes_out = function.argtypes[-1] is not ctypes.c_uint32 and len(function.argtypes) > len(args)
        if not takes_out:
            return function(*args), P()
        result = P()
        code = function(*args, ctypes.byref(result))
        return code, result

    def new(self, name: str, free: str, *args: object) -> P:
        code, made = self.call(name, *args)
        assert code == 0, f"{name}: {code}"
        self.frees.append(lambda: getattr(self.lib, free)(made))
        return made

    def close(self) -> None:
        for free in reversed(self.frees):
            free()


@pytest.fixture(scope="module")
def lib(quaestor_bin: Path) -> Iterator[Lib]:
    path = quaestor_bin.parent / "libquaestor.so"
    if not path.exists():
        pytest.fail(f"{path} is missing: cargo build -p quaestor-ffi (make test builds it)", pytrace=False)
    lib = Lib(path)
    yield lib
    lib.close()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a listen backlog, no accept)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield silent.getsockname()[1]


def expect(kind: str, c_code: int, python_error: BaseException) -> None:
    """Both sides stand for `kind`."""
    names = c_codes()
    assert names.get(c_code) == C_NAME.get(kind, kind.upper()), (
        f"C said {names.get(c_code, c_code)} for a failure of kind {kind}"
    )
    assert isinstance(python_error, quaestor.QuaestorError)
    assert python_error.kind == kind, f"Python raised {type(python_error).__name__} for {kind}"


def python_failure(call: Callable[[], object]) -> BaseException:
    with pytest.raises(quaestor.QuaestorError) as raised:
        call()
    return raised.value


def test_unreachable(lib: Lib) -> None:
    [port] = free_ports(1)
    address = f"127.0.0.1:{port}"
    code, _ = lib.call("quaestor_discover", address.encode(), None, b"Worker", 0, 5000)
    expect("unavailable", code, python_failure(lambda: quaestor.discover(address, "Worker")))
    client = lib.new("quaestor_discovery_client_new", "quaestor_discovery_client_free", address.encode(), None, 5000)
    code, _ = lib.call("quaestor_discovery_client_discover", client, None, b"Worker", 0)
    python_client = quaestor.DiscoveryClient(address)
    expect("unavailable", code, python_failure(lambda: python_client.discover("Worker")))


def test_timeout(lib: Lib, silent_port: int) -> None:
    address = f"127.0.0.1:{silent_port}"
    code, _ = lib.call("quaestor_discover", address.encode(), None, b"Worker", 0, 300)
    python_error = python_failure(lambda: quaestor.discover(address, "Worker", timeout=0.3))
    expect("timeout", code, python_error)


def test_bad_names(lib: Lib, load_balancer: str) -> None:
    # Answered by the balancer: a name that would act as a registry key prefix.
    code, _ = lib.call("quaestor_discover", load_balancer.encode(), None, b"Work/er", 0, 5000)
    expect("invalid_argument", code, python_failure(lambda: quaestor.discover(load_balancer, "Work/er")))
    # Refused before anything is sent.
    code, _ = lib.call("quaestor_discover", b"not an address", None, b"Worker", 0, 5000)
    expect("invalid_argument", code, python_failure(lambda: quaestor.discover("not an address", "Worker")))
    reporter = lib.new("quaestor_reporter_new", "quaestor_reporter_free", b"127.0.0.1", 0, None, None)
    code, _ = lib.call("quaestor_reporter_add_service", reporter, b"", 4)
    with quaestor.Reporter() as python_reporter:
        expect("invalid_argument", code, python_failure(lambda: python_reporter.add_service("")))


def test_tls_files_that_do_not_load(lib: Lib, tmp_path: Path) -> None:
    cert, key = tmp_path / "missing-cert.pem", tmp_path / "missing-key.pem"
    code, _ = lib.call("quaestor_reporter_new", b"127.0.0.1", 0, str(cert).encode(), str(key).encode())
    expect("tls", code, python_failure(lambda: quaestor.Reporter(tls=(cert, key))))


def test_added_twice_and_unknown_service(lib: Lib) -> None:
    reporter = lib.new("quaestor_reporter_new", "quaestor_reporter_free", b"127.0.0.1", 0, None, None)
    lib.new("quaestor_reporter_add_service", "quaestor_service_load_free", reporter, b"Worker", 4)
    with quaestor.Reporter() as python_reporter:
        python_reporter.add_service("Worker")
        code, _ = lib.call("quaestor_reporter_add_service", reporter, b"Worker", 4)
        expect("already_exists", code, python_failure(lambda: python_reporter.add_service("Worker")))
        code, _ = lib.call("quaestor_reporter_service_load", reporter, b"Missing")
        expect("not_found", code, python_failure(lambda: python_reporter.service_load("Missing")))


def test_registered_twice(lib: Lib, etcd: Etcd) -> None:
    reporter = lib.new("quaestor_reporter_new", "quaestor_reporter_free", b"127.0.0.1", 0, None, None)
    lib.new("quaestor_reporter_add_service", "quaestor_service_load_free", reporter, b"MappedTwiceC", 4)
    register = lambda: lib.call("quaestor_reporter_register", reporter, etcd.url.encode(), None, b"127.0.0.1", 0, 0)[0]
    assert register() == 0
    code = register()
    with quaestor.Reporter() as python_reporter:
        python_reporter.add_service("MappedTwicePy")
        python_reporter.register(etcd=etcd.url, host="127.0.0.1")
        error = python_failure(lambda: python_reporter.register(etcd=etcd.url, host="127.0.0.1"))
    expect("invalid_state", code, error)


def test_every_kind_has_a_code_and_a_class() -> None:
    names = set(c_codes().values())
    for cls in (getattr(quaestor, name) for name in quaestor.__all__):
        if isinstance(cls, type) and issubclass(cls, quaestor.QuaestorError) and cls is not quaestor.QuaestorError:
            assert C_NAME.get(cls.kind, cls.kind.upper()) in names, f"{cls.__name__}.kind {cls.kind!r} has no C code"
