#!/usr/bin/env bash
# Installs what quaestor's build and tests need on a Debian machine, and nothing that is
# already there: so it is safe (and quick) to run before every test run.
#   apt: protoc (the etcd-client crate's build script needs it), etcd (the registry tests
#        start real etcd servers), pkg-config, gcc/g++ and Mono (mcs, mono) for libquaestor's
#        C, C++ and C# tests, promtool (Debian's prometheus) for the /metrics test,
#        headless Chromium for the status page test,
#        python3-venv if missing
#   pip: the Python test dependencies and maturin, into .venv inside the repository
#   go/maven: the modules of the Go test clients, the grpc-java xDS client's jar
#        (tests/xds-java/target/xds-client.jar; Maven and JDK 17 from apt if missing)
# With --build, only what the build needs (no Go, no Python test dependencies).
# With --fuzz, what the build needs and cargo-fuzz (make fuzz, make fuzz-smoke).
# With --bench, also what `make bench` needs: rsvg-convert (librsvg2-bin) for the PNG figure,
# HAProxy for the end-to-end balancing benchmark (cli/benches/e2e.rs runs its own haproxy
# process with a generated config; the Debian service, if it starts, is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  echo "setup: apt-get install $*" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
# libquaestor's tests: C programs found through pkg-config, the C# wrapper on Mono.
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v mcs >/dev/null || missing+=(mono-mcs)
command -v mono >/dev/null || missing+=(mono-runtime)
# The HTTP wire test (tests/python/test_http_wire.py) checks /metrics with promtool.
command -v promtool >/dev/null || missing+=(prometheus)
# The status page test (tests/python/test_status_page.py) renders the page in Chromium.
command -v chromium >/dev/null || missing+=(chromium)
# The multi-host tests (tests/multihost) build network namespaces with `ip`.
command -v ip >/dev/null || missing+=(iproute2)
if [ "${1:-}" = --bench ]; then
  command -v rsvg-convert >/dev/null || missing+=(librsvg2-bin)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
fi
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# With --build, only what building and running needs (make demo, ffi, examples, install):
# the Go client and the Python test dependencies are for the tests.
if [ "${1:-}" = --build ]; then exit 0; fi

# With --fuzz (scripts/fuzz.sh: make fuzz, make fuzz-smoke), cargo-fuzz, from crates.io
# (the targets build with nightly, which scripts/fuzz.sh checks for).
if [ "${1:-}" = --fuzz ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: cargo install cargo-fuzz" >&2
    cargo install -q cargo-fuzz --locked
  fi
  exit 0
fi

# The grpclb interoperability test and the xDS wire tests (tests/python/test_xds_wire.py)
# build a stock grpc-go client (tests/go-client), the ORCA-in test a stock grpc-go server
# with ORCA (tests/orca-go)...
if ! command -v go >/dev/null; then
  echo "setup: go not found: install Go first (the grpclb and xDS tests build a grpc-go client)" >&2
  exit 1
fi
(cd tests/go-client && go mod download)
(cd tests/orca-go && go mod download)
# ... and run a stock grpc-java one, built here by Maven (JDK 17) into one jar, so that the
# test itself needs no network. Rebuilt only when its sources are newer than the jar.
java_missing=()
command -v mvn >/dev/null || java_missing+=(maven)
command -v javac >/dev/null || java_missing+=(openjdk-17-jdk-headless)
if [ ${#java_missing[@]} -gt 0 ]; then apt_install "${java_missing[@]}"; fi
jar=tests/xds-java/target/xds-client.jar
if [ ! -f "$jar" ] || [ -n "$(find tests/xds-java/pom.xml tests/xds-java/src -newer "$jar" -print -quit)" ]; then
  echo "setup: mvn package (tests/xds-java)" >&2
  (cd tests/xds-java && mvn -q -B package -DskipTests)
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$python" -m venv .venv
  fi
fi
# Reinstall only when the requirements changed since the last install.
for requirements in tests/python/requirements.txt bindings/python/requirements-dev.txt; do
  stamp=.venv/$(echo "$requirements" | tr / _).installed
  if ! cmp -s "$requirements" "$stamp"; then
    echo "setup: pip install -r $requirements" >&2
    .venv/bin/pip install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
  fi
done
