#!/usr/bin/env python3
"""A stock Python grpcio (gRPC C-core) client that balances with xDS over a quaestor
balancer, with no quaestor code and no generated code: the same interface as tests/go-client.

It calls quaestor.example.Work/DoWork on `-target xds:///NAME` (grpc reads the bootstrap file
naming the balancer from the GRPC_XDS_BOOTSTRAP environment variable) in a loop and prints,
for each call, the worker that answered ("worker HOST:PORT") or the error ("error CODE", the
canonical status name, with the details on stderr), until it is killed.

With -schedule FILE it instead warms up until -warmup distinct workers answered, prints
"ready", replays the open-loop arrival schedule of FILE (one arrival a line, microseconds from
the start) with one call per arrival, and writes one line per call to -out:
"LATENCY_US CODE WORKER" (latency from the scheduled arrival, CODE the numeric status, WORKER
"-" when the call failed).
"""

import argparse
import re
import sys
import threading
import time

import grpc

METHOD = "/quaestor.example.Work/DoWork"


def work_request(target: str) -> bytes:
    """WorkRequest { milliseconds = 1, service_name = the target's service }, so that the
    call counts in the load of the service it was balanced for."""
    name = target.rsplit("/", 1)[-1].encode()
    if len(name) > 127:
        raise SystemExit(f"service name too long: {name!r}")
    return bytes([0x08, 0x01, 0x12, len(name)]) + name


# The request of every call, set from -target in main.
REQUEST = b""

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>ns|us|µs|ms|s|m|h)")


def duration(text: str) -> float:
    """A Go duration (20ms, 5s, 1.5s, 250us, 2m) in seconds."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20ms, 5s)")
    return float(match["number"]) * _UNITS[match["unit"]]


def varint(message: bytes, at: int):
    """The varint at `at`: (value, index after it), or None if it runs past the end."""
    value = shift = 0
    while at < len(message) and shift < 64:
        byte = message[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def worker_of(message: bytes) -> str:
    """WorkResponse.worker (field 1, a string), "?" if the message does not parse."""
    at = 0
    while at < len(message):
        tag = varint(message, at)
        if tag is None:
            return "?"
        key, at = tag
        number, kind = key >> 3, key & 7
        if kind == 0:
            value = varint(message, at)
            if value is None:
                return "?"
            at = value[1]
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        elif kind == 2:
            length = varint(message, at)
            if length is None or length[1] + length[0] > len(message):
                return "?"
            start, at = length[1], length[1] + length[0]
            if number == 1:
                return message[start:at].decode("utf-8", "replace")
        else:
            return "?"
    return "?"


def replay(do_work, deadline: float, schedule: str, out: str, warmup: int) -> int:
    arrivals = []
    with open(schedule, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            if not text.isdigit():
                print(f"{schedule}:{number}: not a number of microseconds: {text!r}", file=sys.stderr)
                return 1
            arrivals.append(int(text) / 1e6)

    seen = set()
    give_up = time.monotonic() + 60
    while len(seen) < warmup:
        if time.monotonic() > give_up:
            print(f"warm-up: only {len(seen)} of {warmup} workers answered within 60 s", file=sys.stderr)
            return 1
        try:
            seen.add(worker_of(do_work(REQUEST, timeout=deadline)))
        except grpc.RpcError:
            time.sleep(0.01)
    print("ready", flush=True)

    outcomes = [None] * len(arrivals)
    done = threading.Semaphore(0)
    start = time.monotonic()

    def finished(index: int, at: float):
        def record(future):
            latency_us = int((time.monotonic() - at) * 1e6)
            error = future.exception()
            if error is None:
                outcomes[index] = f"{latency_us} 0 {worker_of(future.result())}"
            else:
                outcomes[index] = f"{latency_us} {error.code().value[0]} -"
            done.release()

        return record

    for index, offset in enumerate(arrivals):
        at = start + offset
        pause = at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        do_work.future(REQUEST, timeout=deadline).add_done_callback(finished(index, at))
    for _ in arrivals:
        done.acquire()
    with open(out, "w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in outcomes)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-target", required=True, help="xds:///NAME")
    parser.add_argument("-interval", type=duration, default=duration("20ms"), help="pause between two calls")
    parser.add_argument("-deadline", type=duration, default=duration("5s"), help="deadline of each call")
    parser.add_argument("-schedule", help="replay this arrival schedule instead of calling in a loop")
    parser.add_argument("-out", help="with -schedule: where to write one line per call")
    parser.add_argument("-warmup", type=int, default=1, help="with -schedule: distinct workers that must answer first")
    args = parser.parse_args()
    global REQUEST
    REQUEST = work_request(args.target)

    with grpc.insecure_channel(args.target) as channel:
        # No serializers: the request and the response travel as bytes.
        do_work = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        if args.schedule:
            if not args.out:
                parser.error("-schedule needs -out FILE")
            return replay(do_work, args.deadline, args.schedule, args.out, args.warmup)
        while True:
            try:
                print("worker", worker_of(do_work(REQUEST, timeout=args.deadline)), flush=True)
            except grpc.RpcError as error:
                print("error", error.code().name, flush=True)
                print("call failed:", error.code().name, error.details(), file=sys.stderr, flush=True)
            time.sleep(args.interval)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
