#!/usr/bin/env bash
# Builds the NovaCron host image (`make host-image`): from Debian's generic kernel
# package and our static binaries, into host-image/out/ (or $1):
#   vmlinuz, initrd.img   kernel + initramfs (/init = nova-init; nova-hostd, nova-vmm,
#                         the modules in MODULES, mke2fs) - PXE-boot these two
#   nova-host.raw         GPT disk: EFI system partition (GRUB), system slots A and B,
#                         a blank data partition nova-init formats on first boot
#   nova-host.iso         UEFI-bootable ISO (El Torito EFI image, hybrid for USB sticks)
#   VERSION               the image's version (also /etc/nova-version in the initramfs:
#                         what hostd reports); NOVA_IMAGE_VERSION, default
#                         <workspace version>+<SOURCE_DATE_EPOCH>
#   SHA256SUMS            the outputs' hashes
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last commit's
# time), GUIDs, volume ids and file order are fixed, compressors run single-threaded.
# Cached: when the inputs (kernel package, binaries, this directory's files, host
# tools' versions) hash to what the last build recorded, nothing is rebuilt.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$HERE/out}
WORK=$HERE/work
META_PKG=${NOVA_HOST_KERNEL:-linux-image-amd64}
# Default: when the image's own sources last changed (not every commit: the cache would miss).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct -- host-image init 2>/dev/null || echo 1700000000)}
export TZ=UTC LC_ALL=C
WS_VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
VERSION=${NOVA_IMAGE_VERSION:-${WS_VERSION:-0}+$SOURCE_DATE_EPOCH}
[[ $VERSION =~ ^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}$ ]] || { echo "host-image: NOVA_IMAGE_VERSION '$VERSION': 1-64 of letters, digits, . - _ +" >&2; exit 1; }
# Image signing keys the image itself trusts (NOVA_IMAGE_KEYS: comma-separated Ed25519
# public keys, hex): baked into /etc/nova-image-keys, which nova-init adds to
# nova.conf's image_keys. An image trusting the next key is how keys rotate without
# touching any host's nova.conf (host-image/README.md, "Signed images").
IMAGE_KEYS=${NOVA_IMAGE_KEYS:-}
for k in ${IMAGE_KEYS//,/ }; do
	[[ $k =~ ^[0-9a-f]{64}$ ]] || { echo "host-image: NOVA_IMAGE_KEYS: '$k' is not an Ed25519 public key (64 lowercase hex digits)" >&2; exit 1; }
done

# Modules in load order of their roots; dependencies come from each .ko's `depends=`.
# File systems and VM networking first, then disk and NIC drivers, the PCI transports
# and the power button last (devices probe as soon as their driver registers).
MODULES=(
	ext4 vfat nls_cp437 nls_ascii nls_iso8859_1 crc32c_generic
	kvm kvm_intel kvm_amd vhost_net tun bridge vxlan veth 8021q
	virtio_blk virtio_scsi sd_mod sr_mod nvme ahci usb_storage uas xhci_pci ehci_pci
	virtio_net e1000 e1000e igb igc ixgbe i40e r8169 tg3 bnxt_en mlx5_core
	virtio_pci evdev button
)

step=setup
trap 'echo "host-image: FAILED at step: $step" >&2' ERR
die() { echo "host-image: FAILED at step: $step: $*" >&2; trap - ERR; exit 1; }
log() { echo "host-image: $*" >&2; }
for c in dpkg-deb apt-get sfdisk mkfs.fat mcopy mmd grub-mkimage xorriso zstd objcopy sha256sum; do
	command -v "$c" >/dev/null || die "$c is missing: run \`make deps\` (APT_PACKAGES)"
done
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)

# 1. The kernel package (downloaded, never installed).
step="resolve $META_PKG"
depends() { apt-cache show --no-all-versions "$META_PKG" 2>/dev/null | sed -n 's/^Depends: //p'; }
deps=$(depends || true)
if [[ -z $deps ]]; then
	apt-get update -qq || die "apt-get update failed"
	deps=$(depends || true)
fi
KPKG=$(tr ',' '\n' <<<"$deps" | grep -oE 'linux-image-[0-9][^ ]*-amd64' | head -n1) ||
	die "no versioned kernel in '$META_PKG' Depends: '$deps'"
