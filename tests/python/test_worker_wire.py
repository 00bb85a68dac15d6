"""Checks `quaestor worker` on the wire with stock Python gRPC (grpcio), no Rust involved.

The stubs come from the repository's protos (see the `protos` fixture), so these tests pin
the package, service, message and field names a C# or Python peer relies on.
"""

import asyncio
import collections
import json

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from support import TICKS_AT_UNIX_EPOCH, TICKS_PER_SECOND, now_in_ticks, wait_for

# Deadline of every unary call.
RPC_TIMEOUT = 10.0
# Deadline for a condition the worker should reach quickly (load counters, health flips).
CONDITION_TIMEOUT = 15.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def check_health(worker, service):
    """The status a health Check of `service` returns."""
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(worker.channel).Check(request, timeout=RPC_TIMEOUT).status


def report_load(protos, worker, service_name="Worker"):
    """The worker's LoadReportResponse for `service_name`."""
    stub = protos.load_reporting_pb2_grpc.LoadReportingGrpcStub(worker.channel)
    request = protos.load_reporting_pb2.LoadReportRequest(service_name=service_name)
    return stub.ReportLoad(request, timeout=RPC_TIMEOUT)


def work_stub(protos, worker):
    return protos.work_pb2_grpc.WorkStub(worker.channel)


def reflect(worker, **request_fields):
    """Sends one reflection request (v1alpha) and returns the single answer."""
    stub = reflection_pb2_grpc.ServerReflectionStub(worker.channel)
    request = reflection_pb2.ServerReflectionRequest(**request_fields)
    answers = list(stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT))
    assert len(answers) == 1, answers
    assert not answers[0].HasField("error_response"), answers[0].error_response
    return answers[0]


def rpc_error_code(call, *args, **kwargs):
    """Calls `call` expecting it to fail, and returns the gRPC status code it failed with."""
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, **kwargs)
    return failure.value.code()


def test_health_check_reports_serving_and_unknown_services(start_worker):
    worker = start_worker()

    assert check_health(worker, "") == SERVING
    assert check_health(worker, "Worker") == SERVING
    assert rpc_error_code(check_health, worker, "NoSuchService") == grpc.StatusCode.NOT_FOUND


def test_health_watch_sees_the_worker_turn_not_serving(start_worker):
    worker = start_worker("--unhealthy-after", "3")
    stub = health_pb2_grpc.HealthStub(worker.channel)

    # The call's own deadline bounds the wait for the flip.
    updates = stub.Watch(health_pb2.HealthCheckRequest(service="Worker"), timeout=CONDITION_TIMEOUT)
    try:
        assert next(updates).status == SERVING
        for update in updates:
            if update.status == NOT_SERVING:
                break
            assert update.status == SERVING, update
        else:
            pytest.fail("the Watch stream ended without a NOT_SERVING update")
    except grpc.RpcError as error:
        pytest.fail(f"no NOT_SERVING update within {CONDITION_TIMEOUT} s: {error.code()}")
    finally:
        updates.cancel()

    # --unhealthy-after turns the whole server NOT_SERVING, not just the named service.
    assert check_health(worker, "") == NOT_SERVING


def test_health_watch_of_an_unknown_service_reports_service_unknown(start_worker):
    worker = start_worker()
    stub = health_pb2_grpc.HealthStub(worker.channel)

    updates = stub.Watch(health_pb2.HealthCheckRequest(service="NoSuchService"), timeout=RPC_TIMEOUT)
    try:
        # Per the health protocol the call stays open rather than failing.
        assert next(updates).status == SERVICE_UNKNOWN
    finally:
        updates.cancel()
    assert updates.code() == grpc.StatusCode.CANCELLED


