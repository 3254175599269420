# shellcheck shell=bash
# tests/slurm/lib.sh: what the tests on a real Slurm cluster (slurm_test.sh: one node; two_node_test.sh:
# two simulated nodes) share. Sourced; the helpers below write under the test's $tmp. Defines
#   slurm_test_init NAME        strict mode, sbin on PATH, HUSAI and MPIEXEC required, step/fail ("NAME:
#                               ..." lines), skip (exit 77) unless slurm_require passes, the Open MPI
#                               root variables and OPENBLAS_NUM_THREADS=1 exported, the user's site
#                               settings (HUSAI_OUT, partition ...) unset, PY=/usr/bin/python3
#   slurm_require NAME          exit 77 (skipped) unless the Slurm daemons, clients and munge are
#                               installed and we are root (the private cluster's daemons run as root)
#   slurm_watchdog SECONDS NAME [CMD...]
#                               a background watchdog (its PID in SLURM_WATCHDOG): after SECONDS it
#                               prints "NAME: FAIL: watchdog ...", runs CMD (e.g. a teardown, since bash
#                               runs the test's trap only once its foreground command ends) and sends
#                               SIGTERM to the test; kill "$SLURM_WATCHDOG" in the exit trap
#   slurm_on_exit CLUSTER HOOK  the test's exit trap (INT and TERM exit 1): kills the watchdog, after a
#                               failure prints the tail of every job log $tmp/sub/slurm-*.out and of the
#                               slurmctld and slurmd logs under CLUSTER, runs HOOK (stop the cluster ...;
#                               a failing HOOK fails a test that had passed), removes $tmp
#   slurm_client CMD...         runs a Slurm client command where the controller is reachable: directly,
#                               or through the command in the array SLURM_CLIENT (two_node_test.sh:
#                               ../multinode/on.sh NODES nodeA)
#   job_field ID FIELD          one field of `scontrol show job` (jobs stay visible MinJobAge = 30 s)
#   wait_gone ID LIMIT          poll squeue every 0.2 s until job (or array) ID has left the queue, at most
#                               LIMIT seconds; the distinct states seen go to $tmp/states.ID
#   expect_done ID LABEL        the job COMPLETED with exit code 0:0
#   states_of ID                the states wait_gone saw, as A>B>C
#   compare_h5 REF RUN DATASET...   every condition's DATASETs bitwise equal (dtype, shape, values)
#   compare_metrics MERGED REF  results.json: same condition names, trained/random/delta PWMCC, EV, MSE
#                               and L0 equal

# shellcheck disable=SC2154 # tmp is the sourcing test's
SLURM_CLIENT=()

slurm_test_init() {
    SLURM_TEST_NAME=$1
    set -euo pipefail
    PATH="$PATH:/usr/sbin:/sbin" # the daemons live in sbin, often not on a user's PATH
    : "${HUSAI:?set HUSAI}" "${MPIEXEC:?set MPIEXEC}"
    slurm_require "$1"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
    unset HUSAI_OUT HUSAI_SLURM_DIR HUSAI_SRUN_FLAGS HUSAI_PARTITION HUSAI_ACCOUNT SBATCH_PARTITION SBATCH_ACCOUNT
    PY=/usr/bin/python3
}
step() { echo "$SLURM_TEST_NAME: $*"; }
fail() {
    echo "$SLURM_TEST_NAME: FAIL: $*" >&2
    exit 1
}

slurm_require() {
    local b
    for b in slurmctld slurmd munged sbatch srun squeue scontrol scancel; do
        if ! command -v "$b" >/dev/null 2>&1; then
            echo "$1: SKIP: '$b' is not installed (Debian: slurmctld slurmd slurm-client munge)"
            exit 77
        fi
    done
    if [ "$(id -u)" -ne 0 ]; then
        echo "$1: SKIP: the private test cluster's daemons must run as root"
        exit 77
    fi
}

