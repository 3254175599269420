/* run.h: one `husai sweep` run, from the staged run directory to the results moved into place, as a list
 * of steps over one husai_sweep (run.c): stage the run directory (rank 0; refuses a live run or a
 * --resume that names no interrupted one), open and split the dataset and load the true dictionary,
 * open results.h5, run the protocol, write the results and commit the run directory. The command line
 * (cli/sweep_cmd.c) fills in the configuration and provenance, calls husai_sweep_run and says the error.
 * Every failure is agreed, so all ranks leave together.
 * defines: husai_sweep, husai_sweep_run, husai_sweep_release, husai_sweep_discard, husai_sweep_unlock */
#ifndef HUSAI_SWEEP_RUN_H
#define HUSAI_SWEEP_RUN_H

#include <mpi.h>
#include <stdint.h>

#include "common/split.h"
#include "config/config.h"
#include "mpi/dataset.h"
#include "report/rundir.h"
#include "sweep/phase.h"
#include "sweep/protocols.h"

typedef struct {
    /* filled in by the caller */
    MPI_Comm comm;
    int rank, size;
    double t_begin;           /* MPI_Wtime() when the command began */
    const char *config_path;  /* as given, for the --resume hint */
    const char *resume;       /* --resume RUN_DIR as given, or NULL */
    const char *run_id_arg;   /* --run-id, or NULL */
    int force, reverse_order; /* --force, --task-order reverse */
    const char *version, *commit;
    const char *command; /* the command line, for provenance */
    const char *hosts;   /* distinct host names (rank 0) */
    int n_hosts, threads;
    husai_config cfg; /* validated */
    uint64_t config_hash;
    char resume_id[256]; /* the run id --resume names */
    /* acquired by husai_sweep_run, released by husai_sweep_release */
    char run_id[256];
    husai_rundir rd;
    char ckpt_dir[4200];
    int have_ds;
    husai_dataset ds;
    husai_split split;
    float *gt_dict;
    int gt_atoms;
    int keep_checkpoints;
    int keep_on_fail; /* a failure from here on keeps a staging directory that holds checkpoints */
    int stopped;      /* the protocol stopped on request: the staging directory stays for --resume */
    husai_run_ctx ctx;
    husai_protocol_output out;
    /* train.precision as resolved (auto: by a calibration agreed on every rank), for the log and results */
    int precision;
    double calib_fp32, calib_bf16; /* rank 0's calibration (seconds per batch; 0: none ran) */
    int64_t bf16_base[3];          /* husai_bf16_totals after the calibration */
} husai_sweep;

/* Collective. Runs the sweep s describes (zeroed past the caller's fields); returns the status agreed on
 * every rank (HUSAI_STOPPED, with s->stopped set, after a stop request). */
husai_status husai_sweep_run(husai_sweep *s);

/* Releases what husai_sweep_run acquired (safe on a zeroed or failed run). */
void husai_sweep_release(husai_sweep *s);

/* After a failure has been said: rank 0 removes the staging directory, unless its checkpoints let the
 * same configuration --resume. */
void husai_sweep_discard(husai_sweep *s);

/* Lets go of the run directory's lock (held for the life of the run, so a second run is refused). */
void husai_sweep_unlock(void);

#endif
