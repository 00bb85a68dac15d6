"""The multi-host lab: network namespaces joined by a bridge, and processes run inside them.

Topology (everything but the namespaces themselves lives inside them; nothing is created in
the root namespace):

    switch namespace: bridge `br0`, and one veth end per host (`to-a`, `to-b`, ...)
    host namespaces:  the other veth end, `eth0`, with one address of SUBNET, and `lo` up

Processes are started with `ip netns exec NS ...` (which execs the command, so the pid we
hold is the command's own). Cleanup stops every process started (SIGTERM, then SIGKILL),
then SIGKILLs whatever still runs in a lab namespace (by pid, from `ip netns pids`), then
deletes the namespaces, which deletes their veths and the bridge.
"""

import atexit
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

# A private /24 used only inside the lab's namespaces.
SUBNET = "10.199.77"
PREFIX_LEN = 24
# host → last byte of its address.
ADDRESSES = {"etcd": 2, "a": 10, "b": 11, "c": 12}
STOP_TIMEOUT = 5.0


class LabError(RuntimeError):
    """An `ip` command of the lab's setup failed."""


def run(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Runs a command, capturing its output; raises LabError (with its stderr) if it fails."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed with code {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Started:
    """A process started in a namespace; its output goes to `log`."""

    name: str
    namespace: str
    process: subprocess.Popen
    log: Path
    # False once stop() was asked: its exit is no failure.
    wanted: bool = True

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; reaped either way."""
        self.wanted = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


@dataclass
class Lab:
    """The namespaces of one run (named `qmh-<pid>-<host>`) and the processes started in them."""

    log_dir: Path
    prefix: str = field(default_factory=lambda: f"qmh-{os.getpid()}")
    created: List[str] = field(default_factory=list)
    started: List[Started] = field(default_factory=list)
    _closed: bool = False

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return self.namespace("sw")

    @staticmethod
    def address(host: str) -> str:
        return f"{SUBNET}.{ADDRESSES[host]}"

    def build(self) -> None:
        """Creates the switch and one namespace per host of ADDRESSES, wired to the bridge.
        Registers the cleanup with atexit too, in case the run dies before its finalizers."""
        atexit.register(self.close)
        self._add_namespace(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in ADDRESSES:
            ns = self.namespace(host)
            self._add_namespace(ns)
            # Both ends are created inside namespaces: the switch end in the switch, its peer
            # straight into the host.
            run("ip", "-n", self.switch, "link", "add", f"to-{host}", "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", self.switch, "link", "set", f"to-{host}", "master", "br0")
            run("ip", "-n", self.switch, "link", "set", f"to-{host}", "up")
            run("ip", "-n", ns, "addr", "add", f"{self.address(host)}/{PREFIX_LEN}", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def _add_namespace(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self.created.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    # Faults.

    def cut(self, host: str) -> None:
        """Takes `host`'s port on the switch down: nothing reaches it, nothing leaves it."""
        run("ip", "-n", self.switch, "link", "set", f"to-{host}", "down")

    def heal(self, host: str) -> None:
        run("ip", "-n", self.switch, "link", "set", f"to-{host}", "up")

    def blackhole(self, host: str, target: str) -> None:
        """Inside `host`, drops every packet to `target`'s address (the rest still flows)."""
        run("ip", "-n", self.namespace(host), "route", "add", "blackhole", f"{self.address(target)}/32")

    def unblackhole(self, host: str, target: str) -> None:
        run("ip", "-n", self.namespace(host), "route", "del", "blackhole", f"{self.address(target)}/32",
            check=False)

    # Processes.

    def start(self, host: str, name: str, *command: str, env: Optional[Dict[str, str]] = None) -> Started:
        """Starts `command` in `host`'s namespace, its stdout and stderr in LOG_DIR/NAME.log."""
        ns = self.namespace(host)
        log = self.log_dir / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, *command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Its own session: a signal to the test run's process group (Ctrl-C, `timeout`)
                # reaches pytest alone, whose cleanup then stops everything in order.
                start_new_session=True,
            )
        started = Started(name, ns, process, log)
        self.started.append(started)
        return started

    def exec(self, host: str, *command: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Runs `command` to its end in `host`'s namespace."""
        return run("ip", "netns", "exec", self.namespace(host), *command, check=False, timeout=timeout)

    def close(self) -> None:
        """Stops every process, then removes every namespace (idempotent; never raises)."""
        if self._closed:
            return
        self._closed = True
        for started in reversed(self.started):
            try:
                started.stop()
            except Exception as error:  # noqa: BLE001 - cleanup goes on whatever happens
                print(f"multihost cleanup: stopping {started.name} (pid {started.pid}): {error}")
        for ns in self.created:
            # Whatever our processes left running in the namespace (a member that outlived its
            # cluster): killed by pid before the namespace goes.
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            deadline = time.monotonic() + STOP_TIMEOUT
            while pids and time.monotonic() < deadline:
                pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
                time.sleep(0.05)
        for ns in reversed(self.created):
            done = run("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                print(f"multihost cleanup: `ip netns del {ns}` failed: {done.stderr.strip()}")
        atexit.unregister(self.close)
