"""quaestor across real distinct hosts: three network namespaces with a cluster of workers
each, etcd in a fourth, the balancer on host a (see conftest.py and docs/multihost.md).

The tests run in this order and share one lab; each heals what it broke (test 2 leaves host
c cut off for test 3, which heals it; test 3 alone cuts it first)."""

import sys
import time
from pathlib import Path

import pytest

from conftest import DETECTION_BOUND, LEASE_TTL, POLL_SLACK, RETURN_BOUND, figure
from support import wait_for

# How long etcd may take past the TTL to drop an expired lease's keys (it checks every 500 ms),
# plus one etcdctl round trip.
EXPIRY_BOUND = LEASE_TTL + 1.0 + POLL_SLACK
# How long a worker's changed load may take to show in the ranking (pushed: ~50 ms; polled
# every probeIntervalMs) on a busy machine.
RANKING_TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def healed(multihost):
    """After each test: every fault still in place is healed and the lab is whole again,
    unless the test kept its faults for the next one (multihost.keep_faults)."""
    multihost.keep_faults = False
    yield
    if multihost.keep_faults:
        return
    for host in list(multihost.cut_hosts):
        multihost.lab.heal(host)
        multihost.cut_hosts.discard(host)
    for host in list(multihost.blackholed):
        multihost.lab.unblackhole(host, "etcd")
        multihost.blackholed.discard(host)
    everything = multihost.all_workers()
    wait_for("the lab to be whole again (every worker in etcd and offered)", RETURN_BOUND * 2,
             lambda: (multihost.check_running(), multihost.registered() == everything)[1]
             and set(multihost.discover() or []) == everything or None)


def watch_answers(multihost, what, bound, until, always):
    """Polls the balancer's answers (from host a) until `until(offered)` holds, checking
    `always(offered)` on every answer; returns the seconds it took. Fails past `bound`."""
    start = time.monotonic()
    answers = unanswered = 0
    while True:
        offered = multihost.discover()
        elapsed = time.monotonic() - start
        if offered is None:
            unanswered += 1
        else:
            answers += 1
            offered = set(offered)
            problem = always(offered)
            assert problem is None, f"while waiting for {what}, after {elapsed:.2f} s: {problem}"
            if until(offered):
                assert unanswered == 0, f"the balancer did not answer {unanswered} of {answers + unanswered} asks"
                return elapsed
        assert elapsed < bound, f"no {what} within {bound} s; last answer {offered}"


def expect_offered(required):
    """An `always` check: every location of `required` is in the answer."""
    def check(offered):
        missing = required - offered
        return f"{sorted(missing)} missing from the answers" if missing else None
    return check


def wait_registered(multihost, what, bound, until, always):
    """Like watch_answers, over the keys in etcd (etcdctl in the etcd namespace)."""
    start = time.monotonic()
    while True:
        registered = multihost.registered()
        elapsed = time.monotonic() - start
        if registered is not None:
            problem = always(registered)
            assert problem is None, f"while waiting for {what}, after {elapsed:.2f} s: {problem}"
            if until(registered):
                return elapsed
        assert elapsed < bound, f"no {what} within {bound} s; last registered {registered}"


def test_1_the_balancer_on_a_offers_and_reaches_the_workers_of_b_and_c(multihost):
    offered = multihost.discover()
    for host in ("b", "c"):
        assert multihost.workers(host) <= set(offered), f"host {host}'s workers are not all offered: {offered}"
        for address, _ in multihost.workers(host):
            assert address == multihost.lab.address(host)
    # Real calls across the namespaces, from host a, to every worker the balancer names.
    for location in sorted(offered):
        assert multihost.health(location) == "SERVING", location


def cut_c(multihost):
    """Cuts host c off and waits until its workers left the answers and etcd; returns the
    two times."""
    c = multihost.workers("c")
    others = multihost.workers("a") | multihost.workers("b")
    multihost.pids_before_cut = multihost.member_pids("c")
    start = time.monotonic()
    multihost.lab.cut("c")
    multihost.cut_hosts.add("c")
    left = watch_answers(multihost, "host c's workers to leave the answers", DETECTION_BOUND,
                         until=lambda offered: not (offered & c), always=expect_offered(others))
    wait_registered(multihost, "host c's registrations to expire", EXPIRY_BOUND - (time.monotonic() - start),
                    until=lambda registered: not (registered & c), always=expect_offered(others))
    return left, time.monotonic() - start


def test_2_a_host_cut_off_leaves_the_answers_and_the_others_stay(multihost):
    left, expired = cut_c(multihost)
    figure(f"host c cut off: its workers left the answers after {left:.2f} s "
           f"(bound: lease TTL {LEASE_TTL:g} s + detection = {DETECTION_BOUND:g} s); "
           f"its registrations expired from etcd after {expired:.2f} s (bound {EXPIRY_BOUND:g} s)")
    # Still cut: test 3 heals it.
    multihost.keep_faults = True


