#!/usr/bin/env bash
# on.sh DIR NODE CMD [ARGS...]: run CMD (argument words kept as they are) "on" NODE (nodeA or nodeB) of the
# set-up in DIR: in the node's network namespace, in a new UTS namespace with host name NODE and a new
# mount namespace (private propagation) where DIR/hosts is bind-mounted over /etc/hosts (then the
# node's own set-up DIR/init.NODE runs, if there is one). Execs all the way down, so CMD gets
# this script's PID and its signals.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
[ $# -ge 3 ] || { echo "usage: on.sh DIR nodeA|nodeB CMD [ARGS...]" >&2; exit 2; }
DIR=$1 node=$2
shift 2
# shellcheck source=/dev/null
. "$DIR/state"
case $node in
nodeA) ns=$MN_NS_A ;;
nodeB) ns=$MN_NS_B ;;
*) echo "on.sh: unknown node '$node' (nodeA or nodeB)" >&2; exit 2 ;;
esac
# The node's own set-up (DIR/init.NODE, sh commands run on the node before CMD, written by whoever runs
# daemons there, e.g. ../slurm/cluster.sh: its local directories bind-mounted over shared paths, so one
# path is a different place on each node, and the mounts its daemons expect).
init=""
[ ! -f "$MN_DIR/init.$node" ] || init="$MN_DIR/init.$node"
# shellcheck disable=SC2016 # $1.. expand in the inner shell
exec ip netns exec "$ns" unshare --uts --mount --propagation private \
    sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts || exit 1
        if [ -n "$3" ]; then . "$3" || exit 1; fi
        shift 3 && exec "$@"' on.sh "$node" "$MN_DIR/hosts" "$init" "$@"
