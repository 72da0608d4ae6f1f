# NovaCron. `make up` starts a one-machine cluster (controller + two hosts + a demo
# VM) in the background, `make down` stops it; `make test` builds what it needs and
# runs every test. Both work on a fresh Debian 12 machine: `deps` installs what the
# build and the tests need, `guest-images` builds the guests.

SHELL := /bin/bash
CARGO ?= cargo
OUT := guest-images/out
# .cargo/config.toml names the target (static binaries), so cargo puts them here.
BIN := target/x86_64-unknown-linux-gnu/debug
RELEASE_BIN := target/x86_64-unknown-linux-gnu/release

# Debian packages the build, the guest images, the tests and the benches need.
APT_PACKAGES := qemu-system-x86 iproute2 iputils-ping arping socat etcd-server systemd \
	protobuf-compiler cpio xz-utils zstd lz4 file binutils gcc wrk xfsprogs \
	linux-source-6.1 make flex bison bc libelf-dev patch e2fsprogs chromium \
	acpica-tools prometheus prometheus-alertmanager

# PyPI tools the tests run: the OpenAPI documents are validated by
# openapi-spec-validator, the API fuzzed by schemathesis; moto[server] is the
# S3-compatible server the backup store's S3 backend is tested against.
PIP_PACKAGES := openapi-spec-validator schemathesis moto[server]

.PHONY: all up down demo test deps guest-images build build-release bench bench-boot \
	bench-migration bench-hostd bench-scheduler bench-api lint fmt clean ui ui-deps

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
	@for p in $(PIP_PACKAGES); do \
		name=$${p%%=*}; name=$${name%%\[*}; \
		python3 -m pip show -q "$$name" >/dev/null 2>&1 || python3 -m pip install -q "$$p"; \
	done

guest-images: deps
	guest-images/testguest/build.sh $(OUT)
	guest-images/linux/build.sh $(OUT)
	guest-images/linux/small-kernel/build.sh $(OUT)

build:
	$(CARGO) build --workspace --bins

# The dashboard (controller/ui): its npm packages, pinned by package-lock.json, for
# building it and for its browser tests (Node >= 20.19). The built files in
# controller/ui/dist are committed, so building the controller needs no Node; `make ui`
# rebuilds them after a change to the sources (a test checks they match).
UI := controller/ui
ui-deps:
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' \
		|| { echo "the dashboard needs Node >= 20.19 (found $$(node --version 2>/dev/null || echo none))"; exit 1; }
	@[ $(UI)/node_modules/.package-lock.json -nt $(UI)/package-lock.json ] || (cd $(UI) && npm ci --no-audit --no-fund)

ui: ui-deps
	cd $(UI) && npm run build

build-release:
	$(CARGO) build --release --workspace --bins

# A one-machine cluster in the background: the controller on SQLite, two hostd in two
# network namespaces, a demo VM. Prints the API URL and an admin token.
up: deps guest-images build
	NOVA_BIN_DIR=$(CURDIR)/$(BIN) controller/up.sh

down:
	controller/down.sh

# One VM without the cluster: the test guest on 2 vCPUs, its console on this terminal.
demo: deps guest-images build
	$(BIN)/nova-vmm run --kernel $(OUT)/testguest.elf --vcpus 2 --mem-mib 256 \
		--cmdline "nova.workload=dirty:16:4,counter"

test: deps ui-deps guest-images build
	NOVA_BIN_DIR=$(CURDIR)/$(BIN) $(CARGO) nextest run --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Every bench writes docs/benchmarks/<name>.{json,md}; release builds throughout.
bench: bench-boot bench-migration bench-hostd bench-scheduler bench-api

bench-boot: deps guest-images build-release
	$(RELEASE_BIN)/bench-boot --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 10 --out docs/benchmarks

bench-migration: deps guest-images build-release
	$(RELEASE_BIN)/bench-migration --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 3 --out docs/benchmarks

bench-hostd: deps guest-images build-release
	$(RELEASE_BIN)/bench-hostd --hostd $(RELEASE_BIN)/nova-hostd --vmm $(RELEASE_BIN)/nova-vmm \
		--guest $(OUT)/testguest.elf --out docs/benchmarks

bench-scheduler: build-release
	$(RELEASE_BIN)/bench-scheduler --out docs/benchmarks

bench-api: deps build-release
	$(RELEASE_BIN)/bench-api --controller $(RELEASE_BIN)/nova-controller --out docs/benchmarks

clean:
	$(CARGO) clean
	rm -rf $(OUT) guest-images/testguest/target
