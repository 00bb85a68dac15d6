"""Request cancellation as the C# Quaestor does it: a request started with a user name and an
environment, and `Quaestor.ProcessAdministration.ProcessAdministrationGrpc/Cancel` called on the
real reporter by a grpcio client whose stubs protoc generated from proto/quaestor/process_admin.proto
(the C# project's package, service and field numbers)."""

import asyncio

import pytest

import quaestor


@pytest.fixture
def cancel(wire, channel):
    """`cancel(user_name, environment)`: the reporter's CancelResponse.success, over grpcio."""
    stub = wire.process_admin_pb2_grpc.ProcessAdministrationGrpcStub(channel)

    def cancel(user_name: str, environment: str, service_name: str = "Worker") -> bool:
        request = wire.process_admin_pb2.CancelRequest(
            environment=environment, service_name=service_name, user_name=user_name, password="unchecked"
        )
        return stub.Cancel(request, timeout=5).success

    return cancel


def test_the_generated_request_has_the_csharp_field_numbers(wire):
    fields = {f.name: f.number for f in wire.process_admin_pb2.CancelRequest.DESCRIPTOR.fields}
    assert fields == {"environment": 1, "service_name": 2, "user_name": 3, "password": 4}
    assert wire.process_admin_pb2.DESCRIPTOR.package == "Quaestor.ProcessAdministration"


def test_cancel_marks_the_running_request_of_that_user_and_environment(load, cancel, report):
    with load.request(user_name="alice", environment="prod") as request:
        assert isinstance(request, quaestor.CancellableRequest)
        assert request.running and not request.cancelled
        assert report().server_stats.current_requests == 1, "it counts as a request"
        assert cancel("alice", "prod") is True
        assert request.cancelled
    assert not request.running
    assert request.cancelled, "it stays cancelled after it ended"
    assert report().server_stats.current_requests == 0


def test_a_cancel_of_another_user_or_environment_leaves_the_request_running(load, cancel):
    with load.request(user_name="alice", environment="prod") as request:
        assert cancel("bob", "prod") is False
        assert cancel("alice", "test") is False
        assert cancel("Alice", "prod") is False, "matched exactly"
        assert cancel("alice", "") is False
        assert not request.cancelled and request.running
        # The service name is not looked at (as in C#).
        assert cancel("alice", "prod", service_name="Elsewhere") is True
        assert request.cancelled


def test_an_ended_request_is_not_matched_any_more(load, cancel):
    with load.request(user_name="alice", environment="prod") as request:
        pass
    assert cancel("alice", "prod") is False
    assert not request.cancelled


def test_every_matching_request_of_every_service_is_cancelled(reporter, load, cancel):
    other = reporter.add_service("Other", capacity=2)
    with (
        load.request(user_name="u", environment="e") as first,
        other.request(user_name="u", environment="e") as second,
        load.request(user_name="u", environment="f") as third,
    ):
        assert load.current_requests == 2 and other.current_requests == 1
        assert cancel("u", "e") is True
        assert first.cancelled and second.cancelled and not third.cancelled
    assert load.current_requests == 0 and other.current_requests == 0


def test_empty_names_are_names_too(load, cancel):
    with load.request(user_name="", environment="") as request:
        assert cancel("x", "") is False
        assert cancel("", "") is True
        assert request.cancelled


def test_async_with(load, cancel):
    async def handler():
        async with load.request(user_name="alice", environment="prod") as request:
            assert load.current_requests == 1
            # The blocking grpcio call runs off the event loop, as a real handler's client would.
            assert await asyncio.to_thread(cancel, "alice", "prod") is True
            return request

    request = asyncio.run(handler())
    assert request.cancelled and not request.running
    assert load.current_requests == 0


def test_the_request_ends_when_the_block_raises(load, cancel):
    with pytest.raises(KeyError):
        with load.request(user_name="alice", environment="prod"):
            raise KeyError("the handler failed")
    assert load.current_requests == 0
    assert cancel("alice", "prod") is False


def test_bad_use_is_refused(load):
    with pytest.raises(TypeError, match="together"):
        load.request(user_name="alice")
    with pytest.raises(TypeError, match="together"):
        load.request(environment="prod")
    with pytest.raises(TypeError):
        load.request("alice", "prod")  # type: ignore[call-overload]
    request = load.request(user_name="alice", environment="prod")
    with request:
        with pytest.raises(RuntimeError, match="entered once"):
            with request:
                pass
    with pytest.raises(RuntimeError, match="entered once"):
        with request:
            pass
    assert load.current_requests == 0


def test_a_plain_request_is_unchanged(load, cancel):
    with load.request() as request:
        assert isinstance(request, quaestor.Request)
        assert cancel("", "") is False, "plain requests are not cancellable"
        assert load.current_requests == 1

