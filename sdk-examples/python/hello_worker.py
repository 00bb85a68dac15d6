#!/usr/bin/env python3
"""A Python gRPC worker that reports its load through quaestor.

It serves the repository's example service, quaestor.example.Work/DoWork
(proto/quaestor/example/work.proto), with grpcio on --port, and counts each call as a request
of its service `Worker`. A quaestor Reporter serves health and load reports on --reporter-port.
Given etcd endpoints, it registers `Worker` at the service port with the reporter as the
control endpoint, so balancers send clients to --port and ask the reporter how loaded it is.

The service port also answers grpc.health.v1 for `Worker` (kept equal to the reporter's), so
that whoever checks the address it serves on, as `quaestor cluster` does, sees its health.

    python hello_worker.py --port 5161 --reporter-port 5261 [--etcd http://127.0.0.1:2379 --host 127.0.0.1]

It prints `listening on HOST:PORT` once it serves; SIGTERM or SIGINT deregisters it, stops both
servers and exits with 0. Needs grpcio, grpcio-tools, grpcio-health-checking and quaestor.
No generated code is kept: the message classes are built from work.proto at startup.
"""

import argparse
import os
import signal
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_tools import protoc

import quaestor

SERVICE = "Worker"
PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
WORK_PROTO = "quaestor/example/work.proto"


def work_messages() -> tuple[type[Message], type[Message]]:
    """WorkRequest and WorkResponse, compiled from work.proto by grpc_tools' protoc."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "work.binpb")
        if protoc.main(["protoc", f"--proto_path={PROTO_DIR}", f"--descriptor_set_out={out}", WORK_PROTO]) != 0:
            raise SystemExit(f"cannot compile {PROTO_DIR / WORK_PROTO}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    request, response = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"quaestor.example.{name}"))
        for name in ("WorkRequest", "WorkResponse")
    )
    return request, response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port of the Work service (0: any free one)")
    parser.add_argument("--reporter-port", type=int, required=True, help="port of health and load reports")
    parser.add_argument("--host", default="127.0.0.1", help="host to serve on and to register")
    parser.add_argument("--etcd", action="append", default=[], help="etcd endpoint to register in (repeatable)")
    args = parser.parse_args()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    WorkRequest, WorkResponse = work_messages()
    reporter = quaestor.Reporter(host=args.host, port=args.reporter_port)
    load = reporter.add_service(SERVICE, capacity=4)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    address = f"{args.host}:{port}"

    def do_work(request, context):
        if request.service_name not in ("", SERVICE):
            context.abort(grpc.StatusCode.NOT_FOUND, f"this worker serves {SERVICE} only")
        with load.request():
            time.sleep(request.milliseconds / 1000)
            return WorkResponse(
                worker=address,
                pid=os.getpid(),
                service_name=SERVICE,
                current_requests=load.current_requests,
            )

    work = grpc.unary_unary_rpc_method_handler(
        do_work,
        request_deserializer=WorkRequest.FromString,
        response_serializer=WorkResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("quaestor.example.Work", {"DoWork": work})]
    )
    service_health = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(service_health, server)

    def set_serving(serving: bool) -> None:
        """The same health on the reporter and on the service port."""
        load.set_serving(serving)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            service_health.set(name, status)

    server.start()
    set_serving(True)
    if args.etcd:
        reporter.register(etcd=args.etcd, host=args.host, port=port)
    print(f"listening on {address}", flush=True)

    stop.wait()
    # Deregister first, so that balancers stop offering this worker, then let calls finish.
    set_serving(False)
    reporter.close()
    server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
