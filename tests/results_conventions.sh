#!/usr/bin/env bash
# results_conventions.sh: results.h5 and conditions.csv as README's "Output" section describes them, for
# four runs whose condition names do not sort in sweep order: a k sweep (16, 4, 32) with a held-out split
# and a ground-truth dictionary, an arch sweep (topk, relu_l1) on 2 seeds (withheld intervals), a calibrate
# run (nested groups search/, retrain/, control/) and a consistency run (lambda 1, 0, 0.1: the reference and
# the model axis). tests/results_conventions.py checks each: dimension scales named and attached on every
# axis, list(f["conditions"]) in sweep order with an order attribute and per-group index, str attributes,
# integer counts, and conditions.csv's columns equal to results.json's values.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init results_conventions --openblas

"$MPIEXEC" -np 1 --oversubscribe "$HUSAI" synth --rows 2000 --d-model 16 --atoms 24 --active 3 --noise 0.01 \
    --seed 5 "$tmp/syn.h5" >/dev/null || fail "synth failed"
common() {
    cat <<INI
[data]
path = $tmp/syn.h5
[sae]
d_sae = 64
k = 4
[train]
epochs = 20
batch_size = 200
lr = 0.003
[metrics]
resamples = 200
INI
}
# run NAME NP CONFIG_BODY [ORDER...]: a sweep of common() + CONFIG_BODY (and the options in extra) into
# $tmp/out/NAME, then the checks, with the sweep order ORDER when given.
extra=()
run() {
    local name=$1 np=$2
    { common; printf '%s\n' "$3"; } >"$tmp/$name.ini"
    timeout 300 "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$tmp/$name.ini" --out "$tmp/out" \
        --run-id "$name" "${extra[@]}" >"$tmp/$name.log" 2>&1 || {
        cat "$tmp/$name.log"
        fail "$name: husai sweep failed"
    }
    shift 3
    "$PY" "$HERE/results_conventions.py" "$tmp/out/$name" "$@" || fail "$name: conventions not met"
}

step "k = 16, 4, 32 x 3 seeds on 2 ranks, held-out rows and a dictionary"
extra=(--set data.holdout=0.1 --set data.dictionary=/dictionary)
run ksweep 2 "$(printf '%s\n' '[sweep]' 'param = k' 'values = 16, 4, 32' 'seeds = 1, 2, 3')" k=16 k=4 k=32
extra=()
# the order under test is not the order names sort in, as strings or as numbers
"$PY" -c 'import h5py, sys; n = list(h5py.File(sys.argv[1])["conditions"]); assert n != sorted(n), n' \
    "$tmp/out/ksweep/results.h5" || fail "ksweep: the names sort in sweep order, the test proves nothing"
grep -q "^k=16,k,16,3," "$tmp/out/ksweep/conditions.csv" || fail "ksweep: conditions.csv row k=16"

step "arch = topk, relu_l1 x 2 seeds on 1 rank (intervals withheld)"
run archsweep 1 "$(printf '%s\n' '[sweep]' 'param = arch' 'values = topk, relu_l1' 'seeds = 7, 8')" \
    arch=topk arch=relu_l1
grep -q "^arch=relu_l1,arch,relu_l1,2," "$tmp/out/archsweep/conditions.csv" ||
    fail "archsweep: conditions.csv does not name the architecture in value: $(cat "$tmp/out/archsweep/conditions.csv")"

step "calibrate: search k = 16, 4, 8 on 2 ranks, nested groups"
run calibrate 2 "$(printf '%s\n' '[sweep]' 'mode = calibrate' 'param = k' 'values = 16, 4, 8' 'seeds = 1, 2, 3' \
    '[calibrate]' 'retrain_seeds = 1, 2, 3' 'retrain_epochs = 20' 'ev_floor = 0.01' 'control_k = 8')"

step "consistency: lambda = 1, 0, 0.1 on 2 ranks, reference seed 9"
run consistency 2 "$(printf '%s\n' '[sweep]' 'mode = consistency' 'param = lambda' 'values = 1, 0, 0.1' \
    'seeds = 1, 2, 3' '[consistency]' 'reference_seed = 9' 'max_ev_drop = 0.5')" lambda=1 lambda=0 lambda=0.1
step "all checks passed"
