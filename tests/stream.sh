#!/usr/bin/env bash
# stream.sh: a dataset larger than data.memory_budget_mb is streamed in chunks. Checks: a streamed
# sweep gives bitwise the same parameters on 1, 2 and 3 ranks (the chunk schedule and each seed's
# order depend on the configuration only); numpy recomputes EV/MSE/L0 on the training and held-out
# rows and the densities from results.h5 and matches the streamed evaluation; a run stopped twice
# mid-task (on 2, then 3 ranks) and resumed on 1 is bitwise equal to the uninterrupted run; each node
# reads each chunk once per epoch (bytes read stay within one pass per epoch plus one evaluation pass
# per wave and the fingerprint's start-up pass, whatever the rank count); on a dataset 4x the budget, a streamed rank's peak RSS is far
# below an in-memory rank's; bad streaming settings fail with one line.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init stream --openblas
run() { # run NAME NP ARGS...: a sweep whose log is kept; exits the test on failure
    local name=$1 np=$2
    shift 2
    "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$@" >"$tmp/$name.log" 2>&1 ||
        { cat "$tmp/$name.log"; fail "$name exited non-zero"; }
}

"$PY" "$HERE/data/make_tiny.py" "$tmp/d.h5" 3000 16 24 4
cat >"$tmp/s.ini" <<INI
[data]
path = $tmp/d.h5
chunk_rows = 700
holdout = 0.1
[sae]
d_sae = 32
k = 4
decoder_bias = true
[train]
epochs = 6
batch_size = 128
lr = 0.003
[sweep]
param = k
values = 4, 8
seeds = 1, 2, 3
[metrics]
resamples = 200
INI
step "streamed sweep (5 chunks of 700 rows) on 1, 2 and 3 ranks"
for np in 1 2 3; do run "o$np" "$np" "$tmp/s.ini" --out "$tmp/o$np" --run-id r; done
grep -q "streamed: 5 chunks of 700 rows" "$tmp/o2.log" || fail "no streaming line in the log"
"$PY" - "$tmp/d.h5" "$tmp/o1/r" "$tmp/o2/r" "$tmp/o3/r" <<'PY'
import json, sys, h5py, numpy as np
X = h5py.File(sys.argv[1], "r")["activations"][()].astype(np.float64)
f = [h5py.File(d + "/results.h5", "r") for d in sys.argv[2:]]
j = [json.load(open(d + "/results.json")) for d in sys.argv[2:]]
for name in f[0]["conditions"]:
    for ds in ("decoders", "encoders", "b_enc", "b_dec", "density", "explained_variance", "heldout_explained_variance"):
        for g in f[1:]:
            if not np.array_equal(f[0]["conditions"][name][ds][()], g["conditions"][name][ds][()]):
                sys.exit(f"{name}/{ds} differs between rank counts")
hold = f[0]["holdout_rows"][()]
train = np.setdiff1d(np.arange(len(X)), hold)
for name in f[0]["conditions"]:
    g = f[0]["conditions"][name]
    k = int(g.attrs["k"])
    for s in range(3):
        W, b, D, bd = (g[n][s].astype(np.float64) for n in ("encoders", "b_enc", "decoders", "b_dec"))
        def metrics(rows):
            x = X[rows]
            pre = (x - bd) @ W.T + b
            z = np.zeros_like(pre)
            idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
            np.put_along_axis(z, idx, np.take_along_axis(pre, idx, 1), 1)
            e = x - (z @ D.T + bd)
            return 1 - e.var(ddof=1) / x.var(ddof=1), (e ** 2).mean(), (z != 0).sum(1).mean(), (z != 0).mean(0)
        ev, mse, l0, dens = metrics(train)
        hev, hmse, hl0, _ = metrics(hold)
        got = [g[c][s] for c in ("explained_variance", "mse", "l0", "heldout_explained_variance", "heldout_mse", "heldout_l0")]
        want = [ev, mse, l0, hev, hmse, hl0]
        if not np.allclose(got, want, rtol=2e-5, atol=2e-6):
            sys.exit(f"{name} seed {s}: streamed evaluation {got} != numpy {want}")
        if np.abs(g["density"][s] - dens).max() > 1e-6:
            sys.exit(f"{name} seed {s}: density differs from numpy by {np.abs(g['density'][s] - dens).max()}")
