# quaestor: `make test` sets up what is missing (see scripts/setup.sh), checks formatting and
# clippy, and runs every suite. Every target that builds runs the setup first, so any of them
# works as the first command on a fresh Debian machine.
# CARGO_TARGET_DIR may point outside the clone (CI keeps it in ~/.cache to build faster).

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
QUAESTOR_BIN := $(CARGO_TARGET_DIR)/debug/quaestor
VENV := $(CURDIR)/.venv
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# `make install`: where (PREFIX; DESTDIR is prepended to every path, as usual) and which
# cargo profile's libquaestor (release; PROFILE=debug installs the debug build, as the install
# test does so as not to build a release in CI).
PREFIX ?= /usr/local
PROFILE ?= release
override PREFIX := $(abspath $(PREFIX))
PROFILE_FLAG := $(if $(filter debug,$(PROFILE)),,--profile $(PROFILE))
PROFILE_DIR := $(CARGO_TARGET_DIR)/$(PROFILE)

.PHONY: test setup setup-build build test-rust test-python test-multihost wheel test-wheel bench bench-python soak test-soak ffi install examples demo demo-etcd fuzz fuzz-smoke lint clean

test: setup lint test-rust test-python test-wheel test-multihost test-soak fuzz-smoke

setup:
	scripts/setup.sh

# What building and running needs, without the test tools (Go, the Python test venv): the
# first command on a fresh machine may be `make demo`.
setup-build:
	scripts/setup.sh --build

build: setup
	cargo build --workspace --locked

# Unit tests, loopback gRPC tests and the CLI tests (which run the real binary).
test-rust: build
	cargo test --workspace --locked

# The wire format as a stock grpcio client sees it, against the real binary; then the
# Python package, built into .venv (incrementally, in CARGO_TARGET_DIR) and tested.
test-python: build
	QUAESTOR_BIN=$(QUAESTOR_BIN) $(VENV)/bin/pytest -c tests/python/pytest.ini tests/python
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop -q -m bindings/python/Cargo.toml
	QUAESTOR_BIN=$(QUAESTOR_BIN) $(VENV)/bin/pytest -c bindings/python/tests/pytest.ini bindings/python/tests

# quaestor across real distinct hosts (docs/multihost.md): network namespaces joined by a
# bridge, a cluster of workers on each of 3 hosts, etcd on a 4th, faults by link down and
# blackhole routes. Needs root (skipped without, failed under CI=true); prints its figures.
test-multihost: build
	QUAESTOR_BIN=$(QUAESTOR_BIN) $(VENV)/bin/pytest -c tests/multihost/pytest.ini tests/multihost

# The Python package as one wheel for every CPython from the abi3 floor up, on any x86_64 Linux
# with glibc 2.17 or newer (manylinux2014; linked by zig, from the ziglang package in .venv):
# dist/quaestor-$(VERSION)-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl, which
# `pip install` takes without cargo. A release build in CARGO_TARGET_DIR (its own
# x86_64-unknown-linux-gnu/release folder): about 2 minutes cold, 40 s after a change, seconds
# when nothing changed.
WHEEL_DIR := $(CURDIR)/dist
wheel: setup
	rm -f $(WHEEL_DIR)/quaestor-*.whl
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH $(VENV)/bin/maturin build -q --release --locked \
	    --zig --compatibility manylinux2014 -m bindings/python/Cargo.toml -o $(WHEEL_DIR)

# The wheel installed (pip --no-index, the file alone) into a fresh venv and imported, and a
# Reporter started and closed, with cargo and rustc off PATH (scripts/check-wheel.py). Part
# of `make test`.
test-wheel: wheel
	/usr/bin/python3 scripts/check-wheel.py $(WHEEL_DIR)/quaestor-$(VERSION)-*.whl

