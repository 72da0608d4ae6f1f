#!/usr/bin/env bash
# Builds NovaCron's small Linux guest kernel from Debian's linux-source-6.1 package:
# tinyconfig + nova.config, the patches in patches/, a PVH ELF vmlinux. Also builds
# idle-init.S, the /sbin/init the tests put on the guest's root filesystem.
# Usage: build.sh [OUT_DIR] (default guest-images/out). Writes OUT_DIR/nova-linux and
# OUT_DIR/nova-linux-idle-init.
#
# Cached: the kernel is built in guest-images/linux/work/small-kernel/kernels/<key>/, <key>
# being a hash of the source package's version, the compiler's version, nova.config's
# option lines (not its comments) and the patches. With the key's vmlinux present nothing is built, and outputs equal
# to what OUT_DIR holds are not copied again.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${1:-$ROOT/guest-images/out}
WORK=$ROOT/guest-images/linux/work/small-kernel
SRC_PKG=linux-source-6.1
TARBALL=/usr/src/$SRC_PKG.tar.xz
FRAGMENT=$HERE/nova.config
# Reproducible banner: "Linux version 6.1.x-nova (nova@novacron) #1 <date>".
export KBUILD_BUILD_USER=nova KBUILD_BUILD_HOST=novacron KBUILD_BUILD_VERSION=1 \
	KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 1970" ARCH=x86_64

step=setup
trap 'echo "small-kernel/build.sh: FAILED at step: $step" >&2' ERR
die() { echo "small-kernel/build.sh: FAILED at step: $step: $*" >&2; trap - ERR; exit 1; }
log() { echo "small-kernel/build.sh: $*" >&2; }

# What the kernel build needs beyond a fresh Debian 12 (the Makefile's APT_PACKAGES
# has them; installed here too when missing and running as root).
step="check build tools"
missing=()
for need in gcc:gcc make:make flex:flex bison:bison bc:bc xz:xz-utils patch:patch \
	as:binutils ld:binutils readelf:binutils strip:binutils; do
	command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
