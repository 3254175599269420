#!/usr/bin/env bash
# bench/two_node_weak.sh [REPEATS]: weak scaling on the two-node Slurm bed (tests/multinode/setup.sh +
# tests/slurm/cluster.sh: two simulated nodes on this machine, slurmctld, munged and slurmd, srun --mpi=pmix).
# Two seeds per node, one rank per node (the bed's two nodes share this machine's cores: one rank each
# keeps one core per node): `sbatch -N 1` with 2 seeds against `sbatch -N 2` with 4 seeds, alternating,
# REPEATS (default 3) times each, on jobs/demo.ini at one value (k = 32, 40 epochs). Prints one line per job
# (job wall from submission to leaving the queue, husai's run.seconds, mean seconds per trained seed from
# the progress lines) and the medians; weak-scaling efficiency = 1-node time / 2-node time.
# Root only (namespaces, daemons). Run from the repository root after a build: bash bench/two_node_weak.sh
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
REPEATS=${1:-3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MN=$REPO/tests/multinode
SL=$REPO/tests/slurm
export HUSAI=${HUSAI:-$REPO/build/husai}
[ -x "$HUSAI" ] || { echo "two_node_weak: no husai at $HUSAI (build first)" >&2; exit 1; }
why=$(bash "$MN/probe.sh") || { echo "two_node_weak: cannot make the nodes: $why" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 HUSAI_THREADS=1
unset HUSAI_OUT HUSAI_SLURM_DIR HUSAI_SRUN_FLAGS
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/husai-weak.XXXXXX)
cleanup() {
    bash "$SL/cluster.sh" stop "$tmp/cluster" >/dev/null || true
    bash "$MN/teardown.sh" "$tmp/nodes" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
bash "$MN/setup.sh" "$tmp/nodes" >/dev/null
bash "$SL/cluster.sh" start "$tmp/cluster" "$tmp/nodes"
eval "$(bash "$SL/cluster.sh" env "$tmp/cluster")"
onA() { timeout -k 5 300 bash "$MN/on.sh" "$tmp/nodes" nodeA "$@"; }
mkdir -p "$tmp/sub"
for d in slurm jobs data; do ln -s "$REPO/$d" "$tmp/sub/$d"; done
cd "$tmp/sub"

run() { # NODES SEEDS -> "wall run_seconds seconds_per_seed hosts"
    local n=$1 seeds=$2 id t0 t1
    t0=$EPOCHREALTIME
    id=$(onA sbatch --parsable -N "$n" --ntasks-per-node=1 slurm/sweep.sbatch jobs/demo.ini \
        --set sweep.values=32 --set "sweep.seeds=$seeds" --out "$tmp/runs")
    while [ -n "$(onA squeue -h -j "$id" -o %T 2>/dev/null)" ]; do sleep 0.1; done
    t1=$EPOCHREALTIME
    "$PY" - "$tmp/runs/job-$id/results.json" "slurm-husai-$id.out" "$t0" "$t1" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))["run"]
t = [float(m) for m in re.findall(r"task \d+/\d+ done: .* time=([0-9.]+)s", open(sys.argv[2]).read())]
print(f"{float(sys.argv[4]) - float(sys.argv[3]):.2f} {r['seconds']:.2f} {sum(t) / len(t):.2f} {','.join(r['hosts'])}")
PY
}

echo "nodes seeds | job wall s | husai run s | s per seed | hosts"
: >"$tmp/res"
for _ in $(seq "$REPEATS"); do
    for n in 1 2; do
        seeds="42, 123"
        [ "$n" -eq 1 ] || seeds="42, 123, 456, 789"
        line=$(run "$n" "$seeds")
        echo "$n $line" >>"$tmp/res"
        echo "$n     $((2 * n))     | $line"
    done
done
"$PY" - "$tmp/res" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {n: [statistics.median(float(r[i]) for r in rows if r[0] == n) for i in (1, 2, 3)] for n in ("1", "2")}
for n in ("1", "2"):
    print(f"median, {n} node(s): job wall {med[n][0]:.2f} s, husai run {med[n][1]:.2f} s, {med[n][2]:.2f} s per seed")
print(f"weak-scaling efficiency (1-node / 2-node): job wall {med['1'][0] / med['2'][0]:.1%}, "
      f"husai run {med['1'][1] / med['2'][1]:.1%}")
PY
