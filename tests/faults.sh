#!/usr/bin/env bash
# faults.sh: failures that a long sweep on many ranks will meet.
#  1. One rank killed with SIGKILL mid-training: mpirun exits non-zero within seconds, nothing
#     looks complete, and --resume finishes the run with decoders bitwise equal to an
#     uninterrupted run (periodic checkpoints + finished-task checkpoints).
#  2. The disk is full for results (a file-size limit stands in for it): one clear error line and
#     exit 1, before any training when results.h5 cannot even be created, after it when a condition's
#     parameters do not fit (then the checkpoints stay and --resume finishes); nothing half-written
#     under the final name. Also at d_sae 2048, and for the checkpoints themselves: every rank's write
#     fails, and the ranks agree on one line instead of each dying with its own.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/lib.sh"
pid=""
husai_test_init faults
# A background mpirun still running when the test fails would keep writing into $tmp.
husai_test_cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; }

"$PY" "$HERE/data/make_tiny.py" "$tmp/tiny.h5" 2000 16 24 5
# 2000 epochs: a run of several seconds, so the SIGKILL sent once two checkpoints exist lands mid-run even
# on a faster machine (400 epochs took ~1 s here, leaving half a second of margin).
cat >"$tmp/f.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 48
k = 4
[train]
epochs = 2000
batch_size = 50
lr = 0.002
[sweep]
param = k
values = 4
seeds = 1, 2, 3, 4
[metrics]
resamples = 200
[checkpoint]
every_seconds = 0.2
INI

step "1. SIGKILL one rank of a 2-rank job mid-training"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/f.ini" --out "$tmp/k" --run-id job >"$tmp/k.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    [ "$(ls "$tmp/k/.job.partial/checkpoints" 2>/dev/null | grep -c ckpt$)" -ge 2 ] && break
    sleep 0.1
done
ranks=$(pgrep -f "husai sweep $tmp/f.ini" | grep -v "^$pid\$" || true)
victim=$(echo "$ranks" | tail -1)
[ -n "$victim" ] || fail "could not find a rank process to kill"
t0=$(date +%s.%N)
kill -9 "$victim"
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || fail "mpirun still running 30 s after a rank was killed"
wait "$pid" || rc=$?
pid=""
dt=$(echo "$(date +%s.%N) - $t0" | bc)
[ "$rc" -ne 0 ] || fail "mpirun exited 0 after a rank was killed"
[ ! -e "$tmp/k/job" ] || fail "a killed run left a complete-looking run directory"
step "  mpirun exit $rc after ${dt} s; no run directory; $(ls "$tmp/k/.job.partial/checkpoints" | wc -l) checkpoint(s) kept"

step "   --resume on 3 ranks finishes it, bitwise equal to an uninterrupted run"
"$MPIEXEC" -np 3 --oversubscribe "$HUSAI" sweep "$tmp/f.ini" --resume "$tmp/k/job" >"$tmp/r.log" 2>&1 || {
    cat "$tmp/r.log"
    fail "resume after SIGKILL failed"
}
grep -q "resumes" "$tmp/r.log" || fail "nothing was resumed from a checkpoint"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/f.ini" --out "$tmp/ref" --run-id ref >"$tmp/ref.log" 2>&1 || fail "reference run failed"
"$PY" - "$tmp/ref/ref/results.h5" "$tmp/k/job/results.h5" <<'PY'
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for n in a["conditions"]:
    for ds in ("decoders", "encoders", "b_enc", "pwmcc"):
        if a["conditions"][n][ds][()].tobytes() != b["conditions"][n][ds][()].tobytes():
            sys.exit(f"{n}/{ds} differs after SIGKILL + resume")
print("faults:   decoders, encoders, b_enc and PWMCC identical")
PY

step "1b. SIGTERM to the whole job (mpirun forwards it): every rank checkpoints; --resume continues"
sed -e 's/^epochs = 2000/epochs = 100000/' "$tmp/f.ini" >"$tmp/long.ini"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/long.ini" --out "$tmp/t" --run-id job >"$tmp/t.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    grep -q "node 1/1" "$tmp/t.log" 2>/dev/null && break
    sleep 0.1
done
sleep 1
kill -TERM "$pid"
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || fail "mpirun still running 30 s after SIGTERM"
wait "$pid" || rc=$?
pid=""
rc0=$rc
# husai's ranks exit 75; mpirun reports its own status for a job it was told to terminate.
[ "$rc" -ne 0 ] || fail "SIGTERM: mpirun exited 0"
grep -q "stopped on request; continue with" "$tmp/t.log" || {
    cat "$tmp/t.log"
    fail "SIGTERM: husai did not checkpoint and stop"
}
[ ! -e "$tmp/t/job" ] || fail "SIGTERM left a complete-looking run directory"
n=$(ls "$tmp/t/.job.partial/checkpoints" | grep -c 'ckpt$')
[ "$n" -eq 2 ] || fail "SIGTERM: expected a checkpoint per running task, found $n"
# The resume of a 100000-epoch run is not finished here; it must accept the checkpoints and stop again.
rc=0
"$MPIEXEC" -np 1 "$HUSAI" sweep "$tmp/long.ini" --resume "$tmp/t/job" --stop-after-steps 5 >"$tmp/t2.log" 2>&1 || rc=$?
[ "$rc" -eq 75 ] && grep -q "resumes" "$tmp/t2.log" || {
    cat "$tmp/t2.log"
    fail "resume after SIGTERM did not continue from the checkpoints (exit $rc)"
}
step "  checkpoints written on SIGTERM (mpirun exit $rc0); --resume continues from them"

