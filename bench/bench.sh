#!/usr/bin/env bash
# bench.sh: husai's speed figures (what `make bench` runs). Figures are printed, not asserted.
#   1. build/bench/bench_husai: sgemm peak on the encoder's shape, training samples/s and the encoder's
#      share of that peak, blocked PWMCC GFLOP/s (and, in the full run, PWMCC at 8 seeds x 768 x 16384);
#      1b. the bf16 encoder path (precision = bf16) against fp32 in alternated runs: ratio, encoder GF
#      against sgemm, oneDNN's ISA, the uncertified-row shares
#   2. husai vs PyTorch (bench/torch_ref.py, HUSAI's recipe as HUSAI wrote it) on the same `husai synth`
#      file, the same steps and the same number of threads (husai: HUSAI_THREADS-style OpenMP threads):
#      HUSAI's size (128 x 128, k 32, batch 2048) and an LLM-like size (768 x 16384, k 32, batch 4096),
#      on 1 and 2 threads
#   3. seed-parallel scaling: `husai sweep` with 4 seeds on 1 rank, 2 ranks, and 1 rank x 2 threads;
#      efficiency T1 / (cores * T)
#   4. a dataset 4x the memory budget (256 MB of `husai synth` float32 against data.memory_budget_mb = 64):
#      a 2-rank sweep in memory and streamed; peak RSS per rank against the budget, the streamed HDF5 read
#      GB/s (results.json), and raw read baselines (dd O_DIRECT and page cache, h5py, husai's in-memory read)
#   5. the data fingerprint's cost: `make demo`'s own command (2 ranks, jobs/demo.ini), its wall time against
#      the fingerprint's hashing time from its log (budget 2%); bench_husai (section 1) prints the per-step
#      ratio at 768 x 16384 (budget 1%)
#   6. the per-step stop check's cost (bench_stop, 2 ranks over shared memory and over TCP)
# Environment: BUILD (default build), BENCH_QUICK=1 for a short smoke run, BENCH_THREADS (default "1 2",
# capped at the core count). About 4-6 minutes on 2 cores; wall-clock figures, so other load on the
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
if [ "$QUICK" != 1 ]; then
    # The issue's PWMCC size: 28 pairs of 16384 x 16384 |cos| blocks, ~2 min on one core.
    echo
    echo "   PWMCC at 8 seeds x 768 x 16384 (1 thread):"
    "$BENCH" --pwmcc 8 768 16384 | sed 's/^/   /'
    echo "   the same with per-feature best matches (issue 17's budget: within 10% of PWMCC alone):"
    "$BENCH" --features 8 768 16384 | sed 's/^/   /'
    echo "   the same on bf16 |cos| blocks with certified exact maxima (train.precision = bf16):"
    "$BENCH" --pwmcc 8 768 16384 1 bf16 | sed 's/^/   /'
fi
echo

echo "== 1b. bf16 encoder path beside fp32 (bench_husai --bf16$([ "$QUICK" = 1 ] && echo ' --quick'))"
if [ "$QUICK" = 1 ]; then "$BENCH" --bf16 --quick; else "$BENCH" --bf16; fi
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

