#!/usr/bin/env bash
# results_memory.sh: rank 0's memory grows neither with the number of conditions nor of seeds.
# The same job with 1 and with 6 conditions (4 seeds, d_model 128 x d_sae 2048: 8.4 MB of decoders and
# encoders per condition) on 2 ranks; results.json's run.peak_rss_mb (the largest rank's peak, results
# writing included) may grow by at most one condition's parameters. Each rank writes its tasks' parameters
# into results.h5 as they finish (measured: +1.2 MB for 5 more conditions); when rank 0 gathered them, it
# grew by ~4 conditions' worth, and before results.h5 was written condition by condition by ~16.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init results_memory

# AddressSanitizer keeps freed memory in quarantine, so resident sizes say nothing about what is held.
if [[ "$(ldd "$HUSAI" 2>/dev/null)" == *libasan* ]]; then
    skip "$HUSAI is built with AddressSanitizer (freed memory stays resident)"
fi
# Writes $tmp/ID.ini (data $2, d_sae $3, k $4, k values $5, seeds $6, matching up to $7, then any more
# [metrics] lines in $8) and runs it on 2 ranks into $tmp/out/ID.
mem_sweep() {
    cat >"$tmp/$1.ini" <<INI
[data]
path = $2
[sae]
d_sae = $3
k = $4
[train]
epochs = 1
batch_size = 256
[sweep]
param = k
values = $5
seeds = $6
[metrics]
resamples = 200
matching_max_d_sae = $7
${8:-}
INI
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/$1.ini" --out "$tmp/out" --run-id "$1" >"$tmp/$1.log" 2>&1 || {
        tail -5 "$tmp/$1.log"
        fail "the sweep $1 failed"
    }
}
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2048 128 256 3
for n in 1 6; do
    mem_sweep "m$n" "$tmp/tiny.h5" 2048 4 "$(seq -s ', ' 4 4 $((4 * n)))" "1, 2, 3, 4" 1024
done
"$PY" - "$tmp/out" <<'PY' || fail "rank 0's memory grew with the number of conditions"
import json, sys
import h5py
out = sys.argv[1]
peak = {n: json.load(open(f"{out}/m{n}/results.json"))["run"]["peak_rss_mb"] for n in (1, 6)}
cond_mb = 4 * 2 * 128 * 2048 * 4 / 2**20  # decoders + encoders of one condition
growth = peak[6] - peak[1]
with h5py.File(f"{out}/m6/results.h5", "r") as f:
    shapes = [f[f"conditions/k={k}/decoders"].shape for k in range(4, 25, 4)]
assert shapes == [(4, 128, 2048)] * 6, shapes
print(f"results_memory: peak RSS {peak[1]:.1f} MB with 1 condition, {peak[6]:.1f} MB with 6: +{growth:.1f} MB "
      f"= {growth / cond_mb:.1f} conditions' parameters ({cond_mb:.1f} MB each); allowed 1")
assert growth <= cond_mb, f"grew by {growth:.1f} MB"
PY

# Seeds: each rank writes its own tasks' parameters into results.h5 as they finish and keeps none of them,
# rank 0 gathers only the per-seed metrics and densities, and PWMCC reads the decoders back into the node's
# window, by seed blocks under metrics.window_mb (here 4 decoders' worth, 12.6 MB, so the window is the
# same size for 4 and 32 seeds; the automatic budget would let it hold all 32). 4 vs 32 seeds at
# 768 x 1024 (3.1 MB per decoder) on 2 ranks: before, rank 0 went from ~91 MB to ~230 MB.
"$PY" "$HERE/data/make_tiny.py" "$tmp/wide.h5" 2048 768 1024 3
for S in 4 32; do
    mem_sweep "s$S" "$tmp/wide.h5" 1024 16 16 "$(seq -s ', ' 1 $S)" 512 "window_mb = 12.6"
done
grep -q "PWMCC of k=16 by seed blocks: 32 decoders" "$tmp/s32.log" || fail "the 32-seed PWMCC was not blocked"
"$PY" - "$tmp/out" <<'PY' || fail "rank 0's memory grew with the number of seeds"
import json, sys
import h5py, numpy as np
out = sys.argv[1]
by_rank = {S: json.load(open(f"{out}/s{S}/results.json"))["run"]["peak_rss_mb_by_rank"] for S in (4, 32)}
with h5py.File(f"{out}/s4/results.h5", "r") as a, h5py.File(f"{out}/s32/results.h5", "r") as b:
    ga, gb = a["conditions/k=16"], b["conditions/k=16"]
    assert gb["decoders"].shape == (32, 768, 1024), gb["decoders"].shape
    # Seeds 1-4 were written by other ranks at other rows in the 32-seed file: the same bits.
    for name in ("decoders", "encoders", "b_enc", "b_dec", "thresholds", "density"):
        assert np.array_equal(ga[name][()].view(np.uint32), gb[name][:4].view(np.uint32)), name
    assert not np.any(np.all(gb["decoders"][()] == 0, axis=(1, 2))), "a seed's decoder was never written"
growth = by_rank[32][0] / by_rank[4][0] - 1
print(f"results_memory: rank 0 peak RSS {by_rank[4][0]:.1f} MB with 4 seeds, {by_rank[32][0]:.1f} MB with 32 "
      f"({100 * growth:+.1f}%, allowed +10%); rank 1 {by_rank[4][1]:.1f} -> {by_rank[32][1]:.1f} MB")
assert growth <= 0.10, f"rank 0 grew by {100 * growth:.1f}%"
PY
echo "results_memory: passed"
