"""The balancer's live status page (`/` of `quaestor load-balancer --http`) in a real headless
Chromium (Debian's `chromium`), read through the DevTools protocol: the rendered page shows
every worker's port and health, and a worker flipped NOT_SERVING shows unhealthy within 3 s
with no reload. A screenshot of the page is kept as an artifact."""

import json
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import websocket

from support import missing_tool, wait_for
from test_http_wire import start_balancer, workers_config

# The bound: a flip shows on the open page this fast (the page polls every second).
FLIP_SHOWS_WITHIN = 3.0
BROWSER_TIMEOUT = 30.0


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    missing_tool("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    raise AssertionError("unreachable")


class Page:
    """One page of a headless Chromium, driven over its DevTools WebSocket."""

    def __init__(self, start_process, profile: Path, url: str):
        self.process = start_process(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1000,700",
            url,
        )
        # Chromium writes the port it picked to DevToolsActivePort in its profile.
        active = profile / "DevToolsActivePort"
        port = wait_for("Chromium's DevTools port", BROWSER_TIMEOUT,
                        lambda: active.read_text().split()[0] if active.exists() and active.read_text().strip() else None)

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                targets = json.load(answer)
            return next((t["webSocketDebuggerUrl"] for t in targets
                         if t.get("type") == "page" and t.get("url", "").startswith(url)), None)

        self.socket = websocket.create_connection(wait_for("the page's target", BROWSER_TIMEOUT, page_target),
                                                  timeout=BROWSER_TIMEOUT, suppress_origin=True)
        self.ids = 0

    def call(self, method: str, **params):
        self.ids += 1
        self.socket.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.ids:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def health_by_port(self):
        """{port: health} of the rows the page has rendered now."""
        rows = self.evaluate(
            "JSON.stringify([...document.querySelectorAll('tr[data-port]')]"
            ".map(r => [r.dataset.port, r.dataset.health]))")
        return {int(port): health for port, health in json.loads(rows or "[]")}

    def screenshot(self, path: Path):
        import base64
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        self.socket.close()


def test_the_status_page_shows_every_worker_and_follows_a_flip(quaestor_bin, start_worker, start_process, tmp_path):
    workers = [start_worker("--capacity", "4", "--busy", str(busy)) for busy in (0, 1, 2)]
    ports = {w.port for w in workers}
    _, _, http = start_balancer(start_process, quaestor_bin, workers_config(tmp_path, workers))
    url = f"http://{http}/"
    page = Page(start_process, tmp_path / "chromium-profile", url)
    try:
        wait_for("the page to show every worker healthy", BROWSER_TIMEOUT,
                 lambda: page.health_by_port() == {p: "healthy" for p in ports} or None)
        assert "Worker" in page.evaluate("document.querySelector('section[data-service]').textContent")

        flipped = workers[0]
        flipped.process.send_signal(signal.SIGUSR1)
        signalled = time.monotonic()
        # No reload: the same page, polling /status.json, must show it within the bound.
        wait_for(f"the page to show {flipped.port} unhealthy", FLIP_SHOWS_WITHIN,
                 lambda: page.health_by_port().get(flipped.port) == "unhealthy" or None)
        shown_after = time.monotonic() - signalled
        assert page.health_by_port() == {p: ("unhealthy" if p == flipped.port else "healthy") for p in ports}
        assert page.evaluate("location.href") == url, "the page was not reloaded"

        artifacts = Path(os.environ.get("QUAESTOR_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "status-page.png"
        page.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"the flip showed after {shown_after:.2f} s; screenshot: {shot}")
    finally:
        page.close()
