#!/usr/bin/env python3
"""Regenerates `quaestor.generated` (bindings/python/python/quaestor/generated/) from proto/.

    .venv/bin/python scripts/gen-python-protos.py            # rewrite the committed modules
    .venv/bin/python scripts/gen-python-protos.py --check    # exit 1 if they are out of date
    .venv/bin/python scripts/gen-python-protos.py --out DIR  # write them to DIR instead

The modules are committed, not generated at build time: the wheel and `pip install
./bindings/python` then need neither grpcio-tools nor protoc. Run this after changing a proto
in proto/quaestor/ (bindings/python/tests/test_generated.py fails until you do), with the
grpcio-tools that tests/python/requirements.txt pins (scripts/setup.sh installs it into .venv):
other versions write other code, and the check compares byte for byte.

What it does:
1. grpc_tools.protoc with -Iproto/quaestor, so that the modules have the flat names the C#
   Quaestor's Python package shipped (`service_discovery_pb2`, `process_admin_pb2_grpc`, ...)
   and register the same file names (`service_discovery.proto`, ...) in protobuf's pool;
   --python_out, --pyi_out (types of the messages) and --grpc_python_out.
2. In each `*_pb2_grpc.py`, the flat `import X_pb2 as X__pb2` that protoc writes becomes
   `from . import X_pb2 as X__pb2`, so the modules import as `quaestor.generated.X` without
   putting their folder on sys.path (as the C# package's `generated/__init__.py` did), and
   `from . import _grpcio` goes before `import grpc`: that module raises an ImportError naming
   the extra to install when grpcio is missing or too old.
3. `_versions.py`: the protobuf and grpcio versions the code was generated for (the oldest
   runtimes it accepts), which `__init__.py` and `_grpcio.py` check and which the `generated`
   extra of bindings/python/pyproject.toml must require (the test checks that too).

`__init__.py` and `_grpcio.py` are written by hand and left alone.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "quaestor"
PACKAGE_DIR = ROOT / "bindings" / "python" / "python" / "quaestor" / "generated"
# The C# Quaestor's modules (service_discovery, process_admin) and load reporting.
PROTOS = ["service_discovery.proto", "process_admin.proto", "load_reporting.proto"]
# Files in PACKAGE_DIR this script does not write.
HAND_WRITTEN = {"__init__.py", "_grpcio.py"}
VERSIONS = "_versions.py"

FLAT_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
IMPORT_GRPC = re.compile(r"^import grpc$", re.MULTILINE)
PROTOBUF_VERSION = re.compile(r"^# Protobuf Python Version: (\d+\.\d+\.\d+)$", re.MULTILINE)
GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '(\d+\.\d+\.\d+)'$", re.MULTILINE)


class GenerateError(Exception):
    """protoc failed, or wrote code this script does not know how to rewrite."""


def one(pattern: re.Pattern[str], text: str, file: str) -> re.Match[str]:
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise GenerateError(
            f"{file}: expected one line like {pattern.pattern!r}, found {len(matches)} "
            "(did grpcio-tools change what it writes? pin the version in tests/python/requirements.txt)"
        )
    return matches[0]


def generate(out: Path) -> list[Path]:
    """Writes the generated files into `out` (which must exist) and returns them."""
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_DIR / proto) for proto in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise GenerateError(f"grpc_tools.protoc failed on {', '.join(PROTOS)} in {PROTO_DIR} (see above)")

    protobuf_versions, grpc_versions = set(), set()
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        pb2 = (out / f"{stem}_pb2.py").read_text()
        protobuf_versions.add(one(PROTOBUF_VERSION, pb2, f"{stem}_pb2.py")[1])

        grpc_file = out / f"{stem}_pb2_grpc.py"
        text = grpc_file.read_text()
        grpc_versions.add(one(GRPC_VERSION, text, grpc_file.name)[1])
        flat = one(FLAT_IMPORT, text, grpc_file.name)
        if flat[1] != f"{stem}_pb2":
            raise GenerateError(f"{grpc_file.name} imports {flat[1]}, not {stem}_pb2")
        text = FLAT_IMPORT.sub(r"from . import \1 as \2", text)
        one(IMPORT_GRPC, text, grpc_file.name)
        text = IMPORT_GRPC.sub(
            "from . import _grpcio  # noqa: F401  (grpcio installed and new enough; "
            "added by scripts/gen-python-protos.py)\nimport grpc",
            text,
        )
        grpc_file.write_text(text)

    if len(protobuf_versions) != 1 or len(grpc_versions) != 1:
        raise GenerateError(f"the modules name different versions: {protobuf_versions} {grpc_versions}")
    (out / VERSIONS).write_text(
        "# Generated by scripts/gen-python-protos.py. DO NOT EDIT!\n"
        '"""The oldest protobuf and grpcio runtimes the generated modules accept: the versions of\n'
        'the code grpcio-tools wrote. The `generated` extra of pyproject.toml requires them."""\n'
        "\n"
        f"PROTOBUF = {version_tuple(protobuf_versions.pop())!r}\n"
        f"GRPCIO = {version_tuple(grpc_versions.pop())!r}\n"
    )
    return sorted(p for p in out.iterdir() if p.is_file() and p.name not in HAND_WRITTEN)


def version_tuple(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in text.split("."))
    return (major, minor, patch)


def generated_names(directory: Path) -> set[str]:
    """The files of `directory` this script writes (not the hand-written ones, not caches)."""
    return {
        p.name
        for p in directory.iterdir()
        if p.is_file() and p.name not in HAND_WRITTEN and p.suffix in (".py", ".pyi")
    }


def differences(fresh: Path, committed: Path) -> list[str]:
    """What differs between the freshly generated files and the committed ones, as unified
    diffs and missing/stale file names; empty if they are the same."""
    problems = []
    fresh_names, committed_names = generated_names(fresh), generated_names(committed)
    for name in sorted(fresh_names - committed_names):
        problems.append(f"{name} is missing from {committed}")
    for name in sorted(committed_names - fresh_names):
        problems.append(f"{name} is in {committed} but no proto generates it any more")
    for name in sorted(fresh_names & committed_names):
        new, old = (fresh / name).read_text(), (committed / name).read_text()
        if new != old:
            diff = difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), f"committed/{name}", f"fresh/{name}"
            )
            problems.append("".join(diff))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the committed modules are out of date")
    group.add_argument("--out", type=Path, help=f"write the modules here instead of {PACKAGE_DIR}")
    options = parser.parse_args()
    try:
        if options.check:
            with tempfile.TemporaryDirectory() as tmp:
                generate(Path(tmp))
                problems = differences(Path(tmp), PACKAGE_DIR)
            if problems:
                print("\n".join(problems), file=sys.stderr)
                print(f"{PACKAGE_DIR} is out of date: run scripts/gen-python-protos.py", file=sys.stderr)
                return 1
            print(f"{PACKAGE_DIR} is up to date")
            return 0
        out = options.out or PACKAGE_DIR
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() == PACKAGE_DIR.resolve():
            # Modules of a proto that is gone must not stay behind.
            for name in generated_names(out):
                (out / name).unlink()
        elif any(out.iterdir()):
            raise GenerateError(f"{out} is not empty: --out takes a new or empty folder")
        for path in generate(out):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        return 0
    except GenerateError as error:
        print(f"gen-python-protos: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