def test_report_load_counts_work_in_flight(protos, start_worker):
    worker = start_worker("--capacity", "8")
    work = work_stub(protos, worker)
    started_at = now_in_ticks()

    calls = [
        work.DoWork.future(protos.work_pb2.WorkRequest(milliseconds=3000), timeout=RPC_TIMEOUT)
        for _ in range(3)
    ]

    def load_with_three_in_flight():
        load = report_load(protos, worker)
        return load if load.server_stats.current_requests == 3 else None

    load = wait_for("3 requests in flight in ReportLoad", CONDITION_TIMEOUT, load_with_three_in_flight)
    stats = load.server_stats
    assert stats.request_capacity == 8
    assert load.known_load_rate == -1  # not set
    # The last load change happened during this test (one second of slack each side).
    assert load.timestamp_ticks > TICKS_AT_UNIX_EPOCH
    assert started_at - TICKS_PER_SECOND <= load.timestamp_ticks <= now_in_ticks() + TICKS_PER_SECOND
    assert 0 <= stats.server_memory_usage_percent <= 100
    assert stats.server_utilization >= 0

    answers = [call.result() for call in calls]
    for answer in answers:
        assert answer.service_name == "Worker"  # empty service_name means the first service
        assert answer.pid == worker.pid
        assert answer.worker == worker.address
        assert 1 <= answer.current_requests <= 3
    # The call that started last ran while the other two were still working.
    assert max(answer.current_requests for answer in answers) == 3

    assert report_load(protos, worker).server_stats.current_requests == 0


def test_report_load_shows_busy_and_known_load_rate(protos, start_worker):
    worker = start_worker("--busy", "2", "--load-rate", "0.5")

    load = report_load(protos, worker)

    assert load.server_stats.current_requests == 2
    assert load.known_load_rate == 0.5
    assert load.server_stats.request_capacity == 4  # the default


def test_orca_reports_the_load_to_a_stock_grpc_client(protos, start_worker):
    # ORCA out of band, as a gRPC client with the weighted_round_robin policy reads it.
    worker = start_worker("--busy", "2", "--load-rate", "0.5")
    stub = protos.orca_pb2_grpc.OpenRcaServiceStub(worker.channel)
    request = protos.orca_pb2.OrcaLoadReportRequest()
    request.report_interval.FromMilliseconds(1000)
    reports = stub.StreamCoreMetrics(request, timeout=RPC_TIMEOUT)
    try:
        first = next(reports)
        assert first.named_metrics["current_requests"] == 2
        assert first.named_metrics["capacity"] == 4
        assert first.named_metrics["known_load_rate"] == 0.5
        assert first.named_metrics["Worker.current_requests"] == 2
        assert first.application_utilization == 0.5
        assert 0 <= first.mem_utilization <= 1 and first.cpu_utilization >= 0
        second = next(reports)  # the next, one interval later
        assert second.named_metrics["current_requests"] == 2
        assert second.rps_fractional >= 0
    finally:
        reports.cancel()


def report_where(reports, what, predicate):
    """The first ORCA report of the stream `reports` that `predicate` accepts; the stream's
    own deadline bounds the wait."""
    seen = []
    try:
        for report in reports:
            if predicate(report):
                return report
            seen.append(report.application_utilization)
    except grpc.RpcError as error:
        raise AssertionError(f"no report with {what} before {error.code()}; utilizations seen: {seen}")
    raise AssertionError(f"the stream ended without a report with {what}; utilizations seen: {seen}")


def test_orca_application_utilization_follows_the_calls_in_flight(protos, start_worker):
    worker = start_worker("--capacity", "4")
    stub = protos.orca_pb2_grpc.OpenRcaServiceStub(worker.channel)
    reports = stub.StreamCoreMetrics(protos.orca_pb2.OrcaLoadReportRequest(), timeout=CONDITION_TIMEOUT)
    try:
        assert next(reports).application_utilization == 0
        call = work_stub(protos, worker).DoWork.future(
            protos.work_pb2.WorkRequest(milliseconds=60_000), timeout=CONDITION_TIMEOUT
        )
        # application_utilization is the mean over a report's interval: a whole interval
        # with the call in flight, then one without.
        report_where(
            reports,
            "a call in flight for an interval",
            lambda r: r.named_metrics["current_requests"] == 1 and r.application_utilization == 0.25,
        )
        call.cancel()  # the worker ends the request when the client gives up
        report_where(
            reports,
            "no call in flight for an interval",
            lambda r: r.named_metrics["current_requests"] == 0 and r.application_utilization == 0,
        )
    finally:
        reports.cancel()


