#!/usr/bin/env bash
# slurm_test.sh: the slurm/ scripts on a real (private, single-node) Slurm cluster.
#  (a) slurm/sweep.sbatch with 2 tasks completes job-<id> (2 ranks, output dir from the config);
#  (a') 1 task with --cpus-per-task=2 runs 2 threads (site.sh's HUSAI_THREADS), bitwise equal to (a);
#  (b) SIGUSR1 to the batch shell, as Slurm sends before a time limit: the job checkpoints, requeues
#      itself, resumes under the same job id and ends with decoders, encoders, b_enc and PWMCC
#      bitwise equal to an uninterrupted mpirun sweep;
#  (c) slurm/submit_array.sh: one array task per sweep value (written over two lines), then husai merge
#      after them; the merged run equals a single sweep over both values bitwise.
# Exit 77 (skipped) without Slurm and munge installed or without root. Needs 2 CPUs. ~1 minute.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$HERE/lib.sh"
slurm_test_init slurm_test
REPO=$(cd "$HERE/../.." && pwd)
tmp=$(mktemp -d)
t_start=$SECONDS
stop_cluster() { bash "$HERE/cluster.sh" stop "$tmp/cluster" || true; }
slurm_on_exit "$tmp/cluster" stop_cluster
# Stop (and clean up) well before ctest's timeout would kill us without running the trap.
slurm_watchdog 420 slurm_test

# --- the cluster -------------------------------------------------------------------------------
started=0
for port in 17817 17837 17857; do
    if HUSAI_SLURM_PORT=$port bash "$HERE/cluster.sh" start "$tmp/cluster"; then
        started=1
        break
    fi
    rm -rf "$tmp/cluster"
done
[ "$started" -eq 1 ] || fail "could not start the test cluster"
eval "$(bash "$HERE/cluster.sh" env "$tmp/cluster")"
step "cluster up in $((SECONDS - t_start)) s"

# Jobs are submitted from a directory that looks like a checkout (slurm/ there), so the scripts'
# default lookup of site.sh via SLURM_SUBMIT_DIR is what runs; logs land there too.
mkdir -p "$tmp/sub"
ln -s "$REPO/slurm" "$tmp/sub/slurm"
cd "$tmp/sub"
"$PY" "$REPO/tests/data/make_tiny.py" "$tmp/tiny.h5" 1500 12 20 3 >/dev/null

write_ini() { # FILE EPOCHS VALUES OUTDIR
    cat >"$1" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 24
[train]
epochs = $2
batch_size = 100
lr = 0.003
[sweep]
param = k
values = $3
seeds = 11, 22
[metrics]
resamples = 200
[output]
dir = $4
INI
}

# --- (a) a plain sweep on 2 tasks ----------------------------------------------------------------
step "(a) sbatch --ntasks=2 slurm/sweep.sbatch (output dir from the config)"
write_ini "$tmp/a.ini" 30 3 "$tmp/runs"
t0=$SECONDS
id=$(sbatch --parsable --ntasks=2 slurm/sweep.sbatch "$tmp/a.ini")
wait_gone "$id" 120
expect_done "$id" "(a)"
run="$tmp/runs/job-$id"
if [ ! -f "$run/results.json" ] || [ ! -f "$run/results.h5" ]; then fail "(a) no complete run directory $run"; fi
[ ! -e "$tmp/runs/.job-$id.partial" ] || fail "(a) staging directory left behind"
"$PY" - "$run/results.json" "job-$id" <<'PY' || fail "(a) results.json"
import json, sys
r = json.load(open(sys.argv[1]))["run"]
assert r["id"] == sys.argv[2], r["id"]
assert r["ranks"] == 2, f"ranks {r['ranks']}"
PY
grep -q "^\[slurm\] .*job $id: 2 rank(s)" "slurm-husai-$id.out" || fail "(a) log lacks the launch line"
step "  job $id COMPLETED (0:0) in $((SECONDS - t0)) s: $run with 2 ranks"

