#!/usr/bin/env bash
# data_identity.sh: the data fingerprint (common/fingerprint.h). Checks: results.json's data.fingerprint
# equals results.h5's data_fingerprint attribute and an independent recomputation with python3-xxhash from
# the file, and is the same on 1 and 2 ranks, in memory and streamed; another dtype of the same values has
# another fingerprint. A run stopped and resumed on other data of the same shape is refused before any
# training with one line naming both fingerprints and the data file (in memory and streamed), and the
# stopped run stays resumable: on the original data it finishes bitwise equal to an uninterrupted run. A
# file overwritten under a running streamed job ends it with one line. `husai merge` refuses parts made on
# different data with one line naming both fingerprints and both parts. Every refusal: exit 1, exactly one
# "husai: error" line, no MPI_ABORT banner, no HDF5 error stack, under a timeout.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init data_identity --openblas
"$PY" -c "import xxhash" 2>/dev/null || fail "python3-xxhash is not installed (make deps installs it)"
husai_test_cleanup() { wait 2>/dev/null; }

mk() { "$PY" "$HERE/data/make_tiny.py" "$@" >/dev/null; }
mk "$tmp/a.h5" 1500 12 20 3
mk "$tmp/b.h5" 1500 12 20 4 # same shape, other rows
mk "$tmp/a64.h5" 1500 12 20 3 --dtype float64
cp "$tmp/a.h5" "$tmp/data.h5" # what the config names; replaced below
cat >"$tmp/r.ini" <<INI
[data]
path = $tmp/data.h5
[sae]
d_sae = 24
[train]
epochs = 12
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 3, 6
seeds = 11, 22
[metrics]
resamples = 100
[checkpoint]
every_seconds = 0
INI
run() { # run NAME NP ARGS...: a sweep that must succeed; its log is kept
    local name=$1 np=$2
    shift 2
    timeout 120 "$MPIEXEC" -np "$np" --oversubscribe "$HUSAI" sweep "$@" >"$tmp/$name.log" 2>&1 ||
        { cat "$tmp/$name.log"; fail "$name failed"; }
}
# refused LABEL KEYWORD... -- CMD...: CMD must exit 1 with exactly one "husai: error" line containing every
# KEYWORD (fixed strings), no banner, no HDF5 stack.
refused() {
    local label=$1 rc=0
    shift
    local keys=()
    while [ "$1" != "--" ]; do keys+=("$1"); shift; done
    shift
    timeout 120 "$@" >"$tmp/ref.out" 2>"$tmp/ref.err" || rc=$?
    [ "$rc" -eq 1 ] || { cat "$tmp/ref.out" "$tmp/ref.err"; fail "$label: expected exit 1, got $rc"; }
    [ "$(grep -c '^husai: error' "$tmp/ref.err")" -eq 1 ] || { cat "$tmp/ref.err"; fail "$label: not exactly one error line"; }
    local line k
    line=$(grep '^husai: error' "$tmp/ref.err")
    for k in "${keys[@]}"; do
        grep -qF -- "$k" <<<"$line" || fail "$label: the error line lacks '$k': $line"
    done
    if grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/ref.out" "$tmp/ref.err"; then fail "$label: banner or HDF5 stack"; fi
    step "  ok [$label]: $line"
}
# fp_py FILE: the fingerprint recomputed from the file with numpy + python3-xxhash (float32 rows as read).
fp_py() {
    "$PY" - "$1" <<'PY'
import sys, h5py, numpy as np, xxhash
d = h5py.File(sys.argv[1], "r")["activations"]
X = d[()].astype(np.float32)
s = sum(xxhash.xxh3_64_intdigest(X[r].tobytes(), seed=r) for r in range(X.shape[0])) % 2**64
t = f"husai-data-1 rows={X.shape[0]} cols={X.shape[1]} dtype={d.dtype.name} rowsum={s:016x}"
print("xxh3:%016x" % xxhash.xxh3_64_intdigest(t.encode()))
PY
}
# fp_run DIR: results.json's fingerprint, after checking it equals results.h5's attribute.
fp_run() {
    "$PY" - "$1" <<'PY'
import sys, json, h5py
j = json.load(open(sys.argv[1] + "/results.json"))["data"]["fingerprint"]
h = h5py.File(sys.argv[1] + "/results.h5", "r").attrs["data_fingerprint"]
h = h.decode() if isinstance(h, bytes) else h
if j != h: sys.exit(f"results.json fingerprint {j} != results.h5 attribute {h}")
print(j)
PY
}

