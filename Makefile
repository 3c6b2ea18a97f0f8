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

# The shim runs once per container, so it is built apart: `shim` profile (fat LTO, size
# optimised) as a static non-PIE executable (no ld.so, libc.so or start-up relocations to
# fault in per shim), for the host triple so RUSTFLAGS spare build scripts and proc-macros,
# then placed next to the other release binaries.
release: deps
	$(CARGO) build --release --workspace --bins --exclude containerd-shim-berth-v2
	host=$$(rustc -vV | sed -n 's/^host: //p') && \
	RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
	$(CARGO) build --profile shim -p containerd-shim-berth-v2 --target $$host && \
	install -m 0755 target/$$host/shim/containerd-shim-berth-v2 target/release/

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
