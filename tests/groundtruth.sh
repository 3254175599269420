#!/usr/bin/env bash
# groundtruth.sh: [data] dictionary (ground-truth recovery on synthetic data) and per-latent firing densities.
# A `husai synth` dataset (4000 rows, d_model 16, 32 atoms, 3 active, noise 0.01) is swept over k = 3, 8 with
# 2 seeds on 2 ranks with --set data.dictionary=/dictionary. numpy, from results.h5 and the data file alone:
#   - per seed, mean over true atoms of max_j |cos(atom, decoder column j)| and the share of atoms with that
#     max >= 0.9 match results.h5 gt_mean_max_cos / gt_recovered (1e-5) and results.json per_seed; the
#     condition CIs' means are the per-seed means;
#   - trained SAEs recover more than chance: every seed's gt_mean_max_cos exceeds the largest value of 200
#     random Gaussian decoders of the same shape [16, 64], and at the true sparsity (k = 3) at least a quarter
#     of the atoms are recovered (>= 0.9), which none of the random decoders achieves for a single atom;
#   - density [S, d_sae] of every (topk) condition equals a recomputation on all rows (no holdout): code
#     != 0 after signed top-k of (x - b_dec) W_enc^T + b_enc, within 1e-6 (rows whose k-th and (k+1)-th
#     pre-activations nearly tie, where float32 and float64 may pick differently, are allowed for);
#   - results.json density_histogram counts (never_fires + bins) sum to S * d_sae and equal numpy's histogram
#     of the stored densities; density.svg parses and has one line per condition; summary.md has the
#     ground-truth table and conditions.csv its columns;
#   - a sweep without a dictionary has no ground-truth fields but still has densities;
#   - a bad dictionary (missing dataset, wrong width, 1-D, non-float, NaN atom) fails before training with
#     exactly one "husai: error" line naming data.dictionary, a non-zero exit, and no run directory.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init groundtruth --keep-env --openblas

step "synth 4000 x 16 (32 atoms, 3 active, noise 0.01); sweep k = 3, 8 x 2 seeds on 2 ranks with the dictionary"
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" synth --rows 4000 --d-model 16 --atoms 32 --active 3 --noise 0.01 \
    --seed 11 "$tmp/syn.h5" >/dev/null || fail "synth failed"
cat >"$tmp/g.ini" <<INI
[data]
path = $tmp/syn.h5
[sae]
d_sae = 64
[train]
epochs = 30
batch_size = 128
lr = 0.003
[sweep]
param = k
values = 3, 8
seeds = 1, 2
[metrics]
resamples = 200
INI
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/g.ini" --set data.dictionary=/dictionary --out "$tmp/out" \
    --run-id gt >"$tmp/log" 2>&1 || {
    cat "$tmp/log"
    fail "sweep with data.dictionary failed"
}
grep -q "ground truth: .*32 atoms" "$tmp/log" || fail "no ground-truth line in the log"
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/g.ini" --set sweep.values=3 --out "$tmp/out" --run-id plain \
    >"$tmp/log2" 2>&1 || {
    cat "$tmp/log2"
    fail "sweep without a dictionary failed"
}

step "numpy recomputation of recovery, densities and histograms"
"$PY" - "$tmp/syn.h5" "$tmp/out/gt" "$tmp/out/plain" <<'PY'
import csv, json, sys
import xml.etree.ElementTree as ET
import h5py
import numpy as np

