#!/usr/bin/env bash
# Writes a newc cpio archive to stdout from a spec on stdin, one entry a line, in the
# spirit of the kernel's usr/gen_init_cpio:
#   dir  <path> <mode>
#   file <path> <source> <mode>
#   nod  <path> <mode> <c|b> <major> <minor>
# Entries are written in the order given (the caller sorts them), owned by 0:0 with
# mtime 0 and inode numbers counted from 1, so the same inputs give the same bytes.
# Needs only bash and coreutils: no cpio package, no root (device nodes are written
# into the archive, never created on disk).
set -euo pipefail

ino=0
# Zero bytes to pad `n` bytes already written up to the next multiple of 4.
pad4() { local r=$(($1 % 4)); if ((r)); then head -c $((4 - r)) /dev/zero; fi; }

# header <name> <mode-with-type> <size> <rdevmajor> <rdevminor>
header() {
	local name=$1 mode=$2 size=$3 rmaj=$4 rmin=$5 nlink=1
	ino=$((ino + 1))
	[[ $((mode & 0170000)) -eq $((0040000)) ]] && nlink=2
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$ino" "$mode" 0 0 "$nlink" 0 "$size" 0 0 "$rmaj" "$rmin" $((${#name} + 1)) 0
	printf '%s\0' "$name"
	pad4 $((110 + ${#name} + 1))
}

while read -r kind path rest; do
	[[ -z $kind || $kind == \#* ]] && continue
	name=${path#/}
	case $kind in
	dir)
		header "$name" $((0040000 | 8#$rest)) 0 0 0
		;;
	file)
		read -r src mode <<<"$rest"
		size=$(stat -L -c %s "$src")
		header "$name" $((0100000 | 8#$mode)) "$size" 0 0
		cat "$src"
		pad4 "$size"
		;;
	nod)
		read -r mode type major minor <<<"$rest"
		case $type in
		c) t=0020000 ;;
		b) t=0060000 ;;
		*) echo "mkcpio: bad node type '$type' for $path" >&2; exit 1 ;;
		esac
		header "$name" $((t | 8#$mode)) 0 "$major" "$minor"
		;;
	*)
		echo "mkcpio: unknown entry kind '$kind'" >&2
		exit 1
		;;
	esac
done
ino=-1 # the trailer carries inode 0
header "TRAILER!!!" 0 0 0 0
