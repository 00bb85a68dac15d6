"""The load a worker counts with a ServiceLoad, as a grpcio client sees it in the reporter's
Quaestor.LoadReporting answers, and the health it sets, as grpc.health.v1 sees it.

Every count is checked while the requests are known to be in flight: the code holding them
waits on a Barrier or an Event that the test releases after asking."""

import asyncio
import threading
import time

import grpc
import pytest

import quaestor

# How long a thread may take to reach a barrier or an event.
SYNC_TIMEOUT = 10.0


def current(report) -> int:
    return report().server_stats.current_requests


def test_with_request_counts_while_inside(load, report):
    assert current(report) == 0
    with load.request():
        assert current(report) == 1
        assert load.current_requests == 1
        with load.request():
            assert current(report) == 2
        assert current(report) == 1
    assert current(report) == 0


def test_with_request_ends_the_request_when_the_block_raises(load, report):
    with pytest.raises(KeyError):
        with load.request():
            assert current(report) == 1
            raise KeyError("the handler failed")
    assert current(report) == 0


def test_start_and_end_request(load, report):
    load.start_request()
    load.start_request()
    assert current(report) == 2
    load.end_request()
    assert current(report) == 1
    load.end_request()
    assert current(report) == 0


def test_decorated_function_counts_each_call_while_it_runs(load, report):
    seen = []

    @load.request()
    def handle(value: int) -> int:
        seen.append(current(report))
        return value * 2

    assert handle.__name__ == "handle"
    assert current(report) == 0
    assert handle(21) == 42
    assert handle(1) == 2
    assert seen == [1, 1]
    assert current(report) == 0


def test_decorated_function_called_from_threads_at_once(load, report):
    threads = 3
    inside = threading.Barrier(threads + 1, timeout=SYNC_TIMEOUT)
    release = threading.Event()

    @load.request()
    def handle() -> None:
        inside.wait()
        assert release.wait(SYNC_TIMEOUT)

    workers = [threading.Thread(target=handle) for _ in range(threads)]
    for worker in workers:
        worker.start()
    inside.wait()
    assert current(report) == threads
    release.set()
    for worker in workers:
        worker.join(SYNC_TIMEOUT)
        assert not worker.is_alive()
    assert current(report) == 0


def test_decorated_async_function_counts_while_the_coroutine_runs(load, report):
    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        @load.request()
        async def handle(value: int) -> int:
            started.set()
            await release.wait()
            return value + 1

        coroutine = handle(1)
        # Calling it made a coroutine; nothing runs, and nothing is counted, until it is awaited.
        assert current(report) == 0
        task = asyncio.ensure_future(coroutine)
        await asyncio.wait_for(started.wait(), SYNC_TIMEOUT)
        assert current(report) == 1
        release.set()
        assert await asyncio.wait_for(task, SYNC_TIMEOUT) == 2
        assert current(report) == 0

    asyncio.run(scenario())


def test_async_with_request(load, report):
    async def scenario() -> None:
        async with load.request() as request:
            assert isinstance(request, quaestor.Request)
            assert current(report) == 1
            await asyncio.sleep(0)
            assert current(report) == 1
        assert current(report) == 0

    asyncio.run(scenario())


def test_requests_held_by_several_threads_at_once(load, report):
    threads = 8
    inside = threading.Barrier(threads + 1, timeout=SYNC_TIMEOUT)
    release = threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with load.request():
                inside.wait()
                assert release.wait(SYNC_TIMEOUT)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    workers = [threading.Thread(target=hold) for _ in range(threads)]
    for worker in workers:
        worker.start()
    inside.wait()
    assert current(report) == threads
    assert load.current_requests == threads
    release.set()
    for worker in workers:
        worker.join(SYNC_TIMEOUT)
        assert not worker.is_alive()
    assert failures == []
    assert current(report) == 0


def test_capacity_known_load_rate_and_utilization_are_reported(reporter, report):
    load = reporter.add_service("Worker", capacity=7)
    answer = report()
    assert answer.server_stats.request_capacity == 7
    # Not set: the C# Quaestor's "no known load rate" value.
    assert load.known_load_rate is None
    assert answer.known_load_rate < 0

    load.capacity = 12
    load.known_load_rate = 0.25
    load.server_utilization = 0.5
    assert (load.capacity, load.known_load_rate, load.server_utilization) == (12, 0.25, 0.5)
    answer = report()
    assert answer.server_stats.request_capacity == 12
    assert answer.known_load_rate == 0.25
    assert answer.server_stats.server_utilization == 0.5

    load.known_load_rate = None
    assert load.known_load_rate is None
    assert report().known_load_rate < 0


def test_memory_usage_percent_is_reported_as_set_or_measured(load, report):
    assert load.memory_usage_percent is None
    measured = report().server_stats.server_memory_usage_percent
    assert 0 <= measured <= 100
    # Two set figures in turn: a measured one could not match both.
    for percent in (42.5, 37.25, 0.0, 100.0):
        load.memory_usage_percent = percent
        assert load.memory_usage_percent == percent
        assert report().server_stats.server_memory_usage_percent == percent
    load.memory_usage_percent = None
    assert load.memory_usage_percent is None
    assert 0 <= report().server_stats.server_memory_usage_percent <= 100


def test_a_fresh_loads_first_report_says_utilization_zero(load, report):
    # As a fresh C# ServiceLoad: no interval measured yet, so 0, whatever the CPU did since.
    assert load.server_utilization is None
    busy_until = time.process_time() + 0.1
    while time.process_time() < busy_until:
        pass
    assert report().server_stats.server_utilization == 0


def test_scope_and_service_name_are_answered(reporter, report):
    reporter.add_service("Worker", capacity=1)
    reporter.add_service("Other", capacity=2)
    assert report("Other").server_stats.request_capacity == 2
    assert reporter.service_load("Other").service_name == "Other"
    with pytest.raises(grpc.RpcError) as error:
        report("Missing")
    # As the C# Quaestor's server answers an unknown service.
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_service_load_set_serving_flips_health(load, health):
    assert health("Worker") == "SERVING"
    load.set_serving(False)
    assert health("Worker") == "NOT_SERVING"
    load.set_serving(True)
    assert health("Worker") == "SERVING"


def test_reporter_set_serving_flips_every_service_or_one(reporter, health):
    reporter.add_service("Worker")
    reporter.add_service("Other")
    assert (health("Worker"), health("Other")) == ("SERVING", "SERVING")

    reporter.set_serving(False)
    assert (health("Worker"), health("Other")) == ("NOT_SERVING", "NOT_SERVING")
    reporter.set_serving(True)
    assert (health("Worker"), health("Other")) == ("SERVING", "SERVING")

    reporter.set_serving(False, service="Other")
    assert (health("Worker"), health("Other")) == ("SERVING", "NOT_SERVING")
    reporter.set_serving(True, "Other")
    assert health("Other") == "SERVING"


def test_an_unknown_service_is_not_healthy(load, health):
    assert health("Missing") == "NOT_FOUND"


def test_reporter_address_properties(reporter):
    assert reporter.host == "127.0.0.1"
    assert reporter.port > 0
    assert reporter.address == f"127.0.0.1:{reporter.port}"
    assert not reporter.closed
