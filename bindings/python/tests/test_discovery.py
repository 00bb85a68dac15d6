"""Discovery through a real `quaestor load-balancer` over a real etcd, with `discover()` and
with `ServiceDiscovery`, the C# Quaestor's Python client class."""

import pytest

import quaestor
from quaestor.service_location import ServiceLocation as OldImportedLocation
from support import CHANGE_TIMEOUT, wait_for


def offered(ask, expected: list[quaestor.ServiceLocation]) -> list[quaestor.ServiceLocation]:
    """Waits until `ask()` returns `expected` (the balancer has seen the registration, the
    location's health and first load report, and has dropped the locations of earlier tests,
    which closed their reporters) and returns it."""
    answers = []

    def probe():
        answers.append(ask())
        return answers[-1] if answers[-1] == expected else None

    try:
        return wait_for(f"the balancer to answer {expected}", CHANGE_TIMEOUT, probe)
    except AssertionError as error:
        raise AssertionError(f"{error}; its last answer: {answers[-1]}") from None


@pytest.fixture
def registered(etcd, reporter) -> quaestor.ServiceLocation:
    """The reporter with service `Worker`, registered in etcd: the location a balancer offers."""
    reporter.add_service("Worker", capacity=4)
    reporter.register(etcd=[etcd.url], host="127.0.0.1")
    return quaestor.ServiceLocation("", "Worker", "127.0.0.1", reporter.port)


def test_discover_returns_the_registered_reporter(load_balancer, registered):
    found = offered(lambda: quaestor.discover(load_balancer, "Worker"), [registered])
    location = found[0]
    assert (location.scope, location.service_name, location.host_name, location.port) == (
        "",
        "Worker",
        "127.0.0.1",
        registered.port,
    )
    assert location.address == f"127.0.0.1:{registered.port}"
    assert hash(location) == hash(registered)


def test_discover_top_returns_the_registered_reporter(load_balancer, registered):
    offered(lambda: quaestor.discover(load_balancer, "Worker", top=True, max_count=1), [registered])


def test_a_reporter_that_stops_serving_is_no_longer_offered(load_balancer, registered, reporter):
    offered(lambda: quaestor.discover(load_balancer, "Worker"), [registered])
    reporter.set_serving(False)
    wait_for(
        "the balancer to drop the NOT_SERVING reporter",
        CHANGE_TIMEOUT,
        lambda: (registered not in quaestor.discover(load_balancer, "Worker")) or None,
    )


def test_an_unknown_service_is_an_empty_list(load_balancer):
    assert quaestor.discover(load_balancer, "NobodyServesThis") == []
    assert quaestor.discover(load_balancer, "Worker", scope="no-such-scope", top=True) == []


def test_service_discovery_class_as_the_csharp_quaestor_client(load_balancer, registered):
    host, port = load_balancer.rsplit(":", 1)
    discovery = quaestor.ServiceDiscovery(host, int(port), "Worker")
    assert (discovery.host_name, discovery.port_nr, discovery.service_name) == (host, int(port), "Worker")
    assert (discovery.scope, discovery.max_count, discovery.ssl_channel_credentials) == ("", 1, None)

    found = offered(lambda: list(discovery.discover_services()), [registered])
    # The attributes code written for the C# Quaestor's client reads.
    assert (found[0].service_name, found[0].host_name, found[0].port) == ("Worker", "127.0.0.1", registered.port)
    assert isinstance(found[0], OldImportedLocation)

    # Waited for too: the balancer's ranked answer may still hold an earlier test's reporter
    # for a few ms after DiscoverServices has dropped it.
    offered(lambda: list(discovery.discover_top_services()), [registered])
    scoped = quaestor.ServiceDiscovery(host, int(port), "Worker", scope="other", max_count=3)
    assert list(scoped.discover_services()) == []


def test_service_discovery_asks_when_iterated(load_balancer):
    # As the C# Quaestor's client: a generator, nothing is asked until iteration starts.
    discovery = quaestor.ServiceDiscovery("127.0.0.1", 1, "Worker")
    services = discovery.discover_services()
    with pytest.raises(quaestor.UnavailableError):
        next(services)


