#!/usr/bin/env bash
# rsh_agent.sh DIR [SSH OPTIONS] HOST WORDS...: stands in for ssh as Open MPI's rsh launcher agent
# (mpirun.sh passes --mca plm_rsh_agent "rsh_agent.sh DIR"). Like ssh it skips its options, takes the host,
# joins the remaining words with spaces and has a shell on HOST run them (Open MPI quotes words for a
# remote shell, so they must be re-parsed: `exec "$@"` would be wrong). As with ssh, the remote command
# starts from a clean environment: only PATH, HOME, USER and LOGNAME; everything else a rank needs must be
# passed with mpirun -x.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 3 ] || { echo "usage: rsh_agent.sh DIR [ssh options] HOST COMMAND..." >&2; exit 255; }
DIR=$1
shift
while [ $# -gt 0 ]; do
    case $1 in
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;; # ssh options that take an argument
    -?*) shift ;;
    *) break ;;
    esac
done
[ $# -ge 2 ] || { echo "rsh_agent.sh: no host or no command" >&2; exit 255; }
# shellcheck source=/dev/null
. "$DIR/state"
host=${1#*@} # user@nodeB -> nodeB
case $host in
"$MN_IP_A") host=nodeA ;;
"$MN_IP_B") host=nodeB ;;
*) host=${host%%.*} ;; # nodeB.local -> nodeB
esac
shift
cmd="$*"
exec bash "$HERE/on.sh" "$DIR" "$host" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="${HOME:-/root}" \
    USER="$(id -un)" LOGNAME="$(id -un)" sh -c "$cmd"
