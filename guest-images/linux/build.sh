#!/usr/bin/env bash
# Builds the Linux guest: Debian's cloud kernel (bzImage and the ELF vmlinux inside it,
# for PVH boot) and an initramfs whose /init is the static nova-agent with the virtio
# modules it loads. Usage: build.sh [OUT_DIR] (default guest-images/out).
# Idempotent; downloads and extractions are cached in guest-images/linux/work/.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$ROOT/guest-images/out}
WORK=$HERE/work
META_PKG=linux-image-cloud-amd64
# Modules the guest needs for virtio-mmio block and net; their dependencies are added
# from each module's own `depends=`. Drivers first, the transport last, so devices
# probe once their drivers are registered.
ROOT_MODULES=(virtio_blk virtio_net virtio_mmio)
# Debian packages this script uses beyond a fresh Debian 12, by the command they give.
declare -A PKG_OF=([lz4]=lz4 [xz]=xz-utils [zstd]=zstd [bzip2]=bzip2 [lzop]=lzop
	[file]=file [readelf]=binutils [gzip]=gzip [cargo]=)

step=setup
trap 'echo "build.sh: FAILED at step: $step" >&2' ERR
die() { echo "build.sh: FAILED at step: $step: $*" >&2; trap - ERR; exit 1; }
log() { echo "build.sh: $*" >&2; }

# Installs the Debian package giving command $1 if it is missing.
need() {
	command -v "$1" >/dev/null && return 0
	local pkg=${PKG_OF[$1]:-}
	[[ -n $pkg ]] || die "command '$1' not found and no package known for it"
	[[ $(id -u) -eq 0 ]] || die "command '$1' missing: install Debian package '$pkg'"
	log "installing $pkg (for $1)"
	apt-get install -y -qq "$pkg" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; } ||
		die "apt-get install $pkg failed"
}

mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)

# 1. Resolve the meta package to the versioned kernel package, updating apt's lists
#    only when they do not know it.
step="resolve $META_PKG"
depends() { apt-cache show --no-all-versions "$META_PKG" 2>/dev/null | sed -n 's/^Depends: //p'; }
deps=$(depends || true)
if [[ -z $deps ]]; then
	log "apt lists do not know $META_PKG: apt-get update"
	apt-get update -qq || die "apt-get update failed"
	deps=$(depends || true)
fi
KPKG=$(tr ',' '\n' <<<"$deps" | grep -oE 'linux-image-6\.[0-9]+\.[0-9]+-[0-9]+-cloud-amd64' | head -n1) ||
	die "no linux-image-6.x-cloud-amd64 in '$META_PKG' Depends: '$deps'"
