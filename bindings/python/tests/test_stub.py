"""The stub `_quaestor.pyi` describes the native module as it is (mypy.stubtest)."""

import os
import subprocess
import sys

import pytest


def test_the_stub_matches_the_native_module(tmp_path):
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is not installed: pip install -r bindings/python/requirements-dev.txt (scripts/setup.sh does)", pytrace=False)
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "quaestor._quaestor"],
        capture_output=True,
        text=True,
        # Its cache goes to the test's folder, not to the current one.
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy-cache")},
        timeout=50,
    )
    assert result.returncode == 0, f"stubtest:\n{result.stdout}\n{result.stderr}"
