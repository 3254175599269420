#!/usr/bin/env bash
# sweep_merge.sh: a sweep split into one run per value (as Slurm array tasks run it) and joined
# with `husai merge` carries the same parameters, metrics and firing densities as the single job; parts
# with other settings or overlapping values are refused.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_merge

"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 1200 12 20 9
cat >"$tmp/m.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 24
[train]
epochs = 6
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 3, 6, 9
seeds = 4, 5, 6
[metrics]
resamples = 300
INI
run() { "$MPIEXEC" -np "$1" --oversubscribe "$HUSAI" sweep "$tmp/m.ini" "${@:2}" >"$tmp/log" 2>&1 || {
    cat "$tmp/log"
    fail "sweep $* failed"
}; }

step "single job over k = 3, 6, 9 (2 ranks); parts k=9, k=3, k=6 on 1, 2 and 3 ranks"
run 2 --out "$tmp" --run-id single
run 1 --set sweep.values=9 --out "$tmp/parts" --run-id p9
run 2 --set sweep.values=3 --out "$tmp/parts" --run-id p3
run 3 --set sweep.values=6 --out "$tmp/parts" --run-id p6
"$HUSAI" merge --out "$tmp" --run-id merged "$tmp/parts/p3" "$tmp/parts/p6" "$tmp/parts/p9" >"$tmp/merge.log" 2>&1 || {
    cat "$tmp/merge.log"
    fail "merge failed"
}

step "same conditions, parameters, matrices and metrics as the single job"
"$PY" - "$tmp/single" "$tmp/merged" <<'PY'
import json, sys, h5py
a, b = sys.argv[1], sys.argv[2]
fa, fb = h5py.File(a + "/results.h5", "r"), h5py.File(b + "/results.h5", "r")
assert list(fa["conditions"]) == list(fb["conditions"]), (list(fa["conditions"]), list(fb["conditions"]))
for n in fa["conditions"]:
    for ds in ("decoders", "encoders", "b_enc", "seeds", "pwmcc", "random_pwmcc", "explained_variance", "mse", "l0",
               "density", "steps"):
        if fa["conditions"][n][ds][()].tobytes() != fb["conditions"][n][ds][()].tobytes():
            sys.exit(f"{n}/{ds} differs between the single job and the merge")
ja, jb = json.load(open(a + "/results.json")), json.load(open(b + "/results.json"))
assert [c["name"] for c in ja["conditions"]] == [c["name"] for c in jb["conditions"]], "condition order differs"
keys = ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0", "dead_fraction", "delta_pwmcc",
        "delta_pwmcc_ci_low_conservative", "ratio_pwmcc", "density_histogram")
for ca, cb in zip(ja["conditions"], jb["conditions"]):
    for k in keys:
        if ca[k] != cb[k]:
            sys.exit(f"{ca['name']}: {k} differs: {ca[k]} vs {cb[k]}")
assert jb["run"]["ranks"] == 6, jb["run"]["ranks"]
print("sweep_merge:   3 conditions identical (metrics and CIs exactly equal)")
PY
"$PY" "$HERE/results_conventions.py" "$tmp/merged" k=3 k=6 k=9 || fail "the merged run breaks results.h5/conditions.csv conventions"
for f in summary.md conditions.csv pwmcc_vs_param.svg; do [ -s "$tmp/merged/$f" ] || fail "merged run lacks $f"; done

step "refusals: overlapping values, other settings, incomplete part"
run 1 --set sweep.values=12 --set train.lr=0.01 --out "$tmp/parts" --run-id other
expect() { # label pattern args...
    local label=$1 pattern=$2 rc=0
    shift 2
    "$HUSAI" merge --out "$tmp/bad" "$@" >"$tmp/o" 2>"$tmp/e" || rc=$?
    [ "$rc" -eq 1 ] || fail "$label: expected exit 1, got $rc"
    [ "$(grep -c '^husai: error' "$tmp/e")" -eq 1 ] && grep -q "$pattern" "$tmp/e" || {
        cat "$tmp/e"
        fail "$label: expected one error line containing '$pattern'"
    }
    [ -z "$(ls -A "$tmp/bad" 2>/dev/null)" ] || fail "$label: left output behind"
    step "  ok [$label]: $(cat "$tmp/e")"
}
expect "overlapping values" "already in another part" "$tmp/parts/p3" "$tmp/parts/p3"
expect "other settings" "settings other than" "$tmp/parts/p3" "$tmp/parts/other"
expect "not a run directory" "not a complete run directory" "$tmp/parts/p3" "$tmp/nowhere"
step "all merge checks passed"
