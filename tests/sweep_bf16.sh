#!/usr/bin/env bash
# sweep_bf16.sh: train.precision end to end (src/sae/bf16.c, src/sweep/run.c choose_precision). 2-rank sweeps
# with precision = fp32, bf16 and auto on tiny data, and fp32 against bf16 at 768 x 4096 (a short run):
# - results.json's run.precision records what was asked for and what ran, oneDNN's ISA, the bf16 rows and
#   the uncertified share; the log names the choice;
# - bf16 trains on the exact fp32 selections (test_bf16 checks every step against the dot8 and fp64
#   rules), so PWMCC, EV and every seed's EV/MSE/L0 agree with the fp32 path's within 1e-5, for a k sweep
#   and for every architecture;
# - tests/check_results.py recomputes the bf16 run's metrics independently with numpy;
# - auto resolves to fp32 or bf16, never anything else, and both runs agree with fp32 as above;
# - a bad value is one clean "husai: error" line naming train.precision, exit 1, nothing left behind.
# Runs with or without oneDNN (the bf16 product is then emulated) and with or without bf16 units.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_bf16 --openblas

# run NAME CONFIG PRECISION: a 2-rank sweep at that precision; prints the run directory.
run() { sweep_ok "$1" "$2" --set "train.precision=$3"; }

# compare A B USED: precision records and metrics of run A (fp32) against run B (USED) within 1e-5.
compare() {
    "$PY" - "$1" "$2" "$3" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1] + "/results.json"))
b = json.load(open(sys.argv[2] + "/results.json"))
used = sys.argv[3]
pa, pb = a["run"]["precision"], b["run"]["precision"]
assert pa["used"] == "fp32" and pa["bf16_rows"] == 0, pa
assert pb["used"] in ("fp32", "bf16"), pb
if used != "either":
    assert pb["used"] == used, (pb, used)
if pb["used"] == "bf16":
    assert pb["bf16_rows"] > 0 and 0 <= pb["uncertified_share"] <= 1, pb
    assert pb["uncertified_rows"] <= pb["bf16_second_candidate_rows"] <= pb["bf16_rows"], pb
    assert pb["onednn_isa"], pb
worst = 0.0
for ca, cb in zip(a["conditions"], b["conditions"], strict=True):
    assert ca["name"] == cb["name"]
    for key in ("trained_pwmcc", "explained_variance", "mse", "l0"):
        d = abs(ca[key]["mean"] - cb[key]["mean"])
        worst = max(worst, d)
        assert d <= 1e-5, (ca["name"], key, ca[key]["mean"], cb[key]["mean"])
    for sa, sb in zip(ca["per_seed"], cb["per_seed"], strict=True):
        for key in ("explained_variance", "mse", "l0", "last_epoch_loss"):
            d = abs(sa[key] - sb[key])
            worst = max(worst, d)
            assert d <= 1e-5, (ca["name"], key, sa[key], sb[key])
print(f"  {pb['used']} ({pb['onednn_isa']}): largest difference from fp32 {worst:.2e}, "
      f"{pb['bf16_rows']} bf16 rows, uncertified share {pb['uncertified_share']:.4g}")
EOF
}

step "tiny data: 2000 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 1 >/dev/null
cat >"$tmp/tiny.ini" <<EOF
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 32
[train]
epochs = 10
batch_size = 256
lr = 0.003
[sweep]
param = k
values = 4, 8
seeds = 11, 22, 33
[metrics]
resamples = 200
EOF
fp32=$(run tiny_fp32 "$tmp/tiny.ini" fp32)
bf16=$(run tiny_bf16 "$tmp/tiny.ini" bf16)
auto=$(run tiny_auto "$tmp/tiny.ini" auto)
grep -q "precision: bf16 (as configured" "$tmp/stdout_tiny_bf16" || fail "the bf16 run's log does not name its precision"
grep -q "precision: .* (auto: " "$tmp/stdout_tiny_auto" || fail "the auto run's log does not give its calibration"
grep -q "bf16: [0-9]* rows encoded" "$tmp/stdout_tiny_bf16" || fail "the bf16 run does not log its rows"

step "bf16 and auto against fp32 (PWMCC, EV, MSE, L0 within 1e-5)"
compare "$fp32" "$bf16" bf16 || fail "bf16 differs from fp32"
compare "$fp32" "$auto" either || fail "auto differs from fp32"
"$PY" "$HERE/check_results.py" "$bf16" >/dev/null || fail "check_results.py found a mismatch in $bf16"

