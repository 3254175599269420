#!/usr/bin/env bash
# sweep_resume.sh: a run stopped mid-training (the --stop-after-steps hook, then a real SIGUSR1)
# checkpoints, exits 75 and leaves only a hidden staging directory; --resume with a different
# number of ranks finishes it, and every decoder, encoder and b_enc is bitwise identical to an
# uninterrupted run. Corrupt (first, middle or last byte), empty, truncated, other-version, swapped,
# directory and foreign (other config, seeds or resamples) checkpoints are refused before training with
# one clear line naming the file, exit 1, no MPI_ABORT banner.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
husai_test_init sweep_resume

"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 1500 12 20 3
cat >"$tmp/r.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 24
[train]
epochs = 12
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 3, 6
seeds = 11, 22, 33
[metrics]
resamples = 200
[checkpoint]
every_seconds = 0
INI

step "uninterrupted reference run on 2 ranks"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --out "$tmp/ref" --run-id ref >"$tmp/ref.log" 2>&1 || {
    cat "$tmp/ref.log"
    fail "reference run failed"
}

step "interrupted run: 2 ranks, stop after 40 steps per rank (a task is 180 steps)"
rc=0
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/r.ini" --out "$tmp/int" --run-id job --stop-after-steps 40 \
    >"$tmp/int.log" 2>&1 || rc=$?
[ "$rc" -eq 75 ] || {
    cat "$tmp/int.log"
    fail "expected exit 75 after a stop, got $rc"
}
grep -q -- "--resume" "$tmp/int.log" || fail "no resume hint printed"
[ ! -e "$tmp/int/job" ] || fail "a stopped run left a complete-looking run directory"
n=$(ls "$tmp/int/.job.partial/checkpoints" | wc -l)
[ "$n" -ge 2 ] || fail "expected checkpoints of the interrupted tasks, found $n"
step "  exit 75, $n checkpoint(s), no run directory"

step "second interruption while resuming on 3 ranks"
rc=0
"$MPIEXEC" -np 3 --oversubscribe "$HUSAI" sweep "$tmp/r.ini" --resume "$tmp/int/job" --stop-after-steps 100 \
    >"$tmp/int2.log" 2>&1 || rc=$?
[ "$rc" -eq 75 ] || {
    cat "$tmp/int2.log"
    fail "expected exit 75 on the second stop, got $rc"
}
grep -q "resumes" "$tmp/int2.log" || fail "the second run did not resume from checkpoints"

step "resume to completion on 1 rank"
"$MPIEXEC" -np 1 "$HUSAI" sweep "$tmp/r.ini" --resume "$tmp/int/.job.partial" >"$tmp/res.log" 2>&1 || {
    cat "$tmp/res.log"
    fail "resume failed"
}
[ -f "$tmp/int/job/results.json" ] || fail "resume did not produce the run directory"
[ ! -e "$tmp/int/.job.partial" ] || fail "staging directory left behind after a complete resume"
[ ! -e "$tmp/int/job/checkpoints" ] || fail "checkpoints kept in the complete run directory"

step "decoders, encoders and b_enc bitwise equal to the uninterrupted run"
"$PY" - "$tmp/ref/ref/results.h5" "$tmp/int/job/results.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = sorted(a["conditions"])
assert names == sorted(b["conditions"]), (names, sorted(b["conditions"]))
for n in names:
    for ds in ("decoders", "encoders", "b_enc", "pwmcc", "explained_variance"):
        x, y = a["conditions"][n][ds][()], b["conditions"][n][ds][()]
        if x.tobytes() != y.tobytes():
            sys.exit(f"{n}/{ds} differs after interrupt + resume (max |diff| {np.abs(x - y).max()})")
print(f"sweep_resume:   {len(names)} conditions identical")
PY

step "a real SIGUSR1 to mpirun checkpoints and exits 75"
cat >"$tmp/long.ini" <<INI
[data]
path = $tmp/tiny.h5
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
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/long.ini" --out "$tmp/sig" --run-id s >"$tmp/sig.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    grep -q "\[husai\] data:" "$tmp/sig.log" 2>/dev/null && break
    sleep 0.1
