#!/usr/bin/env bash
# sweep_determinism.sh: DESIGN.md section 4 "Randomness": a seed's result is bitwise identical whichever rank
# trains it and however many ranks run. The same 2-condition x 3-seed sweep runs on 1, 2, 3 and 4 ranks
# (oversubscribed) and with --task-order reverse on 2 ranks; every condition's decoders, encoders, b_enc,
# PWMCC and matched-agreement matrices and per-feature best matches, stability, clusters and consensus features
# (spread over ranks) and the per-seed metrics and CIs
# derived from them must be identical across all five runs,
# while the task -> rank maps recorded in per_seed.rank do differ. A run with the seeds listed in another order
# gives the same per-feature stability, clusters and consensus features, permuted with the seeds.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_determinism --keep-env

step "generating tiny data: 1500 x 12, 20 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 1500 12 20 7
cat >"$tmp/det.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 24

[train]
epochs = 8
batch_size = 128
lr = 0.003

[sweep]
param = k
values = 3, 6
seeds = 5, 1000003, 42

[metrics]
resamples = 200
EOF

run() { # run NAME NP [extra args...]
    local name=$1 np=$2
    shift 2
    step "run '$name': $np rank(s) $*"
    local rc=0
    "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$tmp/det.ini" --out "$tmp/$name" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$tmp/$name.out" "$tmp/$name.err" >&2
        fail "run '$name' exited $rc"
    fi
    local dirs=("$tmp/$name"/*/)
    [ "${#dirs[@]}" -eq 1 ] && [ -f "${dirs[0]}/results.h5" ] || fail "run '$name' did not leave exactly one complete run directory"
}

run np1 1
run np2 2
run np3 3
run np4 4
run np2rev 2 --task-order reverse

step "comparing all runs with the 1-rank run, bit for bit"
"$PY" - "$tmp" np1 np2 np3 np4 np2rev <<'EOF'
import glob, json, sys
import h5py, numpy as np

tmp, names = sys.argv[1], sys.argv[2:]
def fail(msg):
    print("sweep_determinism: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def load(name):
    (run,) = glob.glob(f"{tmp}/{name}/*/")
    js = json.load(open(run + "results.json"))
    arrays = {}
    with h5py.File(run + "results.h5", "r") as h:
        for c in h["conditions"]:
            for key in ("decoders", "encoders", "b_enc", "seeds", "pwmcc", "random_pwmcc", "matched_cosine",
                        "matched_fraction", "explained_variance", "mse", "l0", "dead_fraction",
                        "features/best_cos", "features/best_index", "features/stability", "features/cluster",
                        "features/consensus", "features/consensus_members", "features/coherence",
                        "features/density"):
                arrays[(c, key)] = h["conditions"][c][key][...]
    return js, arrays

ref_js, ref = load(names[0])
if ref_js["run"]["ranks"] != 1: fail(f"{names[0]}: run.ranks = {ref_js['run']['ranks']}")
for (c, key), a in ref.items():
    if key in ("decoders", "encoders", "b_enc") and a.dtype != np.float32:
        fail(f"{names[0]} {c}/{key} is {a.dtype}, expected float32")
    if key == "decoders" and not np.all(np.isfinite(a)):
        fail(f"{names[0]} {c}/decoders not finite")
# The seeds must actually differ from each other, or "identical" would prove little.
for c in {c for c, _ in ref}:
    d = ref[(c, "decoders")]
    if np.array_equal(d[0], d[1]) or np.array_equal(d[1], d[2]): fail(f"{c}: two seeds trained identical decoders")

rank_maps = {}
for name, np_ in zip(names, [1, 2, 3, 4, 2]):
    js, arrs = load(name)
    if js["run"]["ranks"] != np_: fail(f"{name}: run.ranks = {js['run']['ranks']}, expected {np_}")
    if set(arrs) != set(ref): fail(f"{name}: datasets {sorted(arrs)} != {sorted(ref)}")
    for k, a in arrs.items():
        b = ref[k]
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            bad = np.argwhere(a != b)[:3] if a.shape == b.shape else "shape differs"
            fail(f"{name} vs {names[0]}: {k[0]}/{k[1]} differs (first differing indices {bad}); "
                 f"max |diff| {np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape else '-'}")
    for cj, cr in zip(js["conditions"], ref_js["conditions"]):
        for key in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction",
                    "delta_pwmcc", "delta_pwmcc_ci_low_conservative", "ratio_pwmcc", "features"):
            if cj[key] != cr[key]: fail(f"{name} vs {names[0]}: {cj['name']} {key} {cj[key]} != {cr[key]}")
        for pj, pr in zip(cj["per_seed"], cr["per_seed"]):
            for key in ("seed", "explained_variance", "mse", "l0", "dead_fraction", "last_epoch_loss", "steps"):
                if pj[key] != pr[key]: fail(f"{name} vs {names[0]}: {cj['name']} seed {pj['seed']} {key} {pj[key]} != {pr[key]}")
    rank_maps[name] = tuple(p["rank"] for c in js["conditions"] for p in c["per_seed"])
    print(f"sweep_determinism:   {name}: identical; task->rank map {rank_maps[name]}")

fe = ref_js["conditions"][0]["features"]
if not (ref[(ref_js["conditions"][0]["name"], "features/best_cos")] > 0).any() or fe["n_mutual"] < 1:
    fail("no mutual matches at all: the per-feature comparison would prove little")
print(f"sweep_determinism:   features: {fe['consensus_count']['mean']} consensus features, {fe['n_mutual']} mutual matches")
if len(set(rank_maps[n] for n in ("np1", "np2", "np3", "np4"))) != 4:
    fail(f"the rank counts did not produce four different task->rank maps: {rank_maps}")
if max(rank_maps["np4"]) != 3: fail(f"4-rank run never used rank 3: {rank_maps['np4']}")
EOF

step "seed order: the same seeds listed as 42, 5, 1000003 (2 ranks) give the same per-feature results, permuted"
sed 's/^seeds = .*/seeds = 42, 5, 1000003/' "$tmp/det.ini" >"$tmp/perm.ini"
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/perm.ini" --out "$tmp/perm" >"$tmp/perm.out" 2>&1 || {
    cat "$tmp/perm.out" >&2
    fail "seed-order run failed"
}
"$PY" - "$tmp" <<'EOF'
import glob, sys
import h5py, numpy as np
tmp = sys.argv[1]
def fail(msg):
    print("sweep_determinism: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)
(a,) = glob.glob(f"{tmp}/np1/*/results.h5")
(b,) = glob.glob(f"{tmp}/perm/*/results.h5")
with h5py.File(a, "r") as ha, h5py.File(b, "r") as hb:
    for c in ha["conditions"]:
        fa, fb = ha["conditions"][c]["features"], hb["conditions"][c]["features"]
        sa, sb = list(ha["conditions"][c]["seeds"][...]), list(hb["conditions"][c]["seeds"][...])
        p = [sa.index(x) for x in sb]  # position in run a of run b's seed at each position
        if not np.array_equal(ha["conditions"][c]["decoders"][...][p], hb["conditions"][c]["decoders"][...]):
            fail(f"{c}: the permuted run trained other decoders")
        for key in ("stability", "cluster"):
            if not np.array_equal(fa[key][...][p], fb[key][...]): fail(f"{c}: features/{key} depends on seed order")
        if not np.array_equal(fa["best_index"][...][p][:, p], fb["best_index"][...]):
            fail(f"{c}: features/best_index depends on seed order")
        if np.abs(fa["best_cos"][...][p][:, p] - fb["best_cos"][...]).max() > 1e-6:
            fail(f"{c}: features/best_cos depends on seed order")
        if not np.array_equal(fa["consensus_members"][...][:, p], fb["consensus_members"][...]):
            fail(f"{c}: consensus members or their numbering depend on seed order")
        if np.abs(fa["consensus"][...] - fb["consensus"][...]).max() > 1e-6:
            fail(f"{c}: consensus directions depend on seed order")
        print(f"sweep_determinism:   {c}: seed order {sb}: same {fa['consensus'].shape[0]} consensus features")
EOF

step "reverse task order really reversed the order in which rank 0 finished its tasks"
fwd=$(grep -o 'done: [^ ]* seed=[0-9]* rank=0' "$tmp/np2.out" | tr '\n' ' ')
rev=$(grep -o 'done: [^ ]* seed=[0-9]* rank=0' "$tmp/np2rev.out" | tr '\n' ' ')
[ -n "$fwd" ] && [ "$fwd" != "$rev" ] || fail "rank 0 finished its tasks in the same order with --task-order reverse: $fwd"
echo "  forward: $fwd"
echo "  reverse: $rev"

step "PASS"
