#!/usr/bin/env bash
# bench.sh: husai's speed figures (what `make bench` runs). Figures are printed, not asserted.
#   1. build/bench/bench_husai: sgemm peak on the encoder's shape, training samples/s and the encoder's
#      share of that peak, blocked PWMCC GFLOP/s
#   2. husai vs PyTorch (bench/torch_ref.py, HUSAI's recipe as HUSAI wrote it) on the same `husai synth`
#      file, the same steps and the same number of threads: HUSAI's size (128 x 128, k 32, batch 2048)
#      and an LLM-like size (768 x 16384, k 32, batch 4096), on 1 and 2 threads
#   3. seed-parallel scaling: `husai sweep` with 4 seeds on P = 1 and P = 2 ranks, efficiency T1 / (P * TP)
# Environment: BUILD (default build), BENCH_QUICK=1 for a short smoke run, BENCH_THREADS (default "1 2",
# capped at the core count). About 3-5 minutes on 2 cores; wall-clock figures, so other load on the
# machine lowers them (the load average is printed first).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
HUSAI=$BUILD/husai
BENCH=$BUILD/bench/bench_husai
PY=/usr/bin/python3
QUICK=${BENCH_QUICK:-0}
CORES=$(getconf _NPROCESSORS_ONLN)
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OPENBLAS_NUM_THREADS=1
for f in "$HUSAI" "$BENCH"; do
    [ -x "$f" ] || {
        echo "bench: $f not built (make build; cmake --build $BUILD --target benchmarks)" >&2
        exit 1
    }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

threads_list=()
for t in ${BENCH_THREADS:-1 2}; do
    [ "$t" -le "$CORES" ] && threads_list+=("$t")
done

echo "== husai benchmarks on $(hostname): $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other load lowers every wall-clock figure below)"
echo

echo "== 1. single-process figures (bench_husai$([ "$QUICK" = 1 ] && echo ' --quick'))"
if [ "$QUICK" = 1 ]; then "$BENCH" --quick; else "$BENCH"; fi
echo

echo "== 2. husai vs PyTorch: same recipe, same husai-synth data, same steps, same threads"
have_torch=1
torch_version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) || have_torch=0
if [ "$have_torch" = 1 ]; then
    echo "   PyTorch $torch_version (CPU): HUSAI's formulation (nn.Linear encoder, topk + scatter, dense nn.Linear decoder, autograd)"
else
    echo "   python3-torch is not installed (apt-get install python3-torch): PyTorch columns skipped"
fi
if [ "$QUICK" = 1 ]; then
    small_steps=20 large_steps=1 large_rows=4096
else
    small_steps=200 large_steps=2 large_rows=8192
fi
"$HUSAI" synth --rows 16384 --d-model 128 --atoms 512 --active 8 --noise 0.05 --seed 1 "$tmp/small.h5" >/dev/null
"$HUSAI" synth --rows "$large_rows" --d-model 768 --atoms 4096 --active 32 --noise 0.05 --seed 1 "$tmp/large.h5" >/dev/null
: >"$tmp/results.jsonl"
# run_pair LABEL FILE D_SAE K BATCH STEPS
run_pair() {
    local label=$1 file=$2 d_sae=$3 k=$4 batch=$5 steps=$6 t
    for t in "${threads_list[@]}"; do
        local h p="null"
        h=$("$BENCH" --train "$file" "$d_sae" "$k" "$batch" "$steps" "$t")
        if [ "$have_torch" = 1 ]; then
            p=$(OMP_NUM_THREADS=$t "$PY" "$ROOT/bench/torch_ref.py" "$file" --d-sae "$d_sae" --k "$k" --batch "$batch" \
                --steps "$steps" --threads "$t")
        fi
        echo "{\"size\": \"$label\", \"husai\": $h, \"torch\": $p}" >>"$tmp/results.jsonl"
    done
}
run_pair "128x128" "$tmp/small.h5" 128 32 2048 "$small_steps"
run_pair "768x16384" "$tmp/large.h5" 16384 32 4096 "$large_steps"
"$PY" - "$tmp/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# Wall-clock samples/s is the figure; samples per CPU-second is shown too because it hardly moves when
# other processes share the cores (for 1 thread it is what an idle machine would give).
def cpu_rate(r):
    return r["steps"] * r["batch"] / r["cpu_seconds"]
