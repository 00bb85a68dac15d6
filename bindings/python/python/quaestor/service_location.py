"""`ServiceLocation` where the C# Quaestor's Python client kept it, so that
`from quaestor.service_location import ServiceLocation` keeps working.

Unlike that client's class, quaestor's also has `scope`, and its constructor takes the scope
first: `ServiceLocation(scope, service_name, host_name, port)`.
"""

from ._quaestor import ServiceLocation

__all__ = ["ServiceLocation"]
