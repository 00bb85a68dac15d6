"""The HTTP listener of `quaestor sidecar --http 127.0.0.1:0` over a real `quaestor worker`:
/metrics parsed by `prometheus_client` and checked by `promtool check metrics`,
/status.json and /readyz, as the worker turns NOT_SERVING and back."""

import signal

from test_http_wire import families, get, promtool_check, sample_value, scrape, status_json

from support import wait_for

CONDITION_TIMEOUT = 15.0
PROBES = "quaestor_sidecar_probes"


def test_probe_metrics_and_readiness_of_a_sidecar(quaestor_bin, start_worker, start_process):
    worker = start_worker()
    sidecar = start_process(str(quaestor_bin), "sidecar", "--service", "Worker", "--port", str(worker.port),
                            "--interval", "100ms", "--http", "127.0.0.1:0")
    http_line = sidecar.wait_for_line("`http listening on`", CONDITION_TIMEOUT,
                                      lambda line: line.startswith("http listening on "))
    http = http_line.split()[-1]

    assert get(http, "/healthz")[0] == 200
    wait_for("/readyz to answer 200", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)
    status = status_json(http)
    assert status["role"] == "sidecar" and status["ready"] is True, status
    assert (status["service"], status["port"], status["check"]) == ("Worker", worker.port, "grpc")
    assert status["healthy"] is True and status["registered"] is None and status["probesOk"] >= 1, status

    text = scrape(http)
    promtool_check(text)
    fams = families(text)
    assert sample_value(fams, PROBES, f"{PROBES}_total", service="Worker", result="ok") >= 1
    duration = "quaestor_sidecar_probe_duration_seconds"
    assert sample_value(fams, duration, f"{duration}_count", service="Worker") >= 1
    assert sample_value(fams, "quaestor_sidecar_worker_healthy", "quaestor_sidecar_worker_healthy",
                        service="Worker") == 1
    assert "quaestor_sidecar_registered" in fams and not fams["quaestor_sidecar_registered"].samples

    # NOT_SERVING: unready, failed probes counted; SERVING again: ready.
    worker.process.send_signal(signal.SIGUSR1)
    answer = wait_for("/readyz to answer 503", CONDITION_TIMEOUT,
                      lambda: (lambda a: a if a[0] == 503 else None)(get(http, "/readyz")))
    assert "probe failed" in answer[2], answer
    fams = families(scrape(http))
    assert sample_value(fams, PROBES, f"{PROBES}_total", service="Worker", result="failed") >= 1
    assert sample_value(fams, "quaestor_sidecar_worker_healthy", "quaestor_sidecar_worker_healthy",
                        service="Worker") == 0
    assert status_json(http)["healthy"] is False
    worker.process.send_signal(signal.SIGUSR2)
    wait_for("/readyz to answer 200 again", CONDITION_TIMEOUT, lambda: get(http, "/readyz")[0] == 200 or None)


def registered(http):
    fams = families(scrape(http))
    return sample_value(fams, "quaestor_sidecar_registered", "quaestor_sidecar_registered", service="Worker")


def test_registration_state_of_a_sidecar_with_etcd(quaestor_bin, start_worker, start_process, etcd):
    worker = start_worker()
    sidecar = start_process(str(quaestor_bin), "sidecar", "--service", "Worker", "--port", str(worker.port),
                            "--interval", "100ms", "--etcd", etcd, "--http", "127.0.0.1:0")
    http = sidecar.wait_for_line("`http listening on`", CONDITION_TIMEOUT,
                                 lambda line: line.startswith("http listening on ")).split()[-1]
    wait_for("the worker registered", CONDITION_TIMEOUT, lambda: registered(http) == 1 or None)
    assert status_json(http)["registered"] is True
    # NOT_SERVING: withdrawn from etcd, and the gauge says so.
    worker.process.send_signal(signal.SIGUSR1)
    wait_for("the worker withdrawn", CONDITION_TIMEOUT, lambda: registered(http) == 0 or None)
    status = status_json(http)
    assert status["registered"] is False and status["registrationErrors"] == 0, status
    promtool_check(scrape(http))
