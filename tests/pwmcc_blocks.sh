#!/usr/bin/env bash
# pwmcc_blocks.sh: PWMCC by seed blocks (src/sweep/phase.c spread_pwmcc, [metrics] window_mb). A 6-seed,
# 2-condition sweep on tiny data (decoders of 16 x 32, 2048 bytes each) runs unblocked on 1 and 2 ranks and
# with metrics.window_mb forcing seed blocks of 1 (budget 2.2 decoders) and of 2 (4.4 decoders) on 1, 2 and 3
# ranks, so every node's window holds 2 or 4 decoders, never the 6:
# - the log says the run went by seed blocks, with the block size and the block-pair count; an unblocked
#   run never says so;
# - every condition's pwmcc, random_pwmcc, matched_cosine, matched_fraction and every features/* dataset
#   (best matches, stability, clusters, consensus) in results.h5, and results.json's PWMCC and feature
#   summaries, are bitwise those of the unblocked 1-rank run; so are the decoders (blocking must not touch
#   training); tests/check_results.py recomputes PWMCC from the decoders with numpy (1e-5);
# - with train.precision = bf16 (the certified bf16 PWMCC path), blocks of 2 on 2 ranks equal the unblocked
#   2-rank bf16 run bit for bit;
# - a window below two decoders is refused before training: exit 1, one "husai: error" line naming
#   metrics.window_mb, no MPI_ABORT banner or HDF5 stack, nothing left under the output directory.
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init pwmcc_blocks --openblas

step "generating tiny data: 1200 x 16, 24 atoms"
"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 1200 16 24 3
cat >"$tmp/blocks.ini" <<EOF
[data]
path = $tmp/tiny.h5

[sae]
d_sae = 32

[train]
epochs = 2
batch_size = 128
lr = 0.003

[sweep]
param = k
values = 3, 6
seeds = 5, 11, 1000003, 42, 7, 99

[metrics]
resamples = 100
EOF

