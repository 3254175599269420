#!/usr/bin/env bash
# protocol_calibrate.sh: the adaptive-L0 protocol (DESIGN.md section 6, `[sweep] mode = calibrate`) end to end
# on tiny synthetic data with 2 ranks: search k {2, 4, 8, 16} x 3 seeds x 10 epochs, select by conservative
# LCB under EV >= 0.3, retrain the pick and the control k=8 on 5 seeds (two of them new) x 12 epochs.
# tests/check_protocol.py then checks the selection against the rule recomputed from the search conditions,
# the retrain/control conditions, the direct effect and its paired seed CI recomputed with numpy from the two
# stored PWMCC matrices in husai's draw order (bootstrap_rng = numpy, so the two must agree to 1e-9), every
# condition's CIs the same way, summary.md and the SVG plots; tests/check_results.py --exact-only that every
# number of results.json equals its results.h5 counterpart bit for bit.
# Second case: an unreachable EV floor (0.99) must fail loudly: non-zero exit, exactly one "husai: error" line
# naming the EV floor, no results.json anywhere under --out, no hang.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init protocol_calibrate --keep-env --openblas

step "generating tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
cat >"$tmp/calibrate.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 32

[train]
epochs = 10
batch_size = 256
lr = 0.003

[sweep]
mode = calibrate
param = k
values = 2, 4, 8, 16
seeds = 11, 22, 33

[calibrate]
retrain_seeds = 11, 22, 33, 44, 55
retrain_epochs = 12
ev_floor = 0.3
control_k = 8

[metrics]
resamples = 500
bootstrap_rng = numpy
EOF

step "2-rank calibrate run: search k {2, 4, 8, 16} x 3 seeds, retrain + control k=8 x 5 seeds"
rc=0
timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/calibrate.ini" --out "$tmp/out" \
    >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
if [ "$rc" -ne 0 ]; then
    cat "$tmp/stdout" "$tmp/stderr" >&2
    fail "husai sweep (calibrate) exited $rc"
fi
[ ! -s "$tmp/stderr" ] || {
    cat "$tmp/stderr" >&2
    fail "a successful run wrote to stderr"
}

step "exactly one complete run directory with results.json, results.h5, summary.md and both SVG plots"
mapfile -t entries < <(ls -A "$tmp/out")
[ "${#entries[@]}" -eq 1 ] || fail "expected one entry under --out, found: ${entries[*]}"
run="$tmp/out/${entries[0]}"
for f in results.json results.h5 summary.md pwmcc_vs_param.svg pwmcc_vs_ev.svg; do
    [ -s "$run/$f" ] || fail "$run/$f missing or empty"
done
grep -q '^\[husai\] selected search/k=' "$tmp/stdout" || fail "stdout has no '[husai] selected ...' line"
grep -q '^\[husai\] direct effect ' "$tmp/stdout" || fail "stdout has no '[husai] direct effect ...' line"

step "independent checks (tests/check_protocol.py calibrate)"
# A failure here is reported at the end, so the failure case below still runs.
checks_ok=1
"$PY" "$HERE/check_protocol.py" calibrate "$run" --ev-floor 0.3 --control-k 8 --retrain-seeds 11,22,33,44,55 \
    --retrain-epochs 12 --search-seeds 11,22,33 --search-epochs 10 --n-search 4 || checks_ok=0
"$PY" "$HERE/check_results.py" "$run" --exact-only || checks_ok=0

step "unreachable EV floor 0.99: non-zero exit, one 'husai: error' line naming the EV floor, no results.json"
rc=0
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/calibrate.ini" --set calibrate.ev_floor=0.99 \
    --out "$tmp/out_fail" >"$tmp/stdout_fail" 2>"$tmp/stderr_fail" || rc=$?
[ "$rc" -ne 124 ] || fail "the failing calibrate run hung (killed by timeout after 120 s)"
[ "$rc" -ne 0 ] || fail "calibrate with an unreachable EV floor exited 0 (it must fail loudly, not fall back)"
n=$(cat "$tmp/stdout_fail" "$tmp/stderr_fail" | grep -c 'husai: error' || true)
if [ "$n" -ne 1 ]; then
    cat "$tmp/stdout_fail" "$tmp/stderr_fail" >&2
    fail "expected exactly one 'husai: error' line, found $n"
fi
line=$(cat "$tmp/stdout_fail" "$tmp/stderr_fail" | grep 'husai: error')
grep -q 'EV floor' <<<"$line" || fail "the error line does not mention the EV floor: $line"
echo "protocol_calibrate:   $line"
if [ -e "$tmp/out_fail" ] && find "$tmp/out_fail" -name results.json | grep -q .; then
    fail "a results.json was left under --out after the failure: $(find "$tmp/out_fail" -name results.json)"
fi
! grep -q 'run directory:' "$tmp/stdout_fail" || fail "the failing run announced a run directory"

[ "$checks_ok" -eq 1 ] || fail "check_protocol.py found a problem in the calibrate run (see above)"

step "PASS"
