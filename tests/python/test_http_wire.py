"""The HTTP listener of `quaestor load-balancer --http 127.0.0.1:0`, read as operators' tools
read it: /metrics parsed by the official `prometheus_client` parsers (Prometheus text and
OpenMetrics) and checked by `promtool check metrics`, /status.json, /healthz and /readyz,
over real `quaestor worker`s, a real balancer and (for readiness) a real etcd."""

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import grpc
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

import support
from support import balancer_config, free_port, missing_tool, wait_for

RPC_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0
# How long the balancer may take to print its lines, probe its workers, see a flip.
CONDITION_TIMEOUT = 15.0
DISCOVERY_CALLS = 7


def get(http, path, accept=None):
    """(status, content type, body) of GET http://ADDRESS/PATH."""
    request = urllib.request.Request(f"http://{http}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
            return answer.status, answer.headers.get("Content-Type"), answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Content-Type"), error.read().decode()


def start_balancer(start_process, quaestor_bin, config):
    """`quaestor load-balancer --http 127.0.0.1:0`; returns (process, gRPC address, HTTP address)."""
    balancer = start_process(
        str(quaestor_bin), "load-balancer", "--config", str(config), "--port", "0",
        "--http", "127.0.0.1:0",
    )
    grpc_line = balancer.wait_for_line("`listening on`", CONDITION_TIMEOUT,
                                       lambda line: line.startswith("listening on "))
    http_line = balancer.wait_for_line("`http listening on`", CONDITION_TIMEOUT,
                                       lambda line: line.startswith("http listening on "))
    return balancer, grpc_line.split()[-1], http_line.split()[-1]


def workers_config(tmp_path, workers):
    ports = ", ".join(str(w.port) for w in workers)
    return balancer_config(
        tmp_path,
        "  - agentType: Worker\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {ports} ]\n"
        "    serviceNames: [ Worker ]\n",
    )


def scrape(http):
    status, content_type, text = get(http, "/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return text


def families(text):
    """Metric families by name, parsed by prometheus_client's Prometheus text parser."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(fams, family, sample_name, **labels):
    """The value of the one sample of `family` named `sample_name` with these labels (0 if none)."""
    found = [s.value for s in fams[family].samples
             if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (family, labels, found)
    return found[0] if found else 0


def status_json(http):
    status, content_type, body = get(http, "/status.json")
    assert status == 200, body
    assert content_type == "application/json", content_type
    return json.loads(body)


def health_by_port(status):
    return {location["port"]: location["health"]
            for service in status["services"] if service["service"] == "Worker"
            for location in service["locations"]}


def promtool_check(text):
    """`promtool check metrics` on a scrape: no error and no lint problem."""
    if shutil.which("promtool") is None:
        missing_tool("promtool is not installed (scripts/setup.sh installs Debian's prometheus)")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=30, check=False)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        f"promtool check metrics: exit {checked.returncode}\n{checked.stdout}\n{checked.stderr}"
    )


def test_metrics_status_and_health_of_a_balancer(protos, quaestor_bin, start_worker, start_process, tmp_path):
    workers = [start_worker("--capacity", "4", "--busy", str(busy)) for busy in (0, 1, 2)]
    ports = {w.port for w in workers}
    _, address, http = start_balancer(start_process, quaestor_bin, workers_config(tmp_path, workers))

    assert get(http, "/healthz")[0] == 200
    assert get(http, "/no/such/page")[0] == 404
    wait_for("/readyz to answer 200", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)
    status = wait_for("every worker healthy in /status.json", CONDITION_TIMEOUT,
                      lambda: (lambda s: s if health_by_port(s) == {p: "healthy" for p in ports} else None)(
                          status_json(http)))
    assert status["role"] == "load-balancer" and status["ready"] is True
    assert status["registry"] == {"backend": "memory", "up": True, "updates": status["registry"]["updates"],
                                  "locations": 3, "revision": 0, "resyncs": 0}
    for location in status["services"][0]["locations"]:
        assert location["servingStatus"] == "SERVING"
        assert location["capacity"] == 4 and location["reportAgeSeconds"] >= 0

    # N discovery calls: the counter grows by exactly N, and so does the latency histogram.
    before = families(scrape(http))
    with grpc.insecure_channel(address) as channel:
        stub = protos.service_discovery_pb2_grpc.ServiceDiscoveryGrpcStub(channel)
        request = protos.service_discovery_pb2.DiscoverServicesRequest(service_name="Worker")
        for _ in range(DISCOVERY_CALLS):
            assert len(stub.DiscoverServices(request, timeout=RPC_TIMEOUT).service_locations) == 3
        top = stub.DiscoverTopServices(
            protos.service_discovery_pb2.DiscoverServicesRequest(service_name="Worker", max_count=1),
            timeout=RPC_TIMEOUT)
        assert len(top.service_locations) == 1
        try:
            stub.DiscoverServices(protos.service_discovery_pb2.DiscoverServicesRequest(service_name=""),
                                  timeout=RPC_TIMEOUT)
            raise AssertionError("an empty service name must be INVALID_ARGUMENT")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = scrape(http)
    after = families(text)
    requests = "quaestor_discovery_requests"
    ok = {"method": "DiscoverServices", "code": "OK"}
    assert (sample_value(after, requests, "quaestor_discovery_requests_total", **ok)
            - sample_value(before, requests, "quaestor_discovery_requests_total", **ok)) == DISCOVERY_CALLS
    assert sample_value(after, requests, "quaestor_discovery_requests_total",
                        method="DiscoverServices", code="INVALID_ARGUMENT") == 1
    duration = "quaestor_discovery_request_duration_seconds"
    assert (sample_value(after, duration, f"{duration}_count", method="DiscoverServices")
            - sample_value(before, duration, f"{duration}_count", method="DiscoverServices")) == DISCOVERY_CALLS + 1
    hand_outs = "quaestor_balancer_hand_outs"
    assert (sample_value(after, hand_outs, "quaestor_balancer_hand_outs_total", service="Worker")
            - sample_value(before, hand_outs, "quaestor_balancer_hand_outs_total", service="Worker")) == 1

    # Per-location gauges name each worker's port.
    for gauge in ("quaestor_location_current_requests", "quaestor_location_capacity",
                  "quaestor_location_utilization", "quaestor_location_report_age_seconds"):
        labelled = {int(s.labels["port"]) for s in after[gauge].samples if s.labels["service"] == "Worker"}
        assert labelled == ports, (gauge, labelled)
    assert sample_value(after, "quaestor_balancer_locations", "quaestor_balancer_locations",
                        service="Worker", state="healthy") == 3
    assert sample_value(after, "quaestor_balancer_monitor_connections",
                        "quaestor_balancer_monitor_connections") == 3
    assert after["process_resident_memory_bytes"].samples[0].value > 0
    assert after["process_open_fds"].samples[0].value > 0
    promtool_check(text)

    # OpenMetrics when asked, as Prometheus asks.
    status_code, content_type, om_text = get(
        http, "/metrics", accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert status_code == 200 and content_type.startswith("application/openmetrics-text"), content_type
    assert om_text.endswith("# EOF\n")
    om = {family.name: family for family in parse_openmetrics(om_text)}
    assert sample_value(om, requests, "quaestor_discovery_requests_total", **ok) >= DISCOVERY_CALLS

    # A worker turned NOT_SERVING shows unhealthy in /status.json and in the state gauge.
    flipped = workers[1]
    flipped.process.send_signal(signal.SIGUSR1)
    expected = {p: ("unhealthy" if p == flipped.port else "healthy") for p in ports}
    status = wait_for("the flipped worker unhealthy in /status.json", CONDITION_TIMEOUT,
                      lambda: (lambda s: s if health_by_port(s) == expected else None)(status_json(http)))
    flipped_view = next(l for l in status["services"][0]["locations"] if l["port"] == flipped.port)
    assert flipped_view["servingStatus"] == "NOT_SERVING"
    assert status["services"][0]["unhealthy"] == 1 and status["services"][0]["healthy"] == 2
    fams = families(scrape(http))
    locations = "quaestor_balancer_locations"
    assert sample_value(fams, locations, locations, service="Worker", state="unhealthy") == 1
    assert sample_value(fams, locations, locations, service="Worker", state="healthy") == 2
    assert sample_value(fams, "quaestor_location_healthy", "quaestor_location_healthy",
                        service="Worker", port=str(flipped.port)) == 0
    # A flipped worker is a fleet matter, not the balancer's: it stays ready.
    assert get(http, "/readyz")[0] == 200


def start_etcd(start_process, tmp_path, client_port):
    """A real single-member etcd on `client_port`; returns its process once it is healthy."""
    return support.start_etcd(start_process, tmp_path / "etcd", client_port, "http-wire", CONDITION_TIMEOUT)


def test_readyz_is_503_until_the_registry_loads(quaestor_bin, start_process, tmp_path):
    # The balancer's etcd is not running yet: its registry is not loaded.
    etcd_port = free_port()
    config = balancer_config(
        tmp_path,
        "  - agentType: KeyValueStore\n"
        "    hostName: 127.0.0.1\n"
        f"    ports: [ {etcd_port} ]\n",
    )
    _, _, http = start_balancer(start_process, quaestor_bin, config)
    status_code, _, reason = get(http, "/readyz")
    assert status_code == 503, reason
    assert "registry not loaded" in reason
    assert get(http, "/healthz")[0] == 200
    status = status_json(http)
    assert status["ready"] is False and "registry" in status["notReadyReason"]
    assert status["registry"]["backend"] == "etcd" and status["registry"]["up"] is False
    fams = families(scrape(http))
    assert sample_value(fams, "quaestor_registry_up", "quaestor_registry_up") == 0
    assert sample_value(fams, "quaestor_ready", "quaestor_ready") == 0

    # etcd comes up: the balancer loads it (retrying with backoff) and turns ready.
    etcd = start_etcd(start_process, tmp_path, etcd_port)
    wait_for("/readyz to flip to 200", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)
    fams = families(scrape(http))
    assert sample_value(fams, "quaestor_registry_up", "quaestor_registry_up") == 1
    assert sample_value(fams, "quaestor_registry_revision", "quaestor_registry_revision") >= 1
    assert sample_value(fams, "quaestor_registry_resyncs", "quaestor_registry_resyncs_total") == 0
    assert status_json(http)["registry"]["up"] is True

    # etcd goes away and comes back: the balancer's watch breaks, it reloads, and says so.
    etcd.stop()
    wait_for("the registry to turn stale", CONDITION_TIMEOUT,
             lambda: status_json(http)["registry"]["up"] is False or None)
    start_etcd(start_process, tmp_path, etcd_port)
    registry = wait_for("the registry to resync", CONDITION_TIMEOUT,
                        lambda: (lambda r: r if r["up"] and r["resyncs"] >= 1 else None)(
                            status_json(http)["registry"]))
    assert registry["revision"] >= 1
    fams = families(scrape(http))
    assert sample_value(fams, "quaestor_registry_resyncs", "quaestor_registry_resyncs_total") >= 1
