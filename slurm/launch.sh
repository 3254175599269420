# slurm/launch.sh: the part of a husai batch job that sweep.sbatch and array.sbatch share. Sourced
# (after site.sh) by the batch shell; defines
#   husai_log MESSAGE...                    one "[slurm] time message" line on stdout
#   husai_split_flags FLAGS...              sets HUSAI_FLAG_OUT, HUSAI_FLAG_RUN_ID, HUSAI_FLAG_RESUME
#                                           and HUSAI_PASS (the other flags, in order)
#   husai_plan_get CONFIG NAME FLAGS...     prints field NAME of `husai plan CONFIG` under the sweep's
#                                           flags (--set, --out; --run-id and --resume dropped): every
#                                           setting a script needs comes from husai, never from an INI
#                                           parser of its own (see `husai plan --help` for the names)
#   husai_resolve_out CONFIG FLAGS...       prints the output directory husai will use
#   husai_run_sweep OUT RUN_ID CONFIG FLAGS...
#       runs `srun husai sweep` for the run OUT/RUN_ID: fresh when nothing exists yet, with --resume
#       when OUT/.RUN_ID.partial exists (a requeued job), not at all when OUT/RUN_ID is complete. A
#       SIGUSR1 to the batch shell (Slurm's warning before the time limit, --signal=B:USR1@T, or
#       `scancel --batch --signal=USR1`) is forwarded to the step; husai checkpoints at the next
#       optimizer step and exits 75, and the job requeues itself: the same job id, hence the same
#       run id, resumes. SIGTERM (scancel, the time limit itself) is forwarded too, but the job is
#       not requeued. Returns husai's exit status.
# shellcheck shell=bash

HUSAI_EXIT_STOPPED=75

husai_log() { printf '[slurm] %s %s\n' "$(date '+%F %T')" "$*"; }

# shellcheck disable=SC2034 # the HUSAI_FLAG_* results are read by the sbatch scripts
husai_split_flags() {
    HUSAI_FLAG_OUT="" HUSAI_FLAG_RUN_ID="" HUSAI_FLAG_RESUME=""
    HUSAI_PASS=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --out | --run-id | --resume)
            if [ $# -lt 2 ]; then
                echo "husai (slurm): $1 needs a value" >&2
                return 2
            fi
            case "$1" in
            --out) HUSAI_FLAG_OUT=$2 ;;
            --run-id) HUSAI_FLAG_RUN_ID=$2 ;;
            --resume) HUSAI_FLAG_RESUME=$2 ;;
            esac
            shift 2
            ;;
        --out=*) HUSAI_FLAG_OUT=${1#--out=} && shift ;;
        --run-id=*) HUSAI_FLAG_RUN_ID=${1#--run-id=} && shift ;;
        --resume=*) HUSAI_FLAG_RESUME=${1#--resume=} && shift ;;
        *) HUSAI_PASS+=("$1") && shift ;;
        esac
    done
}

husai_plan_get() {
    local config=$1 name=$2
    shift 2
    husai_split_flags "$@" || return
    local -a flags=("${HUSAI_PASS[@]}")
    if [ -n "$HUSAI_FLAG_OUT" ]; then flags+=(--out "$HUSAI_FLAG_OUT"); fi
    if [ ! -x "$HUSAI" ]; then
        echo "husai (slurm): husai binary '$HUSAI' not found or not executable (set HUSAI, see slurm/site.sh)" >&2
        return 1
    fi
    # husai validates the whole config here too, so a bad one fails at submission, not in the queue.
    "$HUSAI" plan "$config" --get "$name" "${flags[@]}"
}

# Where husai writes: --out among the flags, else $HUSAI_OUT, else the config's [output] dir (with
# any --set output.dir=...) as husai resolves it.
husai_resolve_out() {
    local config=$1
    shift
    husai_split_flags "$@" || return
    if [ -z "$HUSAI_FLAG_OUT" ] && [ -n "${HUSAI_OUT:-}" ]; then
        husai_plan_get "$config" out_dir "$@" --out "$HUSAI_OUT"
    else
        husai_plan_get "$config" out_dir "$@"
    fi
}

