#!/usr/bin/env bash
# two_node_test.sh: the slurm/ scripts on a real two-node Slurm cluster: the two simulated nodes of
# ../multinode/setup.sh (network, UTS and mount namespaces nodeA/nodeB joined by a veth pair) with
# slurmctld on nodeA and munged + slurmd on each node (cluster.sh start DIR NODES); jobs are submitted on
# nodeA, srun wires the ranks up with PMIx (--mpi=pmix, slurm/site.sh's default) across the two slurmds.
#  (a) sbatch -N 2 --ntasks-per-node=2 slurm/sweep.sbatch jobs/demo.ini (epochs cut with --set): the job
#      runs on nodeA and nodeB, results.json names both hosts (run.hosts, run.nodes: 2 ranks each, 4
#      ranks), and decoders, encoders, b_enc and PWMCC are bitwise equal to the same sweep on one node
#      (plain mpirun -np 4);
#  (b) the same job, SIGUSR1 to its batch shell mid-training: the ranks on both nodes checkpoint, the job
#      requeues itself, runs again on both nodes (Restarts=1), ranks on nodeB resume checkpointed tasks, and
#      the result has the same bits as (a)'s reference;
#  (b') a 2-rank job on one node, that node drained just before the SIGUSR1: the requeued job runs on the
#      other node and resumes there, from the checkpoints written on the first, to the same bits;
#  (c) slurm/submit_array.sh --nodes=1 --ntasks=2 (each array task fills one node) on two of demo.ini's
#      values: one array task runs on each node (their parts' run.hosts: each task fills a node), and
#      the merge job joins them into the bits and metrics of one sweep over both values on one node.
# Exit 77 (skipped) without Slurm and munge, without root, or where namespaces cannot be made. About
# 70 s here (2 cores); a watchdog fails the test at 170 s, and the cluster and the nodes are torn down
# on every exit (the test fails if the teardown leaves anything).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MN=$(cd "$HERE/../multinode" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/slurm/lib.sh
. "$HERE/lib.sh"
slurm_test_init two_node
why=$(bash "$MN/probe.sh") || {
    echo "two_node: SKIP: $why"
    exit 77
}
HUSAI=$(cd "$(dirname "$HUSAI")" && pwd)/$(basename "$HUSAI") # the jobs run in the submission directory
export HUSAI
EPOCHS=8 # demo.ini's 40 cut down: ~1 s per task here, 20 tasks on 4 ranks
tmp=$(mktemp -d /tmp/husai-slurm2.XXXXXX)
nodes=$tmp/nodes
cl=$tmp/cluster
t_start=$SECONDS

# The cluster, then the nodes; the test fails if the teardown leaves anything behind.
teardown() {
    bash "$HERE/cluster.sh" stop "$cl" || true
    bash "$MN/teardown.sh" "$nodes" || {
        echo "two_node: FAIL: teardown left something behind" >&2
        return 1
    }
}
slurm_on_exit "$cl" teardown
# Under ctest's timeout (240 s), so the trap still runs; the watchdog tears the nodes down itself, since
# bash runs the trap only once its foreground command ends.
slurm_watchdog 170 two_node bash -c "bash '$HERE/cluster.sh' stop '$cl'; bash '$MN/teardown.sh' '$nodes'"

# --- the cluster -------------------------------------------------------------------------------------
timeout -k 5 30 bash "$MN/setup.sh" "$nodes" >/dev/null || fail "could not make the two nodes"
timeout -k 5 60 bash "$HERE/cluster.sh" start "$cl" "$nodes" || fail "could not start the two-node cluster"
eval "$(bash "$HERE/cluster.sh" env "$cl")"
# Clients run on nodeA: slurmctld listens on nodeA's address, which exists only inside the two nodes.
SLURM_CLIENT=(timeout -k 5 30 bash "$MN/on.sh" "$nodes" nodeA)
[ "$(slurm_client sinfo -h -N -o '%N %T' | tr '\n' ' ')" = "nodeA idle nodeB idle " ] ||
    fail "sinfo: $(slurm_client sinfo -h -N -o '%N %T' | tr '\n' ' ')"