def fail(msg):
    print("groundtruth: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

data, run, plain = sys.argv[1], sys.argv[2], sys.argv[3]
with h5py.File(data, "r") as f:
    X = f["activations"][()].astype(np.float32).astype(np.float64)
    Dict = f["dictionary"][()].astype(np.float64)
A, d = Dict.shape
Dn = Dict / np.maximum(np.linalg.norm(Dict, axis=1, keepdims=True), 1e-12)

def recovery(dec):  # dec [d_model, d_sae], columns are features
    F = dec.astype(np.float64)
    F = F / np.maximum(np.linalg.norm(F, axis=0, keepdims=True), 1e-12)
    best = np.abs(Dn @ F).max(axis=1)
    return best.mean(), (best >= 0.9).mean(), best

rng = np.random.default_rng(0)
rand_mean, rand_rec = [], []
for _ in range(200):
    R = rng.standard_normal((d, 64))
    m, r, _ = recovery(R)
    rand_mean.append(m)
    rand_rec.append(r)
rand_max, rand_rec_max = max(rand_mean), max(rand_rec)
print(f"groundtruth:   random decoders [16, 64]: mean max |cos| {np.mean(rand_mean):.4f} (max of 200: {rand_max:.4f}), "
      f"largest share recovered {rand_rec_max:.3f}")

js = json.load(open(run + "/results.json"))
if js["data"].get("dictionary") != "/dictionary":
    fail(f"results.json data.dictionary = {js['data'].get('dictionary')!r}")
conds = {c["name"]: c for c in js["conditions"]}
h = h5py.File(run + "/results.h5", "r")
edges = np.arange(-6.0, 0.001, 0.5)
for name, c in conds.items():
    g = h["conditions"][name]
    dec, enc, b_enc, b_dec = g["decoders"][()], g["encoders"][()], g["b_enc"][()], g["b_dec"][()]
    S, dm, ds = dec.shape
    k = int(c["k"])
    gm, gr = g["gt_mean_max_cos"][()], g["gt_recovered"][()]
    for s in range(S):
        m, r, best = recovery(dec[s])
        near = np.sum(np.abs(best - 0.9) < 1e-5)
        if abs(m - gm[s]) > 1e-5:
            fail(f"{name} seed {s}: gt_mean_max_cos {gm[s]} vs numpy {m}")
        if abs(r - gr[s]) > near / A + 1e-12:
            fail(f"{name} seed {s}: gt_recovered {gr[s]} vs numpy {r}")
        ps = c["per_seed"][s]
        if ps["gt_mean_max_cos"] != gm[s] or ps["gt_recovered"] != gr[s]:
            fail(f"{name} seed {s}: results.json per_seed differs from results.h5")
        if not gm[s] > rand_max:
            fail(f"{name} seed {s}: gt_mean_max_cos {gm[s]:.4f} not above the best random decoder {rand_max:.4f}")
        print(f"groundtruth:   {name} seed {s}: mean max |cos| {gm[s]:.4f} (numpy {m:.4f}), recovered {gr[s]:.3f}")
    if k == 3 and not (gr.min() >= 0.25 and rand_rec_max == 0.0):
        fail(f"{name}: recovered shares {gr} at the true sparsity; random best {rand_rec_max}")
    for key, col in (("gt_mean_max_cos", gm), ("gt_recovered", gr)):
        if abs(c[key]["mean"] - col.mean()) > 1e-12 or c[key]["n"] != S:
            fail(f"{name}: {key} CI mean {c[key]['mean']} vs per-seed mean {col.mean()}")

    # densities: signed top-k of (x - b_dec) W_enc^T + b_enc on every row (no holdout)
    dens = g["density"][()]
    if dens.shape != (S, ds) or dens.dtype != np.float32:
        fail(f"{name}: density {dens.shape} {dens.dtype}, expected ({S}, {ds}) float32")
    n = X.shape[0]
    for s in range(S):
        pre = (X - b_dec[s].astype(np.float64)) @ enc[s].astype(np.float64).T + b_enc[s].astype(np.float64)
        idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
        vals = np.take_along_axis(pre, idx, 1)
        fired = np.zeros_like(pre, dtype=bool)
        np.put_along_axis(fired, idx, vals != 0, 1)
        want = fired.mean(axis=0)
        srt = -np.sort(-pre, axis=1)
        ties = int(np.sum(srt[:, k - 1] - srt[:, k] < 1e-5 * (1 + np.abs(srt[:, k - 1]))))
        err = np.abs(dens[s] - want).max()
        if err > 1e-6 + ties / n:
            fail(f"{name} seed {s}: density max |diff| {err:.3g} ({ties} near-tie rows)")
        if abs(dens[s].sum() - c["per_seed"][s]["l0"]) > 1e-4:
            fail(f"{name} seed {s}: densities sum to {dens[s].sum()}, L0 is {c['per_seed'][s]['l0']}")
        print(f"groundtruth:   {name} seed {s}: density max |diff| {err:.2e} vs numpy ({ties} near-tie rows)")
    hist = c["density_histogram"]
    counts = np.array(hist["counts"])
    total = hist["never_fires"] + counts.sum()
    if total != S * ds or hist["total"] != S * ds:
        fail(f"{name}: histogram counts sum to {total}, expected S * d_sae = {S * ds}")
    if not np.allclose(hist["log10_bin_edges"], edges):
        fail(f"{name}: bin edges {hist['log10_bin_edges']}")
    v = dens.ravel().astype(np.float64)
    pos = v[v > 0]
    b = np.clip(np.floor((np.log10(pos) + 6.0) / 0.5).astype(int), 0, len(edges) - 2)
    mine = np.bincount(b, minlength=len(edges) - 1)
    if hist["never_fires"] != int(np.sum(v <= 0)) or not (mine == counts).all():
        fail(f"{name}: histogram {hist['never_fires']}, {counts.tolist()} vs numpy {int(np.sum(v <= 0))}, {mine.tolist()}")
    print(f"groundtruth:   {name}: histogram never={hist['never_fires']} bins={counts.tolist()} (sum {total} = S x d_sae)")

svg = ET.parse(run + "/density.svg").getroot()
lines = [e for e in svg.iter() if e.tag.endswith("polyline")]
if len(lines) != len(conds):
    fail(f"density.svg has {len(lines)} lines for {len(conds)} conditions")
summary = open(run + "/summary.md").read()
if "Ground-truth recovery" not in summary:
    fail("summary.md lacks the ground-truth table")
rows = list(csv.DictReader(open(run + "/conditions.csv")))
for r in rows:
    if abs(float(r["gt_mean_max_cos"]) - conds[r["name"]]["gt_mean_max_cos"]["mean"]) > 1e-12:
        fail(f"conditions.csv gt_mean_max_cos of {r['name']}")

jp = json.load(open(plain + "/results.json"))
cp = jp["conditions"][0]
hp = h5py.File(plain + "/results.h5", "r")["conditions"][cp["name"]]
if "gt_mean_max_cos" in cp or "gt_mean_max_cos" in hp or "dictionary" in jp["data"]:
    fail("a run without data.dictionary reports ground truth")
if "density" not in hp or "density_histogram" not in cp:
    fail("a run without data.dictionary lacks densities")
plain_row = next(csv.DictReader(open(plain + "/conditions.csv")))
if any(plain_row[k] for k in plain_row if k.startswith(("gt_mean_max_cos", "gt_recovered"))):
    fail("conditions.csv ground-truth columns should be empty without a dictionary")
print("groundtruth:   recovery and densities match numpy; trained SAEs beat random decoders")
PY

step "bad dictionaries: one error line naming data.dictionary, non-zero exit, no run directory"
"$PY" - "$tmp/syn.h5" "$tmp/bad.h5" <<'PY'
import shutil, sys
import h5py
import numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "a") as f:
    D = f["dictionary"][()]
    f["narrow"] = D[:, :8]
    f["flat"] = D[0]
    f["ints"] = np.ones((32, 16), dtype=np.int32)
    bad = D.copy()
    bad[5, 3] = np.nan
    f["nan"] = bad
