#!/usr/bin/env bash
# features_groundtruth.sh: per-feature stability and consensus features in a sweep, checked end to end
# against numpy and against the true dictionary of a `husai synth` dataset (8000 x 32, 64 atoms, 3 active,
# noise 0.01), swept over k = 3, 8 with 5 seeds, d_sae 128, 40 epochs, on 2 ranks (the spread pass).
# From results.h5, results.json and the data file alone:
#   - features/best_cos equals numpy's max |cos| between the seeds' decoder columns (1e-5), best_index its
#     argmax where the best is clear of the runner-up; stability and mean_best_cos follow from best_cos;
#   - every consensus row is the unit mean of its members' sign-aligned unit columns (1e-5), its members
#     point back to it in cluster[], it has at least min_seeds members, one per seed;
#   - the ground-truth numbers (atoms recovered by the consensus directions, share of consensus directions
#     that are true atoms) equal numpy's; TopK recovers most atoms here (mean single-seed recovery >= 0.5)
#     and the consensus precision is >= 0.9 in both conditions; random decoders give 0 consensus features;
#   - summary.md has both feature tables, stability_vs_density.svg parses with one line per condition.
#   - export: --seed adds feature_stability (results.h5's row), --consensus writes W_dec, stability,
#     coherence and members equal to results.h5 and a cfg.json, read back with a small safetensors parser;
#     --seed with --consensus is a usage error (2), a missing condition or a run without features exit 1
#     with one error line and write nothing.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init features_groundtruth --keep-env --openblas

step "synth 8000 x 32 (64 atoms, 3 active); sweep k = 3, 8 x 5 seeds on 2 ranks with the dictionary"
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" synth --rows 8000 --d-model 32 --atoms 64 --active 3 \
    --noise 0.01 --seed 11 "$tmp/syn.h5" >/dev/null || fail "synth failed"
cat >"$tmp/g.ini" <<INI
[data]
path = $tmp/syn.h5
dictionary = /dictionary
[sae]
d_sae = 128
[train]
epochs = 40
batch_size = 128
lr = 0.003
[sweep]
param = k
values = 3, 8
seeds = 1, 2, 3, 4, 5
[metrics]
resamples = 500
INI
timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/g.ini" --out "$tmp/out" >"$tmp/log" 2>&1 || {
    cat "$tmp/log" >&2
    fail "sweep failed"
}

step "numpy: best matches, stability, consensus directions, ground truth"
"$PY" - "$tmp" <<'PY' || fail "numpy check failed"
import glob, json, sys
import xml.etree.ElementTree as ET
import h5py, numpy as np

tmp = sys.argv[1]
(run,) = glob.glob(f"{tmp}/out/*/")
js = json.load(open(run + "results.json"))
with h5py.File(f"{tmp}/syn.h5", "r") as h:
    atoms = h["dictionary"][...].astype(np.float64)
atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)