step "cluster up in $((SECONDS - t_start)) s: slurmctld on nodeA, slurmd on nodeA and nodeB, srun --mpi=pmix"

# Jobs are submitted (on nodeA) from a directory that looks like a checkout: slurm/, jobs/ and data/
# there, so the scripts find site.sh and demo.ini's relative data path as from the repository root.
mkdir -p "$tmp/sub"
for d in slurm jobs data; do ln -s "$REPO/$d" "$tmp/sub/$d"; done
cd "$tmp/sub"
sweep_flags=(--set "train.epochs=$EPOCHS")

# hosts_of RESULTS_JSON: "HOST:RANKS ..." from run.nodes, after checking run.hosts agrees with it.
hosts_of() {
    "$PY" - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["run"]
nodes = [(n["host"], n["ranks"]) for n in r["nodes"]]
assert sorted(r["hosts"]) == sorted(h for h, _ in nodes), f"run.hosts {r['hosts']} vs run.nodes {nodes}"
assert r["ranks"] == sum(k for _, k in nodes), f"run.ranks {r['ranks']} vs run.nodes {nodes}"
print(" ".join(f"{h}:{k}" for h, k in sorted(nodes)))
PY
}

step "reference: jobs/demo.ini (epochs $EPOCHS) on one node, plain mpirun -np 4"
t0=$SECONDS
timeout -k 5 120 "$MPIEXEC" -np 4 --oversubscribe --bind-to none "$HUSAI" sweep jobs/demo.ini "${sweep_flags[@]}" \
    --out "$tmp/ref" --run-id one >"$tmp/ref.log" 2>&1 || {
    tail -n 20 "$tmp/ref.log"
    fail "the one-node reference sweep failed"
}
[[ "$(hosts_of "$tmp/ref/one/results.json")" =~ ^[^\ ]+:4$ ]] || fail "reference: not one node of 4 ranks"
step "  $((SECONDS - t0)) s"

# --- (a) -N 2 --ntasks-per-node=2 -------------------------------------------------------------------------
step "(a) sbatch -N 2 --ntasks-per-node=2 slurm/sweep.sbatch jobs/demo.ini --set train.epochs=$EPOCHS"
t0=$SECONDS
id=$(slurm_client sbatch --parsable -N 2 --ntasks-per-node=2 slurm/sweep.sbatch jobs/demo.ini "${sweep_flags[@]}" \
    --out "$tmp/runs")
wait_gone "$id" 100
expect_done "$id" "(a)"
[ "$(job_field "$id" NodeList)" = "nodeA,nodeB" ] || fail "(a) job $id ran on '$(job_field "$id" NodeList)'"
run=$tmp/runs/job-$id
[ -f "$run/results.h5" ] || fail "(a) no complete run directory $run"
layout=$(hosts_of "$run/results.json") || fail "(a) results.json"
[ "$layout" = "nodeA:2 nodeB:2" ] || fail "(a) run.nodes is '$layout', not nodeA:2 nodeB:2"
grep -q "^\[slurm\] .*job $id: 4 rank(s) on nodeA,nodeB: srun --mpi=pmix" "slurm-husai-$id.out" ||
    fail "(a) log lacks the launch line (4 ranks on nodeA,nodeB, srun --mpi=pmix)"
compare_h5 "$tmp/ref/one/results.h5" "$run/results.h5" decoders encoders b_enc pwmcc ||
    fail "(a) the two-node job differs from the one-node sweep"
step "  job $id COMPLETED in $((SECONDS - t0)) s on nodeA,nodeB; run.nodes $layout"

