"""Registration in a real etcd: the key the C# Quaestor uses, removed on close(), on leaving a
`with Reporter()` block, on deregister(), and by lease expiry when the process is SIGKILLed."""

import json
import re
import signal
import sys
import textwrap

import quaestor
from support import CHANGE_TIMEOUT, Child, wait_for


def key(port: int, service: str = "Worker", scope: str = "") -> str:
    return f"services/{scope}/{service}/127.0.0.1/{port}/http"


def test_register_writes_the_key_and_close_removes_it(etcd):
    reporter = quaestor.Reporter()
    try:
        reporter.add_service("Worker")
        reporter.register(etcd=[etcd.url], host="127.0.0.1")
        assert key(reporter.port) in etcd.keys()
        value = json.loads(etcd.value(key(reporter.port)))
        assert value["service"] == "Worker"
        assert value.get("control", reporter.address) == reporter.address
    finally:
        reporter.close()
    assert reporter.closed
    assert key(reporter.port) not in etcd.keys()
    # A second close() does nothing.
    reporter.close()


def test_leaving_the_with_block_removes_the_key(etcd):
    with quaestor.Reporter() as reporter:
        reporter.add_service("Worker")
        # One endpoint may be given as a plain string.
        reporter.register(etcd=etcd.url, host="127.0.0.1")
        assert key(reporter.port) in etcd.keys()
    assert reporter.closed
    assert key(reporter.port) not in etcd.keys()


def test_deregister_removes_the_key_and_the_reporter_keeps_serving(etcd, reporter, report):
    reporter.add_service("Worker")
    reporter.register(etcd=[etcd.url], host="127.0.0.1")
    assert key(reporter.port) in etcd.keys()
    reporter.deregister()
    assert key(reporter.port) not in etcd.keys()
    assert not reporter.closed
    assert report().server_stats.request_capacity == 4


def test_every_service_is_registered_at_the_service_port_with_the_reporter_as_control(etcd, reporter):
    reporter.add_service("Worker")
    reporter.add_service("Other")
    # The worker serves its real service on another port; the reporter is its control endpoint.
    service_port = 5999
    reporter.register(etcd=[etcd.url], host="127.0.0.1", port=service_port, scope="blue")
    keys = etcd.keys()
    assert key(service_port, "Worker", "blue") in keys
    assert key(service_port, "Other", "blue") in keys
    assert key(reporter.port, "Worker", "blue") not in keys
    value = json.loads(etcd.value(key(service_port, "Worker", "blue")))
    assert value["control"] == reporter.address
    reporter.close()
    assert not {key(service_port, s, "blue") for s in ("Worker", "Other")} & etcd.keys()


def test_a_killed_process_is_removed_when_its_lease_expires(etcd, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import quaestor

        reporter = quaestor.Reporter()
        reporter.add_service("Worker")
        reporter.register(etcd=[sys.argv[1]], host="127.0.0.1", ttl=2)
        print(f"registered {reporter.port}", flush=True)
        sys.stdin.read()
        """
    )
    child = Child(
        "registering python",
        [sys.executable, "-c", script, etcd.url],
        tmp_path / "child.log",
        stdin=-1,  # subprocess.PIPE: the child waits until it is closed, or killed
    )
    try:
        port = int(child.wait_line(re.compile(r"registered (\d+)"))[1])
        assert key(port) in etcd.keys()
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        child.stop()
        if child.process.stdin:
            child.process.stdin.close()
    wait_for(
        f"{key(port)} to expire with the killed process's lease (ttl 2 s)",
        CHANGE_TIMEOUT,
        lambda: (key(port) not in etcd.keys()) or None,
    )
