#!/usr/bin/env python3
"""Discovery calls per second from Python: quaestor's clients next to a raw grpcio channel.

Against one real `quaestor load-balancer` (its registry: one Worker agent, a `quaestor.Reporter`
in this process), in the same run, the cases take turns round by round and the median round
counts:

- `grpcio`: `ServiceDiscoveryGrpcStub.DiscoverTopServices` over one reused channel (stubs
  from `quaestor.generated`), the floor a Python program gets;
- `DiscoveryClient`: `quaestor.DiscoveryClient.discover_top`;
- `discover()`: `quaestor.discover(..., top=True)` (a client shared per address);
- `grpc.aio` and `aio.DiscoveryClient`: the same, awaited one after the other in a loop.

Target: `DiscoveryClient` at >= 0.8x `grpcio`. Needs a release build of both (the balancer
binary and the package; `make bench-python` builds them) and grpcio + protobuf:

    python bindings/python/bench/bench_discovery.py --quaestor target/release/quaestor \\
        [--seconds 2] [--rounds 5]
"""

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import grpc

import quaestor
from quaestor.generated import service_discovery_pb2, service_discovery_pb2_grpc

SERVICE = "Bench"
LISTENING = re.compile(r"listening on (\S+:\d+)")


def start_balancer(binary: str, worker_port: int, folder: Path) -> tuple[subprocess.Popen, str]:
    """A `quaestor load-balancer` whose registry is one Worker agent at `worker_port`."""
    config = folder / "quaestor.loadbalancer.config.yml"
    config.write_text(
        "loadBalancerConfig:\n  hostName: 127.0.0.1\n  port: 1\n"
        "agents:\n  - agentType: Worker\n    hostName: 127.0.0.1\n"
        f"    ports: [ {worker_port} ]\n    serviceNames: [ {SERVICE} ]\n"
    )
    process = subprocess.Popen(
        [binary, "load-balancer", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"the balancer did not start (exit code {process.poll()})")
        time.sleep(0.05)
    return process, found[0]


def sync_rate(call: Callable[[], object], seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    until = start + seconds
    while time.perf_counter() < until:
        call()
        calls += 1
    return calls / (time.perf_counter() - start)


def async_rate(make_call: Callable[[], Callable[[], object]], seconds: float) -> float:
    async def run() -> float:
        call = make_call()
        calls, start = 0, time.perf_counter()
        until = start + seconds
        while time.perf_counter() < until:
            await call()  # type: ignore[misc]
            calls += 1
        return calls / (time.perf_counter() - start)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quaestor", default=os.environ.get("QUAESTOR_BIN", "target/release/quaestor"))
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with quaestor.Reporter() as reporter, tempfile.TemporaryDirectory() as folder:
        reporter.add_service(SERVICE, capacity=4)
        balancer, address = start_balancer(args.quaestor, reporter.port, Path(folder))
        try:
            client = quaestor.DiscoveryClient(address)
            deadline = time.monotonic() + 30
            while len(client.discover_top(SERVICE, max_count=1)) != 1:
                if time.monotonic() > deadline:
                    sys.exit("the worker never became discoverable")
                time.sleep(0.05)
            channel = grpc.insecure_channel(address)
            stub = service_discovery_pb2_grpc.ServiceDiscoveryGrpcStub(channel)
            request = service_discovery_pb2.DiscoverServicesRequest(service_name=SERVICE, max_count=1)

            def grpcio() -> None:
                assert len(stub.DiscoverTopServices(request, timeout=5).service_locations) == 1

            def discovery_client() -> None:
                assert len(client.discover_top(SERVICE, max_count=1)) == 1

            def one_shot() -> None:
                assert len(quaestor.discover(address, SERVICE, max_count=1, top=True)) == 1

            def grpc_aio() -> Callable[[], object]:
                aio_channel = grpc.aio.insecure_channel(address)
                aio_stub = service_discovery_pb2_grpc.ServiceDiscoveryGrpcStub(aio_channel)

                async def call() -> None:
                    answer = await aio_stub.DiscoverTopServices(request, timeout=5)
                    assert len(answer.service_locations) == 1

                return call

            def quaestor_aio() -> Callable[[], object]:
                aio_client = quaestor.aio.DiscoveryClient(address)

                async def call() -> None:
                    assert len(await aio_client.discover_top(SERVICE, max_count=1)) == 1

                return call

            cases: list[tuple[str, Callable[[float], float]]] = [
                ("grpcio (one channel)", lambda s: sync_rate(grpcio, s)),
                ("quaestor.DiscoveryClient", lambda s: sync_rate(discovery_client, s)),
                ("quaestor.discover()", lambda s: sync_rate(one_shot, s)),
                ("grpc.aio (one channel)", lambda s: async_rate(grpc_aio, s)),
                ("quaestor.aio.DiscoveryClient", lambda s: async_rate(quaestor_aio, s)),
            ]
            for _, case in cases:  # warm-up: every path connected once
                case(0.2)
            rates: list[list[float]] = [[] for _ in cases]
            for round in range(args.rounds):
                for i in range(len(cases)):
                    index = (i + round) % len(cases)
                    rates[index].append(cases[index][1](args.seconds))
        finally:
            balancer.terminate()
            try:
                balancer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                balancer.kill()
                balancer.wait()

    medians = [statistics.median(r) for r in rates]
    print(
        f"DiscoverTopServices(max_count 1), one caller, {args.rounds} rounds of {args.seconds} s "
        "per case (median round; sync cases to grpcio, aio cases to grpc.aio):"
    )
    for (name, _), rate, median in zip(cases, rates, medians):
        baseline = medians[3] if "aio" in name else medians[0]
        rounds = " ".join(f"{r:.0f}" for r in rate)
        print(f"  {name:<30} {median:>8.0f} calls/s  {median / baseline:>5.2f}x  (rounds: {rounds})")


if __name__ == "__main__":
    main()
