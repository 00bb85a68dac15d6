"""What `import quaestor` offers: the native module's names, ServiceDiscovery, the version."""

import re
from importlib.metadata import version

import quaestor
import quaestor._errors as errors
import quaestor._quaestor as native


def test_all_names_the_public_api_and_each_exists():
    public = (
        {name for name in dir(native) if not name.startswith("_")}
        | set(errors.__all__)
        | {"__version__", "ServiceDiscovery", "aio"}
    )
    assert set(quaestor.__all__) == public
    for name in quaestor.__all__:
        assert getattr(quaestor, name) is not None
    assert quaestor.Reporter is native.Reporter
    assert quaestor.TimeoutError is errors.TimeoutError


def test_every_error_kind_has_one_exception_class():
    kinds = [getattr(errors, name).kind for name in errors.__all__ if name != "QuaestorError"]
    assert len(kinds) == len(set(kinds)) == 11
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), quaestor.QuaestorError)


def test_version_is_the_package_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", quaestor.__version__)
    assert quaestor.__version__ == version("quaestor")


def test_the_csharp_quaestor_client_modules_still_import():
    from quaestor.service_discovery import ServiceDiscovery
    from quaestor.service_location import ServiceLocation

    assert ServiceDiscovery is quaestor.ServiceDiscovery
    assert ServiceLocation is quaestor.ServiceLocation


def test_service_location_value_semantics():
    a = quaestor.ServiceLocation("", "Worker", "127.0.0.1", 5161)
    b = quaestor.ServiceLocation("", "Worker", "127.0.0.1", 5161)
    c = quaestor.ServiceLocation("blue", "Worker", "127.0.0.1", 5161)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a.address == "127.0.0.1:5161"
    assert "Worker" in repr(a) and "5161" in repr(a)
