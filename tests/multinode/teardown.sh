#!/usr/bin/env bash
# teardown.sh DIR: undo setup.sh DIR. Kills every process still inside either node's network namespace
# (by PID, from `ip netns pids`), deletes the namespaces (which destroys the veth pair inside them) and any
# veth end left in the root namespace by a half-finished set-up, and removes DIR/state. The per-process
# mounts (hosts file over /etc/hosts) live in private mount namespaces and vanish with the processes.
# Idempotent: without DIR/state, or with the namespaces already gone, it does nothing and succeeds.
set -uo pipefail
PATH="$PATH:/usr/sbin:/sbin"
[ $# -eq 1 ] || { echo "usage: teardown.sh DIR" >&2; exit 2; }
DIR=$1
[ -f "$DIR/state" ] || exit 0
# shellcheck source=/dev/null
. "$DIR/state"

ns_exists() { [ -e "/run/netns/$1" ] || ip netns list 2>/dev/null | grep -q "^$1\\b"; }
pids_in() { ip netns pids "$1" 2>/dev/null || true; }

stuck=""
for ns in "$MN_NS_A" "$MN_NS_B"; do
    ns_exists "$ns" || continue
    # TERM first (mpirun forwards it and cleans up its session directory), then KILL whatever is left.
    for sig in TERM TERM KILL KILL KILL KILL KILL KILL; do
        pids=$(pids_in "$ns")
        [ -n "$pids" ] || break
        # shellcheck disable=SC2086
        kill -s "$sig" $pids 2>/dev/null || true
        sleep 0.5
    done
    pids=$(pids_in "$ns")
    [ -z "$pids" ] || stuck="$stuck $ns:[$(tr "\n" " " <<<"$pids")]"
    ip netns del "$ns" 2>/dev/null || true
done
ip link del "$MN_VETH_A" 2>/dev/null || true
ip link del "$MN_VETH_B" 2>/dev/null || true

left=""
[ -z "$stuck" ] || left=" processes that survived SIGKILL:$stuck"
for ns in "$MN_NS_A" "$MN_NS_B"; do
    if ns_exists "$ns"; then left="$left namespace $ns"; fi
done
for v in "$MN_VETH_A" "$MN_VETH_B"; do
    if ip link show "$v" >/dev/null 2>&1; then left="$left veth $v"; fi
done
if [ -n "$left" ]; then
    echo "multinode teardown: FAIL: still present:$left" >&2
    exit 1
fi
rm -rf "$DIR/state" "$DIR/tmp" "$DIR"/init.*
exit 0