def fail(msg):
    print("features_groundtruth: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

with h5py.File(run + "results.h5", "r") as h:
    for cj in js["conditions"]:
        name = cj["name"]
        g = h["conditions"][name]
        dec = g["decoders"][...].astype(np.float64)
        seeds = g["seeds"][...]
        fg = g["features"]
        S, dm, n = dec.shape
        U = dec / np.maximum(np.linalg.norm(dec, axis=1, keepdims=True), 1e-12)
        bc, bi = fg["best_cos"][...], fg["best_index"][...]
        tau, min_seeds = fg.attrs["tau"], int(fg.attrs["min_seeds"])
        for s in range(S):
            for t in range(S):
                if s == t:
                    continue
                C = np.abs(U[s].T @ U[t])
                srt = np.sort(C, 1)
                if np.abs(bc[s, t] - srt[:, -1]).max() > 1e-5:
                    fail(f"{name}: best_cos[{s}][{t}] differs from numpy")
                clear = srt[:, -1] - srt[:, -2] > 1e-4
                if (bi[s, t][clear] != C.argmax(1)[clear]).any():
                    fail(f"{name}: best_index[{s}][{t}] differs from numpy")
        off = ~np.eye(S, dtype=bool)
        stab = np.array([(bc[s][off[s]] >= np.float32(tau)).mean(0) for s in range(S)])
        if np.abs(fg["stability"][...] - stab).max() > 1e-6:
            fail(f"{name}: stability does not follow from best_cos")
        mb = np.array([bc[s][off[s]].astype(np.float64).mean(0) for s in range(S)])
        if np.abs(fg["mean_best_cos"][...] - mb).max() > 1e-6:
            fail(f"{name}: mean_best_cos does not follow from best_cos")
        cons, mem, cl = fg["consensus"][...], fg["consensus_members"][...], fg["cluster"][...]
        order = np.argsort(seeds, kind="stable")
        for c in range(cons.shape[0]):
            ms = [(s, mem[c, s]) for s in order if mem[c, s] >= 0]
            if len(ms) < min_seeds:
                fail(f"{name}: consensus {c} has {len(ms)} members, fewer than {min_seeds}")
            cols = np.array([U[s][:, i] for s, i in ms])
            sg = np.where(cols @ cols[0] < 0, -1.0, 1.0)
            v = (cols * sg[:, None]).sum(0)
            v /= np.linalg.norm(v)
            if np.abs(cons[c] - v).max() > 1e-5:
                fail(f"{name}: consensus {c} is not the mean of its sign-aligned members")
            if any(cl[s, i] != c for s, i in ms):
                fail(f"{name}: cluster[] does not point back to consensus {c}")
        if (cl >= 0).sum() != (mem >= 0).sum():
            fail(f"{name}: cluster[] marks features outside the consensus members")
        fj = cj["features"]
        if fj["consensus_count"]["mean"] != cons.shape[0]:
            fail(f"{name}: results.json counts {fj['consensus_count']['mean']} consensus features, h5 {cons.shape[0]}")
        G = np.abs(cons.astype(np.float64) @ atoms.T)
        rec, prec = (G.max(0) >= 0.9).mean(), (G.max(1) >= 0.9).mean()
        if abs(rec - fj["gt_recovered_by_consensus"]) > 1e-9 or abs(prec - fj["gt_consensus_precision"]) > 1e-9:
            fail(f"{name}: ground truth {fj['gt_recovered_by_consensus']}, {fj['gt_consensus_precision']} vs numpy {rec}, {prec}")
        single = cj["gt_recovered"]["mean"]
        if single < 0.5:
            fail(f"{name}: single seeds recover only {single} of the atoms; the case does not test what it claims")
        if prec < 0.9:
            fail(f"{name}: consensus precision {prec} < 0.9")
        if fj["random"]["consensus_count"]["mean"] != 0:
            fail(f"{name}: random decoders give {fj['random']['consensus_count']['mean']} consensus features")
        lo, hi = fj["consensus_count"]["ci95_low"], fj["consensus_count"]["ci95_high"]
        if not lo <= cons.shape[0] <= hi:
            fail(f"{name}: consensus count {cons.shape[0]} outside its CI [{lo}, {hi}]")
        print(f"features_groundtruth:   {name}: {cons.shape[0]} consensus features [{lo}, {hi}], atoms recovered "
              f"by consensus {rec:.3f} vs one seed {single:.3f}, precision {prec:.3f}")

summary = open(run + "summary.md").read()
for head in ("Consensus features (clusters of mutual best matches", "Consensus features against the true dictionary"):
    if head not in summary:
        fail(f"summary.md lacks '{head}'")
svg = ET.parse(run + "stability_vs_density.svg").getroot()
lines = [e for e in svg.iter() if e.tag.endswith("polyline")]
if len(lines) != len(js["conditions"]):
    fail(f"stability_vs_density.svg has {len(lines)} lines for {len(js['conditions'])} conditions")
PY
step "export: seed 3 with feature_stability, and the consensus dictionary; read back in Python"
run=$(ls -d "$tmp"/out/*/)
timeout 60 "$HUSAI" export "$run" --condition k=3 --seed 3 --allow-signed-topk "$tmp/sae3" >/dev/null || fail "export --seed failed"
timeout 60 "$HUSAI" export "$run" --condition k=3 --consensus "$tmp/cons" >"$tmp/cons.out" || fail "export --consensus failed"
rc=0
"$HUSAI" export "$run" --condition k=3 --seed 3 --consensus "$tmp/x" >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
[ "$rc" -eq 2 ] && [ "$(grep -c '^husai: error' "$tmp/bad.err")" -eq 1 ] && [ ! -e "$tmp/x" ] ||
    fail "--seed with --consensus: exit $rc, stderr $(cat "$tmp/bad.err")"
# export_fails NAME KEYWORD ARGS...: exit 1, one "husai: error" line with KEYWORD, nothing at $tmp/none
export_fails() {
    local name=$1 keyword=$2 rc=0
    shift 2
    timeout 60 "$HUSAI" export "$@" >"$tmp/e.out" 2>"$tmp/e.err" || rc=$?
    [ "$rc" -eq 1 ] && [ "$(grep -c '^husai: error' "$tmp/e.err")" -eq 1 ] && grep -q -- "$keyword" "$tmp/e.err" &&
        ! grep -q 'HDF5-DIAG' "$tmp/e.err" && [ ! -e "$tmp/none" ] ||
        fail "export $name: exit $rc, stderr: $(cat "$tmp/e.err")"
}
export_fails "of a missing condition" "no condition 'k=99'" "$run" --condition k=99 --consensus "$tmp/none"
cp -r "$run" "$tmp/old_run"
"$PY" -c 'import h5py, sys; f = h5py.File(sys.argv[1] + "/results.h5", "r+"); del f["conditions/k=3/features"]' "$tmp/old_run"
export_fails "of a run without features" "has no consensus features" "$tmp/old_run" --condition k=3 --consensus "$tmp/none"
"$PY" - "$run" "$tmp" <<'PY' || fail "exported tensors differ from results.h5"
import json, struct, sys
import h5py, numpy as np

run, tmp = sys.argv[1], sys.argv[2]
def tensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    dt = {"F32": "<f4", "I32": "<i4"}
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dt[v["dtype"]]).reshape(v["shape"]) for k, v in hdr.items()}
def fail(msg):
    print("features_groundtruth: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)
with h5py.File(run + "results.h5", "r") as h:
    g = h["conditions/k=3"]
    s = list(g["seeds"][...]).index(3)
    stab, cons = g["features/stability"][s], g["features/consensus"][...]
    mem, coh = g["features/consensus_members"][...], g["features/coherence"][...]
    seeds = [int(x) for x in g["seeds"][...]]
T = tensors(f"{tmp}/sae3/sae.safetensors")
if not np.array_equal(T["feature_stability"], stab): fail("feature_stability is not results.h5's stability[seed 3]")
C = tensors(f"{tmp}/cons/consensus.safetensors")
if set(C) != {"W_dec", "stability", "coherence", "members"}: fail(f"consensus tensors {sorted(C)}")
if not (np.array_equal(C["W_dec"], cons) and np.array_equal(C["members"], mem) and np.array_equal(C["coherence"], coh)):
    fail("consensus W_dec / members / coherence differ from results.h5")
if not np.array_equal(C["stability"], ((mem >= 0).sum(1) / len(seeds)).astype(np.float32)):
    fail("consensus stability is not the share of seeds holding each feature")
cfg = json.load(open(f"{tmp}/cons/cfg.json"))
if cfg["n_features"] != cons.shape[0] or cfg["d_in"] != cons.shape[1] or cfg["seeds"] != seeds or cfg["tau"] != 0.7:
    fail(f"cfg.json {cfg}")
print(f"features_groundtruth:   export: feature_stability [{stab.shape[0]}], consensus W_dec {list(C['W_dec'].shape)} read back")
PY
step "PASS"
