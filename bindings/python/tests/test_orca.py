"""ORCA out of band (xds.service.orca.v3.OpenRcaService/StreamCoreMetrics) from a Python
reporter, as a stock grpcio client reads it: application_utilization follows the requests in
flight (over the capacity)."""

import importlib
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import grpc
import pytest

from support import CHANGE_TIMEOUT, REPO_ROOT, compile_protos

ORCA_PROTOS = ["xds/data/orca/v3/orca_load_report.proto", "xds/service/orca/v3/orca.proto"]


@pytest.fixture(scope="module")
def orca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The grpcio modules of the cncf/xds ORCA protos in proto/ (`orca_pb2`, `orca_pb2_grpc`,
    `orca_load_report_pb2`). Their package `xds` cannot be mistaken for the one under test."""
    out = tmp_path_factory.mktemp("orca")
    compile_protos(REPO_ROOT / "proto", ORCA_PROTOS, out)
    sys.path.insert(0, str(out))
    try:
        yield SimpleNamespace(
            orca_load_report_pb2=importlib.import_module("xds.data.orca.v3.orca_load_report_pb2"),
            orca_pb2=importlib.import_module("xds.service.orca.v3.orca_pb2"),
            orca_pb2_grpc=importlib.import_module("xds.service.orca.v3.orca_pb2_grpc"),
        )
    finally:
        sys.path.remove(str(out))


def report_where(reports: Iterator, what: str, done: Callable[[object], bool]):
    """The first report that satisfies `done`; the call's deadline bounds the wait."""
    for report in reports:
        if done(report):
            return report
    raise AssertionError(f"the stream ended before {what}")


def test_application_utilization_follows_the_requests_in_flight(orca, load, channel: grpc.Channel):
    stub = orca.orca_pb2_grpc.OpenRcaServiceStub(channel)
    reports = stub.StreamCoreMetrics(orca.orca_pb2.OrcaLoadReportRequest(), timeout=CHANGE_TIMEOUT)
    try:
        first = next(reports)
        assert first.application_utilization == 0
        assert first.named_metrics["capacity"] == 4
        with load.request():
            # application_utilization is the mean over a report's interval: wait for a whole
            # interval with the request in flight, then one without.
            busy = report_where(
                reports,
                "a request in flight for an interval",
                lambda r: r.named_metrics["current_requests"] == 1 and r.application_utilization == 0.25,
            )
            assert busy.named_metrics["Worker.current_requests"] == 1
        report_where(
            reports,
            "no request in flight for an interval",
            lambda r: r.named_metrics["current_requests"] == 0 and r.application_utilization == 0,
        )
    finally:
        reports.cancel()


def test_each_new_stream_reports_the_load_at_once(orca, load, channel: grpc.Channel):
    stub = orca.orca_pb2_grpc.OpenRcaServiceStub(channel)

    def utilization() -> float:
        reports = stub.StreamCoreMetrics(orca.orca_pb2.OrcaLoadReportRequest(), timeout=CHANGE_TIMEOUT)
        try:
            return next(reports).application_utilization
        finally:
            reports.cancel()

    load.start_request()
    load.start_request()
    load.start_request()
    assert utilization() == 0.75
    load.end_request()
    assert utilization() == 0.5
    load.end_request()
    load.end_request()
    assert utilization() == 0
