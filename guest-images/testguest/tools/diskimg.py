#!/usr/bin/env python3
"""Test helper for the test guest's `disk` workload, reproducing nova-guest-abi's block format.

  diskimg.py make IMAGE [MiB]   create IMAGE with host blocks 0..HOST_BLOCKS (HOST_MAGIC)
  diskimg.py check IMAGE        report host blocks and the guest blocks' generations
"""
import struct
import sys

M = (1 << 64) - 1
BLOCK_WORDS = 512
HOST_BLOCKS, GUEST_BLOCKS_START, GUEST_BLOCKS = 16, 16, 32
HOST_MAGIC = int.from_bytes(b"NOVAHOST", "little")
GUEST_MAGIC = int.from_bytes(b"NOVAGUES", "little")
GOLDEN = 0x9E3779B97F4A7C15


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M


def mix(a, b):
    z = a ^ rotl(b, 32) ^ GOLDEN
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def checksum(words):
    s = 0
    for w in words[: BLOCK_WORDS - 1]:
        s = rotl(s, 5) ^ w
    return s


def fill_block(magic, index, generation):
    seed = mix(index, generation)
    w = [magic, index, generation] + [seed ^ ((i * GOLDEN) & M) for i in range(3, BLOCK_WORDS - 1)]
    w.append(checksum(w))
    return struct.pack("<512Q", *w)


def check_block(data, magic, index):
    w = struct.unpack("<512Q", data)
    if w[0] != magic or w[1] != index:
        return None
    if data != fill_block(magic, index, w[2]):
        return None
    return w[2]


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "make":
        mib = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        with open(path, "wb") as f:
            f.truncate(mib << 20)
            for i in range(HOST_BLOCKS):
                f.write(fill_block(HOST_MAGIC, i, 1))
    elif cmd == "check":
        with open(path, "rb") as f:
            data = f.read((GUEST_BLOCKS_START + GUEST_BLOCKS) * 4096)
        blk = lambda i: data[i * 4096 : (i + 1) * 4096]
        host = sum(check_block(blk(i), HOST_MAGIC, i) is not None for i in range(HOST_BLOCKS))
        gens = [check_block(blk(i), GUEST_MAGIC, i) for i in range(GUEST_BLOCKS_START, GUEST_BLOCKS_START + GUEST_BLOCKS)]
        print(f"host_ok={host} guest_generations={sorted(set(gens), key=str)}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
