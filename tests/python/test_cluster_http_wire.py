"""The HTTP listener of `quaestor cluster --http 127.0.0.1:0`, read as operators' tools read
it: /metrics parsed by `prometheus_client` and checked by `promtool check metrics`,
/status.json, /healthz and /readyz, over two real `quaestor worker` members; one is killed
with SIGKILL and the cluster's restart counter (reason crash) and status follow."""

import os
import signal

from test_http_wire import families, get, promtool_check, sample_value, scrape, status_json

from support import wait_for

# How long the cluster may take to start its members, see a crash and restart one.
CONDITION_TIMEOUT = 30.0
RESTARTS = "quaestor_member_restarts"


def cluster_config(tmp_path, quaestor_bin):
    path = tmp_path / "quaestor.config.yml"
    path.write_text(
        "clusterConfig:\n"
        "  name: http_wire\n"
        "  heartBeatIntervalSeconds: 1\n"
        "  memberResponseTimeOutSeconds: 2\n"
        "  memberMaxShutdownTimeSeconds: 5\n"
        "agents:\n"
        "  - agentType: Worker\n"
        f"    executablePath: {quaestor_bin}\n"
        "    commandLineArguments: worker --host {HostName} --port {Port}\n"
        "    processCount: 2\n"
        "    clusterShutdownAction: Kill\n"
        "    hostName: 127.0.0.1\n"
        "    serviceNames: [ Worker ]\n"
        # A crashed member waits 3 s before it starts again: /readyz is seen at 503 meanwhile.
        "    restartBackoff:\n"
        "      initialSeconds: 3\n"
    )
    return path


def members_by_name(status):
    return {m["member"]: m for m in status["members"]}


def test_metrics_status_and_readiness_of_a_cluster(quaestor_bin, start_process, tmp_path):
    config = cluster_config(tmp_path, quaestor_bin)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    cluster = start_process(str(quaestor_bin), "cluster", "--config", str(config),
                            "--http", "127.0.0.1:0", env=env)
    http_line = cluster.wait_for_line("`http listening on`", CONDITION_TIMEOUT,
                                      lambda line: line.startswith("http listening on "))
    http = http_line.split()[-1]

    assert get(http, "/healthz")[0] == 200
    wait_for("/readyz to answer 200", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)
    status = status_json(http)
    assert status["role"] == "cluster" and status["ready"] is True and status["notReadyReason"] is None
    assert status["name"] == "http_wire"
    members = members_by_name(status)
    assert set(members) == {"Worker[0]", "Worker[1]"}, members
    for member in members.values():
        assert member["state"] == "Ready" and member["pid"] > 0 and member["port"] > 0, member
        assert member["crashes"] == 0 and member["uptime_seconds"] >= 0, member

    text = scrape(http)
    promtool_check(text)
    before = families(text)
    assert sample_value(before, "quaestor_cluster_members", "quaestor_cluster_members",
                        agent="Worker", state="Ready") == 2
    assert sample_value(before, "quaestor_cluster_members", "quaestor_cluster_members",
                        agent="Worker", state="BackingOff") == 0
    assert sample_value(before, "quaestor_cluster_registered_members",
                        "quaestor_cluster_registered_members") == 2
    for name in members:
        assert sample_value(before, "quaestor_member_up", "quaestor_member_up", member=name) == 1
        assert sample_value(before, "quaestor_member_uptime_seconds", "quaestor_member_uptime_seconds",
                            member=name) >= 0
        for reason in ("crash", "health", "recycle", "operator", "config"):
            assert sample_value(before, RESTARTS, f"{RESTARTS}_total", member=name, reason=reason) == 0
    assert before["process_resident_memory_bytes"].samples[0].value > 0

    # A member killed: /readyz leaves 200, the crash is counted once, and a new process serves.
    victim = members["Worker[1]"]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for("/readyz to answer 503 after the kill", CONDITION_TIMEOUT,
             lambda: (lambda answer: answer if answer[0] == 503 else None)(get(http, "/readyz")))

    def restarted():
        s = status_json(http)
        m = members_by_name(s)["Worker[1]"]
        return s if m["state"] == "Ready" and m["pid"] not in (None, victim["pid"]) else None

    status = wait_for("Worker[1] Ready again with a new pid", CONDITION_TIMEOUT, restarted)
    after_members = members_by_name(status)
    assert after_members["Worker[1]"]["crashes"] == 1
    assert after_members["Worker[1]"]["last_reason_kind"] == "crash"
    assert after_members["Worker[0]"]["pid"] == members["Worker[0]"]["pid"]
    wait_for("/readyz to answer 200 again", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)

    text = scrape(http)
    promtool_check(text)
    after = families(text)
    assert (sample_value(after, RESTARTS, f"{RESTARTS}_total", member="Worker[1]", reason="crash")
            - sample_value(before, RESTARTS, f"{RESTARTS}_total", member="Worker[1]", reason="crash")) == 1
    assert sample_value(after, RESTARTS, f"{RESTARTS}_total", member="Worker[0]", reason="crash") == 0
    for reason in ("health", "recycle", "operator", "config"):
        assert sample_value(after, RESTARTS, f"{RESTARTS}_total", member="Worker[1]", reason=reason) == 0


def test_members_output_and_the_cluster_page(quaestor_bin, start_process, tmp_path):
    """`/members/NAME/log` serves a member's recent output (404 for a stranger), and the
    status page, in headless Chromium, lists the members with their state, pid and a link to
    their output."""
    from test_status_page import Page  # Chromium and its DevTools session

    config = cluster_config(tmp_path, quaestor_bin)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    cluster = start_process(str(quaestor_bin), "cluster", "--config", str(config),
                            "--http", "127.0.0.1:0", env=env)
    http = cluster.wait_for_line("`http listening on`", CONDITION_TIMEOUT,
                                 lambda line: line.startswith("http listening on ")).split()[-1]
    wait_for("/readyz to answer 200", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)
    members = members_by_name(status_json(http))

    # Every member prints `listening on ...` when it starts: that line is in its output.
    status, content_type, text = wait_for(
        "Worker[0]'s output", CONDITION_TIMEOUT,
        lambda: (lambda a: a if a[0] == 200 and "listening on" in a[2] else None)(
            get(http, "/members/Worker%5B0%5D/log")))
    assert content_type.startswith("text/plain"), content_type
    assert f"127.0.0.1:{members['Worker[0]']['port']}" in text, text
    assert get(http, "/members/Nobody/log")[0] == 404

    page = Page(start_process, tmp_path / "chromium-profile", f"http://{http}/")
    try:
        rows = wait_for("the page to list both members Ready", CONDITION_TIMEOUT, lambda: (
            lambda r: r if {m: s for m, s, _, _ in r} == {"Worker[0]": "Ready", "Worker[1]": "Ready"} else None)(
            page.evaluate("[...document.querySelectorAll('tr[data-member]')].map(r => "
                          "[r.dataset.member, r.dataset.state, r.dataset.pid, r.querySelector('a').getAttribute('href')])")))
        for member, _, pid, link in rows:
            assert int(pid) == members[member]["pid"], (member, pid)
            assert link == f"/members/{member.replace('[', '%5B').replace(']', '%5D')}/log", link
    finally:
        page.close()