# --- (a') one task with 2 CPUs: site.sh gives the rank 2 threads, with the same bits ----------------
step "(a') sbatch --ntasks=1 --cpus-per-task=2: HUSAI_THREADS=2 from site.sh, bitwise equal to (a)"
write_ini "$tmp/a2.ini" 30 3 "$tmp/runs2"
id2=$(sbatch --parsable --ntasks=1 --cpus-per-task=2 slurm/sweep.sbatch "$tmp/a2.ini")
wait_gone "$id2" 120
expect_done "$id2" "(a')"
"$PY" - "$tmp/runs2/job-$id2/results.json" <<'PY' || fail "(a') results.json"
import json, sys
r = json.load(open(sys.argv[1]))["run"]
assert r["ranks"] == 1 and r["threads_per_rank"] == 2, f"ranks {r['ranks']}, threads {r.get('threads_per_rank')}"
PY
if grep -q "HUSAI_THREADS=2 but" "slurm-husai-$id2.out"; then fail "(a') the rank did not get its 2 CPUs"; fi
compare_h5 "$run/results.h5" "$tmp/runs2/job-$id2/results.h5" decoders encoders b_enc pwmcc ||
    fail "(a') 1 rank x 2 threads differs from 2 ranks x 1 thread"

# --- (b) SIGUSR1 -> checkpoint -> requeue -> resume --------------------------------------------------
step "(b) SIGUSR1 to the batch shell mid-training: checkpoint, requeue, resume, bitwise result"
# 8000 epochs: ~2.5 s per task here, so the signal (sent half a second into the second wave) lands
# mid-task even on a faster machine (at 1500 epochs a task took 0.4-0.6 s and the job could finish first).
write_ini "$tmp/b.ini" 8000 "3, 6" "$tmp/unused"
"$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/b.ini" --out "$tmp/ref" --run-id b >"$tmp/ref_b.log" 2>&1 || {
    cat "$tmp/ref_b.log"
    fail "(b) reference mpirun sweep failed"
}
t0=$SECONDS
id=$(sbatch --parsable --ntasks=2 slurm/sweep.sbatch "$tmp/b.ini" --out "$tmp/preempt")
log="slurm-husai-$id.out"
# 4 tasks on 2 ranks: once the first wave is done, both ranks are inside their second task.
for _ in $(seq 600); do
    grep -q "task 1/4 done" "$log" 2>/dev/null && break
    if grep -q "husai exited with status" "$log" 2>/dev/null; then fail "(b) job $id ended before its first task was done"; fi
    sleep 0.1
done
grep -q "task 1/4 done" "$log" || fail "(b) job $id: no task done within 60 s (state $(job_field "$id" JobState))"
sleep 0.5
[ "$(job_field "$id" JobState)" = RUNNING ] || fail "(b) job $id is not running any more before the signal"
grep -q "task 4/4 done" "$log" && fail "(b) the job finished before the signal; raise the epochs"
scancel --batch --signal=USR1 "$id"
step "  job $id: sent SIGUSR1 to the batch shell $((SECONDS - t0)) s after submission"
ckpts=0
for _ in $(seq 300); do # wait for the requeue; the stopped run's staging must hold checkpoints
    if grep -q "DUE TO JOB REQUEUE" "$log" 2>/dev/null; then
        ckpts=$(find "$tmp/preempt/.job-$id.partial/checkpoints" -type f 2>/dev/null | wc -l)
        break
    fi
    grep -q "husai exited with status 0" "$log" 2>/dev/null &&
        fail "(b) job $id finished before the signal took effect; raise the epochs"
    sleep 0.1