# The C, C++ and C# sample workers, built next to their sources (with libquaestor.so in
# sdk-examples/lib and next to the C# one), for sdk-examples/native/quaestor.config.yml.
examples: ffi
	mkdir -p sdk-examples/lib
	cp $(CARGO_TARGET_DIR)/debug/libquaestor.so sdk-examples/lib/
	cc -Wall -Wextra -Werror -o sdk-examples/c/hello_worker sdk-examples/c/hello_worker.c \
	    -Iffi/include -Lsdk-examples/lib -lquaestor
	c++ -std=c++17 -Wall -Wextra -Werror -o sdk-examples/cpp/hello_worker sdk-examples/cpp/hello_worker.cpp \
	    -Iffi/include -Ibindings/cpp -Lsdk-examples/lib -lquaestor
	mcs -warnaserror -target:library -out:sdk-examples/csharp/Quaestor.Native.dll bindings/csharp/*.cs
	mcs -warnaserror -out:sdk-examples/csharp/HelloWorker.exe -r:sdk-examples/csharp/Quaestor.Native.dll \
	    sdk-examples/csharp/HelloWorker.cs
	cp sdk-examples/lib/libquaestor.so sdk-examples/csharp/

# The hello-world cluster: 4 workers on 5161-5164, the balancer on 5150. Then, elsewhere:
#   target/debug/quaestor discover --top 127.0.0.1:5150 Worker
demo: setup-build
	cargo build -p quaestor-cli
	$(CARGO_TARGET_DIR)/debug/quaestor cluster --config sdk-examples/hello-world/quaestor.config.yml

# The same with etcd as the registry (a KeyValueStore agent the cluster starts first).
demo-etcd: setup-build
	cargo build -p quaestor-cli
	$(CARGO_TARGET_DIR)/debug/quaestor cluster --config sdk-examples/hello-world-etcd/quaestor.config.yml

# Benchmarks print figures; they are not part of `make test`.
bench:
	scripts/setup.sh --bench
	cargo bench -p quaestor-core --bench discovery
	cargo bench -p quaestor-core --bench balancing
	cargo bench -p quaestor-core --bench freshness
	cargo bench -p quaestor-ffi --bench request
	cargo bench -p quaestor-ffi --bench discovery_client
	$(MAKE) bench-python
	cargo bench -p quaestor-cli --bench recovery
	cargo bench -p quaestor-cli --bench e2e -- --seconds 30 --rounds 2

# The soak with fault injection (docs/soak.md): real etcd, cluster, balancers and clients for
# SOAK_SECONDS under random faults; SOAK_SEED repeats a run (default: random, printed).
# Prints one summary line and fails if a figure is above its bound.
SOAK_SECONDS ?= 600
SOAK_SEED ?=
soak: setup
	cargo bench -p quaestor-cli --bench soak --locked -- --seconds $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

# What `make test` (and so CI) runs: the soak for 60 s, with seed 1 unless SOAK_SEED is given
# (`make soak` draws a new seed each run and prints it).
test-soak: SOAK_SECONDS = 60
test-soak: SOAK_SEED = 1
test-soak: soak

# Discovery from Python (bindings/python/bench/bench_discovery.py): the release wheel with its
# [generated] extra (grpcio, protobuf) in .venv-bench, against the release balancer binary.
BENCH_VENV := $(CURDIR)/.venv-bench
bench-python: wheel
	cargo build --release --locked -p quaestor-cli
	test -x $(BENCH_VENV)/bin/python || /usr/bin/python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps \
	    $(WHEEL_DIR)/quaestor-$(VERSION)-*.whl
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check \
	    "$$(ls $(WHEEL_DIR)/quaestor-$(VERSION)-*.whl)[generated]"
	$(BENCH_VENV)/bin/python bindings/python/bench/bench_discovery.py \
	    --quaestor $(CARGO_TARGET_DIR)/release/quaestor

# libquaestor (.so and .a, debug) and a pkg-config file for it in the build folder, so that
# a C worker builds (and finds the library when it runs, through the rpath the .pc adds) with
#   export PKG_CONFIG_PATH=$(CARGO_TARGET_DIR)/debug
#   cc -o hello_worker hello_worker.c $$(pkg-config --cflags --libs quaestor)
ffi: setup-build
	cargo build -p quaestor-ffi
	sed -e 's|@LIBDIR@|$(CARGO_TARGET_DIR)/debug|' -e 's|@INCLUDEDIR@|$(CURDIR)/ffi/include|' \
	    -e 's|@VERSION@|$(VERSION)|' ffi/quaestor.pc.in > $(CARGO_TARGET_DIR)/debug/quaestor.pc

# libquaestor.so and .a in PREFIX/lib, quaestor.h and the C++ quaestor.hpp in PREFIX/include,
# PREFIX/lib/pkgconfig/quaestor.pc (its Libs carry an rpath to PREFIX/lib: programs built with
# it run without LD_LIBRARY_PATH). Checked by `cargo test -p quaestor-ffi --test install`.
install: setup-build
	cargo build -p quaestor-ffi --locked $(PROFILE_FLAG)
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(PROFILE_DIR)/libquaestor.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(PROFILE_DIR)/libquaestor.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 ffi/include/quaestor.h bindings/cpp/quaestor.hpp $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@LIBDIR@|$(PREFIX)/lib|' -e 's|@INCLUDEDIR@|$(PREFIX)/include|' \
	    -e 's|@VERSION@|$(VERSION)|' ffi/quaestor.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/quaestor.pc
	chmod 644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/quaestor.pc

# The fuzz targets (fuzz/, cargo-fuzz on nightly; docs/fuzzing.md), FUZZ_SECONDS each: one line
# of figures per target; fails on a crash. fuzz-smoke: 20 s each; without nightly it skips,
# loudly, unless CI=true, where it fails. Both build into $(CARGO_TARGET_DIR)/fuzz.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz-smoke:
	FUZZ_SECONDS=20 scripts/fuzz.sh --smoke

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

clean:
	cargo clean
	rm -rf $(VENV)
