"""Fork safety: Python workers are often served by pre-forking servers (gunicorn, uWSGI,
celery prefork, multiprocessing with fork). A child forked after its parent used quaestor gets
threads of its own and works; a Reporter inherited from the parent raises instead of hanging."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import quaestor

CHILD_TIMEOUT = 30.0


def _child(results, inherited: quaestor.Reporter, quaestor_bin: str, balancer: str) -> None:
    try:
        with quaestor.Reporter() as mine:
            load = mine.add_service("Worker", capacity=4)
            with load.request():
                # A real health check of the child's own reporter, by the quaestor binary.
                health = subprocess.run(
                    [quaestor_bin, "health", f"127.0.0.1:{mine.port}", "Worker"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                counted = load.current_requests
        found = quaestor.discover(balancer, "Worker")
        try:
            inherited.add_service("Other")
            refused = "the inherited reporter took a new service"
        except quaestor.QuaestorError as error:
            refused = "ok" if "before a fork" in str(error) else f"wrong error: {error}"
        results.put((health.returncode, health.stdout.strip(), counted, type(found).__name__, refused))
    except BaseException as error:  # reported to the parent, which asserts
        results.put(repr(error))


def test_a_forked_child_reports_and_discovers_after_its_parent_did(
    reporter: quaestor.Reporter, quaestor_bin: Path, load_balancer: str
) -> None:
    # The parent uses quaestor first: a reporter serving, a discovery call.
    reporter.add_service("Worker")
    quaestor.discover(load_balancer, "Worker")

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child, args=(results, reporter, str(quaestor_bin), load_balancer))
    child.start()
    try:
        outcome = results.get(timeout=CHILD_TIMEOUT)
        child.join(CHILD_TIMEOUT)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert outcome == (0, "SERVING", 1, "list", "ok"), outcome
    assert child.exitcode == 0
    # The parent's reporter is as it was.
    assert reporter.add_service("More").current_requests == 0
