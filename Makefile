# Berth — one entry point for building, testing, demoing and benchmarking.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES := $(CURDIR)/fixtures
BERTH_DEBUG := $(CURDIR)/target/debug/berth
BERTH_RELEASE := $(CURDIR)/target/release/berth

export BERTH_FIXTURES := $(FIXTURES)

.PHONY: all deps build release fixtures test lint demo bench clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(CARGO) build --workspace --bins

release: deps
	$(CARGO) build --release --workspace --bins

# A busybox OCI bundle made from Debian's busybox-static (no network needed).
fixtures: build
	@[ -d $(FIXTURES)/busybox/rootfs ] || bash scripts/busybox-bundle.sh $(BERTH_DEBUG) $(FIXTURES)/busybox

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit tests, then integration tests that drive the real binaries (needs root).
test: fixtures
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --exclude berth-integration
	BERTH_BIN=$(BERTH_DEBUG) $(CARGO) test -p berth-integration -- --test-threads=2

demo: release
	@bash scripts/demo.sh $(BERTH_RELEASE)

# Side-by-side benchmarks with ratios: runtime vs runc, shim vs the runc
# shim, builder vs buildah.
bench: release
	@bash bench/runtime.sh $(BERTH_RELEASE)
	@bash bench/shim.sh $(CURDIR)/target/release
	@bash bench/builder.sh $(BERTH_RELEASE)

clean:
	$(CARGO) clean
	rm -rf $(FIXTURES)