def test_service_discovery_takes_a_ca_path_not_grpc_credentials(tmp_path):
    ca = tmp_path / "ca.pem"
    assert quaestor.ServiceDiscovery("h", 1, "S", ca).ssl_channel_credentials == str(ca)
    assert quaestor.ServiceDiscovery("h", 1, "S", str(ca)).ssl_channel_credentials == str(ca)
    assert quaestor.ServiceDiscovery("h", 1, "S", ssl_channel_credentials=None).ssl_channel_credentials is None
    # The C# Quaestor's client took a falsy value for "no TLS".
    assert quaestor.ServiceDiscovery("h", 1, "S", "").ssl_channel_credentials is None

    class ChannelCredentials:  # what grpc.ssl_channel_credentials() returns
        pass

    for wrong in (ChannelCredentials(), b"-----BEGIN CERTIFICATE-----", 5, True):
        with pytest.raises(TypeError, match="CA certificate"):
            quaestor.ServiceDiscovery("h", 1, "S", wrong)


def test_top_ranks_by_the_reported_load_and_follows_its_changes(etcd, load_balancer):
    # A scope of its own: only these two reporters are in it.
    scope = "ranking"
    with quaestor.Reporter() as a, quaestor.Reporter() as b:
        loads = {}
        locations = {}
        # The known load rate ranks first (the C# comparer), whatever the requests in flight.
        # Set before registering, so that every report the balancer gets carries it.
        for name, reporter, rate in (("a", a, 0.1), ("b", b, 0.9)):
            loads[name] = reporter.add_service("Worker", capacity=4)
            loads[name].known_load_rate = rate
            reporter.register(etcd=[etcd.url], host="127.0.0.1", scope=scope)
            locations[name] = quaestor.ServiceLocation(scope, "Worker", "127.0.0.1", reporter.port)
        top = lambda: quaestor.discover(load_balancer, "Worker", scope=scope, top=True)  # noqa: E731
        offered(top, [locations["a"], locations["b"]])
        # Only b changes: until its next report the old order stands, never a tie.
        loads["b"].known_load_rate = 0.05
        offered(top, [locations["b"], locations["a"]])

        host, port = load_balancer.rsplit(":", 1)
        discovery = quaestor.ServiceDiscovery(host, int(port), "Worker", scope=scope, max_count=2)
        # Ranked every time (random order would differ within a few calls)...
        for _ in range(10):
            assert list(discovery.discover_top_services()) == [locations["b"], locations["a"]]
        # ...and both offered, in any order, by discover_services().
        assert set(discovery.discover_services()) == set(locations.values())
        assert len(list(quaestor.ServiceDiscovery(host, int(port), "Worker", scope=scope).discover_top_services())) == 1


def test_service_discovery_over_tls_with_a_ca_path(tls_load_balancer, pki, registered):
    port = int(tls_load_balancer.rsplit(":", 1)[1])
    # The certificate names localhost; the CA file replaces grpc.ssl_channel_credentials().
    discovery = quaestor.ServiceDiscovery("localhost", port, "Worker", pki.ca)
    offered(lambda: list(discovery.discover_services()), [registered])
    top = quaestor.ServiceDiscovery("localhost", port, "Worker", str(pki.ca))
    offered(lambda: list(top.discover_top_services()), [registered])
    # Plaintext against a TLS balancer fails with a quaestor error, not a hang or a crash.
    with pytest.raises(quaestor.QuaestorError):
        list(quaestor.ServiceDiscovery("localhost", port, "Worker").discover_services())


def test_service_discovery_over_tls_fails_cleanly_against_a_plaintext_balancer(load_balancer, tmp_path):
    # Not a certificate: quaestor refuses it (or the handshake fails), with a QuaestorError.
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    host, port = load_balancer.rsplit(":", 1)
    discovery = quaestor.ServiceDiscovery(host, int(port), "Worker", ca)
    with pytest.raises(quaestor.QuaestorError):
        list(discovery.discover_services())