[[ -f /usr/include/gelf.h ]] || missing+=(libelf-dev) # objtool
[[ -f $TARBALL ]] || missing+=("$SRC_PKG")
if ((${#missing[@]})); then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	[[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]} (run \`make deps\`)"
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
		die "apt-get install ${missing[*]} failed"
fi
[[ -f $TARBALL ]] || die "$SRC_PKG installed but $TARBALL is missing"

mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
# One build at a time in this work tree.
exec 9>"$WORK/.lock"
flock 9
t0=$(date +%s)

# The key: everything that changes the kernel's bytes.
step="cache key"
SRC_VERSION=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
PATCHES=("$HERE"/patches/*.patch)
KEY=$({
	echo "$SRC_PKG $SRC_VERSION"
	gcc --version | head -n1
	grep -E '^(CONFIG_|# CONFIG_)' "$FRAGMENT"
	for p in "${PATCHES[@]}"; do
		echo "patch ${p##*/}"
		cat "$p"
	done
} | sha256sum | cut -c1-16)
DONE=$WORK/kernels/$KEY

if [[ -f $DONE/vmlinux ]]; then
	log "kernel $KEY is cached ($SRC_PKG $SRC_VERSION)"
else
	# Earlier keys (and a build cut off half-way) go: a kernel tree is most of a GB.
	rm -rf "$WORK/kernels"
	mkdir -p "$WORK/kernels"
	TREE=$WORK/kernels/$KEY.tmp
	step="extract $TARBALL"
	log "building kernel $KEY from $SRC_PKG $SRC_VERSION"
	mkdir -p "$TREE"
	# What no x86 build reads stays in the tarball (about half of its 1.3 GB): the
	# other architectures' code and device trees (their Kconfig files are read),
	# amdgpu's register headers, the documentation but its Kconfig, perf and the
	# selftests.
	skip=('Documentation/[!K]*' drivers/gpu/drm/amd/include/asic_reg tools/perf tools/testing)
	for a in alpha arc arm arm64 csky hexagon ia64 loongarch m68k microblaze mips nios2 \
		openrisc parisc powerpc riscv s390 sh sparc um xtensa; do
		skip+=("arch/$a/*.[chS]" "arch/$a/*.dts" "arch/$a/*.dtsi")
	done
	tar -xJf "$TARBALL" -C "$TREE" "${skip[@]/#/--exclude=$SRC_PKG/}"
	SRC=$TREE/$SRC_PKG
	BUILD=$TREE/build
	mkdir -p "$BUILD"
	for p in "${PATCHES[@]}"; do
		step="apply ${p##*/}"
		patch -d "$SRC" -p1 --forward --batch --quiet <"$p" || die "does not apply to $SRC_PKG $SRC_VERSION"
	done

	step="configure"
	{
		make -s -C "$SRC" O="$BUILD" tinyconfig &&
			"$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD" "$BUILD/.config" "$FRAGMENT" &&
			make -s -C "$SRC" O="$BUILD" olddefconfig
	} >"$TREE/config.log" 2>&1 || { tail -n 20 "$TREE/config.log" >&2; die "configuring failed (log above)"; }
	# Every line of the fragment must survive olddefconfig: a `=` value exactly, a
	# "is not set" as not set or absent (its dependencies are off).
	bad=()
	while IFS= read -r line; do
		if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)= ]]; then
			grep -qxF "$line" "$BUILD/.config" || bad+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$BUILD/.config" || echo absent))")
		elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set ]]; then
			! grep -qE "^${BASH_REMATCH[1]}=" "$BUILD/.config" || bad+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$BUILD/.config"))")
		fi
	done <"$FRAGMENT"
	((${#bad[@]} == 0)) || die "nova.config lines olddefconfig did not keep: $(printf '\n  %s' "${bad[@]}")"

	step="make vmlinux"
	if ! nice -n 15 make -s -C "$SRC" O="$BUILD" -j"$(nproc)" vmlinux >"$TREE/make.log" 2>&1; then
		tail -n 40 "$TREE/make.log" >&2
		die "make vmlinux failed (log above)"
	fi

	# Keep what the tests and a debugging session need; the tree goes.
	step="keep outputs"
	mkdir -p "$TREE/out"
	strip -o "$TREE/out/vmlinux" "$BUILD/vmlinux"
	cp "$BUILD/.config" "$TREE/out/config"
	cp "$BUILD/System.map" "$TREE/out/System.map"
	mv "$TREE/out" "$DONE"
	rm -rf "$TREE"
	log "built in $(($(date +%s) - t0)) s"
fi

# The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18) is what a VMM boots it by.
step="check PVH note"
readelf -nW "$DONE/vmlinux" | grep -q '(0x00000012)' || die "$DONE/vmlinux has no PVH entry note"

# /sbin/init for the guest's root filesystem: a static ELF, no libc, no system call.
step="build idle-init"
INIT=$WORK/idle-init-$(sha256sum "$HERE/idle-init.S" | cut -c1-16)
if [[ ! -f $INIT ]]; then
	rm -f "$WORK"/idle-init-*
	as -o "$INIT.o" "$HERE/idle-init.S"
	ld -static -nostdlib -z noseparate-code -e _start -o "$INIT" "$INIT.o"
	rm -f "$INIT.o"
fi

step="copy outputs to $OUT"
install_if_changed() { # $1 source, $2 destination
	cmp -s "$1" "$2" && return 0
	cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
	log "wrote $2"
}
install_if_changed "$DONE/vmlinux" "$OUT/nova-linux"
install_if_changed "$INIT" "$OUT/nova-linux-idle-init"

trap - ERR
echo "nova-linux:            $OUT/nova-linux ($(stat -c %s "$OUT/nova-linux") bytes, PVH ELF, $SRC_PKG $SRC_VERSION, key $KEY)"
echo "nova-linux-idle-init:  $OUT/nova-linux-idle-init ($(stat -c %s "$OUT/nova-linux-idle-init") bytes, static ELF)"
