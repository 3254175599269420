#!/usr/bin/env bash
# mpirun.sh DIR [MPIRUN ARGS...]: mpirun across the two simulated nodes of setup.sh DIR.
#
# mpirun runs on nodeA (inside its namespaces: from the root namespace the nodes could not connect back)
# with the hostfile DIR/hostfile (nodeA slots=2, nodeB slots=2) and reaches nodeB through rsh_agent.sh.
# Out-of-band and TCP BTL traffic are restricted to the private subnet; intra-node traffic uses vader
# (shared memory); --bind-to none, or one rank per node would share a core. Like a real cluster's launch
# node, mpirun starts from a clean environment and every variable the ranks need is passed with -x, so
# the ranks on nodeA and on nodeB see the same environment: OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM),
# OPENBLAS_NUM_THREADS (default 1), and, when set, HUSAI_THREADS, HUSAI_BLAS_THREADS, OMP_NUM_THREADS, LD_LIBRARY_PATH,
# ASAN_OPTIONS, LSAN_OPTIONS, UBSAN_OPTIONS, HWLOC_PLUGINS_BLACKLIST and the names listed in MN_EXPORT (space-separated).
# Execs mpirun (same PID as this script), so a signal to this script reaches mpirun.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
[ $# -ge 1 ] || { echo "usage: mpirun.sh DIR [mpirun args...]" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$(cd "$1" && pwd)
shift
[ -f "$DIR/state" ] || { echo "mpirun.sh: no set-up in $DIR (run setup.sh $DIR first)" >&2; exit 2; }
# shellcheck source=/dev/null
. "$DIR/state"
MPIRUN=${MPIEXEC:-mpirun}
MPIRUN=$(command -v "$MPIRUN") || { echo "mpirun.sh: mpirun not found" >&2; exit 2; }

envs=(PATH="/usr/local/bin:/usr/bin:/bin" HOME="${HOME:-/root}" USER="$(id -un)" LOGNAME="$(id -un)"
    OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}")
xs=(-x OPENBLAS_NUM_THREADS)
if [ "$(id -u)" -eq 0 ]; then
    envs+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
    xs+=(-x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM)
fi
for v in HUSAI_THREADS HUSAI_BLAS_THREADS OMP_NUM_THREADS LD_LIBRARY_PATH ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS HWLOC_PLUGINS_BLACKLIST ${MN_EXPORT:-}; do
    if [ -n "${!v+x}" ]; then
        envs+=("$v=${!v}")
        xs+=(-x "$v")
    fi
done

exec bash "$HERE/on.sh" "$DIR" nodeA env -i "${envs[@]}" "$MPIRUN" \
    --hostfile "$DIR/hostfile" \
    --mca plm rsh --mca plm_rsh_agent "$HERE/rsh_agent.sh $DIR" \
    --mca oob_tcp_if_include "$MN_SUBNET" --mca btl_tcp_if_include "$MN_SUBNET" \
    --mca btl tcp,self,vader --mca orte_tmpdir_base "$DIR/tmp" \
    --bind-to none "${xs[@]}" "$@"