step "fingerprint: python3-xxhash recomputation, 1 and 2 ranks, in memory and streamed, float64"
FA=$(fp_py "$tmp/a.h5")
FB=$(fp_py "$tmp/b.h5")
F64=$(fp_py "$tmp/a64.h5")
[ "$FA" != "$FB" ] && [ "$FA" != "$F64" ] || fail "test data: fingerprints not distinct ($FA $FB $F64)"
short=(--set train.epochs=1 --set sweep.values=3)
run m1 1 "$tmp/r.ini" --out "$tmp/fp" --run-id m1 "${short[@]}"
run m2 2 "$tmp/r.ini" --out "$tmp/fp" --run-id m2 "${short[@]}"
run s2 2 "$tmp/r.ini" --out "$tmp/fp" --run-id s2 "${short[@]}" --set data.chunk_rows=400
run s1 1 "$tmp/r.ini" --out "$tmp/fp" --run-id s1 "${short[@]}" --set data.memory_budget_mb=0.02
grep -q "streamed: " "$tmp/s1.log" || fail "the memory budget did not stream"
for r in m1 m2 s2 s1; do
    got=$(fp_run "$tmp/fp/$r") || fail "$r: $got"
    [ "$got" = "$FA" ] || fail "$r: fingerprint $got, python3-xxhash gives $FA"
    grep -qF "$FA" "$tmp/$r.log" || fail "$r: the log does not print the fingerprint"
done
run f64 2 "$tmp/r.ini" --out "$tmp/fp" --run-id f64 "${short[@]}" --set data.path="$tmp/a64.h5"
[ "$(fp_run "$tmp/fp/f64")" = "$F64" ] || fail "float64: fingerprint differs from python3-xxhash's $F64"
step "  $FA on 1 and 2 ranks, in memory and streamed (chunks of 400 and of the budget's rows); float64 $F64"

step "uninterrupted reference; a run stopped after 40 steps per rank"
run ref 2 "$tmp/r.ini" --out "$tmp/ref" --run-id ref
rc=0
timeout 120 "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --out "$tmp/int" --run-id job --stop-after-steps 40 \
    >"$tmp/int.log" 2>&1 || rc=$?
[ "$rc" -eq 75 ] || { cat "$tmp/int.log"; fail "expected exit 75 after a stop, got $rc"; }
[ -n "$(ls "$tmp/int/.job.partial/checkpoints")" ] || fail "the stopped run left no checkpoints"

step "resume on other data of the same shape is refused (in memory and streamed), before any training"
cp "$tmp/b.h5" "$tmp/data.h5"
refused "resume on replaced data" "$FA" "$FB" "$tmp/data.h5" "data changed" -- \
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --resume "$tmp/int/job"
grep -q "resumes\|\[husai\] \[" "$tmp/ref.out" && fail "the refused resume trained before refusing"
refused "streamed resume on replaced data" "$FA" "$FB" -- \
    "$MPIEXEC" -np 3 --oversubscribe "$HUSAI" sweep "$tmp/r.ini" --resume "$tmp/int/job" --set data.chunk_rows=500
[ -d "$tmp/int/.job.partial/checkpoints" ] || fail "a refused resume removed the stopped run"

step "the same data again: the resume finishes, bitwise equal to the uninterrupted run"
cp "$tmp/a.h5" "$tmp/data.h5"
run res 1 "$tmp/r.ini" --resume "$tmp/int/job"
grep -q "resumes" "$tmp/res.log" || fail "the resume did not start from the checkpoints"
"$PY" - "$tmp/ref/ref/results.h5" "$tmp/int/job/results.h5" <<'PY'
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for n in a["conditions"]:
    for ds in ("decoders", "encoders", "b_enc", "pwmcc"):
        if a["conditions"][n][ds][()].tobytes() != b["conditions"][n][ds][()].tobytes():
            sys.exit(f"{n}/{ds} differs after a resume on the same data")
PY
[ "$(fp_run "$tmp/int/job")" = "$FA" ] || fail "the resumed run records another fingerprint"

step "a checkpoint recording other data is refused (its fingerprint rewritten, checksum kept valid)"
rc=0
timeout 120 "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --out "$tmp/int2" --run-id j --stop-after-steps 40 \
    >"$tmp/int2.log" 2>&1 || rc=$?
