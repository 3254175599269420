# slurm/site.sh: this site's Slurm settings for husai, in one place. Sourced (never run) by
# slurm/sweep.sbatch, array.sbatch, merge.sbatch and submit_array.sh. Every setting below is a
# default: set the variable in your shell (or in ~/.bashrc, or with `sbatch --export=ALL,VAR=...`) to
# override it without editing this file, or edit the defaults once for your cluster.
#
# Settings read at submission (by sbatch itself, not by the job script):
#   HUSAI_PARTITION    partition to submit to (sbatch -p); empty: the cluster's default
#   HUSAI_ACCOUNT      account to charge (sbatch -A); empty: your default account
# sbatch reads SBATCH_PARTITION / SBATCH_ACCOUNT from the environment, so they apply when this file
# is sourced before sbatch: slurm/submit_array.sh does that; for a single sweep either pass -p/-A or
#     source slurm/site.sh && sbatch slurm/sweep.sbatch jobs/k_sweep.ini
#
# Settings read inside the job:
#   HUSAI_MODULES      environment modules to `module load`, space-separated, e.g.
#                      "gcc/12 openmpi/4.1 hdf5/1.10-openmpi openblas"; empty: load nothing
#   HUSAI_SRUN_MPI     srun's MPI plugin (srun --mpi=...): pmix for Open MPI 4/5 built with PMIx (the
#                      Debian build); pmi2 or pmix_v4 on some sites (`srun --mpi=list` shows them)
#   HUSAI_SRUN_FLAGS   extra srun flags, space-separated, e.g. "--cpu-bind=cores" or "--overcommit"
#                      (launch.sh always adds --kill-on-bad-exit=1, after these)
#   HUSAI              the husai binary; default $SLURM_SUBMIT_DIR/build/husai (submit from the checkout).
#                      The scripts also take every config setting they need from it (`husai plan`), at
#                      submission and in the job, so it must run on the login node too
#   HUSAI_OUT          where run directories go; empty: the config's [output] dir (runs by default).
#                      A --out DIR among the extra husai flags wins over both.
#   HUSAI_THREADS      threads per rank, each splitting its SAE's step (same bits for any count); default
#                      1, or --cpus-per-task when you ask for more
# shellcheck shell=bash

# --- submission ---------------------------------------------------------------------------------
HUSAI_PARTITION=${HUSAI_PARTITION:-}
HUSAI_ACCOUNT=${HUSAI_ACCOUNT:-}
if [ -n "$HUSAI_PARTITION" ]; then export SBATCH_PARTITION="$HUSAI_PARTITION"; fi
if [ -n "$HUSAI_ACCOUNT" ]; then export SBATCH_ACCOUNT="$HUSAI_ACCOUNT"; fi

# --- software -----------------------------------------------------------------------------------
HUSAI_MODULES=${HUSAI_MODULES:-}
if [ -n "$HUSAI_MODULES" ]; then
    if command -v module >/dev/null 2>&1; then
        # Module systems (Lmod, Tcl modules) read unset variables: load them without `set -u`.
        case $- in *u*) husai_site_u=1 && set +u ;; *) husai_site_u=0 ;; esac
        # shellcheck disable=SC2086 # one word per module
        module load $HUSAI_MODULES
        if [ "$husai_site_u" -eq 1 ]; then set -u; fi
        unset husai_site_u
    else
        echo "site.sh: HUSAI_MODULES is set but there is no 'module' command here; loading nothing" >&2
    fi
fi
HUSAI=${HUSAI:-${SLURM_SUBMIT_DIR:-$PWD}/build/husai}

# --- launching ----------------------------------------------------------------------------------
HUSAI_SRUN_MPI=${HUSAI_SRUN_MPI:-pmix}
HUSAI_SRUN_FLAGS=${HUSAI_SRUN_FLAGS:-}
HUSAI_OUT=${HUSAI_OUT:-}

# Seeds run in parallel across ranks; a rank given several cores (--cpus-per-task) splits its SAE's step
# over them with OpenMP (HUSAI_THREADS; the results do not depend on the count). OpenBLAS runs one thread
# inside each: husai splits the encoder's product itself.
if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ "${SLURM_CPUS_PER_TASK}" -gt 1 ]; then
    HUSAI_THREADS=${HUSAI_THREADS:-${HUSAI_BLAS_THREADS:-$SLURM_CPUS_PER_TASK}}
fi
HUSAI_THREADS=${HUSAI_THREADS:-${HUSAI_BLAS_THREADS:-1}}
export HUSAI_THREADS OPENBLAS_NUM_THREADS=1

# Parallel HDF5 on NFS or Lustre may need file locking off; uncomment if opening data fails there.
# export HDF5_USE_FILE_LOCKING=FALSE
