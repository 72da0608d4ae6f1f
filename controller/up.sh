#!/usr/bin/env bash
# `make up`: a one-machine NovaCron cluster in the background. The controller (SQLite)
# in this namespace, two nova-hostd "hosts" in two network namespaces (each reached
# from here by a veth, joined to each other by a veth for hostd-to-hostd calls,
# migration streams and the VXLAN underlay), and a demo VM (the test guest, counter workload).
# Returns once both hosts are Ready and the VM runs. `make down` (down.sh) stops it.
#
# Addresses are documentation ranges: 198.18.0.0/24 management (controller .1, hosts
# .11/.12), 198.51.100.0/24 between the hosts, 203.0.113.0/24 the VM bridges.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${NOVA_BIN_DIR:-$ROOT/target/x86_64-unknown-linux-gnu/debug}"
RUN="${NOVA_RUN_DIR:-$ROOT/target/up}"
GUEST="$ROOT/guest-images/out/testguest.elf"
API="https://198.18.0.1:7070"

die() { echo "up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bridges, /dev/kvm)"
for b in nova-controller novactl nova-hostd nova-vmm; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is not built (make build)"
done
[ -f "$GUEST" ] || die "$GUEST is missing (make guest-images)"

"$ROOT/controller/down.sh" >/dev/null 2>&1 || true
rm -rf "$RUN"
mkdir -p "$RUN"

# Network, routed (no bridge here, no forwarding): a veth from this namespace into
# each host namespace carries the API (198.18.0.1 here, 198.18.0.11/.12 there); a veth
# between the two namespaces (198.51.100.1/.2) carries host-to-host traffic: each
# host reaches the other's 198.18.0 address through it, so hostd-to-hostd calls,
# migration streams and the VXLAN underlay never leave the pair. Each hostd
# registers (and advertises) its 198.18.0 address, the one all three can reach.
ip link add nux-a type veth peer name nux-b
for h in a b; do
    n=$([ $h = a ] && echo 1 || echo 2); o=$([ $h = a ] && echo 2 || echo 1)
    ip netns add "nova-$h"
    ip -n "nova-$h" link set lo up
    ip link add "nup-$h" type veth peer name "nupi-$h"
    ip link set "nupi-$h" netns "nova-$h"
    ip -n "nova-$h" link set "nupi-$h" name mgmt0
    ip addr add 198.18.0.1/32 dev "nup-$h"
    ip link set "nup-$h" up
    ip route add "198.18.0.1$n/32" dev "nup-$h"
    ip -n "nova-$h" addr add "198.18.0.1$n/32" dev mgmt0
    ip -n "nova-$h" link set mgmt0 up
    ip -n "nova-$h" route add 198.18.0.1/32 dev mgmt0
    ip link set "nux-$h" netns "nova-$h"
    ip -n "nova-$h" addr add "198.51.100.$n/24" dev "nux-$h"
    ip -n "nova-$h" link set "nux-$h" up
    ip -n "nova-$h" route add "198.18.0.1$o/32" dev "nux-$h"
done

# TLS everywhere: a development CA and the controller's server certificate; the
# controller signs each host's serving certificate with the CA when it joins (the
# hosts get no TLS files); every client trusts the CA (--ca).
"$BIN/nova-controller" dev-ca "$RUN/tls" --san 198.18.0.1 --san 198.18.0.11 --san 198.18.0.12 >/dev/null
CA="$RUN/tls/ca.pem"
TLS=(--tls-cert "$RUN/tls/server.pem" --tls-key "$RUN/tls/server.key")

# Controller.
setsid "$BIN/nova-controller" --listen 198.18.0.1:7070 --store "sqlite:$RUN/controller.db" \
    --admin-token-file "$RUN/admin.token" --join-token-file "$RUN/join.token" \
    "${TLS[@]}" --hostd-ca "$CA" --hostd-ca-key "$RUN/tls/ca.key" \
    --heartbeat-ms 5000 >"$RUN/controller.log" 2>&1 < /dev/null &
echo $! > "$RUN/controller.pid"
for _ in $(seq 100); do [ -s "$RUN/join.token" ] && [ -s "$RUN/admin.token" ] && break; sleep 0.1; done
[ -s "$RUN/admin.token" ] || die "the controller did not start: $(tail -5 "$RUN/controller.log")"

# Two hosts.
for h in a b; do
    n=$([ $h = a ] && echo 1 || echo 2); peer=$([ $h = a ] && echo 2 || echo 1)
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/hostd-$h.token"
    chmod 600 "$RUN/hostd-$h.token"
    ip netns exec "nova-$h" setsid "$BIN/nova-hostd" --listen "198.18.0.1$n:7070" --data-dir "$RUN/host-$h" \
        --token-file "$RUN/hostd-$h.token" --controller "$API" --join-token-file "$RUN/join.token" \
        --controller-ca "$CA" --image-root "$(dirname "$(readlink -f "$GUEST")")" \
        --vmm-bin "$BIN/nova-vmm" --bridge novabr0 --host-cidr "203.0.113.$n/24" \
        --vxlan-vni 42 --vxlan-dev "nux-$h" --vxlan-peer "198.18.0.1$peer" \
        >"$RUN/hostd-$h.log" 2>&1 < /dev/null &
    echo $! > "$RUN/hostd-$h.pid"
done

# novactl talks to this cluster through a context of its config file ("nova-up", made
# the current one, as kind does for kubectl); down.sh removes it.
ctl() { "$BIN/novactl" "$@"; }
ctl config set-context nova-up --url "$API" --token-file "$RUN/admin.token" --ca "$CA" --use >/dev/null
ready_hosts() { ctl host list -o json 2>/dev/null | grep -c '"state": "ready"'; }
echo "waiting for both hosts to be Ready..."
for _ in $(seq 300); do
    [ "$(ready_hosts)" = 2 ] && break
    sleep 0.2
done
[ "$(ready_hosts)" = 2 ] || die "hosts did not register; see $RUN/hostd-*.log"

ctl vm create demo --kernel "$GUEST" --vcpus 1 --mem-mib 64 --cmdline "nova.workload=counter,net" \
    --nics 1 -o json > "$RUN/demo.json"
VM=$(grep -m1 '"id"' "$RUN/demo.json" | sed 's/.*"id": "\([^"]*\)".*/\1/')
# The describe view's observed state, one line.
running() { ctl vm get "$VM" | grep -A1 '^Observed:' | grep -q 'State: *running'; }
echo "waiting for the demo VM $VM to run..."
for _ in $(seq 300); do
    running && break
    sleep 0.2
done
running || die "the demo VM did not start; see $RUN/*.log"

cat <<MSG

NovaCron is up.
  API          $API   (OpenAPI: $API/v1/openapi.json)
  admin token  $RUN/admin.token
  CA           $CA   (curl --cacert, novactl --ca)
  hosts        $(ctl host list | tail -n +2 | awk '{print $1" ("$2")"}' | paste -sd' ')
  demo VM      $VM (test guest, counter + net workloads)

  novactl's current context is now "nova-up" (novactl config get-contexts):
  $BIN/novactl vm list
  $BIN/novactl vm get $VM             # describe it
  $BIN/novactl vm migrate $VM          # live-migrate it to the other host
  make down                            # stop everything (controller/down.sh)
State and logs: $RUN
MSG
