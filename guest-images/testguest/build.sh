#!/bin/sh
# Builds the NovaCron test guest (release) and copies it to OUT_DIR/testguest.elf
# (default: guest-images/out/). Fails if any SSE/AVX register appears in the code,
# or if the PVH entry note is missing.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT_DIR=${1:-"$HERE/../out"}
# A relative OUT_DIR is relative to the caller's directory, not to this script's.
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
ABI=$(cd "$HERE/../abi" && pwd)
cd "$HERE"

# Path remapping keeps checkout locations out of the binary (reproducible builds).
cargo build --release --locked \
    --config "target.x86_64-unknown-linux-gnu.rustflags=['--remap-path-prefix=$HERE=testguest', '--remap-path-prefix=$ABI=abi']"

ELF="$HERE/target/x86_64-unknown-linux-gnu/release/testguest"

# KVM's emulator (PVM) stops the VM on SSE arithmetic: refuse any xmm/ymm/zmm use.
if objdump -d "$ELF" | grep -E '%[xyz]mm[0-9]'; then
    echo "build.sh: SSE/AVX instructions found in the test guest (listed above)" >&2
    exit 1
fi
# The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 0x12) must be there, 4-aligned.
if ! readelf -n "$ELF" | grep -q 'Unknown note type: (0x00000012)'; then
    echo "build.sh: PVH note missing" >&2
    exit 1
fi
if ! readelf -lW "$ELF" | grep -E '^ +NOTE ' | grep -qE '0x4$'; then
    echo "build.sh: PT_NOTE segment not aligned to 4" >&2
    exit 1
fi

mkdir -p "$OUT_DIR"
objcopy --strip-all "$ELF" "$OUT_DIR/testguest.elf"
echo "built $(cd "$OUT_DIR" && pwd)/testguest.elf"
