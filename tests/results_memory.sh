#!/usr/bin/env bash
# results_memory.sh: rank 0 holds one condition's parameters at a time, not the whole sweep's.
# The same job with 1 and with 6 conditions (4 seeds, d_model 128 x d_sae 2048: 8.4 MB of decoders and
# encoders per condition) on 2 ranks; results.json's run.peak_rss_mb (the largest rank's peak, results
# writing included) may grow by what each rank holds of its own trained tasks until the gather (half of
# each extra condition) plus one condition in flight, 4 conditions' worth in all. Before results.h5 was
# written condition by condition, rank 0 grew by ~16 (each condition's parameters kept, gathered twice,
# then the whole file built in memory and copied once more to write it).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init results_memory

# AddressSanitizer keeps freed memory in quarantine, so resident sizes say nothing about what is held.
if [[ "$(ldd "$HUSAI" 2>/dev/null)" == *libasan* ]]; then
    skip "$HUSAI is built with AddressSanitizer (freed memory stays resident)"
fi
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2048 128 256 3
for n in 1 6; do
    cat >"$tmp/m$n.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 2048
k = 4
[train]
epochs = 1
batch_size = 256
[sweep]
param = k
values = $(seq -s ', ' 4 4 $((4 * n)))
seeds = 1, 2, 3, 4
[metrics]
resamples = 200
matching_max_d_sae = 1024
INI
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/m$n.ini" --out "$tmp/out" --run-id "m$n" >"$tmp/m$n.log" 2>&1 || {
        tail -5 "$tmp/m$n.log"
        fail "the $n-condition sweep failed"
    }
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
      f"= {growth / cond_mb:.1f} conditions' parameters ({cond_mb:.1f} MB each); allowed 4")
assert growth <= 4 * cond_mb, f"grew by {growth:.1f} MB"
PY
echo "results_memory: passed"
