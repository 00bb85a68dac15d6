"""Checks `quaestor load-balancer` on the wire with stock Python gRPC (grpcio): a client built
only from proto/ gets the same answers as `quaestor discover`, and the contract's errors."""

import json
import subprocess

import grpc

from support import balancer_config, wait_for

RPC_TIMEOUT = 10.0
CONDITION_TIMEOUT = 15.0


def start_balancer(start_server, tmp_path, workers):
    """`quaestor load-balancer` over a C#-style config whose Worker agent lists `workers`."""
    ports = ", ".join(str(w.port) for w in workers)
    config = balancer_config(
        tmp_path,
        "  - agentType: Worker\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {ports} ]\n"
        "    serviceNames: [ Worker ]\n",
    )
    return start_server("load-balancer", "--config", str(config), "--port", "0")


def discover(protos, balancer, top, service="Worker", max_count=0, scope=""):
    """The (scope, service_name, host_name, port) tuples a grpcio client gets."""
    stub = protos.service_discovery_pb2_grpc.ServiceDiscoveryGrpcStub(balancer.channel)
    request = protos.service_discovery_pb2.DiscoverServicesRequest(
        scope=scope, service_name=service, max_count=max_count
    )
    call = stub.DiscoverTopServices if top else stub.DiscoverServices
    answer = call(request, timeout=RPC_TIMEOUT)
    return [(l.scope, l.service_name, l.host_name, l.port) for l in answer.service_locations]


def discover_cli(quaestor_bin, balancer, top):
    """The same, as `quaestor discover --json` prints it."""
    args = [str(quaestor_bin), "discover", balancer.address, "Worker", "--json"] + (["--top"] if top else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=RPC_TIMEOUT, check=False)
    assert done.returncode == 0, done
    return [(l["scope"], l["service_name"], l["host_name"], l["port"]) for l in json.loads(done.stdout)]


def test_grpcio_and_quaestor_discover_agree(protos, quaestor_bin, start_worker, start_server, tmp_path):
    workers = [start_worker("--capacity", "4", "--busy", str(busy)) for busy in (3, 0, 1)]
    balancer = start_balancer(start_server, tmp_path, workers)
    expected = {("", "Worker", "127.0.0.1", w.port) for w in workers}

    assert set(discover(protos, balancer, top=False)) == expected
    assert set(discover_cli(quaestor_bin, balancer, top=False)) == expected
    # Best first: the least busy worker, then the next; both clients see that order (each
    # asks once; a hand-out weighs until the next load report, 100 ms later).
    by_load = [("", "Worker", "127.0.0.1", workers[i].port) for i in (1, 2, 0)]
    wait_for("the ranking by load", CONDITION_TIMEOUT, lambda: discover(protos, balancer, top=True) == by_load or None)
    wait_for("the same ranking from the CLI", CONDITION_TIMEOUT,
             lambda: discover_cli(quaestor_bin, balancer, top=True) == by_load or None)
    assert len(discover(protos, balancer, top=True, max_count=1)) == 1


def test_the_discovery_contract_errors(protos, start_worker, start_server, tmp_path):
    balancer = start_balancer(start_server, tmp_path, [start_worker()])

    assert discover(protos, balancer, top=False, service="NoSuchService") == []
    assert discover(protos, balancer, top=True, scope="elsewhere") == []
    for top in (False, True):
        try:
            discover(protos, balancer, top=top, service="")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("an empty service name must be INVALID_ARGUMENT")