# Reads: 6 epochs of 3000 x 16 float32 per wave, plus an evaluation pass per wave, plus the fingerprint's
# one start-up pass; never per rank.
full = 3000 * 16 * 4
for jj, np_ in zip(j, (1, 2, 3)):
    st = jj["data"]["streamed"]
    waves = -(-6 // np_)
    if not (6 * full <= st["bytes_read"] <= (waves * 7 + 1) * full):
        sys.exit(f"{np_} ranks read {st['bytes_read']} bytes; expected within [{6 * full}, {(waves * 7 + 1) * full}]")
    assert st["chunks"] == 5 and st["chunk_rows"] == 700, st
print("stream: rank-independent; numpy reproduces the streamed EV/MSE/L0/density; reads once per node and epoch")
PY

step "stop mid-task on 2 ranks, again on 3, resume on 1; compare with the uninterrupted run"
rc=0
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/s.ini" --out "$tmp/i" --run-id r --stop-after-steps 30 >"$tmp/i1.log" 2>&1 || rc=$?
[ "$rc" = 75 ] || { cat "$tmp/i1.log"; fail "first stop exited $rc, expected 75"; }
rc=0
"$MPIEXEC" -np 3 --oversubscribe "$HUSAI" sweep "$tmp/s.ini" --resume "$tmp/i/r" --stop-after-steps 40 >"$tmp/i2.log" 2>&1 || rc=$?
[ "$rc" = 75 ] || { cat "$tmp/i2.log"; fail "second stop exited $rc, expected 75"; }
grep -q resumes "$tmp/i2.log" || fail "the second run did not resume"
run i3 1 "$tmp/s.ini" --resume "$tmp/i/r"
"$PY" - "$tmp/o1/r/results.h5" "$tmp/i/r/results.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r")["conditions"] for p in sys.argv[1:])
for n in a:
    for ds in ("decoders", "encoders", "b_enc", "b_dec", "density"):
        if not np.array_equal(a[n][ds][()], b[n][ds][()]):
            sys.exit(f"{n}/{ds} differs after stop and resume")
print("stream: interrupted and resumed run is bitwise equal")
PY

step "peak RSS: 160000 x 64 float32 (41 MB) with a 10 MB budget, against the same run in memory"
"$MPIEXEC" -np 2 "$HUSAI" synth --rows 160000 --d-model 64 --atoms 128 --active 4 --noise 0.05 --seed 3 "$tmp/big.h5" \
    >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; fail "synth failed"; }
cat >"$tmp/big.ini" <<INI
[data]
path = $tmp/big.h5
[sae]
d_sae = 64
k = 4
[train]
epochs = 1
batch_size = 4096
[sweep]
param = k
values = 4
seeds = 1, 2
[metrics]
resamples = 100
INI
run mem 2 "$tmp/big.ini" --out "$tmp/mem" --run-id r
run str 2 "$tmp/big.ini" --out "$tmp/str" --run-id r --set data.memory_budget_mb=10
"$PY" - "$tmp/mem/r/results.json" "$tmp/str/r/results.json" <<'PY'
import json, sys
mem, st = (json.load(open(p)) for p in sys.argv[1:])
m, s = mem["run"]["peak_rss_mb"], st["run"]["peak_rss_mb"]
chunks = st["data"]["streamed"]["chunks"]
print(f"stream: peak RSS in memory {m:.1f} MB, streamed {s:.1f} MB ({chunks} chunks, budget 10 MB, data 41 MB)")
if chunks < 4: sys.exit(f"expected >= 4 chunks, got {chunks}")
if not s + 20 < m: sys.exit("streaming did not lower the peak RSS by most of the dataset's 41 MB")
PY

step "bad settings: one line each, non-zero exit"
bad() { # bad EXPECTED-TEXT --set ...
    local want=$1
    shift
    rc=0
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/s.ini" --out "$tmp/bad" "$@" >"$tmp/bad.log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || fail "expected failure for $*"
    grep -q "$want" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "no '$want' for $*"; }
    [ -z "$(ls -A "$tmp/bad" 2>/dev/null)" ] || fail "partial output left for $*"
}
bad "cannot hold one row" --set data.chunk_rows=0 --set data.memory_budget_mb=0.00001
bad "over data.memory_budget_mb" --set data.chunk_rows=700 --set data.memory_budget_mb=0.01
bad "no training rows" --set data.chunk_rows=2 --set data.holdout=0.5
bad "consistency protocol" --set sweep.mode=consistency --set sweep.param=lambda
step "a chunk whose training rows end in a tiny batch gets one warning naming a chunk_rows that would not"
run tail 1 "$tmp/s.ini" --out "$tmp/tail" --set data.chunk_rows=717 --set train.epochs=1 --set sweep.values=4
# 717 rows x 0.9 trained = 645.3 = 5 x 128 + 5.3; 640 / 0.9 = 711.1
[ "$(grep -c 'husai: warning: each streamed chunk' "$tmp/tail.log")" = 1 ] || fail "no single chunk-tail warning"
grep -q "end in a batch of ~5 rows (train.batch_size 128); data.chunk_rows = 711 would" "$tmp/tail.log" ||
    fail "the chunk-tail warning lacks its figures: $(grep warning "$tmp/tail.log")"
if grep -q "husai: warning: each streamed chunk" "$tmp/o1.log"; then fail "chunk_rows = 700 (a 118-row tail) was warned about"; fi
echo "stream: all checks passed"
