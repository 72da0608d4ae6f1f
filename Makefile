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
	acpica-tools prometheus prometheus-alertmanager \
	grub-efi-amd64-bin mtools dosfstools xorriso fdisk ovmf dnsmasq-base \
	restic

# PyPI tools the tests run: the OpenAPI documents are validated by
# openapi-spec-validator, the API fuzzed by schemathesis, alert mail received by
# aiosmtpd (a real SMTP server); moto[server] is the S3-compatible server the backup
# store's S3 backend is tested against.
PIP_PACKAGES := openapi-spec-validator schemathesis aiosmtpd moto[server]

.PHONY: all up down demo test deps guest-images host-image build build-release bench bench-boot \
	fuzz-smoke bench-migration bench-block-migration bench-clone bench-host-image bench-hostd bench-scheduler \
	bench-api bench-metrics bench-federation bench-backup lint fmt clean \
	ui ui-deps

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
	@cargo fuzz --version 2>/dev/null | grep -q " $(CARGO_FUZZ_VERSION)$$" \
		|| $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
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

# The bootable host image (host-image/out/): kernel + initramfs, raw GPT disk, ISO.
# Cached: rebuilt only when its inputs change (host-image/build.sh says how).
host-image: deps
	host-image/build.sh

# make test boots an image of the debug build (already built for the tests).
test: deps ui-deps guest-images build
	NOVA_HOST_IMAGE_PROFILE=dev host-image/build.sh
	NOVA_BIN_DIR=$(CURDIR)/$(BIN) $(CARGO) nextest run --workspace --no-fail-fast
	$(MAKE) fuzz-smoke FUZZ_SECONDS=20

# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser of hostile input:
# each target runs FUZZ_SECONDS from its committed corpus (fuzz/corpus/TARGET; what it
# finds goes to fuzz/target/smoke, never into the corpus). A crash, a timeout or an
# out-of-memory fails; the executions per target are written to fuzz/target/smoke/summary.
# RUSTC_BOOTSTRAP: cargo-fuzz needs nightly flags; no sanitizer (-s none) builds on stable.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS := migration_frame migration_tls_records state_decode vmm_http_request boot_loader \
	virtio_blk_queue virtio_net_queue dhcp_reply init_config backup_decode host_user_data host_registration
FUZZ_SECONDS ?= 30
FUZZ := cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
FUZZ_FLAGS := -s none --target x86_64-unknown-linux-gnu
fuzz-smoke:
	$(FUZZ) build $(FUZZ_FLAGS)
	@set -o pipefail; mkdir -p fuzz/target/smoke; : > fuzz/target/smoke/summary; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/smoke/$$t; \
		($(FUZZ) run $(FUZZ_FLAGS) $$t target/smoke/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=target/smoke/$$t- ) > fuzz/target/smoke/$$t.log 2>&1 \
			|| { tail -30 fuzz/target/smoke/$$t.log; echo "fuzz-smoke: $$t FAILED (log: fuzz/target/smoke/$$t.log)"; exit 1; }; \
		runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/target/smoke/$$t.log); \
		echo "$$t $$runs executions in $(FUZZ_SECONDS) s" | tee -a fuzz/target/smoke/summary; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Every bench writes docs/benchmarks/<name>.{json,md}; release builds throughout.
bench: bench-boot bench-migration bench-block-migration bench-clone bench-hostd bench-scheduler bench-api bench-metrics bench-federation bench-backup

bench-boot: deps guest-images build-release
	$(RELEASE_BIN)/bench-boot --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 10 --out docs/benchmarks

bench-migration: deps guest-images build-release
	$(RELEASE_BIN)/bench-migration --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 3 --out docs/benchmarks

bench-block-migration: deps guest-images build-release
	$(RELEASE_BIN)/bench-block-migration --vmm $(RELEASE_BIN)/nova-vmm --guest $(OUT)/testguest.elf \
		--runs 3 --out docs/benchmarks --link-mbit 0,1000,100

bench-hostd: deps guest-images build-release
	$(RELEASE_BIN)/bench-hostd --hostd $(RELEASE_BIN)/nova-hostd --vmm $(RELEASE_BIN)/nova-vmm \
		--guest $(OUT)/testguest.elf --out docs/benchmarks

# The host image: sizes, and kernel's first line to Ready in a controller under QEMU
# TCG (KVM here cannot run a stock kernel). The release image `make host-image` builds
# beside the debug-build image `make test` boots (built into host-image/out-dev).
bench-host-image: deps host-image build-release
	NOVA_HOST_IMAGE_PROFILE=dev host-image/build.sh host-image/out-dev
	$(RELEASE_BIN)/bench-host-image --image release=host-image/out --image dev=host-image/out-dev \
		--controller $(RELEASE_BIN)/nova-controller --runs 3 --out docs/benchmarks

bench-clone: deps guest-images build-release
	$(RELEASE_BIN)/bench-clone --hostd $(RELEASE_BIN)/nova-hostd --vmm $(RELEASE_BIN)/nova-vmm \
		--guest $(OUT)/testguest.elf --clones 100 --mem-mib 256 --out docs/benchmarks

# restic (Debian's) backs up the same disk file side by side.
bench-backup: deps guest-images build-release
	$(RELEASE_BIN)/bench-backup --hostd $(RELEASE_BIN)/nova-hostd --vmm $(RELEASE_BIN)/nova-vmm \
		--guest $(OUT)/testguest.elf --out docs/benchmarks

bench-scheduler: build-release
	$(RELEASE_BIN)/bench-scheduler --out docs/benchmarks

bench-api: deps build-release
	$(RELEASE_BIN)/bench-api --controller $(RELEASE_BIN)/nova-controller --out docs/benchmarks

# The metric history: scrape + store cost per core, bytes per sample (beside
# Prometheus' on the same data, through promtool), query latency.
bench-metrics: deps build-release
	$(RELEASE_BIN)/bench-metrics --out docs/benchmarks

# A federated list of 10,000 VMs across three peered controllers, p50/p99.
bench-federation: guest-images build-release
	NOVA_BIN_DIR=$(RELEASE_BIN) $(RELEASE_BIN)/bench-federation --controller $(RELEASE_BIN)/nova-controller --out docs/benchmarks

clean:
	$(CARGO) clean
	rm -rf $(OUT) guest-images/testguest/target
