#!/usr/bin/env bash
# synth.sh: `husai synth` (synthetic activations from a known random dictionary).
# Checks: 1 rank and 3 ranks (uneven blocks, several write steps, one rank with no rows in the last
# step) give bitwise identical /activations and /dictionary; shapes, dtypes and attributes; unit-norm
# atoms; row norms match the generative model; every sampled row is a K-sparse positive combination
# of the stored atoms up to the noise level (greedy least squares); float16/float64 files are the
# same rows rounded; bad arguments fail with one `husai: error:` line and exit 1 on every rank, and
# leave no file; an existing file needs --force; `husai sweep` trains on the result (2 ranks).
# Needs HUSAI, MPIEXEC and /usr/bin/python3 with numpy and h5py.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init synth --keep-env --openblas

# 1001 rows over 3 ranks: blocks of 334, 334, 333; with --chunk-rows 100 rank 2 writes nothing in its last step.
ARGS=(--rows 1001 --d-model 64 --atoms 96 --active 3 --noise 0.02 --seed 2024)

step "1 rank vs 3 ranks (--chunk-rows 100), float32"
"$HUSAI" synth "${ARGS[@]}" "$tmp/one.h5" >"$tmp/out1" 2>"$tmp/err1" || {
    cat "$tmp/out1" "$tmp/err1" >&2
    fail "1-rank synth failed"
}
"$MPIEXEC" -np 3 --oversubscribe "$HUSAI" synth "${ARGS[@]}" --chunk-rows 100 "$tmp/three.h5" >"$tmp/out3" 2>"$tmp/err3" || {
    cat "$tmp/out3" "$tmp/err3" >&2
    fail "3-rank synth failed"
}
grep -q "on 3 rank(s)" "$tmp/out3" || fail "3-rank run did not report 3 ranks: $(cat "$tmp/out3")"
if [ -s "$tmp/err1" ] || [ -s "$tmp/err3" ]; then fail "a successful synth wrote to stderr: $(cat "$tmp/err1" "$tmp/err3")"; fi
if [ -e "$tmp/one.h5.partial" ] || [ -e "$tmp/three.h5.partial" ]; then fail "a .partial staging file was left"; fi

step "float16 and float64 variants"
"$HUSAI" synth "${ARGS[@]}" --dtype float16 "$tmp/half.h5" >/dev/null
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" synth "${ARGS[@]}" --dtype float64 --chunk-rows 33 "$tmp/double.h5" >/dev/null

step "contents: identity across ranks, layout, attributes, norms, sparse structure"
"$PY" - "$tmp" <<'EOF'
import sys
import h5py
import numpy as np

tmp = sys.argv[1]
N, D, A, K, S, SEED = 1001, 64, 96, 3, 0.02, 2024

