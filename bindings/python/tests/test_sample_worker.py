"""sdk-examples/python/hello_worker.py under a real `quaestor cluster`: the cluster starts it
and checks its health, the worker registers itself in a real etcd with its reporter as the
control endpoint, and the cluster's balancer (reading that etcd) offers its service port.

The agent is `excludeFromServiceRegistry`: the cluster would register the member with its
service port as the control endpoint, where no load is reported, under the same key as the
worker's own registration. The cluster's heartbeat checks {HostName}:{Port}, the service port,
which is why the worker answers grpc.health.v1 there too."""

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import quaestor
from support import CHANGE_TIMEOUT, REPO_ROOT, STOP_TIMEOUT, Child, free_ports, wait_for

HELLO_WORKER = REPO_ROOT / "sdk-examples" / "python" / "hello_worker.py"


def test_the_cluster_runs_the_python_worker_and_the_balancer_offers_it(quaestor_bin, etcd, wire, tmp_path: Path):
    port, reporter_port, balancer_port = free_ports(3)
    arguments = shlex.join(
        [
            str(HELLO_WORKER),
            "--port", "{Port}",
            "--reporter-port", str(reporter_port),
            "--etcd", etcd.url,
            "--host", "{HostName}",
        ]
    )
    config = tmp_path / "quaestor.config.yml"
    # JSON strings are YAML strings: paths and arguments need no YAML quoting of their own.
    config.write_text(
        "clusterConfig:\n"
        "  heartBeatIntervalSeconds: 1\n"
        "  memberMaxShutdownTimeSeconds: 10\n"
        f"  etcd: [ {json.dumps(etcd.url)} ]\n"
        "loadBalancerConfig:\n"
        "  hostName: 127.0.0.1\n"
        f"  port: {balancer_port}\n"
        "  probeIntervalMs: 100\n"
        "agents:\n"
        "  - agentType: Worker\n"
        f"    executablePath: {json.dumps(sys.executable)}\n"
        f"    commandLineArguments: {json.dumps(arguments)}\n"
        "    processCount: 1\n"
        "    clusterShutdownAction: Kill\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {port} ]\n"
        "    serviceNames: [ Worker ]\n"
        "    excludeFromServiceRegistry: true\n"
    )
    key = f"services//Worker/127.0.0.1/{port}/http"
    control = tmp_path / "control.sock"
    cluster = Child(
        "quaestor cluster",
        [quaestor_bin, "cluster", "--config", config, "--control", control],
        tmp_path / "cluster.log",
    )

    def member() -> dict:
        """The worker's line of `quaestor cluster status --json`."""
        out = subprocess.run(
            [quaestor_bin, "cluster", "status", "--json", "--control", control],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.returncode == 0, out.stderr
        [worker] = json.loads(out.stdout)["members"]
        return worker

    try:
        balancer = cluster.wait_listening()
        expected = quaestor.ServiceLocation("", "Worker", "127.0.0.1", port)
        wait_for(
            f"the balancer at {balancer} to offer the worker at its service port {port}\n{cluster.log_tail()}",
            CHANGE_TIMEOUT,
            lambda: quaestor.discover(balancer, "Worker", top=True) == [expected] or None,
        )
        assert json.loads(etcd.value(key))["control"] == f"127.0.0.1:{reporter_port}"
        # The cluster's heartbeat finds it healthy at its service port: Ready, never restarted.
        ready = wait_for(
            f"the cluster to find the worker Ready\n{cluster.log_tail()}",
            CHANGE_TIMEOUT,
            lambda: (lambda m: m if m["state"] == "Ready" and m["last_health"] == "SERVING" else None)(member()),
        )
        assert (ready["port"], ready["restarts"]) == (port, 0)

        # The location offered serves the real service, and the call is counted.
        with grpc.insecure_channel(expected.address) as channel:
            stub = wire.work_pb2_grpc.WorkStub(channel)
            answer = stub.DoWork(wire.work_pb2.WorkRequest(milliseconds=1), timeout=10)
        assert answer.worker == expected.address
        assert answer.service_name == "Worker"
        assert answer.current_requests == 1
        assert answer.pid == ready["pid"]
        assert member()["restarts"] == 0

        cluster.signal(signal.SIGTERM)
        assert cluster.wait(STOP_TIMEOUT + 10) == 0, cluster.log_tail()
        # The worker deregistered itself when the cluster stopped it.
        assert key not in etcd.keys()
    finally:
        cluster.stop()


def test_the_python_worker_alone_counts_its_calls_and_stops_on_sigint(wire, tmp_path: Path):
    reporter_port = free_ports(1)[0]
    worker = Child(
        "hello_worker.py",
        [sys.executable, HELLO_WORKER, "--port", "0", "--reporter-port", str(reporter_port)],
        tmp_path / "worker.log",
    )
    try:
        address = worker.wait_listening()
        with (
            grpc.insecure_channel(address) as service,
            grpc.insecure_channel(f"127.0.0.1:{reporter_port}") as control,
        ):
            work = wire.work_pb2_grpc.WorkStub(service)
            reports = wire.load_reporting_pb2_grpc.LoadReportingGrpcStub(control)

            def in_flight() -> int:
                request = wire.load_reporting_pb2.LoadReportRequest(service_name="Worker")
                return reports.ReportLoad(request, timeout=5).server_stats.current_requests

            assert in_flight() == 0
            # A call that lasts long enough to be seen in flight through the reporter.
            call = work.DoWork.future(wire.work_pb2.WorkRequest(milliseconds=3000), timeout=20)
            wait_for("the call to be counted by the reporter", CHANGE_TIMEOUT, lambda: in_flight() == 1 or None)
            answer = call.result(timeout=20)
            assert (answer.worker, answer.current_requests) == (address, 1)
            assert in_flight() == 0

            with pytest.raises(grpc.RpcError) as error:
                work.DoWork(wire.work_pb2.WorkRequest(service_name="Other"), timeout=10)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND

        worker.signal(signal.SIGINT)
        assert worker.wait() == 0, worker.log_tail()
    finally:
        worker.stop()