def test_3_a_healed_host_returns(multihost):
    if "c" not in multihost.cut_hosts:
        cut_c(multihost)
    c = multihost.workers("c")
    others = multihost.workers("a") | multihost.workers("b")
    multihost.lab.heal("c")
    multihost.cut_hosts.discard("c")
    registered = wait_registered(multihost, "host c's registrations back in etcd", RETURN_BOUND,
                                 until=lambda registered: c <= registered, always=expect_offered(others))
    offered = watch_answers(multihost, "host c's workers back in the answers", RETURN_BOUND,
                            until=lambda offered: c <= offered, always=expect_offered(others))
    figure(f"host c healed: back in etcd after {registered:.2f} s, back in the answers "
           f"{offered:.2f} s later (bound {RETURN_BOUND:g} s each)")
    for location in sorted(c):
        assert multihost.health(location) == "SERVING", location
    # Cut off, host c's cluster still reached its own workers: none was restarted.
    assert multihost.member_pids("c") == multihost.pids_before_cut, "host c's workers were restarted"


def test_4_etcd_partitioned_from_one_host(multihost):
    b = multihost.workers("b")
    others = multihost.workers("a") | multihost.workers("c")
    pids = multihost.member_pids("b")
    assert len(pids) == len(b) and all(pids.values()), pids

    multihost.lab.blackhole("b", "etcd")
    multihost.blackholed.add("b")
    expired = wait_registered(multihost, "host b's registrations to expire", EXPIRY_BOUND,
                              until=lambda registered: not (registered & b), always=expect_offered(others))
    left = watch_answers(multihost, "host b's workers to leave the answers", DETECTION_BOUND,
                         until=lambda offered: not (offered & b), always=expect_offered(others))
    figure(f"etcd partitioned from host b: its registrations expired after {expired:.2f} s "
           f"(bound {EXPIRY_BOUND:g} s), out of the answers {left:.2f} s later")
    # Host b itself is fine: the same processes run, and host a still reaches them.
    assert multihost.member_pids("b") == pids
    for location in sorted(b):
        assert multihost.health(location) == "SERVING", location

    multihost.lab.unblackhole("b", "etcd")
    multihost.blackholed.discard("b")
    back = wait_registered(multihost, "host b's registrations back in etcd", RETURN_BOUND,
                           until=lambda registered: b <= registered, always=expect_offered(others))
    offered = watch_answers(multihost, "host b's workers back in the answers", RETURN_BOUND,
                            until=lambda offered: b <= offered, always=expect_offered(others))
    figure(f"etcd partition healed: host b back in etcd after {back:.2f} s, in the answers "
           f"{offered:.2f} s later (bound {RETURN_BOUND:g} s each)")
    assert multihost.member_pids("b") == pids, "host b's workers were restarted"


def test_5_host_utilisation_ranks_across_hosts(multihost):
    a, b, c = (sorted(multihost.workers(host)) for host in ("a", "b", "c"))
    loaded = b[0]

    def ranked(expected):
        def probe():
            top = multihost.discover(top=True)
            return top if top == expected else None
        return probe

    # Idle, every host is equal: the C# order falls back to host name (the address), then port.
    wait_for("the idle order a, b, c", RANKING_TIMEOUT, ranked(a + b + c))

    # Three calls in flight on one worker of host b: b's host utilisation is 3/12, a's and c's
    # 0, so c's workers go before b's, even before b's idle ones (whose own utilisation is 0,
    # as c's are, and whose address sorts first): the host decides.
    holder = multihost.lab.start(
        "a", "hold-work", sys.executable, str(Path(__file__).with_name("hold_work.py")),
        f"{loaded[0]}:{loaded[1]}", "3", "120000", env={"PYTHONPATH": str(multihost.protos_dir)})
    start = time.monotonic()
    try:
        wait_for("the 3 calls in flight on the loaded worker", RANKING_TIMEOUT,
                 lambda: (holder.running() or pytest.fail(f"hold_work exited:\n{holder.tail()}"))
                 and multihost.current_requests(loaded) == 3 or None)
        expected = a + c + b[1:] + [loaded]
        top = wait_for("a, c, then host b (its loaded worker last)", RANKING_TIMEOUT, ranked(expected))
        figure(f"host b loaded (3 calls in flight on {loaded[0]}:{loaded[1]}): ranked after host c "
               f"{time.monotonic() - start:.2f} s after the calls were sent; top: {[f'{h}:{p}' for h, p in top]}")
    finally:
        holder.stop()
    # The calls cancelled, host b is back in its place.
    wait_for("the idle order again", RANKING_TIMEOUT, ranked(a + b + c))
