"""quaestor's own load push (quaestor.push.v1.LoadPush/WatchLoad) from a Python reporter, as a
grpcio client sees it: the current state at once, then every change the worker makes."""

from collections.abc import Callable, Iterator

import grpc
import pytest

from support import CHANGE_TIMEOUT

SERVING = 1
NOT_SERVING = 2


def until(updates: Iterator, what: str, done: Callable[[object], bool]):
    """The first update that satisfies `done`; the call's deadline bounds the wait."""
    for update in updates:
        if done(update):
            return update
    raise AssertionError(f"the stream ended before {what}")


def test_requests_setters_and_health_are_pushed(wire, reporter, load, channel):
    stub = wire.load_push_pb2_grpc.LoadPushStub(channel)
    updates = stub.WatchLoad(wire.load_push_pb2.WatchLoadRequest(service_name="Worker"), timeout=CHANGE_TIMEOUT)
    try:
        first = next(updates)
        assert (first.sequence, first.keepalive, first.health) == (1, False, SERVING)
        assert (first.load.request_capacity, first.load.current_requests) == (4, 0)

        load.start_request()
        until(updates, "the start", lambda u: u.load.current_requests == 1)
        load.capacity = 9
        until(updates, "the new capacity", lambda u: u.load.request_capacity == 9)
        reporter.set_serving(False, "Worker")
        until(updates, "NOT_SERVING", lambda u: u.health == NOT_SERVING)
        load.end_request()
    finally:
        updates.cancel()


def test_unknown_service_is_out_of_range(wire, reporter, load, channel):
    stub = wire.load_push_pb2_grpc.LoadPushStub(channel)
    updates = stub.WatchLoad(wire.load_push_pb2.WatchLoadRequest(service_name="Nope"), timeout=CHANGE_TIMEOUT)
    with pytest.raises(grpc.RpcError) as raised:
        next(updates)
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_closing_the_reporter_ends_the_stream_with_not_serving(wire, reporter, load, channel):
    stub = wire.load_push_pb2_grpc.LoadPushStub(channel)
    updates = stub.WatchLoad(wire.load_push_pb2.WatchLoadRequest(service_name="Worker"), timeout=CHANGE_TIMEOUT)
    try:
        assert next(updates).health == SERVING
        reporter.close()
        rest = list(updates)
        assert rest and rest[-1].health == NOT_SERVING
    finally:
        updates.cancel()
