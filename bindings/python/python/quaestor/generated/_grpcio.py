"""Imported by the `_pb2_grpc` modules before `import grpc`: an ImportError naming the extra
to install if grpcio is missing or older than the code was generated for."""

from . import _require
from ._versions import GRPCIO

_require("grpc", "grpcio", GRPCIO)
