#!/usr/bin/env bash
# scripts_test.sh: the slurm/ scripts without a Slurm cluster, on a config whose [sweep] values are
# written over several indented lines (husai reads 2, 4, 6, 8; the old shell INI parser read 2, 4).
# Stub `sbatch` (records its arguments, prints a job id) and `srun` (records its arguments, then runs
# the husai command itself as one rank) stand in for Slurm:
#   values.sh lists all 4 values; submit_array.sh submits --array=0-3 and a merge of 4 parts; each array
#   task trains its value (srun with --kill-on-bad-exit=1, even when HUSAI_SRUN_FLAGS says 0); a 5th task
#   is refused; merge.sbatch joins the 4 parts into the conditions and metrics of one mpirun sweep;
#   sweep.sbatch writes to the config's output dir; a calibrate config or a bad config submits nothing.
# tests/slurm/slurm_test.sh runs the same scripts on a real single-node cluster.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$HERE/../lib.sh"
husai_test_init slurm_scripts --openblas
REPO=$(cd "$HERE/../.." && pwd)
unset HUSAI_OUT HUSAI_SLURM_DIR HUSAI_SRUN_FLAGS HUSAI_PARTITION HUSAI_ACCOUNT SBATCH_PARTITION SBATCH_ACCOUNT
unset SLURM_JOB_ID SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID SLURM_CPUS_PER_TASK SLURM_NTASKS

mkdir -p "$tmp/bin" "$tmp/sub"
cat >"$tmp/bin/sbatch" <<'SH'
#!/usr/bin/env bash
# stub: one file per call with one argument a line; job ids 100, 101, ...
n=$(ls "$STUB_DIR"/sbatch.* 2>/dev/null | wc -l)
printf '%s\n' "$@" >"$STUB_DIR/sbatch.$n"
echo "$((100 + n))"
SH
cat >"$tmp/bin/srun" <<'SH'
#!/usr/bin/env bash
# stub: records the srun flags, then runs the command after them as one process (a singleton MPI rank)
printf '%s\n' "$*" >>"$STUB_DIR/srun.log"
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done
exec "$@"
SH
chmod +x "$tmp/bin/sbatch" "$tmp/bin/srun"
export PATH="$tmp/bin:$PATH" STUB_DIR="$tmp"
ln -s "$REPO/slurm" "$tmp/sub/slurm" # a directory that looks like a checkout, as sbatch jobs see it
export SLURM_SUBMIT_DIR="$tmp/sub"

"$PY" "$REPO/tests/data/make_tiny.py" "$tmp/tiny.h5" 400 8 12 5 >/dev/null
cat >"$tmp/ml.ini" <<INI
[data]
path = $tmp/tiny.h5
[sae]
d_sae = 16
[train]
epochs = 2
batch_size = 100
lr = 0.003
[sweep]
param = k
values = 2, 4
    6
    8
seeds = 3
    5, 9
[metrics]
resamples = 200
[output]
dir = $tmp/runs
INI

step "values.sh: all 4 values of the multi-line list"
[ "$(HUSAI="$HUSAI" "$REPO/slurm/values.sh" "$tmp/ml.ini" | tr '\n' ' ')" = "2 4 6 8 " ] ||
    fail "values.sh gave '$(HUSAI="$HUSAI" "$REPO/slurm/values.sh" "$tmp/ml.ini" | tr '\n' ' ')'"
[ "$(HUSAI="$HUSAI" "$REPO/slurm/values.sh" "$tmp/ml.ini" --set sweep.values=7,5 --run-id x | tr '\n' ' ')" = "7 5 " ] ||
    fail "values.sh with --set"

step "submit_array.sh: --array=0-3 and a merge of 4 parts"
HUSAI="$HUSAI" HUSAI_OUT="$tmp/arr" timeout 30 "$REPO/slurm/submit_array.sh" --ntasks=1 "$tmp/ml.ini" >"$tmp/submit.txt" ||
    fail "submit_array.sh failed: $(cat "$tmp/submit.txt")"
cat "$tmp/submit.txt"
grep -qx -- "--array=0-3%4" "$tmp/sbatch.0" || fail "array submission: $(tr '\n' ' ' <"$tmp/sbatch.0")"
grep -qx -- "--ntasks=1" "$tmp/sbatch.0" || fail "array submission lacks --ntasks=1"
grep -qx -- "$tmp/ml.ini" "$tmp/sbatch.0" || fail "array submission lacks the config"
[ "$(tail -n 4 "$tmp/sbatch.1" | tr '\n' ' ')" = "$REPO/slurm/merge.sbatch 100 $tmp/arr 4 " ] ||
    fail "merge submission: $(tr '\n' ' ' <"$tmp/sbatch.1")"
grep -qx -- "--dependency=afterok:100" "$tmp/sbatch.1" || fail "merge submission lacks the dependency"