KVER=${KPKG#linux-image-}
step="download $KPKG"
mkdir -p "$WORK/deb"
deb=$(ls "$WORK/deb/${KPKG}_"*.deb 2>/dev/null | head -n1 || true)
if [[ -z $deb ]]; then
	(cd "$WORK/deb" && apt-get download -q "$KPKG" 2>&1 | grep -v unsandboxed >&2) || true
	deb=$(ls "$WORK/deb/${KPKG}_"*.deb 2>/dev/null | head -n1 || true)
	[[ -n $deb ]] || die "apt-get download $KPKG produced no .deb"
fi

# 2. Our binaries, release and static (there is no dynamic loader for them).
# NOVA_HOST_IMAGE_PROFILE=dev takes the debug build instead (what `make test` boots:
# the tests already built it, and a release build would add minutes to every run).
step="build nova-init, nova-hostd, nova-vmm"
# Without SOURCE_DATE_EPOCH: C build scripts (ring, zstd-sys) rebuild when it changes,
# and `make build-release` builds without it; one set of release artifacts serves both.
case ${NOVA_HOST_IMAGE_PROFILE:-release} in
release) profile=(--release) REL=$ROOT/target/x86_64-unknown-linux-gnu/release ;;
dev) profile=() REL=$ROOT/target/x86_64-unknown-linux-gnu/debug ;;
*) die "NOVA_HOST_IMAGE_PROFILE: release or dev, not ${NOVA_HOST_IMAGE_PROFILE}" ;;
esac
(cd "$ROOT" && env -u SOURCE_DATE_EPOCH cargo build -q "${profile[@]}" -p nova-init -p nova-hostd -p nova-vmm --bins) ||
	die "cargo build ${profile[*]} failed"
for b in nova-init nova-hostd nova-vmm; do
	file -b "$REL/$b" | grep -qE 'statically linked|static-pie linked' || die "$REL/$b is not static"
done

# 3. Inputs hash: unchanged inputs, unchanged outputs.
step="hash inputs"
tools="$(dpkg-query -W -f='${Package}=${Version}\n' e2fsprogs libext2fs2 libc6 grub-efi-amd64-bin dosfstools mtools xorriso fdisk zstd 2>/dev/null)"
inputs=$( {
	sha256sum "$deb" "$REL/nova-init" "$REL/nova-hostd" "$REL/nova-vmm" "$HERE"/*.sh "$HERE"/*.cfg "$ROOT/guest-images/linux/mkcpio.sh" /sbin/mke2fs
	echo "$tools" "$SOURCE_DATE_EPOCH" "${MODULES[*]}" "$VERSION" "$IMAGE_KEYS"
} | sha256sum | cut -d' ' -f1)
if [[ -f $OUT/.inputs && $(cat "$OUT/.inputs") == "$inputs" ]] && (cd "$OUT" && sha256sum -c --quiet SHA256SUMS 2>/dev/null); then
	log "inputs unchanged ($inputs): $OUT is up to date"
	exit 0
fi
rm -f "$OUT/.inputs"

step="unpack $deb"
KDIR=$WORK/$KPKG
if [[ ! -f $KDIR/.unpacked ]]; then
	rm -rf "$KDIR"
	dpkg-deb -x "$deb" "$KDIR"
	touch "$KDIR/.unpacked"
fi
VMLINUZ=$KDIR/boot/vmlinuz-$KVER
MODDIR=$KDIR/lib/modules/$KVER
[[ -f $VMLINUZ && -d $MODDIR ]] || die "$KPKG lacks boot/vmlinuz or lib/modules"

# 4. Modules with their dependencies, in load order.
step="resolve modules"
declare -A KO_PATH=() SEEN=()
while IFS= read -r -d '' f; do
	n=${f##*/}
	n=${n%%.ko*}
	KO_PATH[${n//-/_}]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)
ko_plain() {
	case $1 in
	*.ko) cat "$1" ;;
	*.ko.xz) xz -dc "$1" ;;
	*.ko.zst) zstd -dcq "$1" ;;
	*) die "unknown module file $1" ;;
	esac
}
ORDER=()
add_module() {
	local m=${1//-/_} d
	[[ -n ${SEEN[$m]:-} ]] && return 0
	SEEN[$m]=1
	grep -qE "/${m//_/[-_]}\.ko\$" "$MODDIR/modules.builtin" && return 0
	[[ -n ${KO_PATH[$m]:-} ]] || die "module $m is neither built in nor in $KPKG"
	for d in $(ko_plain "${KO_PATH[$m]}" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
		add_module "$d"
	done
	ORDER+=("$m")
}
for m in "${MODULES[@]}"; do add_module "$m"; done

# 5. The initramfs.
step="build initramfs"
STAGE=$WORK/initramfs
rm -rf "$STAGE"
mkdir -p "$STAGE/modules" "$STAGE/lib"
echo "$VERSION" >"$STAGE/nova-version"
spec=("dir /dev 0755" "nod /dev/console 0600 c 5 1" "dir /proc 0755" "dir /sys 0755" "dir /run 0755"
	"dir /tmp 1777" "dir /data 0755" "dir /boot 0755" "dir /bin 0755" "dir /sbin 0755"
	"dir /lib 0755" "dir /lib/modules 0755" "dir /lib/x86_64-linux-gnu 0755" "dir /lib64 0755"
	"file /init $STAGE/nova-init 0755" "file /bin/nova-hostd $STAGE/nova-hostd 0755"
	"file /bin/nova-vmm $STAGE/nova-vmm 0755" "file /sbin/mke2fs /sbin/mke2fs 0755"
	"file /lib/modules/nova.modules $STAGE/nova.modules 0644"
	"dir /etc 0755" "file /etc/nova-version $STAGE/nova-version 0644")
if [[ -n $IMAGE_KEYS ]]; then
	tr ',' '\n' <<<"$IMAGE_KEYS" | grep . >"$STAGE/nova-image-keys"
	spec+=("file /etc/nova-image-keys $STAGE/nova-image-keys 0644")
fi
for b in nova-init nova-hostd nova-vmm; do
	objcopy --strip-all "$REL/$b" "$STAGE/$b"
done
# mke2fs is dynamic: its libraries and loader come along.
while read -r lib; do
	case $lib in
	/lib64/ld-linux-x86-64.so.2) spec+=("file /lib64/ld-linux-x86-64.so.2 $(readlink -f "$lib") 0755") ;;
	*) spec+=("file /lib/x86_64-linux-gnu/${lib##*/} $(readlink -f "$lib") 0755") ;;
	esac