def fail(msg):
    print("synth: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def s(v):
    return v.decode() if isinstance(v, bytes) else str(v)

one, three = h5py.File(f"{tmp}/one.h5", "r"), h5py.File(f"{tmp}/three.h5", "r")
for name in ("activations", "dictionary"):
    a, b = one[name][...], three[name][...]
    if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
        diff = np.argwhere(a != b)
        fail(f"/{name} differs between 1 and 3 ranks (first differing element {diff[:1].tolist()})")
X, Dict = one["activations"][...].astype(np.float64), one["dictionary"][...].astype(np.float64)
if one["activations"].shape != (N, D) or one["activations"].dtype != np.float32:
    fail(f"/activations {one['activations'].shape} {one['activations'].dtype}, expected ({N}, {D}) float32")
if one["dictionary"].shape != (A, D) or one["dictionary"].dtype != np.float32:
    fail(f"/dictionary {one['dictionary'].shape} {one['dictionary'].dtype}, expected ({A}, {D}) float32")
if one["activations"].chunks is None:
    fail("/activations is not chunked")
want = {"rows": N, "d_model": D, "atoms": A, "active": K, "seed": SEED}
for loc in (one, one["activations"]):
    at = loc.attrs
    for key, v in want.items():
        if key not in at or int(at[key]) != v: fail(f"attribute {key} of {loc.name} = {at.get(key)!r}, expected {v}")
    if float(at["noise"]) != S: fail(f"attribute noise = {at['noise']!r}")
    if s(at["generator"]) != "husai synth": fail(f"attribute generator = {at['generator']!r}")
    if s(at["dtype"]) != "float32": fail(f"attribute dtype = {at['dtype']!r}")
if not np.all(np.isfinite(X)): fail("non-finite activations")

norms = np.linalg.norm(Dict, axis=1)
if not np.allclose(norms, 1.0, atol=1e-6): fail(f"atoms not unit norm: {norms.min()}..{norms.max()}")
# Distinct atoms: no two (near-)identical rows in the dictionary.
G = np.abs(Dict @ Dict.T) - np.eye(A)
if G.max() > 0.9: fail(f"two atoms have |cos| {G.max():.3f}")

# E||x||^2 = K E[c^2] + D S^2 with c ~ U[0.5, 2): E[c^2] = (2^3 - 0.5^3) / (3 * 1.5) = 1.75 (atoms
# nearly orthogonal on average, cross terms have mean ~0 but spread).
sq = (X ** 2).sum(axis=1)
expect = K * 1.75 + D * S * S
if not 0.85 * expect < sq.mean() < 1.15 * expect:
    fail(f"mean squared row norm {sq.mean():.3f}, expected ~{expect:.3f}")
if sq.min() < 0.5 ** 2 * 0.5:
    fail(f"a row has squared norm {sq.min():.4f}: too small for {K} atoms with coefficients >= 0.5")
# Rows differ from one another (the row stream is keyed by row).
if len(np.unique(X[:, 0])) < N - 5: fail("rows repeat")

# Sparse structure: greedy least squares (orthogonal matching pursuit) with K atoms must leave a
# residual at the noise level, with coefficients in [0.5, 2) up to noise.
rng = np.random.default_rng(0)
rows = rng.choice(N, size=200, replace=False)
ok = 0
worst = 0.0
for r in rows:
    x = X[r]
    support, res = [], x.copy()
    for _ in range(K):
        j = int(np.argmax(np.abs(Dict @ res)))
        support.append(j)
        coef, *_ = np.linalg.lstsq(Dict[support].T, x, rcond=None)
        res = x - Dict[support].T @ coef
    rms = np.sqrt(np.mean(res ** 2))
    worst = max(worst, rms)
    if len(set(support)) == K and rms < 1.3 * S and np.all((coef > 0.5 - 0.1) & (coef < 2.0 + 0.1)):
        ok += 1
print(f"synth:   {ok}/200 sampled rows are {K}-sparse positive combinations of the stored atoms "
      f"(residual rms <= 1.3 x noise); worst residual rms {worst:.4f} (noise {S})")
if ok < 196: fail(f"only {ok}/200 rows reconstruct from {K} stored atoms to within the noise")
# And the residual is not suspiciously small: noise was added.
if worst < 0.5 * S: fail(f"residuals ({worst}) are below the noise level {S}: was noise added?")

half = h5py.File(f"{tmp}/half.h5", "r")
H = half["activations"][...]
if H.dtype != np.float16: fail(f"float16 file has dtype {H.dtype}")
if not np.array_equal(H, one["activations"][...].astype(np.float16)):
    fail("float16 rows are not the float32 rows rounded to float16")
if s(half.attrs["dtype"]) != "float16": fail("float16 file's dtype attribute")
dbl = h5py.File(f"{tmp}/double.h5", "r")
Dd = dbl["activations"][...]
if Dd.dtype != np.float64: fail(f"float64 file has dtype {Dd.dtype}")
if not np.array_equal(Dd.astype(np.float32), one["activations"][...]):
    fail("float64 rows rounded to float32 differ from the float32 file")
if not np.array_equal(dbl["dictionary"][...], one["dictionary"][...]): fail("float64 file's dictionary differs")
print("synth:   1 and 3 ranks bitwise identical; layout, attributes, norms and dtypes OK")
EOF

step "bad arguments: one error line, exit 1, no file"
# bad NP WANT ARGS...: synth on NP ranks must fail (exit 1 on one rank) with exactly one error line naming WANT.
bad() {
    local np=$1 want=$2
    shift 2
    local rc=0
    if [ "$np" -eq 1 ]; then
        timeout 60 "$HUSAI" synth "$@" >"$tmp/bad_out" 2>"$tmp/bad_err" || rc=$?
        [ "$rc" -eq 1 ] || fail "synth $* exited $rc, expected 1: $(cat "$tmp/bad_err")"
    else
        timeout 60 "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" synth "$@" >"$tmp/bad_out" 2>"$tmp/bad_err" || rc=$?
        [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "exit $rc (0: accepted, 124: hung) on $np ranks: synth $*"
    fi
    ! grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/bad_err" || fail "synth $*: banner or HDF5 stack: $(cat "$tmp/bad_err")"
    local n
    n=$(grep -c '^husai: error: ' "$tmp/bad_err" || true)
    [ "$n" -eq 1 ] || fail "expected one 'husai: error:' line for: synth $* (got $n): $(cat "$tmp/bad_err")"
    grep -q -- "$want" "$tmp/bad_err" || fail "error for 'synth $*' does not mention '$want': $(cat "$tmp/bad_err")"
}
B=(--rows 10 --d-model 8 --atoms 4 --seed 1)
bad 2 "--active 5 exceeds --atoms 4" "${B[@]}" --active 5 "$tmp/bad.h5"
bad 1 "--rows" --rows 0 --d-model 8 --atoms 4 --active 2 "$tmp/bad.h5"
bad 1 "--d-model" --rows 10 --d-model -3 --atoms 4 --active 2 "$tmp/bad.h5"
bad 1 "--atoms" --rows 10 --d-model 8 --atoms 0 --active 2 "$tmp/bad.h5"
bad 1 "--active" "${B[@]}" --active 0 "$tmp/bad.h5"
bad 1 "--noise" "${B[@]}" --active 2 --noise -0.1 "$tmp/bad.h5"
bad 1 "--noise" "${B[@]}" --active 2 --noise nan "$tmp/bad.h5"
bad 2 "--dtype" "${B[@]}" --active 2 --dtype int8 "$tmp/bad.h5"
bad 1 "--chunk-rows" "${B[@]}" --active 2 --chunk-rows 0 "$tmp/bad.h5"
bad 1 "--rows = '12x' is not an integer" "${B[@]}" --active 2 --rows 12x "$tmp/bad.h5"
bad 1 "--rows = '0x10' is hexadecimal" "${B[@]}" --active 2 --rows 0x10 "$tmp/bad.h5"
bad 1 "--d-model = 1e9 is out of range: it exceeds the limit 16777216" "${B[@]}" --active 2 --d-model 1e9 "$tmp/bad.h5"
bad 1 "--noise = 1e300 is out of range" "${B[@]}" --active 2 --noise 1e300 "$tmp/bad.h5"
bad 1 "--seed = -1 is negative" "${B[@]}" --active 2 --seed -1 "$tmp/bad.h5"
bad 1 "missing --active" "${B[@]}" "$tmp/bad.h5"
bad 1 "output file" "${B[@]}" --active 2
bad 1 "unknown" "${B[@]}" --active 2 --bogus "$tmp/bad.h5"
bad 2 "cannot create" "${B[@]}" --active 2 "$tmp/no/such/dir/bad.h5"
if [ -e "$tmp/bad.h5" ] || [ -e "$tmp/bad.h5.partial" ]; then fail "a rejected synth left a file"; fi
bad 2 "exists" "${B[@]}" --active 2 "$tmp/one.h5"
"$HUSAI" synth "${B[@]}" --active 2 --force "$tmp/one.h5" >/dev/null || fail "--force did not replace the file"
"$PY" -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); sys.exit(0 if f['activations'].shape==(10,8) else 1)" \
    "$tmp/one.h5" || fail "--force did not write the new file"
"$HUSAI" synth --help | grep -q -- "--active" || fail "--help does not describe --active"
"$HUSAI" synth --rows 1e1 --d-model 8 --atoms 4 --active 2 --seed 1 --force "$tmp/one.h5" >/dev/null ||
    fail "--rows 1e1 (an exact exponent form) was refused"

step "--force replaces only a regular file: a directory, a FIFO, a socket and a device node are refused and kept"
mkdir "$tmp/adir"
mkfifo "$tmp/afifo"
"$PY" -c "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$tmp/asock"
targets=("$tmp/adir:a directory" "$tmp/afifo:a FIFO" "$tmp/asock:a socket")
if mknod "$tmp/anull" c 1 3 2>/dev/null; then targets+=("$tmp/anull:a character device"); else step "  (no mknod here: device case skipped)"; fi
for t in "${targets[@]}"; do
    path=${t%%:*} kind=${t#*:}
    bad 2 "'$path' is $kind; --force replaces only a regular file" "${B[@]}" --active 2 --force "$path"
    [ ! -e "$path.partial" ] || fail "a refused --force left $path.partial"
done
# a FIFO under the staging name would block the create: refused, kept
mkfifo "$tmp/staged.h5.partial"
bad 2 "'$tmp/staged.h5.partial' is a FIFO; husai synth stages its output under that name" "${B[@]}" --active 2 "$tmp/staged.h5"
[ -p "$tmp/staged.h5.partial" ] && [ ! -e "$tmp/staged.h5" ] || fail "the staging FIFO was replaced or an output written"
[ -d "$tmp/adir" ] && [ -p "$tmp/afifo" ] && [ -S "$tmp/asock" ] || fail "a refused --force changed its target"
[ ! -e "$tmp/anull" ] || [ -c "$tmp/anull" ] || fail "a refused --force replaced the device node"

step "free space is checked before writing: --rows 99999999999 (3.2 TB) is refused at once"
avail_kb=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
if [ "$avail_kb" -lt 3000000000 ]; then
    # the file-size limit is a safety net: were the check missing, the write would fail at 1 MB instead
    rc=0
    (ulimit -f 1024 && PMIX_MCA_gds=hash OMPI_MCA_btl=self,tcp timeout 60 "$HUSAI" synth --rows 99999999999 --d-model 8 --atoms 4 --active 2 "$tmp/huge.h5") \
        >"$tmp/huge_out" 2>"$tmp/huge_err" || rc=$?
    [ "$rc" -eq 1 ] || fail "--rows 99999999999 exited $rc: $(cat "$tmp/huge_err")"
    [ "$(grep -c '^husai: error' "$tmp/huge_err")" -eq 1 ] && [ "$(wc -l <"$tmp/huge_err")" -eq 1 ] &&
        grep -q "needs about 3.2 TB but only .* is free" "$tmp/huge_err" || fail "free-space refusal: $(cat "$tmp/huge_err")"
    [ ! -e "$tmp/huge.h5" ] && [ ! -e "$tmp/huge.h5.partial" ] || fail "the refused synth left a file"
    step "  $(cat "$tmp/huge_err")"
else
    step "  (more than 3 TB free here: the 3.2 TB case is skipped)"
fi

step "disk full while writing (a 2 MiB file-size limit on 2 ranks): one error line, exit 1, no file, no banner"
rc=0
# as in faults.sh: the limit binds the ranks only; TCP and PMIx's hash store keep Open MPI's own files out of it
PMIX_MCA_gds=hash timeout 120 "$MPIEXEC" --oversubscribe --mca btl self,tcp -np 2 bash -c 'ulimit -f 2048; exec "$0" "$@"' \
    "$HUSAI" synth --rows 200000 --d-model 64 --atoms 96 --active 3 "$tmp/full.h5" >"$tmp/full_out" 2>"$tmp/full_err" || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "disk full: exit $rc (124: hung): $(cat "$tmp/full_err")"
[ "$(grep -c '^husai: error' "$tmp/full_err")" -eq 1 ] && grep -q "^husai: error: writing '$tmp/full.h5' failed (disk full?" "$tmp/full_err" ||
    fail "disk full: expected one 'husai: error: writing ... failed (disk full?' line: $(cat "$tmp/full_err")"
! grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/full_err" || fail "disk full: banner or HDF5 stack: $(cat "$tmp/full_err")"
[ ! -e "$tmp/full.h5" ] && [ ! -e "$tmp/full.h5.partial" ] || fail "disk full left a file"
step "  exit $rc: $(grep '^husai: error' "$tmp/full_err")"

step "husai sweep trains on a synth dataset (2 ranks, float16 storage)"
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" synth --rows 4000 --d-model 32 --atoms 48 --active 3 --noise 0.02 \
    --seed 5 --dtype float16 "$tmp/train.h5" >/dev/null
cat >"$tmp/sweep.ini" <<EOF
[data]
path = $tmp/train.h5

[sae]
d_sae = 64

[train]
epochs = 15
batch_size = 256
lr = 0.003

[sweep]
param = k
values = 4
seeds = 1, 2

[metrics]
resamples = 100
EOF
rc=0
"$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/sweep.ini" --out "$tmp/runs" >"$tmp/sweep_out" 2>"$tmp/sweep_err" || rc=$?
[ "$rc" -eq 0 ] || {
    cat "$tmp/sweep_out" "$tmp/sweep_err" >&2
    fail "husai sweep on the synth dataset exited $rc"
}
"$PY" - "$tmp"/runs/*/results.json <<'EOF'
import json, sys
js = json.load(open(sys.argv[1]))
d = js["data"]
if (d["rows"], d["d_model"], d["dtype"]) != (4000, 32, "float16"):
    print(f"synth: FAIL: sweep data = {d}", file=sys.stderr); sys.exit(1)
c = js["conditions"][0]
ev = c["explained_variance"]["mean"]
print(f"synth:   sweep on synth data: EV {ev:.3f}, trained PWMCC {c['trained_pwmcc']['mean']:.3f}, "
      f"random {c['random_pwmcc']['mean']:.3f}")
if not ev > 0.5:
    print(f"synth: FAIL: EV {ev} <= 0.5 on a 3-sparse synthetic dataset", file=sys.stderr); sys.exit(1)
EOF

step "PASS"
