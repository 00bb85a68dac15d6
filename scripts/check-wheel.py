#!/usr/bin/env python3
"""Checks that the wheel `make wheel` builds installs and works where there is no Rust.

    scripts/check-wheel.py [dist/quaestor-VERSION-cp311-abi3-manylinux_2_17_x86_64....whl]

(`make test-wheel` builds the wheel, then runs this with it.) With no argument it takes the
only wheel in dist/. It checks the wheel's name and metadata (abi3, manylinux2014 = glibc 2.17,
no runtime dependencies but those of the `generated` extra), then creates a fresh venv with the
system python3 (python3 -m venv), installs the wheel file alone into it (pip --no-index: no
network, nothing but that file), and runs the venv's python with PATH=<venv>/bin:/usr/bin:/bin,
from an empty folder (so that `import quaestor` cannot find the source tree) and asserts there
that cargo and rustc are not on PATH, that quaestor is imported from the venv, that a Reporter
starts, accepts a TCP connection on its port and closes, and that `quaestor.generated`, without
its extra, raises an ImportError naming it. Exits non-zero, with the reason, on any failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent

# Run inside the fresh venv, with cargo and rustc off PATH.
PROBE = r"""
import shutil, socket, sys
from pathlib import Path

for tool in ("cargo", "rustc"):
    assert shutil.which(tool) is None, f"{tool} is on PATH: {shutil.which(tool)}"
import quaestor
prefix = Path(sys.prefix).resolve()
where = Path(quaestor.__file__).resolve()
assert prefix in where.parents, f"quaestor imported from {where}, not from the venv {prefix}"
print("quaestor", quaestor.__version__, "from", where.parent)
with quaestor.Reporter() as reporter:
    load = reporter.add_service("Worker", capacity=2)
    assert reporter.port > 0 and not reporter.closed
    socket.create_connection((reporter.host, reporter.port), timeout=10).close()
    print("Reporter served", load, "on", reporter.address)
assert reporter.closed
# quaestor.generated needs the `generated` extra, which a --no-index install lacks.
try:
    import quaestor.generated.service_discovery_pb2
except ImportError as error:
    assert "quaestor[generated]" in str(error), f"unclear ImportError: {error}"
    print("quaestor.generated without its extra:", error)
else:
    raise AssertionError("quaestor.generated imported without protobuf installed")
print("ok")
"""


def fail(message: str) -> NoReturn:
    print(f"check-wheel: {message}", file=sys.stderr)
    sys.exit(1)


def find_wheel(argv: list[str]) -> Path:
    if len(argv) > 1:
        return Path(argv[1]).resolve()
    wheels = sorted((ROOT / "dist").glob("quaestor-*.whl"))
    if len(wheels) != 1:
        fail(f"expected one wheel in {ROOT / 'dist'}, found {[w.name for w in wheels]}; name it")
    return wheels[0]


def check_metadata(wheel: Path) -> None:
    # name-version-python-abi-platform.whl (PEP 427); the platform may list several tags.
    parts = wheel.stem.split("-")
    if len(parts) != 5:
        fail(f"{wheel.name} is not a name-version-python-abi-platform wheel name")
    _, _, python_tag, abi_tag, platforms = parts
    if abi_tag != "abi3" or not python_tag.startswith("cp3"):
        fail(f"{wheel.name}: expected a cp3x-abi3 wheel, got {python_tag}-{abi_tag}")
    if "manylinux2014_x86_64" not in platforms.split(".") and "manylinux_2_17_x86_64" not in platforms.split("."):
        fail(f"{wheel.name}: expected a manylinux2014 (manylinux_2_17) x86_64 platform tag, got {platforms}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if metadata is None:
            fail(f"{wheel.name} has no .dist-info/METADATA")
        text = archive.read(metadata).decode()
        if not any(n.startswith("quaestor/_quaestor") and n.endswith(".so") for n in names):
            fail(f"{wheel.name} has no native module quaestor/_quaestor*.so: {names}")
        if "quaestor/generated/service_discovery_pb2_grpc.py" not in names:
            fail(f"{wheel.name} lacks quaestor/generated/: {names}")
    # Only the `generated` extra's (protobuf, grpcio) may be there.
    requires = [
        line for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    if requires:
        fail(f"{wheel.name} has runtime dependencies, which a --no-index install lacks: {requires}")


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    if result.returncode != 0:
        fail(f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def main() -> None:
    wheel = find_wheel(sys.argv)
    if not wheel.is_file():
        fail(f"no wheel at {wheel}")
    check_metadata(wheel)
    with tempfile.TemporaryDirectory(prefix="quaestor-wheel-") as scratch:
        venv = Path(scratch) / "venv"
        empty = Path(scratch) / "cwd"
        empty.mkdir()
        # The system interpreter, not the one of .venv (which may have quaestor built in).
        run(["/usr/bin/python3", "-m", "venv", str(venv)])
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": scratch,
            "LANG": "C.UTF-8",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_CACHE_DIR": "1",
        }
        run([str(venv / "bin" / "pip"), "install", "--no-index", str(wheel)], env=env, cwd=empty)
        result = run([str(venv / "bin" / "python"), "-I", "-c", PROBE], env=env, cwd=empty)
        print(result.stdout, end="")
    print(f"check-wheel: {wheel.name} installs without cargo and works")


if __name__ == "__main__":
    main()