# --- (b) SIGUSR1 -> checkpoint -> requeue -> resume ------------------------------------------------------
# preempt LABEL OUT BEFORE SBATCH_OPTIONS...: submits (a)'s sweep into OUT with SBATCH_OPTIONS, waits until
# its first task is done (20 tasks of ~1 s: every rank is then inside a task), runs the command BEFORE, sends
# SIGUSR1 to the batch shell and checks that the job checkpointed, requeued itself, resumed from the
# checkpoints (Restarts=1) and completed with the one-node reference's bits. Sets id and log.
preempt() {
    local label=$1 out=$2 before=$3 t0=$SECONDS ckpts=0
    shift 3
    id=$(slurm_client sbatch --parsable "$@" slurm/sweep.sbatch jobs/demo.ini "${sweep_flags[@]}" --out "$out")
    log=slurm-husai-$id.out
    for _ in $(seq 300); do
        grep -q "task 1/20 done" "$log" 2>/dev/null && break
        grep -q "husai exited with status" "$log" 2>/dev/null && fail "$label job $id ended before its first task was done"
        sleep 0.2
    done
    grep -q "task 1/20 done" "$log" || fail "$label job $id: no task done within 60 s (state $(job_field "$id" JobState))"
    $before
    [ "$(job_field "$id" JobState)" = RUNNING ] || fail "$label job $id is not running any more before the signal"
    grep -q "task 20/20 done" "$log" && fail "$label the job finished before the signal; raise EPOCHS"
    slurm_client scancel --batch --signal=USR1 "$id"
    step "  job $id: SIGUSR1 $((SECONDS - t0)) s after submission, after $(grep -c "task .* done" "$log") of 20 tasks"
    for _ in $(seq 300); do # the stopped run's staging directory must hold checkpoints when the job requeues
        if grep -q "DUE TO JOB REQUEUE" "$log" 2>/dev/null; then
            ckpts=$(find "$out/.job-$id.partial/checkpoints" -type f 2>/dev/null | wc -l)
            break
        fi
        grep -q "husai exited with status 0" "$log" 2>/dev/null && fail "$label job $id finished before the signal took effect"
        sleep 0.1
    done
    grep -q "DUE TO JOB REQUEUE" "$log" || fail "$label the job did not requeue within 30 s of SIGUSR1"
    [ "$ckpts" -ge 2 ] || fail "$label expected checkpoints of the interrupted tasks after the stop, found $ckpts"
    [ ! -e "$out/job-$id" ] || fail "$label a stopped run looks complete"
    wait_gone "$id" 100
    expect_done "$id" "$label"
    [ "$(job_field "$id" Restarts)" = 1 ] || fail "$label expected Restarts=1, got $(job_field "$id" Restarts)"
    grep -q "caught SIGUSR1" "$log" || fail "$label log: the trap did not run"
    grep -q "husai exited with status 75" "$log" || fail "$label log: husai did not exit 75 on the signal"
    grep -q "resuming $out/job-$id" "$log" || fail "$label log: the requeued job did not pass --resume"
    grep -q "\[husai\] rank [0-9]* resumes" "$log" || fail "$label log: husai did not resume from checkpoints"
    [ ! -e "$out/.job-$id.partial" ] || fail "$label staging directory left behind"
    compare_h5 "$tmp/ref/one/results.h5" "$out/job-$id/results.h5" decoders encoders b_enc pwmcc ||
        fail "$label the resumed run differs from the uninterrupted one-node sweep"
    step "  job $id: $(states_of "$id"), $ckpts checkpoint files, Restarts=1, COMPLETED in $((SECONDS - t0)) s"
}

step "(b) the same job, SIGUSR1 to the batch shell mid-training: checkpoint, requeue, resume on both nodes"
preempt "(b)" "$tmp/preempt" : -N 2 --ntasks-per-node=2
# srun places ranks in blocks: 2 and 3 are nodeB's (run.nodes: nodeA:2 nodeB:2).
grep -Eq "\[husai\] rank [23] resumes" "$log" || fail "(b) log: no rank on nodeB resumed a checkpointed task"
[ "$(grep -c "^\[slurm\] .*job $id: 4 rank(s) on nodeA,nodeB" "$log")" -eq 2 ] ||
    fail "(b) log: expected two launches on nodeA,nodeB"
