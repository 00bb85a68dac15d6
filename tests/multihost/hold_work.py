"""Holds COUNT DoWork calls of MS milliseconds open on the worker at ADDR (run inside a lab
namespace with the generated protos on PYTHONPATH); the worker counts them as current
requests until they end, or until this process is stopped (which cancels them)."""

import sys

import grpc
from quaestor.example import work_pb2, work_pb2_grpc


def main() -> None:
    address, count, milliseconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with grpc.insecure_channel(address) as channel:
        stub = work_pb2_grpc.WorkStub(channel)
        calls = [stub.DoWork.future(work_pb2.WorkRequest(milliseconds=milliseconds)) for _ in range(count)]
        print(f"holding {count} calls on {address}", flush=True)
        for call in calls:
            call.result()


if __name__ == "__main__":
    main()