KVER=${KPKG#linux-image-}

# 2. Download (not install) and unpack the kernel package.
step="download $KPKG"
KDIR=$WORK/$KPKG
if [[ ! -f $KDIR/.unpacked ]]; then
	mkdir -p "$WORK/deb"
	deb=$(ls "$WORK/deb/${KPKG}_"*.deb 2>/dev/null | head -n1 || true)
	if [[ -z $deb ]]; then
		# apt's _apt user cannot write into a root-owned work tree; it falls back to
		# downloading as root with a warning, which is fine here.
		(cd "$WORK/deb" && apt-get download -q "$KPKG" 2>&1 | grep -v 'unsandboxed' >&2) || true
		deb=$(ls "$WORK/deb/${KPKG}_"*.deb 2>/dev/null | head -n1 || true)
		[[ -n $deb ]] || die "apt-get download $KPKG produced no .deb"
	fi
	step="unpack $deb"
	rm -rf "$KDIR"
	dpkg-deb -x "$deb" "$KDIR"
	touch "$KDIR/.unpacked"
fi
VMLINUZ=$KDIR/boot/vmlinuz-$KVER
CONFIG=$KDIR/boot/config-$KVER
MODDIR=$KDIR/lib/modules/$KVER
[[ -f $VMLINUZ && -f $CONFIG && -d $MODDIR ]] || die "$KPKG lacks boot/vmlinuz, boot/config or lib/modules"

# 3. Extract the ELF vmlinux from the bzImage. The boot protocol header (2.08+) says
#    where the compressed payload is (payload_offset/length from the protected-mode
#    code); the payload's magic then names the decompressor, as scripts/extract-vmlinux
#    does. The payload ends with a 4-byte little-endian uncompressed size, which the
#    decompressors do not expect, so it is cut off and used to check the result.
step="extract vmlinux"
VMLINUX=$WORK/vmlinux-$KVER
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
if [[ ! -f $VMLINUX ]]; then
	[[ $(od -An -c -j $((0x202)) -N4 "$VMLINUZ" | tr -d ' ') == HdrS ]] || die "$VMLINUZ is not a bzImage"
	setup_sects=$(u8 "$VMLINUZ" $((0x1f1)))
	((setup_sects)) || setup_sects=4
	start=$(((setup_sects + 1) * 512 + $(u32 "$VMLINUZ" $((0x248)))))
	len=$(u32 "$VMLINUZ" $((0x24c)))
	magic=$(od -An -tx1 -j "$start" -N6 "$VMLINUZ" | tr -d ' \n')
	case $magic in
	1f8b*) dec=(gzip -dc) ;;
	fd377a585a00) dec=(xz -dc) ;;
	425a68*) dec=(bzip2 -dc) ;;
	5d0000*) dec=(xz -dc --format=lzma) ;;
	894c5a*) dec=(lzop -dc) ;;
	02214c18*) dec=(lz4 -dc) ;;
	28b52ffd*) dec=(zstd -dc) ;;
	*) die "unknown compression magic $magic at payload offset $start" ;;
	esac
	need "${dec[0]}"
	want=$(u32 "$VMLINUZ" $((start + len - 4)))
	dd if="$VMLINUZ" iflag=skip_bytes,count_bytes skip="$start" count=$((len - 4)) bs=1M status=none |
		"${dec[@]}" >"$VMLINUX.tmp" ||
		die "${dec[*]} failed on the payload"
	[[ $(od -An -c -N4 "$VMLINUX.tmp" | tr -d ' ') == 177ELF ]] || die "decompressed payload is not an ELF"
	got=$(stat -c %s "$VMLINUX.tmp")
	[[ $got -eq $want ]] || die "decompressed $got bytes, the bzImage promises $want"
	mv "$VMLINUX.tmp" "$VMLINUX"
fi

# The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18) is what a VMM boots a vmlinux by.
step="check PVH note"
need readelf
pvh_config=$(grep -E '^CONFIG_PVH=y' "$CONFIG" || true)
pvh_entry=$(readelf -nW "$VMLINUX" | awk '/^ +Xen/ && /\(0x00000012\)/ {getline; sub(/.*: */, ""); print; exit}')
if [[ -n $pvh_config && -z $pvh_entry ]]; then
	die "kernel has CONFIG_PVH=y but vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note"
fi
if [[ -n $pvh_entry ]]; then
	read -r -a b <<<"$pvh_entry"
	pvh_entry=0x${b[3]}${b[2]}${b[1]}${b[0]}
fi

# 4. The agent, statically linked (it is /init: no dynamic loader in the initramfs).
step="build nova-agent"
need cargo
AGENT_TARGET=${NOVA_AGENT_TARGET_DIR:-$ROOT/target/agent-static}
# The workspace's .cargo/config.toml links it statically (and names the target dir).
(cd "$ROOT" && CARGO_TARGET_DIR=$AGENT_TARGET cargo rustc -q -p nova-agent --release --bin nova-agent \
	-- -C strip=symbols) || die "cargo rustc -p nova-agent failed"
AGENT=$AGENT_TARGET/x86_64-unknown-linux-gnu/release/nova-agent
step="check nova-agent is static"
need file
file -b "$AGENT" | grep -qE 'statically linked|static-pie linked' || die "$AGENT is not static: $(file -b "$AGENT")"
if ldd "$AGENT" >/dev/null 2>&1 && ! ldd "$AGENT" 2>&1 | grep -q 'statically linked'; then
	die "ldd lists libraries for $AGENT"
