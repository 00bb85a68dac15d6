"""Failures surface as the documented exception classes: QuaestorError subclasses for what
quaestor or a server refused, TypeError/ValueError/OverflowError for bad Python arguments;
never a crash."""

import socket

import pytest

import quaestor
from support import Etcd, free_ports, wait_for

QUAESTOR_ERRORS = [
    quaestor.UnavailableError,
    quaestor.InvalidArgumentError,
    quaestor.TimeoutError,
    quaestor.NotFoundError,
    quaestor.RefusedError,
]


def test_every_quaestor_error_is_a_quaestor_error():
    assert issubclass(quaestor.QuaestorError, Exception)
    for error in QUAESTOR_ERRORS:
        assert issubclass(error, quaestor.QuaestorError)
    # quaestor's TimeoutError is its own, not the builtin one.
    assert quaestor.TimeoutError is not TimeoutError


def test_discover_against_a_closed_port_is_unavailable():
    [port] = free_ports(1)
    with pytest.raises(quaestor.UnavailableError) as error:
        quaestor.discover(f"127.0.0.1:{port}", "Worker", timeout=5)
    assert isinstance(error.value, quaestor.QuaestorError)
    assert str(error.value)


def test_discover_an_empty_service_name_is_an_invalid_argument(load_balancer):
    with pytest.raises(quaestor.InvalidArgumentError):
        quaestor.discover(load_balancer, "")


def test_discover_a_malformed_address_is_an_invalid_argument():
    with pytest.raises(quaestor.InvalidArgumentError):
        quaestor.discover("not an address", "Worker")


def test_discover_a_server_that_never_answers_times_out():
    # A listening socket that is never accepted from: TCP connects, no HTTP/2 answer comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises((quaestor.TimeoutError, quaestor.UnavailableError)):
            quaestor.discover(f"127.0.0.1:{silent.getsockname()[1]}", "Worker", timeout=0.5)


def test_adding_a_service_twice_is_an_invalid_argument(reporter):
    reporter.add_service("Worker")
    with pytest.raises(quaestor.InvalidArgumentError):
        reporter.add_service("Worker")


def test_an_empty_service_name_is_an_invalid_argument(reporter):
    with pytest.raises(quaestor.InvalidArgumentError):
        reporter.add_service("")


def test_a_name_that_cannot_be_a_registry_key_is_refused_by_register(etcd, reporter):
    # A reporter serves any non-empty name; etcd keys cannot hold a `/` in a name.
    reporter.add_service("a/b")
    with pytest.raises(quaestor.InvalidArgumentError):
        reporter.register(etcd=[etcd.url], host="127.0.0.1")
    with pytest.raises(quaestor.InvalidArgumentError):
        reporter.register(etcd=[etcd.url], host="")


def test_an_unknown_service_load_is_not_found(reporter):
    reporter.add_service("Worker")
    with pytest.raises(quaestor.NotFoundError):
        reporter.service_load("Missing")
    assert reporter.service_load("Worker").service_name == "Worker"


def test_set_serving_an_unknown_service_is_not_found(reporter):
    with pytest.raises(quaestor.NotFoundError):
        reporter.set_serving(False, service="Missing")


def test_a_port_in_use_is_a_quaestor_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(quaestor.QuaestorError) as error:
            quaestor.Reporter(port=port)
    assert str(port) in str(error.value)


def test_registering_before_etcd_answers_registers_once_it_does(reporter, tmp_path):
    # Late etcd (issue 14): no error; the registration is made once etcd comes up.
    reporter.add_service("Worker")
    [port] = free_ports(1)
    reporter.register(etcd=[f"http://127.0.0.1:{port}"], host="127.0.0.1")
    late = Etcd(tmp_path, client_port=port)
    try:
        keys = wait_for(
            "the registration in the etcd that came up late",
            30,
            lambda: late.etcdctl("get", "--prefix", "--keys-only", "services/").split() or None,
        )
        assert keys == [f"services//Worker/127.0.0.1/{reporter.port}/http"]
        reporter.deregister()
        assert late.etcdctl("get", "--prefix", "--keys-only", "services/").split() == []
    finally:
        late.stop()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: quaestor.Reporter(port="x"),
        lambda r: quaestor.Reporter(host=5),
        lambda r: r.add_service("Worker", capacity="4"),
        lambda r: r.add_service(7),
        lambda r: r.register(etcd=5, host="127.0.0.1"),
        lambda r: r.register(etcd=[5], host="127.0.0.1"),
        lambda r: r.register(etcd=["http://127.0.0.1:1"], host=None),
        lambda r: quaestor.discover(5150, "Worker"),
        lambda r: quaestor.discover("127.0.0.1:1", "Worker", max_count="3"),
        lambda r: quaestor.discover("127.0.0.1:1", "Worker", ca=3),
        lambda r: quaestor.ServiceLocation("", "Worker", "h", "80"),
        lambda r: quaestor.Reporter(tls=5),
        lambda r: r.set_serving("no"),
    ],
    ids=[
        "reporter-port-str",
        "reporter-host-int",
        "capacity-str",
        "service-name-int",
        "etcd-int",
        "etcd-list-of-int",
        "register-host-none",
        "discover-address-int",
        "max-count-str",
        "ca-int",
        "location-port-str",
        "tls-int",
        "serving-str",
    ],
)
def test_wrong_python_types_are_type_errors(reporter, call):
    with pytest.raises(TypeError):
        call(reporter)


@pytest.mark.parametrize("port", [-1, 65536, 2**70])
def test_an_out_of_range_port_is_a_value_or_overflow_error(port):
    with pytest.raises((ValueError, OverflowError)):
        quaestor.Reporter(port=port)


def test_out_of_range_numbers_are_value_or_overflow_errors(load, reporter):
    # A capacity below zero is valid ("unknown", the C# default -1); beyond int32 it is not.
    load.capacity = -1
    with pytest.raises(OverflowError):
        load.capacity = 2**31
    with pytest.raises(OverflowError):
        reporter.add_service("Other", capacity=2**31)
    for rate in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            load.known_load_rate = rate
        with pytest.raises(ValueError):
            load.server_utilization = rate
    for percent in (-1.0, 100.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            load.memory_usage_percent = percent
        assert load.memory_usage_percent is None, "a refused figure changes nothing"
    with pytest.raises(OverflowError):
        reporter.register(etcd=["http://127.0.0.1:1"], host="127.0.0.1", port=70000)
    for ttl in (-1, 0, float("nan")):
        with pytest.raises(ValueError):
            reporter.register(etcd=["http://127.0.0.1:1"], host="127.0.0.1", ttl=ttl)
    with pytest.raises(OverflowError):
        quaestor.discover("127.0.0.1:1", "Worker", max_count=2**31)
    for timeout in (-1, 0):
        with pytest.raises(ValueError):
            quaestor.discover("127.0.0.1:1", "Worker", timeout=timeout)


def test_registering_port_zero_is_an_invalid_argument(reporter, load):
    with pytest.raises(quaestor.InvalidArgumentError):
        reporter.register(etcd=["http://127.0.0.1:1"], host="127.0.0.1", port=0)


def test_a_closed_reporter_refuses_to_register_with_a_quaestor_error():
    reporter = quaestor.Reporter()
    reporter.add_service("Worker")
    reporter.close()
    assert reporter.closed
    with pytest.raises(quaestor.QuaestorError):
        reporter.register(etcd=["http://127.0.0.1:1"], host="127.0.0.1")
    with pytest.raises(quaestor.QuaestorError, match="closed"):
        reporter.add_service("Other")
    reporter.close()  # closing again does nothing