[ "$(hosts_of "$tmp/preempt/job-$id/results.json")" = "nodeA:2 nodeB:2" ] || fail "(b) the resumed run's run.nodes"

# --- (b') the requeued job lands on the other node ----------------------------------------------------------
step "(b') a one-node job (2 ranks), its node drained before the SIGUSR1: it resumes on the other node"
drain_first() { # the node the job runs on: no new job may start there, so the requeued one goes elsewhere
    first=$(job_field "$id" NodeList)
    slurm_client scontrol update NodeName="$first" State=DRAIN Reason=husai-test
}
preempt "(b')" "$tmp/moved" drain_first -N 1 --ntasks=2
slurm_client scontrol update NodeName="$first" State=RESUME
case $first in nodeA) other=nodeB ;; nodeB) other=nodeA ;; *) fail "(b') the job ran on '$first'" ;; esac
grep -q "^\[slurm\] .*job $id: 2 rank(s) on $first:" "$log" || fail "(b') log: no first launch on $first"
grep -q "^\[slurm\] .*job $id: 2 rank(s) on $other:" "$log" || fail "(b') log: the requeued job did not run on $other"
[ "$(hosts_of "$tmp/moved/job-$id/results.json")" = "$other:2" ] || fail "(b') the resumed run's run.nodes"
step "  checkpointed on $first, resumed on $other"

# --- (c) array + merge, one array task per node ------------------------------------------------------------
step "(c) slurm/submit_array.sh --nodes=1 --ntasks=2: one value per array task, one task per node, then merge"
values=(--set "sweep.values=8, 16" --set train.epochs=4)
timeout -k 5 120 "$MPIEXEC" -np 2 --oversubscribe --bind-to none "$HUSAI" sweep jobs/demo.ini "${values[@]}" \
    --out "$tmp/ref" --run-id c >"$tmp/ref_c.log" 2>&1 || {
    tail -n 20 "$tmp/ref_c.log"
    fail "(c) the one-node reference sweep failed"
}
t0=$SECONDS
HUSAI_OUT="$tmp/arr" slurm_client slurm/submit_array.sh --nodes=1 --ntasks=2 jobs/demo.ini "${values[@]}" \
    >"$tmp/submit.txt" || fail "(c) submit_array.sh failed"
aid=$(sed -n 's/^array job \([0-9]*\):.*/\1/p' "$tmp/submit.txt")
mid=$(sed -n 's/^merge job \([0-9]*\):.*/\1/p' "$tmp/submit.txt")
if [ -z "$aid" ] || [ -z "$mid" ]; then fail "(c) submit_array.sh did not print both job ids: $(cat "$tmp/submit.txt")"; fi
wait_gone "$aid" 100
hosts=()
for t in 0 1; do
    expect_done "${aid}_$t" "(c) array task $t"
    part=$tmp/arr/parts/part-$aid-$t
    [ -f "$part/results.h5" ] || fail "(c) part $t missing"
    hosts+=("$(hosts_of "$part/results.json")")
done
[ "$(printf '%s\n' "${hosts[@]}" | sort | tr '\n' ' ')" = "nodeA:2 nodeB:2 " ] ||
    fail "(c) the array tasks ran on '${hosts[*]}', not one on each node"
wait_gone "$mid" 60
expect_done "$mid" "(c) merge"
merged=$tmp/arr/array-$aid
[ -f "$merged/results.h5" ] || fail "(c) no merged run directory $merged"
compare_h5 "$tmp/ref/c/results.h5" "$merged/results.h5" decoders encoders b_enc pwmcc ||
    fail "(c) the merged run differs from a single sweep"
compare_metrics "$merged/results.json" "$tmp/ref/c/results.json" || fail "(c) results.json"
step "  array $aid: task 0 on ${hosts[0]%:*}, task 1 on ${hosts[1]%:*}; merge $mid COMPLETED; $((SECONDS - t0)) s"

step "all two-node Slurm checks passed in $((SECONDS - t_start)) s"
