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
#
# berth itself starts several times per container (create, start, delete, exec, and
# twice under `run`'s callers): it is built as a static PIE with packed relative
# relocations, which starts ~0.4 ms faster than the dynamic build (no ld.so, libc.so
# or 14k RELA relocations to fault in). Static non-PIE measured slower here.
release: deps
	$(CARGO) build --release --workspace --bins --exclude containerd-shim-berth-v2
	host=$$(rustc -vV | sed -n 's/^host: //p') && \
	RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
	$(CARGO) build --profile shim -p containerd-shim-berth-v2 --target $$host && \
	install -m 0755 target/$$host/shim/containerd-shim-berth-v2 target/release/ && \
	RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
	$(CARGO) build --release -p berth --target $$host && \
	install -m 0755 target/$$host/release/berth target/release/

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
# shim, builder vs buildah, registry pull/push vs skopeo and ctr.
bench: release
	@bash bench/runtime.sh $(BERTH_RELEASE)
	@bash bench/shim.sh $(CURDIR)/target/release
	@bash bench/builder.sh $(BERTH_RELEASE)
	@bash bench/registry.sh $(BERTH_RELEASE)

clean:
	$(CARGO) clean
	rm -rf $(FIXTURES)