[ "$rc" -eq 75 ] || { cat "$tmp/int2.log"; fail "second stop: expected exit 75, got $rc"; }
"$PY" - "$tmp/int2/.j.partial/checkpoints" <<'PY'
# Rewrite one checkpoint's recorded fingerprint and its checksum as if it had been trained on other data.
import glob, sys
FNV_OFF, FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3
p = sorted(glob.glob(sys.argv[1] + "/*.ckpt"))[0]
b = bytearray(open(p, "rb").read())
at = 8 + 4 + 4 + 8 + 96  # magic, version, header size, config hash, task
b[at:at + 21] = b"xxh3:0123456789abcdef"
h = FNV_OFF
for byte in b[:-16]:
    h = ((h ^ byte) * FNV_PRIME) % 2**64
b[-16:-8] = h.to_bytes(8, "little")
open(p, "wb").write(b)
PY
refused "resume with a checkpoint of other data" "xxh3:0123456789abcdef" "$FA" -- \
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --resume "$tmp/int2/j"

step "a file overwritten under a running streamed job ends it with one line"
cat >"$tmp/long.ini" <<INI
[data]
path = $tmp/live.h5
chunk_rows = 300
[sae]
d_sae = 24
[train]
epochs = 100000
batch_size = 100
[sweep]
param = k
values = 3
seeds = 1, 2
INI
cp "$tmp/a.h5" "$tmp/live.h5"
rc=0
timeout 120 "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/long.ini" --out "$tmp/live" >"$tmp/live.out" 2>"$tmp/live.err" &
pid=$!
for _ in $(seq 300); do
    grep -q "data fingerprint" "$tmp/live.out" 2>/dev/null && break
    sleep 0.1
done
grep -q "data fingerprint" "$tmp/live.out" || { kill "$pid"; fail "the streamed job did not start"; }
"$PY" - "$tmp/live.h5" "$tmp/b.h5" <<'PY'
# Overwrite the rows in place (same inode, same layout): what a job still writing the file would do.
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    off = f["activations"].id.get_offset()
new = h5py.File(sys.argv[2], "r")["activations"][()].tobytes()
with open(sys.argv[1], "r+b") as f:
    f.seek(off)
    f.write(new)
PY
wait "$pid" || rc=$?
[ "$rc" -eq 1 ] || { cat "$tmp/live.err"; fail "overwritten data: expected exit 1, got $rc"; }
[ "$(grep -c '^husai: error' "$tmp/live.err")" -eq 1 ] && grep -q "changed during the run" "$tmp/live.err" ||
    { cat "$tmp/live.err"; fail "overwritten data: expected one 'changed during the run' line"; }
if grep -q "MPI_ABORT\|HDF5-DIAG" "$tmp/live.err"; then fail "overwritten data: MPI_ABORT banner or HDF5 stack"; fi
# The staging directory stays (hidden, as after any mid-run failure); no complete run directory may appear.
[ -z "$(ls "$tmp/live" 2>/dev/null)" ] || fail "overwritten data: a run directory appeared: $(ls "$tmp/live")"
step "  ok: $(grep '^husai: error' "$tmp/live.err")"

step "merge refuses parts made on different data"
cp "$tmp/a.h5" "$tmp/data.h5"
run p3 2 "$tmp/r.ini" --out "$tmp/parts" --run-id p3 "${short[@]}"
cp "$tmp/b.h5" "$tmp/data.h5"
run p6 2 "$tmp/r.ini" --out "$tmp/parts" --run-id p6 --set train.epochs=1 --set sweep.values=6
refused "merge of parts on different data" "$FA" "$FB" "$tmp/parts/p3" "$tmp/parts/p6" "$tmp/data.h5" -- \
    "$HUSAI" merge --out "$tmp/merged" "$tmp/parts/p3" "$tmp/parts/p6"
[ -z "$(ls -A "$tmp/merged" 2>/dev/null)" ] || fail "a refused merge left output behind"
"$PY" - "$tmp/parts/p6/results.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); del j["data"]["fingerprint"]; json.dump(j, open(sys.argv[1], "w"))
PY
refused "merge of a part without a fingerprint" "no data fingerprint" "$tmp/parts/p6" -- \
    "$HUSAI" merge --out "$tmp/merged" "$tmp/parts/p3" "$tmp/parts/p6"
step "all data identity checks passed"
