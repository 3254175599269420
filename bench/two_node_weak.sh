#!/usr/bin/env bash
# bench/two_node_weak.sh [REPEATS]: weak scaling on the two-node Slurm bed (tests/multinode/setup.sh +
# tests/slurm/cluster.sh: two simulated nodes on this machine, slurmctld, munged and slurmd, srun --mpi=pmix).
# Two seeds per node, one rank per node (the bed's two nodes share this machine's cores: one rank each
# keeps one core per node): `sbatch -N 1` with 2 seeds against `sbatch -N 2` with 4 seeds; and, to tell
# the cost of the second node from the two ranks' competition for this machine's cores, the 4 seeds on
# one node with 2 ranks (`-N 1 --ntasks-per-node=2`). Every rank trains 2 seeds. Interleaved, REPEATS
# (default 3) times each, on jobs/demo.ini at one value (k = 32, EPOCHS epochs, default 200, so
# training dominates). Prints one line per job (job wall from submission to leaving the queue, husai's
# run.seconds, its data-read step, mean seconds per trained seed from the progress lines, and the rest of
# the run: run - 2 x seed time - read) and the medians; weak-scaling efficiency = 1-node / 2-node time.
# Root only (namespaces, daemons). Run from the repository root after a build: bash bench/two_node_weak.sh
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"
REPEATS=${1:-3}
EPOCHS=${EPOCHS:-200}
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

run() { # NODES RANKS_PER_NODE SEEDS -> "wall run read seed rest hosts"
    local n=$1 per=$2 seeds=$3 id t0 t1
    t0=$EPOCHREALTIME
    id=$(onA sbatch --parsable -N "$n" --ntasks-per-node="$per" slurm/sweep.sbatch jobs/demo.ini \
        --set sweep.values=32 --set "sweep.seeds=$seeds" --set "train.epochs=$EPOCHS" --out "$tmp/runs")
    while [ -n "$(onA squeue -h -j "$id" -o %T 2>/dev/null)" ]; do sleep 0.1; done
    t1=$EPOCHREALTIME
    "$PY" - "$tmp/runs/job-$id/results.json" "slurm-husai-$id.out" "$t0" "$t1" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))["run"]
log = open(sys.argv[2]).read()
t = [float(m) for m in re.findall(r"task \d+/\d+ done: .* time=([0-9.]+)s", log)]
read = float(re.search(r"\[husai\] data: .*?([0-9.]+) s\)", log).group(1))
seed = sum(t) / len(t)
rest = r["seconds"] - 2 * seed - read
print(f"{float(sys.argv[4]) - float(sys.argv[3]):.2f} {r['seconds']:.2f} {read:.2f} {seed:.2f} {rest:.2f} {','.join(r['hosts'])}")
PY
}

echo "nodes x ranks, seeds | job wall s, husai run s, data read s, s per seed, rest s, hosts"
: >"$tmp/res"
for _ in $(seq "$REPEATS"); do
    for c in "1 1 42, 123" "2 1 42, 123, 456, 789" "1 2 42, 123, 456, 789"; do
        read -r n per seeds <<<"$c"
        line=$(run "$n" "$per" "$seeds")
        echo "${n}x$per $line" >>"$tmp/res"
        echo "${n}x$per, $(($(tr -cd , <<<"$seeds" | wc -c) + 1)) | $line"
    done
done
"$PY" - "$tmp/res" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cfgs = ("1x1", "2x1", "1x2")
med = {c: [statistics.median(float(r[i]) for r in rows if r[0] == c) for i in range(1, 6)] for c in cfgs}
for c in cfgs:
    w, run, read, seed, rest = med[c]
    print(f"median, nodes x ranks {c}: job wall {w:.2f} s, husai run {run:.2f} s, read {read:.2f} s, "
          f"{seed:.2f} s per seed, rest {rest:.2f} s")
for a, b, what in (("1x1", "2x1", "weak scaling, 1 node / 2 nodes"), ("1x2", "2x1", "same 2 ranks, 1 node / 2 nodes")):
    e = [med[a][i] / med[b][i] for i in range(4)]
    print(f"{what}: job wall {e[0]:.1%}, husai run {e[1]:.1%}, per seed {e[3]:.1%}")
PY