step "array.sbatch: tasks 0-3 each train their value; task 4 is refused"
: >"$tmp/srun.log"
for i in 0 1 2 3; do
    SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_JOB_ID=100 SLURM_JOB_ID=$((200 + i)) SLURM_NTASKS=1 HUSAI="$HUSAI" \
        HUSAI_OUT="$tmp/arr" HUSAI_SRUN_FLAGS="--kill-on-bad-exit=0" \
        timeout 120 bash "$REPO/slurm/array.sbatch" "$tmp/ml.ini" >"$tmp/task$i.log" 2>&1 || {
        cat "$tmp/task$i.log"
        fail "array task $i failed"
    }
done
[ "$(wc -l <"$tmp/srun.log")" -eq 4 ] || fail "expected 4 srun launches: $(cat "$tmp/srun.log")"
i=0
for v in 2 4 6 8; do
    line=$(sed -n "$((i + 1))p" "$tmp/srun.log")
    [[ "$line" == *"--set sweep.values=$v" ]] || fail "task $i: $line"
    [[ "$line" == *"--run-id part-100-$i "* ]] || fail "task $i run id: $line"
    last=$(tr ' ' '\n' <<<"$line" | grep -- "--kill-on-bad-exit" | tail -n 1)
    [ "$last" = "--kill-on-bad-exit=1" ] || fail "task $i: srun's last kill-on-bad-exit flag is '$last': $line"
    [ -f "$tmp/arr/parts/part-100-$i/results.json" ] || fail "part $i missing"
    i=$((i + 1))
done
rc=0
SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_JOB_ID=100 SLURM_JOB_ID=204 HUSAI="$HUSAI" HUSAI_OUT="$tmp/arr" \
    timeout 30 bash "$REPO/slurm/array.sbatch" "$tmp/ml.ini" >"$tmp/task4.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "array task 4: exit $rc"
grep -q "array task 4, but .* has 4 values" "$tmp/task4.log" || fail "task 4: $(cat "$tmp/task4.log")"

step "merge.sbatch: the 4 parts equal one mpirun sweep over the grid"
HUSAI="$HUSAI" timeout 60 bash "$REPO/slurm/merge.sbatch" 100 "$tmp/arr" 4 >"$tmp/merge.log" 2>&1 || {
    cat "$tmp/merge.log"
    fail "merge.sbatch failed"
}
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$HUSAI" sweep "$tmp/ml.ini" --out "$tmp/ref" --run-id single \
    >"$tmp/ref.log" 2>&1 || {
    cat "$tmp/ref.log"
    fail "reference sweep failed"
}
"$PY" - "$tmp/arr/array-100/results.json" "$tmp/ref/single/results.json" <<'PY' || fail "merged run differs"
import json, sys
m, r = (json.load(open(p)) for p in sys.argv[1:])
names = [c["name"] for c in m["conditions"]]
assert names == ["k=2", "k=4", "k=6", "k=8"], names
assert names == [c["name"] for c in r["conditions"]]
for a, b in zip(m["conditions"], r["conditions"]):
    assert [s["seed"] for s in a["per_seed"]] == [3, 5, 9]
    for k in ("trained_pwmcc", "random_pwmcc", "explained_variance", "mse", "l0"):
        assert a[k] == b[k], f"{a['name']} {k}: merged {a[k]} vs single {b[k]}"
print("slurm_scripts:   4 conditions x 3 seeds, metrics equal to the single sweep")
PY

step "sweep.sbatch: output dir from the config as husai resolves it"
: >"$tmp/srun.log"
SLURM_JOB_ID=300 SLURM_NTASKS=1 HUSAI="$HUSAI" timeout 120 bash "$REPO/slurm/sweep.sbatch" "$tmp/ml.ini" \
    >"$tmp/sweep.log" 2>&1 || {
    cat "$tmp/sweep.log"
    fail "sweep.sbatch failed"
}
[ -f "$tmp/runs/job-300/results.json" ] || fail "no run $tmp/runs/job-300"
grep -q -- "--kill-on-bad-exit=1 $HUSAI sweep $tmp/ml.ini --out $tmp/runs --run-id job-300" "$tmp/srun.log" ||
    fail "sweep.sbatch srun: $(cat "$tmp/srun.log")"

step "nothing is submitted for a calibrate config or a bad one"
rm -f "$tmp"/sbatch.*
rc=0
HUSAI="$HUSAI" timeout 30 "$REPO/slurm/submit_array.sh" "$tmp/ml.ini" --set sweep.mode=calibrate --set calibrate.control_k=4 \
    >/dev/null 2>"$tmp/err" || rc=$?
if [ "$rc" -ne 1 ] || ! grep -q "mode = calibrate" "$tmp/err"; then fail "calibrate: exit $rc, $(cat "$tmp/err")"; fi
rc=0
HUSAI="$HUSAI" timeout 30 "$REPO/slurm/submit_array.sh" "$tmp/ml.ini" --set sweep.kk=1 >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "bad config: exit $rc"
[ "$(grep -c '^husai: error: .*unknown key' "$tmp/err")" -eq 1 ] || fail "bad config: $(cat "$tmp/err")"
! ls "$tmp"/sbatch.* >/dev/null 2>&1 || fail "a job was submitted for a config husai refuses"
step "ok"
