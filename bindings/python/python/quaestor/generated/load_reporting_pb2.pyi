from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadReportRequest(_message.Message):
    __slots__ = ("scope", "service_name")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    scope: str
    service_name: str
    def __init__(self, scope: _Optional[str] = ..., service_name: _Optional[str] = ...) -> None: ...

class LoadReportResponse(_message.Message):
    __slots__ = ("timestamp_ticks", "known_load_rate", "server_stats")
    TIMESTAMP_TICKS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_LOAD_RATE_FIELD_NUMBER: _ClassVar[int]
    SERVER_STATS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ticks: int
    known_load_rate: float
    server_stats: ServerStats
    def __init__(self, timestamp_ticks: _Optional[int] = ..., known_load_rate: _Optional[float] = ..., server_stats: _Optional[_Union[ServerStats, _Mapping]] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("request_capacity", "current_requests", "server_utilization", "server_memory_usage_percent")
    REQUEST_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    SERVER_MEMORY_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    request_capacity: int
    current_requests: int
    server_utilization: float
    server_memory_usage_percent: float
    def __init__(self, request_capacity: _Optional[int] = ..., current_requests: _Optional[int] = ..., server_utilization: _Optional[float] = ..., server_memory_usage_percent: _Optional[float] = ...) -> None: ...
