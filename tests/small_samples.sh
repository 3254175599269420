#!/usr/bin/env bash
# small_samples.sh: honest small samples and exact numbers (issue 15 items 6 and 7), on tiny data with 2 ranks.
#   - S = 2 seeds (one pair): exit 0; every interval, the pair statistics' std and the conservative LCB are null
#     in results.json, "n/a (needs >= 3 seeds)" in summary.md and conditions.csv, no "beyond random" claim, no
#     "nan" anywhere in the reports; tests/check_results.py (numpy recomputation + bit-for-bit json/h5) passes.
#   - S = 3 and S = 4: the few-seeds sentence is in summary.md, every interval is reported with non-zero width
#     (check_results.py), no "n/a".
#   - results.json vs results.h5 bit for bit on a 3-condition sweep, and a copy with one per-seed value moved
#     by 1 ulp must be caught (the check can fail).
#   - calibrate and consistency with 2 seeds: refused before training with one "husai: error" line saying an
#     interval needs at least 3 seeds, exit 1, no banner, no HDF5 stack, nothing left under --out, no hang.
#   - calibrate searching on 3 seeds but retraining on 2: exit 0, the direct effect's two CIs null in
#     results.json and "n/a" in summary.md with no excludes/includes-zero claim; json/h5 bit for bit; the
#     consistency protocol on 3 seeds: json/h5 bit for bit.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init small_samples --keep-env --openblas

NA='n/a (needs >= 3 seeds)'
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 600 8 12 1 >/dev/null
cat >"$tmp/base.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 16

[train]
epochs = 20
batch_size = 64
lr = 0.003

[sweep]
param = k
values = 2, 4, 8
seeds = 1, 2, 3

[metrics]
resamples = 300
EOF

# sweep NAME ARGS...: a 2-rank run into $tmp/out_NAME that must succeed quietly; sets $run to its directory.
sweep() {
    local name=$1 rc=0
    shift
    timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$@" --out "$tmp/out_$name" \
        >"$tmp/stdout_$name" 2>"$tmp/stderr_$name" || rc=$?
    if [ "$rc" -ne 0 ] || [ -s "$tmp/stderr_$name" ]; then
        cat "$tmp/stdout_$name" "$tmp/stderr_$name" >&2
        fail "$name: husai sweep exited $rc (or wrote to stderr)"
    fi
    run=$(dirname "$(find "$tmp/out_$name" -name results.json)")
    [ -d "$run" ] || fail "$name: no run directory"
}

# refused NAME KEYWORD ARGS...: a 2-rank run that must fail with one "husai: error" line containing KEYWORD.
refused() {
    local name=$1 kw=$2 rc=0 n line
    shift 2
    timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$@" --out "$tmp/out_$name" \
        >"$tmp/stdout_$name" 2>"$tmp/stderr_$name" || rc=$?
    [ "$rc" -ne 124 ] || fail "$name: hung (killed by timeout)"
    [ "$rc" -eq 1 ] || fail "$name: exit status $rc, expected 1"
    n=$(cat "$tmp/stdout_$name" "$tmp/stderr_$name" | grep -c '^husai: error' || true)
    [ "$n" -eq 1 ] || {
        cat "$tmp/stdout_$name" "$tmp/stderr_$name" >&2
        fail "$name: expected one 'husai: error' line, found $n"
    }
    line=$(grep -h '^husai: error' "$tmp/stdout_$name" "$tmp/stderr_$name")
    grep -qF -- "$kw" <<<"$line" || fail "$name: the error line lacks '$kw': $line"
    ! grep -q 'MPI_ABORT\|HDF5-DIAG\|ORTE_ERROR' "$tmp/stdout_$name" "$tmp/stderr_$name" ||
        fail "$name: MPI_ABORT banner, ORTE lines or HDF5 error stack in the output"
    [ -z "$(ls -A "$tmp/out_$name" 2>/dev/null)" ] || fail "$name: left $(ls -A "$tmp/out_$name") under --out"
    ! grep -q 'task [0-9]*/[0-9]* done' "$tmp/stdout_$name" || fail "$name: trained before refusing"
    step "  $line"
}

step "S = 2 sweep (one pair): exit 0, intervals/LCB null in results.json, n/a in the tables, no claim"
sweep s2 "$tmp/base.ini" --set sweep.seeds=1,2
"$PY" "$HERE/check_results.py" "$run" >"$tmp/check_s2" || fail "check_results.py failed on the S = 2 run"
tail -1 "$tmp/check_s2"
md="$run/summary.md"
n=$(grep -c "^| [248] | .*\[$NA\].*| $NA |" "$md" || true)
[ "$n" -eq 3 ] || fail "summary.md: expected 3 table rows with '[$NA]' CIs and an n/a LCB, found $n"
grep -qF "Few seeds: with 2 seeds (one pair) no interval" "$md" || fail "summary.md lacks the 2-seed sentence"
! grep -qi 'beyond what random decoders would\|agree most reliably beyond chance\|have a conservative bound above' "$md" ||
    fail "summary.md makes a claim beyond random decoders with one pair: $(grep -i 'beyond' "$md")"
