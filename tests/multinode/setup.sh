#!/usr/bin/env bash
# setup.sh DIR: two simulated nodes on this machine (see README.md here and ../../../shared/ENVIRONMENT.md,
# "Two simulated nodes on one machine").
#
# Creates two network namespaces joined by a veth pair on a private /24 that exists only inside them
# (no default route, no DNS), a hosts file naming nodeA and nodeB, a hostfile (2 slots each) and an
# Open MPI tmpdir, all under DIR, and records the names in DIR/state (sourced by mpirun.sh, on.sh,
# rsh_agent.sh and teardown.sh). Processes run "on a node" in that node's network namespace plus their
# own UTS namespace (hostname nodeA/nodeB) and mount namespace (DIR/hosts bind-mounted over /etc/hosts);
# see on.sh. Runs teardown.sh DIR first, so a stale set-up in DIR is replaced. Needs root and iproute2.
# Names carry this script's PID, so concurrent set-ups (ctest -j, two build trees) never collide.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
[ $# -eq 1 ] || { echo "usage: setup.sh DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
bash "$HERE/teardown.sh" "$DIR"

id=$$
net=$((id % 250 + 1)) # 10.251.<net>.0/24, private to the two namespaces anyway
cat >"$DIR/state" <<EOS
MN_DIR='$DIR'
MN_NS_A='husai-$id-A'
MN_NS_B='husai-$id-B'
MN_VETH_A='husai${id}a'
MN_VETH_B='husai${id}b'
MN_SUBNET='10.251.$net.0/24'
MN_IP_A='10.251.$net.1'
MN_IP_B='10.251.$net.2'
EOS
# shellcheck source=/dev/null
. "$DIR/state"

fail() {
    echo "multinode setup: FAIL: $*" >&2
    [ -n "${MN_KEEP:-}" ] || bash "$HERE/teardown.sh" "$DIR" || true
    exit 1
}
ip netns add "$MN_NS_A" || fail "ip netns add $MN_NS_A"
ip netns add "$MN_NS_B" || fail "ip netns add $MN_NS_B"
ip link add "$MN_VETH_A" type veth peer name "$MN_VETH_B" || fail "cannot create veth pair $MN_VETH_A/$MN_VETH_B"
ip link set "$MN_VETH_A" netns "$MN_NS_A" || fail "moving $MN_VETH_A into $MN_NS_A"
ip link set "$MN_VETH_B" netns "$MN_NS_B" || fail "moving $MN_VETH_B into $MN_NS_B"
for n in A B; do
    ns_var=MN_NS_$n veth_var=MN_VETH_$n ip_var=MN_IP_$n
    ns=${!ns_var} veth=${!veth_var} addr=${!ip_var}
    ip -n "$ns" addr add "$addr/24" dev "$veth" || fail "address $addr on $veth"
    ip -n "$ns" link set lo up || fail "lo up in $ns"
    ip -n "$ns" link set "$veth" up || fail "$veth up in $ns"
done

printf '127.0.0.1\tlocalhost\n%s\tnodeA\n%s\tnodeB\n' "$MN_IP_A" "$MN_IP_B" >"$DIR/hosts"
printf 'nodeA slots=2\nnodeB slots=2\n' >"$DIR/hostfile"
mkdir -p "$DIR/tmp"

# The two nodes must see each other by name (no ping on a minimal system: a TCP connection to a closed port
# on nodeB answered with "refused" proves the name resolves and the packets flow both ways).
reach_ok=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
    msg=$(bash "$HERE/on.sh" "$DIR" nodeA timeout 2 bash -c 'echo >/dev/tcp/nodeB/9' 2>&1) || true
    case $msg in
    *refused*)
        reach_ok=1
        break
        ;;
    esac
    sleep 0.2
done
[ "$reach_ok" -eq 1 ] || fail "nodeA cannot reach nodeB over $MN_VETH_A/$MN_VETH_B: $msg"
got=$(bash "$HERE/on.sh" "$DIR" nodeB hostname) || fail "cannot run a command on nodeB"
[ "$got" = nodeB ] || fail "hostname on nodeB is '$got'"
echo "multinode setup: nodeA=$MN_NS_A ($MN_IP_A) nodeB=$MN_NS_B ($MN_IP_B) on $MN_SUBNET, state in $DIR"
