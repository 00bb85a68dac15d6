"""`quaestor.DiscoveryClient` and `quaestor.aio`: one connection kept between calls (counted in
/proc), a new one after the balancer comes back, and coroutines that are real awaitables on
quaestor's runtime (the event loop keeps running while they wait; cancelling them works)."""

import asyncio
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import quaestor
from conftest import start_load_balancer
from support import Child, Etcd, free_ports, wait_for

SERVICE = "ClientWorker"


def until(what: str, condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Waits (with a deadline) until `condition()` is true."""
    wait_for(what, timeout, lambda: True if condition() else None)


def connections_to(port: int) -> set[int]:
    """The local ports of this process's established TCP connections to `port`."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    with open("/proc/self/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(remote.split(":")[1], 16) == port and inode in inodes:
                found.add(int(local.split(":")[1], 16))
    return found


@pytest.fixture(scope="module")
def worker(etcd: Etcd) -> Iterator[quaestor.Reporter]:
    """A reporter registered as SERVICE (its own port as the service port)."""
    with quaestor.Reporter() as reporter:
        reporter.add_service(SERVICE, capacity=4)
        reporter.register(etcd=etcd.url, host="127.0.0.1")
        yield reporter


def found_by(client: quaestor.DiscoveryClient, reporter: quaestor.Reporter) -> bool:
    return [l.port for l in client.discover_top(SERVICE, max_count=1)] == [reporter.port]


# Other tests' clients may hold (or be closing) connections to the same balancer: a client's
# own connection is the one that appears with it.


def test_a_client_keeps_one_connection(load_balancer: str, worker: quaestor.Reporter) -> None:
    port = int(load_balancer.rsplit(":", 1)[1])
    before = connections_to(port)
    client = quaestor.DiscoveryClient(load_balancer)
    assert client.address == load_balancer
    until("the worker discovered", lambda: found_by(client, worker), 20)
    [own] = connections_to(port) - before
    for _ in range(20):
        assert [l.port for l in client.discover(SERVICE)] == [worker.port]
        assert [l.address for l in client.discover_top(SERVICE, max_count=1)] == [worker.address]
    assert connections_to(port) - before == {own}, "a call opened a connection of its own"
    del client
    until("the connection closed with its client", lambda: own not in connections_to(port), 10)


def test_discover_reuses_a_shared_client(load_balancer: str, worker: quaestor.Reporter) -> None:
    port = int(load_balancer.rsplit(":", 1)[1])
    before = connections_to(port)
    # A timeout no other test uses: a shared client of its own.
    until("discovered", lambda: quaestor.discover(load_balancer, SERVICE, timeout=4.25), 20)
    [own] = connections_to(port) - before
    for _ in range(20):
        assert quaestor.discover(load_balancer, SERVICE, timeout=4.25)[0].port == worker.port
    assert connections_to(port) - before == {own}, "a call opened a connection of its own"


def test_a_client_connects_again_after_its_balancer_restarts(
    quaestor_bin: Path, etcd: Etcd, worker: quaestor.Reporter, tmp_path: Path
) -> None:
    [port] = free_ports(1)

    def balancer(name: str) -> Child:
        (tmp_path / name).mkdir()
        child, _ = start_load_balancer(quaestor_bin, etcd, tmp_path / name, port=port)
        return child

    first = balancer("first")
    client = quaestor.DiscoveryClient(f"127.0.0.1:{port}", timeout=2.0)
    try:
        until("found through the first balancer", lambda: found_by(client, worker), 20)
    finally:
        first.stop()
    with pytest.raises(quaestor.UnavailableError):
        client.discover(SERVICE)
    second = balancer("second")
    try:
        until("found through the second balancer", lambda: found_by(client, worker), 20)
    finally:
        second.stop()


def test_a_client_refuses_a_bad_address_at_once() -> None:
    with pytest.raises(quaestor.InvalidArgumentError):
        quaestor.DiscoveryClient("no port")
    with pytest.raises(ValueError):
        quaestor.DiscoveryClient("127.0.0.1:1", timeout=0)
    # Nothing is connected until the first call.
    quaestor.DiscoveryClient(f"127.0.0.1:{free_ports(1)[0]}")


def test_aio_calls_run_concurrently_on_one_client(load_balancer: str, worker: quaestor.Reporter) -> None:
    async def main() -> list[list[quaestor.ServiceLocation]]:
        client = quaestor.aio.DiscoveryClient(load_balancer)
        return await asyncio.gather(*(client.discover(SERVICE) for _ in range(50)))

    until("discovered", lambda: quaestor.discover(load_balancer, SERVICE), 20)
    answers = asyncio.run(main())
    assert len(answers) == 50
    assert all([l.port for l in answer] == [worker.port] for answer in answers)


def test_aio_awaiting_does_not_block_the_event_loop() -> None:
    # A server that never answers: the call waits its whole timeout, and the loop runs meanwhile.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()

        async def main() -> tuple[BaseException | None, int]:
            ticks = 0
            client = quaestor.aio.DiscoveryClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
            call = asyncio.ensure_future(client.discover("Worker"))
            while not call.done():
                ticks += 1
                await asyncio.sleep(0.01)
            return call.exception(), ticks

        error, ticks = asyncio.run(main())
    assert isinstance(error, quaestor.TimeoutError)
    assert ticks > 5, "the event loop did not run while the call waited"


def test_aio_a_cancelled_call_ends_at_once() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()

        async def main() -> None:
            client = quaestor.aio.DiscoveryClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout=60.0)
            call = asyncio.ensure_future(client.discover_top("Worker"))
            await asyncio.sleep(0)  # the call starts and waits on the silent server
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

        asyncio.run(main())


def test_aio_reporter_registers_and_closes(etcd: Etcd) -> None:
    async def main() -> tuple[set[str], int]:
        async with quaestor.aio.Reporter() as reporter:
            reporter.add_service("AioWorker", capacity=2)
            await reporter.register(etcd=etcd.url, host="127.0.0.1", scope="aio")
            keys = etcd.keys("services/aio/")
            with pytest.raises(quaestor.InvalidStateError):
                await reporter.register(etcd=etcd.url, host="127.0.0.1", scope="aio")
            return keys, reporter.port

    keys, port = asyncio.run(main())
    assert keys == {f"services/aio/AioWorker/127.0.0.1/{port}/http"}
    until("deregistered on close", lambda: not etcd.keys("services/aio/"), 10)