grep -qF "nothing is claimed about agreement beyond random decoders" "$md" || fail "summary.md lacks the no-claim reading"
"$PY" - "$run/conditions.csv" "$NA" <<'EOF' || fail "conditions.csv does not mark the withheld cells"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 3, rows
for r in rows:
    for k in ("trained_ci95_low", "trained_ci95_high", "random_ci95_low", "random_ci95_high",
              "delta_pwmcc_ci_low_conservative", "ev_ci95_low", "ev_ci95_high"):
        assert r[k] == sys.argv[2], (k, r[k])
    for k in ("trained_pwmcc", "random_pwmcc", "delta_pwmcc", "explained_variance"):
        float(r[k])
EOF
! grep -qi 'nan' "$md" "$run/conditions.csv" "$run"/*.svg || fail "a report contains 'nan': $(grep -il nan "$run"/*)"

for S in 3 4; do
    seeds=$(seq -s, 1 "$S")
    step "S = $S sweep: the few-seeds sentence, every interval reported and non-degenerate"
    sweep "s$S" "$tmp/base.ini" --set sweep.seeds="$seeds"
    "$PY" "$HERE/check_results.py" "$run" >"$tmp/check_s$S" || fail "check_results.py failed on the S = $S run"
    tail -1 "$tmp/check_s$S"
    grep -qF "Few seeds: these intervals rest on only $S seeds (5 or more advised)" "$run/summary.md" ||
        fail "S = $S: summary.md lacks the few-seeds sentence"
    ! grep -qF 'n/a' "$run/summary.md" "$run/conditions.csv" || fail "S = $S: an interval was withheld"
done
grep -q "numbers of results.json equal their results.h5 counterparts bit for bit" "$tmp/check_s3" ||
    fail "check_results.py did not run the bit-for-bit comparison"

step "S = 5 sweep: no few-seeds sentence"
sweep s5 "$tmp/base.ini" --set sweep.seeds=1,2,3,4,5 --set sweep.values=4
! grep -q 'Few seeds' "$run/summary.md" || fail "S = 5: summary.md still says few seeds"

step "a results.json value moved by 1 ulp is caught by the bit-for-bit check"
cp -r "$tmp/out_s3" "$tmp/ulp"
ulp=$(dirname "$(find "$tmp/ulp" -name results.json)")
"$PY" - "$ulp/results.json" <<'EOF'
import json, sys
import numpy as np
p = sys.argv[1]
js = json.load(open(p))
e = js["conditions"][1]["per_seed"][2]
e["mse"] = float(np.nextafter(e["mse"], np.inf))
json.dump(js, open(p, "w"))
EOF
if "$PY" "$HERE/check_results.py" "$ulp" --exact-only >"$tmp/ulp_out" 2>&1; then
    fail "check_results.py --exact-only accepted a value 1 ulp off"
fi
grep -q 'mse: results.json .* != results.h5' "$tmp/ulp_out" || fail "the 1-ulp failure does not name the value: $(cat "$tmp/ulp_out")"

step "calibrate and consistency with 2 seeds: refused before training, one line"
sed 's/^param = k$/mode = calibrate\nparam = k/' "$tmp/base.ini" >"$tmp/cal.ini"
cat >>"$tmp/cal.ini" <<EOF

[calibrate]
retrain_epochs = 20
ev_floor = 0
control_k = 4
EOF
refused cal2 "needs at least 3 seeds" "$tmp/cal.ini" --set sweep.seeds=1,2
sed 's/^param = k$/mode = consistency\nparam = lambda/; s/^values = .*/values = 0, 0.1/; s/^d_sae = 16$/&\nk = 4/' \
    "$tmp/base.ini" >"$tmp/con.ini"
printf '\n[consistency]\nreference_seed = 42\n' >>"$tmp/con.ini"
refused con2 "needs at least 3 seeds" "$tmp/con.ini" --set sweep.seeds=1,2

step "calibrate: search on 3 seeds, retrain on 2: direct effect has no interval, json/h5 bit for bit"
sweep cal "$tmp/cal.ini" --set calibrate.retrain_seeds=1,2
"$PY" "$HERE/check_results.py" "$run" --exact-only | tail -2
"$PY" - "$run/results.json" <<'EOF' || fail "calibrate: the direct effect's intervals are not null"
import json, sys
e = json.load(open(sys.argv[1]))["protocol"]["direct_effect"]
for k in ("paired_seeds", "husai_unpaired_pairs"):
    assert e[k]["ci95_low"] is None and e[k]["ci95_high"] is None, e
    assert isinstance(e[k]["diff"], (int, float)), e
EOF
grep -qF "| [$NA] | [$NA] |" "$run/summary.md" || fail "calibrate: the direct-effect table does not say n/a"
grep -qF "no interval exists" "$run/summary.md" || fail "calibrate: the reading does not say there is no interval"
! grep -q 'which excludes\|which includes' "$run/summary.md" || fail "calibrate: a zero claim without an interval"
grep -qF "Few seeds: for the conditions with 2 seeds (one pair) no interval" "$run/summary.md" &&
    grep -qF "Few seeds: the other intervals rest on only 3 seeds" "$run/summary.md" ||
    fail "calibrate: summary.md lacks the two few-seeds sentences (2-seed retrain, 3-seed search)"

step "consistency on 3 seeds: json/h5 bit for bit"
sweep con "$tmp/con.ini"
"$PY" "$HERE/check_results.py" "$run" --exact-only | tail -2

step "PASS"
