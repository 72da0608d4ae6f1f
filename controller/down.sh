#!/usr/bin/env bash
# `make down`: stops what up.sh started: every process in the two host namespaces
# (hostd and its VMMs), the controller, the namespaces and veths, and novactl's
# "nova-up" context.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${NOVA_RUN_DIR:-$ROOT/target/up}"

for h in a b; do
    if ip netns list | grep -qw "nova-$h"; then
        pids=$(ip netns pids "nova-$h")
        [ -n "$pids" ] && kill $pids 2>/dev/null
        sleep 0.5
        pids=$(ip netns pids "nova-$h")
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
        ip netns del "nova-$h"
    fi
done
if [ -f "$RUN/controller.pid" ]; then
    pid=$(cat "$RUN/controller.pid")
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q nova-controller; then
        kill "$pid"
    fi
    rm -f "$RUN/controller.pid"
fi
for l in nup-a nup-b novaup0 nux-a; do ip link del "$l" 2>/dev/null; done
# The novactl context up.sh made.
BIN="${NOVA_BIN_DIR:-$ROOT/target/x86_64-unknown-linux-gnu/debug}"
[ -x "$BIN/novactl" ] && "$BIN/novactl" config delete-context nova-up >/dev/null 2>&1
echo "NovaCron stopped (state and logs kept in $RUN)"