# run NAME NP BLOCK [--set ...]: a sweep into $tmp/NAME; BLOCK is the block size its log must name
# (0: the run must not go by blocks).
run() {
    local name=$1 np=$2 block=$3 rc=0
    shift 3
    step "run '$name': $np rank(s) $*"
    timeout 300 "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$tmp/blocks.ini" --out "$tmp/$name" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$tmp/$name.out" "$tmp/$name.err" >&2
        fail "run '$name' exited $rc"
    fi
    local dirs=("$tmp/$name"/*/)
    [ "${#dirs[@]}" -eq 1 ] && [ -f "${dirs[0]}/results.h5" ] || fail "run '$name' did not leave one complete run directory"
    local n
    n=$(grep -c "by seed blocks" "$tmp/$name.out" || true)
    if [ "$block" -eq 0 ]; then
        [ "$n" -eq 0 ] || fail "run '$name' went by seed blocks unasked"
    else
        [ "$n" -eq 2 ] || fail "run '$name': $n 'by seed blocks' lines for 2 conditions"
        local pairs=$(((6 / block + 1) * (6 / block) / 2))
        grep -q "block size $block ($((6 / block)) blocks, $pairs block pairs)" "$tmp/$name.out" ||
            fail "run '$name' does not say block size $block and $pairs block pairs: $(grep 'seed blocks' "$tmp/$name.out")"
    fi
}

# 0.0045 MB holds 2.2 decoders of 2048 bytes (blocks of 1), 0.009 MB 4.4 (blocks of 2).
run full1 1 0
run full2 2 0
run b1np1 1 1 --set metrics.window_mb=0.0045
run b2np1 1 2 --set metrics.window_mb=0.009
run b1np2 2 1 --set metrics.window_mb=0.0045
run b2np2 2 2 --set metrics.window_mb=0.009
run b1np3 3 1 --set metrics.window_mb=0.0045
run b2np3 3 2 --set metrics.window_mb=0.009
run bf16full 2 0 --set train.precision=bf16
run bf16b2 2 2 --set train.precision=bf16 --set metrics.window_mb=0.009

step "comparing PWMCC, matched agreement and features bit for bit"
"$PY" - "$tmp" <<'EOF'
import glob, json, sys
import h5py, numpy as np

tmp = sys.argv[1]
def fail(msg):
    print("pwmcc_blocks: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def load(name):
    (run,) = glob.glob(f"{tmp}/{name}/*/")
    out = {}
    with h5py.File(run + "results.h5", "r") as h:
        for c in h["conditions"]:
            g = h["conditions"][c]
            for key in ("decoders", "pwmcc", "random_pwmcc", "matched_cosine", "matched_fraction"):
                if key not in g:
                    fail(f"{name}: {c}/{key} missing")
                out[f"{c}/{key}"] = g[key][()]
            if "features" not in g or len(g["features"]) < 5:
                fail(f"{name}: {c}/features missing or short")
            g["features"].visititems(lambda k, v: out.__setitem__(f"{c}/features/{k}", v[()])
                                     if isinstance(v, h5py.Dataset) else None)
    js = json.load(open(run + "results.json"))
    for c in js["conditions"]:
        for key in ("trained_pwmcc", "random_pwmcc", "matched_cosine", "matched_fraction_0_7", "features"):
            if key in c:
                out[f"json/{c['name']}/{key}"] = json.dumps(c[key], sort_keys=True)
    return out

def same(a, b, na, nb):
    A, B = load(a), load(b)
    if sorted(A) != sorted(B):
        fail(f"{na} and {nb} hold different datasets: {sorted(set(A) ^ set(B))}")
    for k in A:
        x, y = A[k], B[k]
        if isinstance(x, str):
            if x != y:
                fail(f"{k}: {na} and {nb} differ in results.json")
        elif x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            fail(f"{k}: {na} and {nb} differ")
    return A

ref = same("full1", "full2", "full1", "full2")
for name in ("b1np1", "b2np1", "b1np2", "b2np2", "b1np3", "b2np3"):
    same("full1", name, "full1", name)
bf = same("bf16full", "bf16b2", "bf16full", "bf16b2")
n_feat = sum("/features/" in k for k in ref)
pw = ref["k=3/pwmcc"]
if not (pw.shape == (6, 6) and np.all(np.diag(pw) == 1) and np.all((pw > 0) & (pw <= 1))):
    fail(f"implausible pwmcc {pw}")
if np.array_equal(ref["k=3/pwmcc"], ref["k=3/random_pwmcc"]):
    fail("trained and random PWMCC are the same matrix")
print(f"  6 blocked runs and the 2-rank run equal the 1-rank run in {len(ref)} arrays "
      f"({n_feat} under features/); bf16 blocked equals bf16 unblocked in {len(bf)}")
EOF

step "independent numpy recomputation of the blocked 3-rank run"
"$PY" "$HERE/check_results.py" "$(ls -d "$tmp"/b1np3/*/)" >"$tmp/check.out" 2>&1 || {
    cat "$tmp/check.out" >&2
    fail "check_results.py failed on the blocked run"
}

step "a window below two decoders: one line, exit 1, nothing left"
rc=0
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/blocks.ini" --out "$tmp/tiny_window" \
    --set metrics.window_mb=0.003 >"$tmp/tiny.out" 2>"$tmp/tiny.err" || rc=$?
[ "$rc" -eq 1 ] || fail "exit $rc, expected 1 (timeout gives 124)"
n=$(grep -c "husai: error" "$tmp/tiny.err" || true)
[ "$n" -eq 1 ] || fail "$n 'husai: error' lines: $(cat "$tmp/tiny.err")"
grep "husai: error" "$tmp/tiny.err" | grep -q "metrics.window_mb = 0.003 cannot hold two decoders of 16 x 32" ||
    fail "the error does not name metrics.window_mb and the decoders: $(cat "$tmp/tiny.err")"
! grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/tiny.err" || fail "MPI_ABORT banner or HDF5 stack: $(cat "$tmp/tiny.err")"
! grep -q "task .* done" "$tmp/tiny.out" || fail "training ran before the window was refused"
[ -z "$(ls -A "$tmp/tiny_window" 2>/dev/null)" ] || fail "left behind: $(find "$tmp/tiny_window")"
step "OK"