step "every architecture: bf16 against fp32"
cat >"$tmp/arch.ini" <<EOF
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 32
k = 4
[train]
epochs = 6
batch_size = 256
lr = 0.003
[sweep]
param = arch
values = topk, batchtopk, jumprelu, relu_l1, matryoshka
seeds = 11, 22
[metrics]
resamples = 200
EOF
afp32=$(run arch_fp32 "$tmp/arch.ini" fp32)
abf16=$(run arch_bf16 "$tmp/arch.ini" bf16)
compare "$afp32" "$abf16" bf16 || fail "bf16 differs from fp32 in an architecture sweep"

step "bf16 is bitwise the same on 1 rank x 2 threads as on 2 ranks x 1 thread"
rc=0
HUSAI_THREADS=2 timeout 600 "$MPIEXEC" -np 1 --oversubscribe --bind-to none -x HUSAI_THREADS "$HUSAI" sweep "$tmp/tiny.ini" --out "$tmp/tiny_np1" \
    --set train.precision=bf16 >"$tmp/tiny_np1.stdout" 2>"$tmp/tiny_np1.stderr" || rc=$?
[ "$rc" -eq 0 ] || fail "1-rank bf16 run exited $rc: $(cat "$tmp/tiny_np1.stderr")"
"$PY" - "$bf16" "$(ls -d "$tmp"/tiny_np1/*/)" <<'EOF2' || fail "bf16 results depend on the rank or thread count"
import sys
import h5py, numpy as np
a, b = (h5py.File(p + "/results.h5", "r") for p in sys.argv[1:3])
for c in a["conditions"]:
    for key in ("decoders", "encoders", "b_enc", "pwmcc"):
        x, y = a["conditions"][c][key][...], b["conditions"][c][key][...]
        assert x.tobytes() == y.tobytes(), (c, key)
EOF2

step "768 x 4096, k 32, a short run: fp32 against bf16"
"$PY" "$HERE/data/make_tiny.py" "$tmp/wide.h5" 4096 768 512 2 >/dev/null
cat >"$tmp/wide.ini" <<EOF
[data]
path = $tmp/wide.h5
[sae]
d_sae = 4096
[train]
epochs = 2
batch_size = 1024
lr = 0.0003
[sweep]
param = k
values = 32
seeds = 1, 2
[metrics]
resamples = 200
EOF
wfp32=$(run wide_fp32 "$tmp/wide.ini" fp32)
wbf16=$(run wide_bf16 "$tmp/wide.ini" bf16)
compare "$wfp32" "$wbf16" bf16 || fail "bf16 differs from fp32 at 768 x 4096"
# Per-feature stability on the bf16 path: every feature's best |cos| in the other seed and its mean best
# |cos| within 1e-5 of fp32's; the matched-at-tau stability equal wherever the best |cos| is not within
# 1e-5 of tau (there either side of tau is the same value up to rounding).
"$PY" - "$wfp32/results.h5" "$wbf16/results.h5" <<'EOF' || fail "bf16 stability differs from fp32 at 768 x 4096"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
tau = 0.7
for name in a["conditions"]:
    fa, fb = a["conditions"][name]["features"], b["conditions"][name]["features"]
    S = fa["stability"].shape[0]
    ba, bb = fa["best_cos"][()], fb["best_cos"][()]
    off = ~np.eye(S, dtype=bool)
    d_best = np.abs(ba - bb)[off].max()
    d_mean = np.abs(fa["mean_best_cos"][()] - fb["mean_best_cos"][()]).max()
    assert d_best <= 1e-5 and d_mean <= 1e-5, (name, d_best, d_mean)
    near = (np.abs(ba - tau) <= 1e-5)[off].reshape(S, S - 1, -1).any(axis=1)
    sa, sb = fa["stability"][()], fb["stability"][()]
    assert np.array_equal(sa[~near], sb[~near]), (name, "stability differs away from tau")
    print(f"  {name}: best |cos| within {d_best:.1e}, mean best |cos| within {d_mean:.1e}, stability equal "
          f"on {int((~near).sum())} of {near.size} features (the rest within 1e-5 of tau)")
EOF

step "a bad precision is refused cleanly"
rc=0
timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/tiny.ini" --out "$tmp/bad" \
    --set train.precision=fp16 >"$tmp/bad.stdout" 2>"$tmp/bad.stderr" || rc=$?
[ "$rc" -eq 1 ] || fail "exit status $rc, expected 1"
n=$(grep -c "^husai: error" "$tmp/bad.stderr" || true)
[ "$n" -eq 1 ] || fail "expected one 'husai: error' line, found $n: $(cat "$tmp/bad.stderr")"
grep "^husai: error" "$tmp/bad.stderr" | grep -q "train.precision = 'fp16' must be fp32, bf16 or auto" ||
    fail "the error does not name train.precision: $(cat "$tmp/bad.stderr")"
! grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/bad.stderr" || fail "MPI_ABORT or an HDF5 stack on stderr"
[ -z "$(ls -A "$tmp/bad" 2>/dev/null)" ] || fail "something was left under the output directory"
step "ok"