husai_on_signal() { # SIG: remember it and pass it on to the running step
    HUSAI_CAUGHT=$1
    husai_log "caught SIG$1; forwarding it to the husai step (checkpoint at the next optimizer step)"
    if [ -n "${HUSAI_STEP_PID:-}" ]; then kill -s "$1" "$HUSAI_STEP_PID" 2>/dev/null || true; fi
}

husai_run_sweep() {
    local out=$1 id=$2 config=$3
    shift 3
    local -a run_args srun_args extra
    if [ -d "$out/$id" ]; then
        husai_log "$out/$id is already complete; nothing to do"
        return 0
    fi
    if [ -d "$out/.$id.partial" ]; then
        husai_log "resuming $out/$id from its checkpoints (restart ${SLURM_RESTART_COUNT:-0})"
        run_args=(--resume "$out/$id")
    else
        run_args=(--out "$out" --run-id "$id")
    fi
    read -r -a extra <<<"${HUSAI_SRUN_FLAGS:-}"
    srun_args=(--mpi="$HUSAI_SRUN_MPI")
    # Slurm 22.05's srun no longer inherits --cpus-per-task from the allocation: pass it on.
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then srun_args+=(--cpus-per-task="$SLURM_CPUS_PER_TASK"); fi
    # Last, so no site flag undoes it: a rank that fails exits 1 without MPI_Abort, and only this ends
    # the step instead of leaving the other ranks waiting for it in a collective.
    srun_args+=("${extra[@]}" --kill-on-bad-exit=1)
    if [ ! -x "$HUSAI" ]; then
        husai_log "error: husai binary '$HUSAI' not found or not executable (set HUSAI, see slurm/site.sh)"
        return 1
    fi

    HUSAI_CAUGHT="" HUSAI_STEP_PID=""
    trap 'husai_on_signal USR1' USR1
    trap 'husai_on_signal TERM' TERM
    husai_log "job ${SLURM_JOB_ID:-?}: ${SLURM_NTASKS:-1} rank(s) on ${SLURM_JOB_NODELIST:-?}:" \
        "srun ${srun_args[*]} $HUSAI sweep $config ${run_args[*]} $*"
    # In the background, so the shell can run the trap while it waits (bash defers traps until a
    # foreground command ends).
    srun "${srun_args[@]}" "$HUSAI" sweep "$config" "${run_args[@]}" "$@" &
    HUSAI_STEP_PID=$!
    # A signal that came before the step existed still has to reach it.
    if [ -n "$HUSAI_CAUGHT" ]; then kill -s "$HUSAI_CAUGHT" "$HUSAI_STEP_PID" 2>/dev/null || true; fi
    local rc
    while :; do
        rc=0
        wait "$HUSAI_STEP_PID" || rc=$?
        # wait returns >128 when a trapped signal interrupts it; the step is then still running.
        if [ "$rc" -gt 128 ] && kill -0 "$HUSAI_STEP_PID" 2>/dev/null; then continue; fi
        break
    done
    trap - USR1 TERM
    husai_log "husai exited with status $rc"

    if [ "$rc" -eq "$HUSAI_EXIT_STOPPED" ]; then
        if [ "$HUSAI_CAUGHT" = USR1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
            husai_log "checkpointed; requeueing job $SLURM_JOB_ID to resume $out/$id"
            # Slurm ends this shell right away and starts the job again later with the same job id.
            if scontrol requeue "$SLURM_JOB_ID"; then
                sleep 30 & # requeue kills the batch step; do not race it with a normal exit
                wait $! || true
                return "$rc"
            fi
            husai_log "scontrol requeue failed (was the job submitted with --no-requeue?)"
        fi
        husai_log "checkpointed and stopped; continue with: sbatch ... ${HUSAI_SCRIPT_NAME:-slurm/sweep.sbatch}" \
            "$config --resume $out/$id"
    fi
    return "$rc"
}