# d_sae 512: a checkpoint is 203 KB and the node's shared data window ~130 KB; results.h5 reserves 256 KiB
# of metadata allowance on creation, ~540 KB before training (the parameters, 4 x 2 x 16 x 512 floats, which
# the ranks write into it themselves) and ~0.7 MB once the condition's metrics land after training.
sed -e 's/^epochs = 2000/epochs = 2/' -e 's/^d_sae = 48/d_sae = 512/' "$tmp/f.ini" >"$tmp/small.ini"
# Runs the small job under a file-size limit of $1 KiB into run id $2; checks one clear error line, exit 1
# from the job, and no run directory under the final name.
limited_run() {
    local rc=0 ini=${3:-$tmp/small.ini}
    # The limit applies to the ranks only; TCP instead of shared memory and PMIx's hash store keep
    # Open MPI's own files out of its way.
    PMIX_MCA_gds=hash timeout 120 "$MPIEXEC" --mca btl self,tcp -np 2 bash -c "ulimit -f $1; exec \"\$0\" \"\$@\"" \
        "$HUSAI" sweep "$ini" --out "$tmp/full" --run-id "$2" >"$tmp/$2.out" 2>"$tmp/$2.err" || rc=$?
    [ "$rc" -eq 1 ] || {
        cat "$tmp/$2.err"
        fail "a write beyond the $1 KiB file-size limit: expected exit 1, got $rc"
    }
    [ "$(grep -c '^husai: error' "$tmp/$2.err")" -eq 1 ] && grep -q "^husai: error.*\(failed\|disk full\|cannot\)" "$tmp/$2.err" || {
        cat "$tmp/$2.err"
        fail "no single clear error line for the failed write"
    }
    ! grep -q "MPI_ABORT\|ORTE_ERROR_LOG" "$tmp/$2.err" || {
        cat "$tmp/$2.err"
        fail "an MPI_ABORT banner or ORTE lines after the failed write"
    }
    [ ! -e "$tmp/full/$2" ] || fail "a failed write left a run directory under the final name"
    step "  exit $rc: $(grep -m1 '^husai: error' "$tmp/$2.err")"
}
step "2. disk full for results.h5 at its creation (240 KiB limit): fails before any training"
limited_run 240 early
! grep -q "\[husai\] task .* done" "$tmp/early.out" || fail "the job trained before finding the disk full"
step "2b. disk full when a condition's metrics land in results.h5 (600 KiB limit), after training"
limited_run 600 late
grep -q "\[husai\] task .* done" "$tmp/late.out" || fail "the job failed before training; expected the write to fail after"
[ ! -e "$tmp/full/.late.partial/results.h5" ] && [ ! -e "$tmp/full/.late.partial/results.json" ] ||
    fail "a failed write left results that look complete in the staging directory"
n_ck=$(ls "$tmp/full/.late.partial/checkpoints" 2>/dev/null | grep -c ckpt$ || true)
[ "$n_ck" -eq 4 ] || fail "expected the 4 trained tasks' checkpoints kept for --resume, found $n_ck"
step "  staging kept $n_ck checkpoints for --resume; no results.h5 or results.json in it"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/small.ini" --resume "$tmp/full/late" >"$tmp/late2.log" 2>&1 ||
    fail "--resume without the limit did not finish: $(tail -3 "$tmp/late2.log")"
"$PY" - "$tmp/full/late/results.h5" <<'PY' || fail "the resumed run's results.h5 is incomplete"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f["conditions/k=4/decoders"].shape == (4, 16, 512), f["conditions/k=4/decoders"].shape
PY
step "  --resume without the limit finished from the checkpoints; results.h5 holds the 4 decoders"
# d_sae 8192 with 2 seeds: a checkpoint (weights and Adam moments) is ~3.2 MB, more than results.h5's ~2.5 MB
# reserved before training (2 x 2 x 16 x 8192 floats and the allowance).
sed -e 's/^d_sae = 512/d_sae = 8192/' -e 's/^seeds = 1, 2, 3, 4/seeds = 1, 2/' "$tmp/small.ini" >"$tmp/ck.ini"
step "2c. disk full for the checkpoints at d_sae 8192 (2800 KiB limit): every rank stops, one line for all"
limited_run 2800 ckfull "$tmp/ck.ini"
grep -q "^husai: error.*checkpoint" "$tmp/ckfull.err" || fail "the error line does not name the checkpoint"
[ ! -e "$tmp/full/.ckfull.partial" ] || fail "a run that checkpointed nothing left its staging directory"
# d_sae 2048: a checkpoint is ~0.8 MB; results.h5 reserves ~1.4 MB for the 4 seeds' parameters up front.
sed -e 's/^d_sae = 512/d_sae = 2048/' "$tmp/small.ini" >"$tmp/wide.ini"
step "2d. no room for the parameters in results.h5 at d_sae 2048 (1200 KiB limit): refused before training"
limited_run 1200 widefull "$tmp/wide.ini"
! grep -q "\[husai\] task .* done" "$tmp/widefull.out" || fail "the job trained before finding no room for its results"
grep -q "^husai: error.*results.h5.*it needs 1\.[0-9] MB" "$tmp/widefull.err" || fail "the error line does not say what results.h5 needs"
step "all fault checks passed"