PY
sed "s|^path = .*|path = $tmp/bad.h5|" "$tmp/g.ini" >"$tmp/bad.ini"
bad() { # NAME PATTERN: data.dictionary=NAME must fail cleanly with PATTERN in its one error line
    local rc=0
    "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/bad.ini" --set "data.dictionary=$1" --out "$tmp/badout" \
        --run-id b >"$tmp/bo" 2>"$tmp/be" || rc=$?
    [ "$rc" -ne 0 ] || fail "data.dictionary=$1 was accepted"
    local n
    n=$(grep -c '^husai: error' "$tmp/be" || true)
    [ "$n" -eq 1 ] || fail "data.dictionary=$1: expected one 'husai: error' line, got $n: $(cat "$tmp/be")"
    grep '^husai: error' "$tmp/be" | grep -q "data.dictionary" || fail "data.dictionary=$1: error does not name the key"
    grep '^husai: error' "$tmp/be" | grep -q -- "$2" || fail "data.dictionary=$1: error lacks '$2': $(cat "$tmp/be")"
    if grep -q "task 1/" "$tmp/bo"; then fail "data.dictionary=$1: training started before the check"; fi
    if [ -n "$(ls -A "$tmp/badout" 2>/dev/null)" ]; then fail "data.dictionary=$1 left $(ls -A "$tmp/badout")"; fi
    echo "groundtruth:   data.dictionary=$1 -> $(grep '^husai: error' "$tmp/be")"
}
bad /missing "no dataset"
bad /narrow "d_model = 16"
bad /flat "1 dimensions"
bad /ints "not a floating-point"
bad /nan "atom 5"
step "PASS"