done
sleep 1
kill -USR1 "$pid"
rc=0
timeout 60 tail --pid="$pid" -f /dev/null || fail "the job did not stop within 60 s of SIGUSR1"
wait "$pid" || rc=$?
[ "$rc" -eq 75 ] || {
    cat "$tmp/sig.log"
    fail "SIGUSR1: expected exit 75, got $rc"
}
[ "$(ls "$tmp/sig/.s.partial/checkpoints" | wc -l)" -eq 2 ] || fail "SIGUSR1: expected 2 checkpoints"
step "  exit 75 with 2 checkpoints"

step "bad checkpoints are refused before training: one clear line naming the file, exit 1 on every rank"
cks=$(ls "$tmp/sig/.s.partial/checkpoints"/*.ckpt)
ck=$(echo "$cks" | head -1)
ck2=$(echo "$cks" | tail -1)
[ "$ck" != "$ck2" ] || fail "expected two checkpoints to swap"
cp "$ck" "$tmp/good.ckpt"
cp "$ck2" "$tmp/good2.ckpt"
expect_refusal() { # label pattern [extra args]
    local label=$1 pattern=$2 rc=0
    shift 2
    timeout 120 "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/long.ini" "$@" --resume "$tmp/sig/s" >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
    [ "$rc" -ne 124 ] || fail "$label: hung (killed by the 120 s timeout)"
    [ "$rc" -eq 1 ] || {
        cat "$tmp/bad.err"
        fail "$label: expected exit 1, got $rc"
    }
    [ "$(grep -c '^husai: error' "$tmp/bad.err")" -eq 1 ] && grep -q "^husai: error.*$pattern" "$tmp/bad.err" || {
        cat "$tmp/bad.err"
        fail "$label: expected exactly one 'husai: error' line saying '$pattern'"
    }
    ! grep -q "MPI_ABORT\|ORTE_ERROR_LOG" "$tmp/bad.err" || {
        cat "$tmp/bad.err"
        fail "$label: MPI_ABORT banner or ORTE lines"
    }
    ! grep -q "\[husai\] rank .* resumes" "$tmp/bad.out" || fail "$label: training began before the refusal"
    step "  ok [$label]: $(grep -m1 'husai: error' "$tmp/bad.err")"
    rm -rf "$ck" "$ck2"
    cp "$tmp/good.ckpt" "$ck"
    cp "$tmp/good2.ckpt" "$ck2"
}
flip() { # file offset
    "$PY" -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[int(sys.argv[2])]^=0xff; open(p,'wb').write(b)" "$@"
}
# The second checkpoint belongs to rank 1: its refusal must reach rank 0 as the one line.
flip "$ck2" 400
expect_refusal "corrupt checkpoint (rank 1's)" "$(basename "$ck2")' is corrupt"
flip "$ck" 0
expect_refusal "first byte flipped" "not a husai checkpoint"
flip "$ck2" -1
expect_refusal "last byte flipped" "$(basename "$ck2")"
: >"$ck2"
expect_refusal "zero length" "$(basename "$ck2")' is not a husai checkpoint"
"$PY" -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); open(p,'wb').write(b[:len(b)//2])" "$ck"
expect_refusal "truncated checkpoint" "truncated"
"$PY" -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[8]=9; open(p,'wb').write(b)" "$ck"
expect_refusal "other format version" "format version"
mv "$ck" "$tmp/swap"
mv "$ck2" "$ck"
mv "$tmp/swap" "$ck2"
expect_refusal "seeds swapped" "is for task"
rm "$ck2"
mkdir "$ck2"
expect_refusal "a directory" "not a regular file"
expect_refusal "checkpoint from another configuration" "another configuration" --set train.lr=0.01
expect_refusal "changed seeds" "another configuration" --set sweep.seeds=1,2,5
expect_refusal "changed resamples" "another configuration" --set metrics.resamples=300
[ -d "$tmp/sig/.s.partial/checkpoints" ] || fail "a refused resume removed the interrupted run"
step "all resume checks passed"