slurm_watchdog() {
    local limit=$1 name=$2 test_pid=$$
    shift 2
    (
        sleep "$limit" >/dev/null 2>&1 &
        nap=$!
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        wait "$nap"
        echo "$name: FAIL: watchdog: still running after $limit s" >&2
        if [ $# -gt 0 ]; then "$@" >/dev/null 2>&1 || true; fi
        kill -TERM "$test_pid"
    ) &
    # shellcheck disable=SC2034 # the test's exit trap kills it
    SLURM_WATCHDOG=$!
}

slurm_on_exit() {
    SLURM_EXIT_CLUSTER=$1 SLURM_EXIT_HOOK=$2
    trap _slurm_exit EXIT
    trap 'exit 1' INT TERM
}

_slurm_exit() {
    local rc=$? f
    trap - EXIT INT TERM
    [ -z "${SLURM_WATCHDOG:-}" ] || kill "$SLURM_WATCHDOG" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        for f in "$tmp"/sub/slurm-*.out "$SLURM_EXIT_CLUSTER"/log/slurmctld.log "$SLURM_EXIT_CLUSTER"/node/slurmd.log \
            "$SLURM_EXIT_CLUSTER"/nodes/*/slurmd.log; do
            [ -f "$f" ] || continue
            echo "----- $f"
            tail -n 30 "$f"
        done
    fi
    "$SLURM_EXIT_HOOK" || [ "$rc" -ne 0 ] || rc=1
    rm -rf "$tmp"
    exit "$rc"
}

slurm_client() { "${SLURM_CLIENT[@]}" "$@"; }

job_field() { slurm_client scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

wait_gone() {
    local id=$1 limit=$2 s prev="" t0=$SECONDS
    while :; do
        s=$(slurm_client squeue -h -j "$id" -o %T 2>/dev/null | sort -u | tr '\n' ' ')
        if [ "$s" != "$prev" ]; then
            echo "${s:-GONE}" >>"$tmp/states.$id"
            prev=$s
        fi
        [ -n "$s" ] || return 0
        [ $((SECONDS - t0)) -lt "$limit" ] || fail "job $id still queued after $limit s (states: $(states_of "$id"))"
        sleep 0.2
    done
}

states_of() { tr '\n' '>' <"$tmp/states.$1" | sed 's/ *>/>/g; s/>$//'; }

expect_done() {
    local state code
    state=$(job_field "$1" JobState)
    code=$(job_field "$1" ExitCode)
    if [ "$state" != COMPLETED ] || [ "$code" != 0:0 ]; then fail "$2: job $1 ended $state, exit code $code"; fi
}

compare_h5() {
    "$PY" - "$@" <<'PY'
import sys, h5py, numpy as np
ref, run, names = sys.argv[1], sys.argv[2], sys.argv[3:]
a, b = h5py.File(ref, "r"), h5py.File(run, "r")
conds = sorted(a["conditions"])
if conds != sorted(b["conditions"]):
    sys.exit(f"conditions differ: {conds} vs {sorted(b['conditions'])}")
for c in conds:
    for n in names:
        x, y = a["conditions"][c][n][()], b["conditions"][c][n][()]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            sys.exit(f"{c}/{n} differs (max |diff| {np.abs(x - y).max() if x.shape == y.shape else 'shape'})")
print(f"  {len(conds)} condition(s), {', '.join(names)} bitwise equal")
PY
}

compare_metrics() {
    "$PY" - "$1" "$2" <<'PY'
import json, sys
m, r = (json.load(open(p)) for p in sys.argv[1:])
assert [c["name"] for c in m["conditions"]] == [c["name"] for c in r["conditions"]], "condition names"
for a, b in zip(m["conditions"], r["conditions"]):
    for k in ("trained_pwmcc", "random_pwmcc", "delta_pwmcc", "explained_variance", "mse", "l0"):
        assert a[k] == b[k], f"{a['name']} {k}: {a[k]} vs reference {b[k]}"
PY
}
