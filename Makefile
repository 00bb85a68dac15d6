# quaestor: `make test` sets up what is missing (see scripts/setup.sh) and runs every suite.
# CARGO_TARGET_DIR may point outside the clone (CI keeps it in ~/.cache to build faster).

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
QUAESTOR_BIN := $(CARGO_TARGET_DIR)/debug/quaestor
VENV := $(CURDIR)/.venv

.PHONY: test setup build test-rust test-python bench ffi demo demo-etcd lint clean

test: setup test-rust test-python

setup:
	scripts/setup.sh

build: setup
	cargo build --workspace --locked

# Unit tests, loopback gRPC tests and the CLI tests (which run the real binary).
test-rust: build
	cargo test --workspace --locked

# The wire format as a stock grpcio client sees it, against the real binary.
test-python: build
	QUAESTOR_BIN=$(QUAESTOR_BIN) $(VENV)/bin/pytest -c tests/python/pytest.ini tests/python

# The hello-world cluster: 4 workers on 5161-5164, the balancer on 5150. Then, elsewhere:
#   target/debug/quaestor discover --top 127.0.0.1:5150 Worker
demo:
	cargo build -p quaestor-cli
	$(CARGO_TARGET_DIR)/debug/quaestor cluster --config sdk-examples/hello-world/quaestor.config.yml

# The same with etcd as the registry (a KeyValueStore agent the cluster starts first).
demo-etcd:
	cargo build -p quaestor-cli
	$(CARGO_TARGET_DIR)/debug/quaestor cluster --config sdk-examples/hello-world-etcd/quaestor.config.yml

# Benchmarks print figures; they are not part of `make test`.
bench:
	cargo bench -p quaestor-core --bench discovery
	cargo bench -p quaestor-ffi --bench request

# libquaestor (.so and .a) and a pkg-config file for it, so that a C worker builds with
#   PKG_CONFIG_PATH=$(CARGO_TARGET_DIR)/debug cc hello_worker.c $$(pkg-config --cflags --libs quaestor)
ffi:
	cargo build -p quaestor-ffi
	sed -e 's|@LIBDIR@|$(CARGO_TARGET_DIR)/debug|' -e 's|@INCLUDEDIR@|$(CURDIR)/ffi/include|' \
	    -e "s|@VERSION@|$$(sed -n 's/^version = \"\(.*\)\"/\1/p' Cargo.toml | head -1)|" \
	    ffi/quaestor.pc.in > $(CARGO_TARGET_DIR)/debug/quaestor.pc

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

clean:
	cargo clean
	rm -rf $(VENV)