echo "== 3. seed-parallel scaling: husai sweep, 1 condition x 4 seeds, P ranks x T threads (HUSAI_THREADS)"
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
for PT in 1x1 2x1 1x2; do
    P=${PT%x*} T=${PT#*x}
    if [ $((P * T)) -gt "$CORES" ]; then
        echo "   P=$P x T=$T skipped: only $CORES core(s)"
        continue
    fi
    t0=$(date +%s.%N)
    bind=()
    [ "$T" = 1 ] || bind=(--bind-to none) # mpirun pins each rank to one core by default
    HUSAI_THREADS=$T mpirun -np "$P" "${bind[@]}" -x HUSAI_THREADS "$HUSAI" sweep "$tmp/scaling.ini" --out "$tmp/runs$PT" \
        >"$tmp/sweep$PT.log" 2>&1 || {
        cat "$tmp/sweep$PT.log" >&2
        echo "bench: husai sweep on $P rank(s) x $T thread(s) failed" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    echo "$P $T $t0 $t1 $(ls -d "$tmp/runs$PT"/*/)" >>"$tmp/scaling.txt"
done
"$PY" - "$tmp/scaling.txt" <<'EOF'
import json, math, sys
rows = []
for line in open(sys.argv[1]):
    P, T, t0, t1, run = line.split()
    js = json.load(open(f"{run}/results.json"))
    per = [s["seconds"] for c in js["conditions"] for s in c["per_seed"]]
    rows.append((int(P), int(T), float(t1) - float(t0), js["run"]["seconds"], sum(per) / len(per)))
if not rows:
    sys.exit(0)
S = 4
# cores = P x T; efficiency = the 1-core time over (cores x this time); a seed's own time shows what
# threads do to one SAE (ranks leave it unchanged, threads shorten it)
print(f"\n{'P x T':>5} | {'mpirun wall s':>13} | {'husai run s':>11} | {'s per seed':>10} | {'ideal ceil(S/P) x seed':>22} | {'efficiency T1/(cores*T)':>23}")
one = rows[0] if rows[0][:2] == (1, 1) else None
for P, T, wall, run_s, seed_s in rows:
    ideal = math.ceil(S / P) * seed_s
    c = P * T
    eff = f"{one[2] / (c * wall) * 100:6.1f}% (run {one[3] / (c * run_s) * 100:5.1f}%)" if one else "-"
    print(f"{P:>2}x{T:<2} | {wall:13.2f} | {run_s:11.2f} | {seed_s:10.2f} | {ideal:22.2f} | {eff:>23}")
EOF
echo

echo "== 4. a dataset 4x the memory budget: peak RSS per rank and HDF5 read throughput (2 ranks, 1 BLAS thread each)"
# 4 chunks of as many 256-float rows as the budget holds (MB = 1e6 bytes, as data.memory_budget_mb counts
# them): 4 x the budget, to within one row per chunk.
if [ "$QUICK" = 1 ]; then budget=4 st_epochs=1; else budget=64 st_epochs=2; fi
st_rows=$((4 * (budget * 1000000 / (256 * 4))))
st_dir=$(mktemp -d /tmp/husai-bench-stream.XXXXXX) # the data goes to /tmp whatever TMPDIR says
trap 'rm -rf "$tmp" "$st_dir"' EXIT
: >"$st_dir/figures.txt"
if [ "$CORES" -lt 2 ]; then
    echo "   skipped: the 2-rank runs need 2 cores (have $CORES)"
else
    t0=$(date +%s.%N)
    mpirun -np 2 "$HUSAI" synth --rows "$st_rows" --d-model 256 --atoms 1024 --active 16 --noise 0.05 --seed 1 \
        "$st_dir/big.h5" >"$st_dir/synth.log" 2>&1 || {
        cat "$st_dir/synth.log" >&2
        echo "bench: husai synth of the streaming dataset failed" >&2
        exit 1
    }
    echo "synth_s $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >>"$st_dir/figures.txt"
    echo "file_bytes $(stat -c %s "$st_dir/big.h5")" >>"$st_dir/figures.txt"
    # Raw read baselines on the same file: dd with O_DIRECT (the device, one synchronous 16 MB request at a
    # time; "-" where the file system refuses it), dd from the page cache (the file was just written, so it is
    # cached: so are husai's reads unless evicted) and cold (evicted: the device with the kernel's readahead),
    # and h5py reading the whole dataset (HDF5, one process) from the page cache and cold.
    # evict: drops this file's pages from the page cache (fsync, then posix_fadvise DONTNEED), nothing else's.
    evict() { "$PY" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"; }
    dd_secs() { # dd_secs [FLAG]: seconds dd takes to read the file, nothing if dd fails
        local out
        out=$(LC_ALL=C dd if="$st_dir/big.h5" of=/dev/null bs=16M "$@" 2>&1) || return 0
        awk '/copied/ { print $(NF-3) }' <<<"$out"
    }
    echo "dd_direct_s $(dd_secs iflag=direct)" >>"$st_dir/figures.txt"
    echo "dd_cached_s $(dd_secs)" >>"$st_dir/figures.txt"
    evict "$st_dir/big.h5"
    echo "dd_cold_s $(dd_secs)" >>"$st_dir/figures.txt"
    "$PY" - "$st_dir/big.h5" >>"$st_dir/figures.txt" <<'EOF'
import sys, time
import h5py
best = None
for _ in range(3):
    t = time.perf_counter()
    with h5py.File(sys.argv[1], "r") as f:
        x = f["activations"][()]
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print(f"h5py_s {best}")
EOF
    evict "$st_dir/big.h5"
    "$PY" - "$st_dir/big.h5" >>"$st_dir/figures.txt" <<'EOF'
import sys, time
import h5py
t = time.perf_counter()
with h5py.File(sys.argv[1], "r") as f:
    x = f["activations"][()]
print(f"h5py_cold_s {time.perf_counter() - t}")
EOF
    cat >"$st_dir/stream.ini" <<EOF
[data]
path = $st_dir/big.h5

[sae]
d_sae = 256
k = 16

[train]
epochs = $st_epochs
batch_size = 4096
lr = 0.001

[sweep]
param = k
values = 16
seeds = 1, 2

[metrics]
resamples = 200
EOF
    echo "   data $st_rows x 256 float32 ($((st_rows * 256 * 4 / 1000000)) MB, husai synth), budget $budget MB;" \
        "d_sae 256, k 16, batch 4096, $st_epochs epoch(s), seeds 1, 2 on 2 ranks (one wave)"
    # run_stream NAME ARGS...: a 2-rank sweep of stream.ini, timed; its log and results stay in $st_dir
    run_stream() {
        local name=$1 t0 t1
        shift
        t0=$(date +%s.%N)
        mpirun -np 2 "$HUSAI" sweep "$st_dir/stream.ini" --out "$st_dir/$name" --run-id r "$@" \
            >"$st_dir/$name.log" 2>&1 || {
            cat "$st_dir/$name.log" >&2
            echo "bench: the $name sweep failed" >&2
            exit 1
        }
        t1=$(date +%s.%N)
        echo "wall_$name $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" >>"$st_dir/figures.txt"
    }
    run_stream mem
    run_stream str --set data.memory_budget_mb="$budget"
    # The same streamed sweep with a 16-latent SAE and 1 epoch: chunk reads are then most of the run.
    io_set=(--set data.memory_budget_mb="$budget" --set sae.d_sae=16 --set sweep.values=4 --set train.epochs=1)
    run_stream io "${io_set[@]}"
    # Again with the file evicted from the page cache first: the training pass reads from the device, the
    # evaluation pass (the same chunks) from the page cache again.
    evict "$st_dir/big.h5"
    run_stream cold "${io_set[@]}"
    "$PY" - "$st_dir" "$budget" "$st_epochs" <<'EOF'
import json, re, sys
d, budget, epochs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
fig = {}
for line in open(f"{d}/figures.txt"):
    k, *v = line.split()
    fig[k] = float(v[0]) if v and v[0] else None
js = {n: json.load(open(f"{d}/{n}/r/results.json")) for n in ("mem", "str", "io", "cold")}
data_mb = js["mem"]["data"]["rows"] * js["mem"]["data"]["d_model"] * 4 / 1e6
m = re.search(r"\(([0-9.]+) MB read once, ([0-9.]+) s\)", open(f"{d}/mem.log").read())
mem_mb, mem_s = float(m.group(1)), float(m.group(2))
fb = fig["file_bytes"]
def gbs(b, s):
    return f"{b / s / 1e9:.2f}" if s else "-"
print(f"\n{'run':<24} | {'data MB':>7} | {'budget MB':>9} | {'chunks':>6} | {'held MB':>7} | {'peak RSS/rank MB':>16} | "
      f"{'RSS - held MB':>13} | {'read MB':>7} | {'read s':>6} | {'read GB/s':>9} | {'mpirun wall s':>13} | {'husai run s':>11}")
for name, label in (("mem", "in memory"), ("str", "streamed"), ("io", "streamed, d_sae 16, 1 ep."),
                    ("cold", "same, file not cached")):
    j = js[name]
    st = j["data"].get("streamed")
    node = j["run"]["nodes"][0]
    held = node["bytes_held"] / 1e6
    rss = j["run"]["peak_rss_mb"]
    if st:
        chunks, read_mb, load_s, rate = st["chunks"], st["bytes_read"] / 1e6, st["read_seconds"], f"{st['read_gb_per_s']:.2f}"
        bud = f"{budget:g}"
    else:
        chunks, read_mb, load_s, rate, bud = 1, mem_mb, mem_s, gbs(mem_mb * 1e6, mem_s), "-"
    print(f"{label:<24} | {data_mb:7.1f} | {bud:>9} | {chunks:6d} | {held:7.1f} | {rss:16.1f} | {rss - held:13.1f} | "
          f"{read_mb:7.1f} | {load_s:6.2f} | {rate:>9} | {fig['wall_' + name]:13.2f} | {j['run']['seconds']:11.2f}")
s, mm = js["str"]["run"]["peak_rss_mb"], js["mem"]["run"]["peak_rss_mb"]
print("   (every run but the last reads the file from the page cache; read s and read GB/s are results.json's\n"
      "   data.streamed read_seconds and read_gb_per_s: the slowest rank's time reading its shares of chunks (node barriers excluded);\n"
      "   in memory: husai's one read of the file, from its log)")
print(f"\n   streamed peak RSS per rank: {s:.1f} MB = the {budget:g} MB budget + {s - budget:.1f} MB fixed overhead "
      f"(MPI, HDF5, BLAS, model, Adam, batch buffers); in memory {mm:.1f} MB ({mm / s:.1f}x)")
sb = js["str"]["data"]["streamed"]["bytes_read"]
print(f"   streamed reads: {sb / 1e6:.0f} MB = {sb / (data_mb * 1e6):.2f} x the data ({epochs} epoch(s) + 1 evaluation pass + "
      f"the fingerprint's start-up pass, once per node; a chunk already loaded is not read again)")
lw, lc = js["io"]["data"]["streamed"]["read_seconds"], js["cold"]["data"]["streamed"]["read_seconds"]
cold_pass = lc - lw / 2  # the cold run's training pass; its evaluation pass costs what one warm pass does
print(f"   the cold run's training pass alone (read s minus half the warm run's): "
      f"{gbs(data_mb * 1e6, cold_pass) if cold_pass > 0 else '-'} GB/s")
print(f"   raw read baselines on the same {fb / 1e6:.1f} MB file: "
      f"dd {gbs(fb, fig.get('dd_direct_s'))} GB/s O_DIRECT, {gbs(fb, fig.get('dd_cold_s'))} GB/s cold, {gbs(fb, fig.get('dd_cached_s'))} GB/s from the page cache; "
      f"h5py whole dataset {gbs(data_mb * 1e6, fig.get('h5py_cold_s'))} GB/s cold, {gbs(data_mb * 1e6, fig.get('h5py_s'))} GB/s cached (best of 3); "
      f"husai in-memory read (cached) {gbs(mem_mb * 1e6, mem_s)} GB/s; husai synth wrote it in {fig['synth_s']:.2f} s")
EOF
fi
rm -rf "$st_dir"
echo

echo "== 5. data fingerprint: share of \`make demo\` (the same command: 2 ranks, jobs/demo.ini)"
demo_set=()
[ "$QUICK" = 1 ] && demo_set=(--set train.epochs=4) # quick: a shorter demo, so a larger share
t0=$(date +%s.%N)
(cd "$ROOT" && mpirun --oversubscribe -np 2 "$HUSAI" sweep jobs/demo.ini --out "$tmp/demo" "${demo_set[@]}") \
    >"$tmp/demo.log" 2>&1 || {
    cat "$tmp/demo.log" >&2
    echo "bench: the demo sweep failed" >&2
    exit 1
}
t1=$(date +%s.%N)
"$PY" - "$tmp/demo.log" "$t0" "$t1" "${demo_set[*]:-}" <<'EOF'
import re, sys
log, t0, t1, extra = open(sys.argv[1]).read(), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
m = re.search(r"data: (\S+) (\d+) x (\d+) (\w+) .*fingerprint (xxh3:[0-9a-f]+) \(hashed in ([0-9.]+) s\)", log)
if not m:
    sys.exit("bench: the demo log has no fingerprint line")
wall, fp_s = t1 - t0, float(m.group(6))
print(f"   demo{' (' + extra + ')' if extra else ''}: {m.group(2)} x {m.group(3)} {m.group(4)}, fingerprint {m.group(5)}")
print(f"   hashing {fp_s * 1e3:.2f} ms (slowest rank) of {wall:.1f} s mpirun wall time: {100 * fp_s / wall:.4f}% (budget 2%)")
EOF
echo "== 6. the stop check every optimizer step pays (husai_stop_requested), shared memory and TCP"
for btl in vader tcp; do
    printf '   %-6s ' "$btl:"
    mpirun -np 2 --mca btl "self,$btl" "$BUILD/bench/bench_stop" 2>&1 | tail -1
done
echo
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