def per_call_report(protos, metadata):
    """The OrcaLoadReport of the `endpoint-load-metrics-bin` entry of `metadata` (pairs of key
    and value), or None."""
    values = [value for key, value in metadata if key == "endpoint-load-metrics-bin"]
    assert len(values) <= 1, metadata
    return protos.orca_load_report_pb2.OrcaLoadReport.FromString(values[0]) if values else None


def grpclib_call(worker, path, request, reply_type):
    """One unary call by grpclib, a stock gRPC client that shows every trailer: the answer (or
    the GRPCError) and the trailing metadata as (key, value) pairs. grpcio cannot be used
    for this: its core takes `endpoint-load-metrics-bin` for its own load balancing policies
    and leaves it out of the trailing metadata it shows the application."""

    async def call():
        channel = Channel(worker.host, worker.port)
        try:
            async with channel.request(
                path, Cardinality.UNARY_UNARY, type(request), reply_type, timeout=RPC_TIMEOUT
            ) as stream:
                await stream.send_message(request, end=True)
                try:
                    answer = await stream.recv_message()
                    await stream.recv_trailing_metadata()
                except GRPCError as error:
                    answer = error
                return answer, list(stream.trailing_metadata.items())
        finally:
            channel.close()

    return asyncio.run(call())


def do_work(protos, worker, **fields):
    return grpclib_call(
        worker, "/quaestor.example.Work/DoWork", protos.work_pb2.WorkRequest(**fields), protos.work_pb2.WorkResponse
    )


def test_per_call_orca_trailer_reports_the_load_as_the_call_ends(protos, start_worker):
    # gRFC A51 per-call reports: the load left when the call ends (the call itself no longer
    # in flight, other calls still counted).
    worker = start_worker("--busy", "1", "--orca-per-call")
    answer, trailers = do_work(protos, worker, milliseconds=0)
    assert answer.current_requests == 2  # inside the handler: the busy one and itself
    report = per_call_report(protos, trailers)
    assert report is not None, trailers
    assert report.named_metrics["current_requests"] == 1
    assert report.named_metrics["Worker.current_requests"] == 1
    assert report.named_metrics["capacity"] == 4
    assert report.application_utilization == 0.25
    assert report.rps_fractional == 0  # no rate in the first report
    assert 0 <= report.mem_utilization <= 1 and report.cpu_utilization >= 0

    # With another call in flight (a grpcio one), the trailer counts it.
    long_call = work_stub(protos, worker).DoWork.future(
        protos.work_pb2.WorkRequest(milliseconds=60_000), timeout=RPC_TIMEOUT
    )
    try:
        wait_for(
            "the long call in flight",
            CONDITION_TIMEOUT,
            lambda: report_load(protos, worker).server_stats.current_requests == 2 or None,
        )
        _, trailers = do_work(protos, worker, milliseconds=0)
        report = per_call_report(protos, trailers)
        assert report.named_metrics["current_requests"] == 2
        assert report.application_utilization == 0.5
    finally:
        long_call.cancel()

    # An error answer (trailers only) carries the report too.
    error, trailers = do_work(protos, worker, service_name="NoSuchService")
    assert isinstance(error, GRPCError) and error.status == Status.NOT_FOUND, error
    assert per_call_report(protos, trailers) is not None, trailers

    # The reporter's own services carry no trailer.
    answer, trailers = grpclib_call(
        worker,
        "/Quaestor.LoadReporting.LoadReportingGrpc/ReportLoad",
        protos.load_reporting_pb2.LoadReportRequest(service_name="Worker"),
        protos.load_reporting_pb2.LoadReportResponse,
    )
    assert answer.server_stats.request_capacity == 4
    assert per_call_report(protos, trailers) is None, trailers


