from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiscoverServicesRequest(_message.Message):
    __slots__ = ("scope", "service_name", "max_count")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    scope: str
    service_name: str
    max_count: int
    def __init__(self, scope: _Optional[str] = ..., service_name: _Optional[str] = ..., max_count: _Optional[int] = ...) -> None: ...

class DiscoverServicesResponse(_message.Message):
    __slots__ = ("service_locations",)
    SERVICE_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    service_locations: _containers.RepeatedCompositeFieldContainer[ServiceLocationMsg]
    def __init__(self, service_locations: _Optional[_Iterable[_Union[ServiceLocationMsg, _Mapping]]] = ...) -> None: ...

class ServiceLocationMsg(_message.Message):
    __slots__ = ("scope", "service_name", "host_name", "port")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    scope: str
    service_name: str
    host_name: str
    port: int
    def __init__(self, scope: _Optional[str] = ..., service_name: _Optional[str] = ..., host_name: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...