fi

# 5. The modules virtio-mmio block and net need, in load order. What the config has
#    built in (=y, or listed in modules.builtin) needs no module. Debian's package has no
#    modules.dep (depmod runs at install), so dependencies come from each .ko's
#    .modinfo `depends=` entry.
step="resolve modules"
declare -A KO_PATH=() LOADED=()
while IFS= read -r -d '' f; do
	n=${f##*/}
	n=${n%%.ko*}
	KO_PATH[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)
ORDER=()
ko_plain() { # $1 .ko path -> uncompressed bytes on stdout
	case $1 in
	*.ko) cat "$1" ;;
	*.ko.xz) need xz && xz -dc "$1" ;;
	*.ko.zst) need zstd && zstd -dcq "$1" ;;
	*.ko.gz) gzip -dc "$1" ;;
	*) die "unknown module file $1" ;;
	esac
}
add_module() {
	local m=${1//-/_} d
	[[ -n ${LOADED[$m]:-} ]] && return 0
	if grep -qE "/${m}\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; then
		LOADED[$m]=builtin
		return 0
	fi
	[[ -n ${KO_PATH[$m]:-} ]] || die "module $m is neither built in nor in $KPKG"
	LOADED[$m]=pending
	for d in $(ko_plain "${KO_PATH[$m]}" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
		add_module "$d"
	done
	LOADED[$m]=module
	ORDER+=("$m")
}
for m in "${ROOT_MODULES[@]}"; do add_module "$m"; done

# 6. The initramfs: /init, /dev/console, the modules (uncompressed, so finit_module
#    takes them on any kernel) and /lib/modules/nova.modules, their load order.
step="build initramfs"
STAGE=$WORK/initramfs-$KVER
rm -rf "$STAGE"
mkdir -p "$STAGE/modules"
spec=("dir /dev 0755" "nod /dev/console 0600 c 5 1" "dir /lib 0755" "dir /lib/modules 0755"
	"dir /proc 0755" "dir /sys 0755" "dir /tmp 1777" "file /init $AGENT 0755"
	"file /lib/modules/nova.modules $STAGE/nova.modules 0644")
: >"$STAGE/nova.modules"
for m in "${ORDER[@]}"; do
	ko_plain "${KO_PATH[$m]}" >"$STAGE/modules/$m.ko"
	echo "/lib/modules/$m.ko" >>"$STAGE/nova.modules"
	spec+=("file /lib/modules/$m.ko $STAGE/modules/$m.ko 0644")
done
printf '%s\n' "${spec[@]}" | LC_ALL=C sort -k2,2 | "$HERE/mkcpio.sh" | gzip -n -9 >"$STAGE/initramfs.cpio.gz"

step="copy outputs to $OUT"
cp "$VMLINUZ" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
cp "$VMLINUX" "$OUT/vmlinux.tmp" && mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
cp "$STAGE/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz.tmp" && mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"

trap - ERR
size() { stat -c %s "$1"; }
echo "kernel:    $KPKG ($(grep -aoE 'Linux version [^ ]+' "$VMLINUX" | head -n1))"
echo "vmlinuz:   $OUT/vmlinuz ($(size "$OUT/vmlinuz") bytes, bzImage)"
if [[ -n $pvh_entry ]]; then
	echo "vmlinux:   $OUT/vmlinux ($(size "$OUT/vmlinux") bytes, ELF, PVH entry $pvh_entry)"
else
	echo "vmlinux:   $OUT/vmlinux ($(size "$OUT/vmlinux") bytes, ELF, no PVH entry note: kernel lacks CONFIG_PVH)"
fi
echo "initramfs: $OUT/initramfs.cpio.gz ($(size "$OUT/initramfs.cpio.gz") bytes; /init = nova-agent $(size "$AGENT") bytes, static)"
echo "modules:   ${ORDER[*]} (load order, /lib/modules/nova.modules)"
echo "took:      $(($(date +%s) - t0)) s"
