#!/usr/bin/env bash
# protocol_consistency.sh: the consistency-regularization protocol (DESIGN.md section 6, `[sweep] mode =
# consistency`) end to end on tiny synthetic data with 2 ranks: reference seed 42, seeds 1, 2, 3, lambda
# {0, 0.1, 1}, k = 4. tests/check_protocol.py checks that alignment to the reference rises with lambda, the
# per-seed alignment recomputed with numpy from the stored decoders and /reference/decoder, the with-reference
# PWMCC matrix and mean, the selection rule under EV(lambda=0) - max_ev_drop, and determinism: the lambda = 0
# models are bitwise those of a plain `mode = sweep` run with the same settings (the penalty is exactly off),
# and the reference decoder is bitwise that sweep's seed-42 decoder; every number of results.json equals its
# results.h5 counterpart bit for bit (tests/check_results.py --exact-only).
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init protocol_consistency --keep-env --openblas

# run NAME CONFIG: a 2-rank husai sweep into $tmp/out_NAME that must succeed without writing to stderr.
run() {
    local rc=0
    timeout 300 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$2" --out "$tmp/out_$1" \
        >"$tmp/stdout_$1" 2>"$tmp/stderr_$1" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$tmp/stdout_$1" "$tmp/stderr_$1" >&2
        fail "husai sweep ($1) exited $rc"
    fi
    [ ! -s "$tmp/stderr_$1" ] || {
        cat "$tmp/stderr_$1" >&2
        fail "the successful $1 run wrote to stderr"
    }
    local n
    n=$(find "$tmp/out_$1" -name results.json | wc -l)
    [ "$n" -eq 1 ] || fail "$1: expected one results.json under --out, found $n"
}

step "generating tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1
# The settings both runs share; only [sweep] (and the consistency keys) differ.
common() {
    cat <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 32
k = 4

[train]
epochs = 15
batch_size = 256
lr = 0.003

[metrics]
resamples = 500
EOF
}
{
    common
    cat <<EOF

[sweep]
mode = consistency
param = lambda
values = 0, 0.1, 1
seeds = 1, 2, 3

[consistency]
reference_seed = 42
max_ev_drop = 0.05
EOF
} >"$tmp/consistency.ini"
{
    common
    cat <<EOF

[sweep]
mode = sweep
param = k
values = 4
seeds = 1, 2, 3, 42
EOF
} >"$tmp/sweep.ini"

step "2-rank consistency run: reference seed 42, seeds 1, 2, 3 x lambda {0, 0.1, 1}, k = 4"
run consistency "$tmp/consistency.ini"
grep -q '^\[husai\] reference: seed 42 done' "$tmp/stdout_consistency" || fail "no 'reference: seed 42 done' line"
[ "$(grep -c 'task [0-9]*/9 done' "$tmp/stdout_consistency" || true)" -eq 9 ] ||
    fail "expected 9 progress lines (3 lambdas x 3 seeds)"

step "2-rank plain sweep with the same settings: k = 4, seeds 1, 2, 3, 42 (no penalty anywhere)"
run sweep "$tmp/sweep.ini"

step "independent checks (tests/check_protocol.py consistency)"
"$PY" "$HERE/check_protocol.py" consistency "$tmp/out_consistency" --sweep "$tmp/out_sweep" --reference-seed 42 \
    --seeds 1,2,3 --max-ev-drop 0.05 || fail "check_protocol.py found a problem"
"$PY" "$HERE/check_results.py" "$tmp"/out_consistency/*/ --exact-only ||
    fail "results.json and results.h5 differ (tests/check_results.py --exact-only)"

step "PASS"