done < <(ldd /sbin/mke2fs | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
: >"$STAGE/nova.modules"
for m in "${ORDER[@]}"; do
	ko_plain "${KO_PATH[$m]}" >"$STAGE/modules/$m.ko"
	echo "/lib/modules/$m.ko" >>"$STAGE/nova.modules"
	spec+=("file /lib/modules/$m.ko $STAGE/modules/$m.ko 0644")
done
printf '%s\n' "${spec[@]}" | sort -k2,2 | "$ROOT/guest-images/linux/mkcpio.sh" | zstd -q -19 -T1 -c >"$WORK/initrd.img"
cp "$VMLINUZ" "$WORK/vmlinuz"

# 6. FAT file systems: fixed volume ids, every file and directory dated
#    SOURCE_DATE_EPOCH (mtools takes dates from the source files with -m).
step="build FAT images"
fat() { # fat IMAGE SIZE_MIB LABEL VOLID SRC_DIR
	local img=$1 mib=$2 label=$3 id=$4 src=$5
	rm -f "$img"
	mkfs.fat -C --invariant -S 512 -i "$id" -n "$label" "$img" $((mib * 1024)) >/dev/null
	find "$src" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	local d f
	while IFS= read -r d; do MTOOLS_SKIP_CHECK=1 mmd -i "$img" "::/$d"; done < <(cd "$src" && find . -mindepth 1 -type d | sed 's|^\./||' | sort)
	while IFS= read -r f; do MTOOLS_SKIP_CHECK=1 mcopy -m -i "$img" "$src/$f" "::/$f"; done < <(cd "$src" && find . -type f | sed 's|^\./||' | sort)
}
GRUB=$WORK/grub
rm -rf "$GRUB" && mkdir -p "$GRUB"
# GRUB's embedded first step finds the partition holding the real grub.cfg.
grub-mkimage -O x86_64-efi -o "$GRUB/BOOTX64.EFI" -p /EFI/nova -c "$HERE/grub-early.cfg" \
	part_gpt part_msdos fat iso9660 search search_label search_fs_file normal configfile \
	linux echo test loadenv sleep all_video efi_gop gzio regexp
ESP=$WORK/esp && rm -rf "$ESP" && mkdir -p "$ESP/EFI/BOOT" "$ESP/EFI/nova" "$ESP/nova"
cp "$GRUB/BOOTX64.EFI" "$ESP/EFI/BOOT/BOOTX64.EFI"
cp "$HERE/grub-disk.cfg" "$ESP/EFI/nova/grub.cfg"
# GRUB's environment block: exactly 1024 bytes, padded with '#'.
env_block() { local s; s=$(printf '# GRUB Environment Block\n%s\n' "$@"); printf '%s' "$s"; head -c $((1024 - ${#s})) /dev/zero | tr '\0' '#'; }
env_block "nova_slot=a" >"$ESP/EFI/nova/grubenv"
cp "$HERE/nova.conf.example" "$ESP/nova/nova.conf.example"
SYS=$WORK/sys-a && rm -rf "$SYS" && mkdir -p "$SYS"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$SYS/"
EMPTY=$WORK/empty && rm -rf "$EMPTY" && mkdir -p "$EMPTY"
fat "$WORK/esp.img" 32 NOVA-ESP 4e4f5641 "$ESP"
sys_mib=$(( ($(stat -c %s "$SYS/vmlinuz") + $(stat -c %s "$SYS/initrd.img")) / 1048576 * 2 + 32 ))
fat "$WORK/sys-a.img" "$sys_mib" NOVA-A 4e4f0041 "$SYS"
fat "$WORK/sys-b.img" "$sys_mib" NOVA-B 4e4f0042 "$EMPTY"

# 7. The raw disk: GPT with fixed GUIDs; the data partition is left blank (zeros).
step="build raw disk"
DATA_MIB=${NOVA_HOST_DATA_MIB:-256}
RAW=$WORK/nova-host.raw
rm -f "$RAW"
total=$((1 + 32 + sys_mib * 2 + DATA_MIB + 1))
truncate -s "${total}M" "$RAW"
sfdisk -q --no-reread --no-tell-kernel "$RAW" <<EOF
label: gpt
label-id: 4E4F5641-0000-4000-8000-000000000000
first-lba: 2048
start=1MiB, size=32MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=4E4F5641-0001-4000-8000-000000000001, name=nova-esp
size=${sys_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=4E4F5641-0002-4000-8000-000000000002, name=nova-a
size=${sys_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=4E4F5641-0003-4000-8000-000000000003, name=nova-b
size=${DATA_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=4E4F5641-0004-4000-8000-000000000004, name=nova-data
EOF
off=1
for img in esp sys-a sys-b; do
	dd if="$WORK/$img.img" of="$RAW" bs=1M seek=$off conv=notrunc,sparse status=none
	off=$((off + $(stat -c %s "$WORK/$img.img") / 1048576))
done

# 8. The ISO: the kernel and initramfs in the ISO 9660 tree, GRUB in an El Torito EFI
#    image that is also a GPT partition (so the ISO boots written to a USB stick).
step="build ISO"
ISOT=$WORK/iso && rm -rf "$ISOT" && mkdir -p "$ISOT/nova" "$ISOT/EFI/nova"
cp "$WORK/vmlinuz" "$WORK/initrd.img" "$ISOT/nova/"
cp "$HERE/grub-iso.cfg" "$ISOT/EFI/nova/grub.cfg"
EFIT=$WORK/efiboot && rm -rf "$EFIT" && mkdir -p "$EFIT/EFI/BOOT"
cp "$GRUB/BOOTX64.EFI" "$EFIT/EFI/BOOT/"
fat "$WORK/efiboot.img" 4 NOVA-ISOEFI 4e4f0045 "$EFIT"
find "$ISOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$WORK/nova-host.iso"
xorriso -as mkisofs -quiet -o "$WORK/nova-host.iso" -iso-level 3 -V NOVA_HOST -J -R \
	--modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" \
	-append_partition 2 0xef "$WORK/efiboot.img" -e --interval:appended_partition_2:all:: \
	-no-emul-boot -partition_offset 16 "$ISOT" 2>&1 | grep -v '^xorriso : NOTE' >&2 || true
[[ -s $WORK/nova-host.iso ]] || die "xorriso wrote no ISO"

step="copy outputs to $OUT"
for f in vmlinuz initrd.img nova-host.raw nova-host.iso; do
	cp --sparse=always "$WORK/$f" "$OUT/$f.tmp" && mv "$OUT/$f.tmp" "$OUT/$f"
done
echo "$VERSION" >"$OUT/VERSION"
(cd "$OUT" && sha256sum vmlinuz initrd.img nova-host.raw nova-host.iso VERSION >SHA256SUMS)
echo "$inputs" >"$OUT/.inputs"

trap - ERR
mib() { echo "$(($(stat -c %s "$1") * 10 / 1048576))" | sed 's/\(.\)$/.\1/'; }
log "version $VERSION; kernel $KPKG; ${#ORDER[@]} modules"
log "vmlinuz $(mib "$OUT/vmlinuz") MiB + initrd.img $(mib "$OUT/initrd.img") MiB; raw $(mib "$OUT/nova-host.raw") MiB; iso $(mib "$OUT/nova-host.iso") MiB"
log "took $(($(date +%s) - t0)) s; hashes in $OUT/SHA256SUMS"