def test_grpcio_weighted_round_robin_follows_the_per_call_reports(protos, start_worker):
    # grpcio reads the trailer itself: its weighted_round_robin policy, with per-call reports
    # (no out-of-band stream), weighs each worker by rps_fractional / application_utilization
    # and sends most calls to the one of lower utilization. Without the trailer it stays a
    # plain round robin (every other call to each worker).
    light = start_worker("--busy", "1", "--orca-per-call")  # 0.25
    heavy = start_worker("--busy", "3", "--orca-per-call")  # 0.75
    policy = {"enableOobLoadReport": False, "blackoutPeriod": "0s", "weightUpdatePeriod": "0.1s"}
    options = [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"weighted_round_robin": policy}]})),
        # The target names two addresses; one host name for the :authority header.
        ("grpc.default_authority", "localhost"),
    ]
    with grpc.insecure_channel(f"ipv4:{light.address},{heavy.address}", options=options) as channel:
        work = protos.work_pb2_grpc.WorkStub(channel)
        last = collections.deque(maxlen=100)

        def mostly_light():
            for _ in range(50):  # a probe of 50 calls: wait_for pauses between probes
                last.append(work.DoWork(protos.work_pb2.WorkRequest(), timeout=RPC_TIMEOUT).worker)
            return last.count(light.address) >= 80 or None

        wait_for("80 of 100 calls in a row to the less loaded worker", CONDITION_TIMEOUT, mostly_light)
        assert set(last) <= {light.address, heavy.address}


def test_no_per_call_orca_trailer_unless_asked(protos, start_worker):
    worker = start_worker()
    answer, trailers = do_work(protos, worker)
    assert answer.worker == worker.address
    assert per_call_report(protos, trailers) is None, trailers


def test_report_load_of_an_unknown_service_is_out_of_range(protos, start_worker):
    worker = start_worker()

    code = rpc_error_code(report_load, protos, worker, "NoSuchService")

    assert code == grpc.StatusCode.OUT_OF_RANGE


def test_reflection_lists_the_worker_services(start_worker):
    worker = start_worker()

    answer = reflect(worker, list_services="")

    names = {service.name for service in answer.list_services_response.service}
    assert names == {
        "grpc.health.v1.Health",
        "Quaestor.LoadReporting.LoadReportingGrpc",
        "quaestor.example.Work",
        "quaestor.push.v1.LoadPush",
        "Quaestor.ProcessAdministration.ProcessAdministrationGrpc",
        "xds.service.orca.v3.OpenRcaService",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    # Discovery is the balancer's business, not a worker's.
    assert "Quaestor.ServiceDiscovery.ServiceDiscoveryGrpc" not in names


def test_reflection_describes_the_load_report_wire_contract(start_worker):
    worker = start_worker()

    answer = reflect(worker, file_containing_symbol="Quaestor.LoadReporting.LoadReportingGrpc")

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    by_package = {file.package: file for file in files}
    assert "Quaestor.LoadReporting" in by_package, [file.name for file in files]
    load_reporting = by_package["Quaestor.LoadReporting"]

    services = {service.name: service for service in load_reporting.service}
    assert [method.name for method in services["LoadReportingGrpc"].method] == ["ReportLoad"]

    messages = {message.name: message for message in load_reporting.message_type}
    fields = {f.name: f.number for f in messages["LoadReportResponse"].field}
    assert fields == {"timestamp_ticks": 1, "known_load_rate": 2, "server_stats": 3}


def test_work_rejects_unknown_services_and_overlong_work(protos, start_worker):
    worker = start_worker()
    do_work = work_stub(protos, worker).DoWork
    request = protos.work_pb2.WorkRequest

    unknown = rpc_error_code(do_work, request(milliseconds=1, service_name="NoSuchService"), timeout=RPC_TIMEOUT)
    too_long = rpc_error_code(do_work, request(milliseconds=700_000), timeout=RPC_TIMEOUT)

    assert unknown == grpc.StatusCode.NOT_FOUND
    assert too_long == grpc.StatusCode.INVALID_ARGUMENT


def test_sigterm_stops_the_worker_with_exit_code_zero(start_worker):
    worker = start_worker()
    assert check_health(worker, "") == SERVING

    assert worker.stop() == 0