print(f"\n{'size':<10} {'k':>3} {'batch':>5} {'steps':>5} {'thr':>3} | {'husai samples/s':>15} {'torch samples/s':>15} "
      f"{'ratio':>7} | {'husai /CPU-s':>12} {'torch /CPU-s':>12} {'ratio':>7}")
for r in rows:
    h, t = r["husai"], r["torch"]
    if t:
        tw, tc = f"{t['samples_per_s']:15.0f}", f"{cpu_rate(t):12.0f}"
        rw, rc = f"{h['samples_per_s'] / t['samples_per_s']:6.2f}x", f"{cpu_rate(h) / cpu_rate(t):6.2f}x"
    else:
        tw, tc, rw, rc = f"{'-':>15}", f"{'-':>12}", f"{'-':>7}", f"{'-':>7}"
    print(f"{r['size']:<10} {h['k']:>3} {h['batch']:>5} {h['steps']:>5} {h['threads']:>3} | "
          f"{h['samples_per_s']:15.0f} {tw} {rw} | {cpu_rate(h):12.0f} {tc} {rc}")
EOF
echo

echo "== 3. seed-parallel scaling: husai sweep, 1 condition x 4 seeds, P ranks (1 BLAS thread each)"
if [ "$QUICK" = 1 ]; then epochs=4; else epochs=40; fi
cat >"$tmp/scaling.ini" <<EOF
[data]
path = $tmp/small.h5

[sae]
d_sae = 128
k = 32

[train]
epochs = $epochs

[sweep]
param = k
values = 32
seeds = 1, 2, 3, 4

[metrics]
resamples = 1000
EOF
echo "   data 16384 x 128 (husai synth), d_sae 128, k 32, batch 2048, $epochs epochs per seed"
: >"$tmp/scaling.txt"
for P in 1 2; do
    if [ "$P" -gt "$CORES" ]; then
        echo "   P=$P skipped: only $CORES core(s)"
        continue
    fi
    t0=$(date +%s.%N)
    mpirun -np "$P" "$HUSAI" sweep "$tmp/scaling.ini" --out "$tmp/runs$P" >"$tmp/sweep$P.log" 2>&1 || {
        cat "$tmp/sweep$P.log" >&2
        echo "bench: husai sweep on $P rank(s) failed" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    echo "$P $t0 $t1 $(ls -d "$tmp/runs$P"/*/)" >>"$tmp/scaling.txt"
done
"$PY" - "$tmp/scaling.txt" <<'EOF'
import json, math, sys
rows = []
for line in open(sys.argv[1]):
    P, t0, t1, run = line.split()
    js = json.load(open(f"{run}/results.json"))
    per = [s["seconds"] for c in js["conditions"] for s in c["per_seed"]]
    rows.append((int(P), float(t1) - float(t0), js["run"]["seconds"], sum(per) / len(per)))
if not rows:
    sys.exit(0)
S = 4
print(f"\n{'P':>2} | {'mpirun wall s':>13} | {'husai run s':>11} | {'s per seed':>10} | {'ideal ceil(S/P) x seed':>22} | {'efficiency T1/(P*TP)':>20}")
T1 = rows[0][1] if rows[0][0] == 1 else None
T1run = rows[0][2] if rows[0][0] == 1 else None
for P, wall, run_s, seed_s in rows:
    ideal = math.ceil(S / P) * seed_s
    eff = f"{T1 / (P * wall) * 100:6.1f}% (run {T1run / (P * run_s) * 100:5.1f}%)" if T1 else "-"
    print(f"{P:>2} | {wall:13.2f} | {run_s:11.2f} | {seed_s:10.2f} | {ideal:22.2f} | {eff:>20}")
EOF
echo
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