done
grep -q "DUE TO JOB REQUEUE" "$log" || fail "(b) the job did not requeue within 30 s of SIGUSR1"
[ "$ckpts" -ge 2 ] || fail "(b) expected checkpoints of the interrupted tasks after the stop, found $ckpts"
[ ! -e "$tmp/preempt/job-$id" ] || fail "(b) a stopped run looks complete"
step "  requeued after checkpointing ($ckpts checkpoint files)"
wait_gone "$id" 180
expect_done "$id" "(b)"
restarts=$(job_field "$id" Restarts)
[ "$restarts" = 1 ] || fail "(b) expected Restarts=1, got $restarts"
grep -q "caught SIGUSR1" "$log" || fail "(b) log: the trap did not run"
grep -q "husai exited with status 75" "$log" || fail "(b) log: husai did not exit 75 on the signal"
grep -q "requeueing job $id" "$log" || fail "(b) log: no requeue"
grep -q "resuming $tmp/preempt/job-$id" "$log" || fail "(b) log: the requeued job did not pass --resume"
grep -q "\[husai\] rank [0-9]* resumes" "$log" || fail "(b) log: husai did not resume from checkpoints"
[ "$(grep -c "^\[slurm\] .*job $id: 2 rank(s)" "$log")" -eq 2 ] || fail "(b) log: expected two launches"
[ -f "$tmp/preempt/job-$id/results.h5" ] || fail "(b) no complete run directory"
[ ! -e "$tmp/preempt/.job-$id.partial" ] || fail "(b) staging directory left behind"
compare_h5 "$tmp/ref/b/results.h5" "$tmp/preempt/job-$id/results.h5" decoders encoders b_enc pwmcc ||
    fail "(b) the resumed run differs from the uninterrupted one"
step "  job $id: after the requeue $(states_of "$id"), Restarts=1, COMPLETED in $((SECONDS - t0)) s"

# --- (c) array + merge -----------------------------------------------------------------------------
if ! "$HUSAI" merge --help >/dev/null 2>&1; then
    step "(c) skipped: this husai has no 'merge' command"
else
    step "(c) slurm/submit_array.sh: one array task per value, then husai merge (HUSAI_OUT)"
    # The values over two lines: the scripts must take both from husai (a shell INI parser saw one).
    write_ini "$tmp/c.ini" 40 $'3\n    6' "$tmp/unused"
    "$MPIEXEC" -np 2 "$HUSAI" sweep "$tmp/c.ini" --out "$tmp/ref" --run-id c >"$tmp/ref_c.log" 2>&1 || {
        cat "$tmp/ref_c.log"
        fail "(c) reference mpirun sweep failed"
    }
    t0=$SECONDS
    HUSAI_OUT="$tmp/arr" slurm/submit_array.sh --ntasks=1 "$tmp/c.ini" >"$tmp/submit.txt" ||
        fail "(c) submit_array.sh failed"
    cat "$tmp/submit.txt"
    aid=$(sed -n 's/^array job \([0-9]*\):.*/\1/p' "$tmp/submit.txt")
    mid=$(sed -n 's/^merge job \([0-9]*\):.*/\1/p' "$tmp/submit.txt")
    if [ -z "$aid" ] || [ -z "$mid" ]; then fail "(c) submit_array.sh did not print both job ids"; fi
    [ "$(job_field "$mid" Dependency)" != "(null)" ] || fail "(c) the merge job has no dependency"
    wait_gone "$aid" 120
    for t in 0 1; do expect_done "${aid}_$t" "(c) array task $t"; done
    wait_gone "$mid" 60
    expect_done "$mid" "(c) merge"
    for t in 0 1; do
        [ -f "$tmp/arr/parts/part-$aid-$t/results.h5" ] || fail "(c) part $t missing"
    done
    merged="$tmp/arr/array-$aid"
    [ -f "$merged/results.h5" ] || fail "(c) no merged run directory $merged"
    compare_h5 "$tmp/ref/c/results.h5" "$merged/results.h5" pwmcc decoders ||
        fail "(c) the merged run differs from a single sweep"
    compare_metrics "$merged/results.json" "$tmp/ref/c/results.json" || fail "(c) results.json"
    step "  array $aid (2 tasks) and merge $mid COMPLETED in $((SECONDS - t0)) s: $merged"
fi

step "all Slurm checks passed in $((SECONDS - t_start)) s"
