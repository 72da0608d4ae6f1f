# NovaCron. `make up` boots the demo guest; `make test` builds what it needs and
# runs every test. Both work on a fresh Debian 12 machine: `deps` installs what the
# build and the tests need, `guest-images` builds the guests.

SHELL := /bin/bash
CARGO ?= cargo
OUT := guest-images/out
BIN := target/debug
RELEASE_BIN := target/release

# Debian packages the build, the guest images, the tests and the benches need.
APT_PACKAGES := qemu-system-x86 iproute2 iputils-ping arping socat etcd-server \
	protobuf-compiler cpio xz-utils zstd binutils gcc wrk

.PHONY: all up down test deps guest-images build build-release bench bench-boot \
	lint fmt clean

all: build

deps:
	@missing=(); for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing+=($$p); \
	done; \
	if [ $${#missing[@]} -gt 0 ]; then \
		echo "installing: $${missing[*]}"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null; \
	fi
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

guest-images: deps
	guest-images/testguest/build.sh $(OUT)
	guest-images/linux/build.sh $(OUT)

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

# The demo: the test guest on 2 vCPUs, its console on this terminal. Ctrl-C stops it.
up: deps guest-images build
	$(BIN)/nova-vmm run --kernel $(OUT)/testguest.elf --vcpus 2 --mem-mib 256 \
		--cmdline "nova.workload=dirty:16:4,counter"

down:
	@pkill -f 'nova-vmm run' || true

test: deps guest-images build
	NOVA_BIN_DIR=$(CURDIR)/$(BIN) $(CARGO) nextest run --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: bench-boot

bench-boot: deps guest-images build-release
	$(RELEASE_BIN)/bench-boot --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 10 --out docs/benchmarks

clean:
	$(CARGO) clean
	rm -rf $(OUT) guest-images/testguest/target
