/* phase.h: one training phase of a protocol, run over all ranks.
 * A phase is conditions x seeds = tasks (plan.h). Before training, rank 0 creates every condition's
 * parameter datasets in results.h5; each rank trains its tasks, printing its own progress lines while they
 * train (sweep/progress.h; rank 0 prints a line as any task finishes, whichever rank trained it), and
 * writes each finished task's parameters into its rows of results.h5 itself (mpi/paramfile.h), keeping
 * only its densities. Per condition, one gather brings the seeds' metrics and densities to rank 0; PWMCC,
 * matched agreement and the best matches are spread over all ranks, each node reading the decoders back
 * from results.h5 into its window; rank 0 computes the random baseline, the consensus features and the
 * bootstrap CIs, reading a decoder at a time where it needs one. No rank holds the S seeds' parameters. A
 * failure one rank meets while training (a refused or unwritable checkpoint, a trainer that cannot start or
 * diverges) stops every rank and is agreed at the end of the training; other failures only one rank sees end
 * the job (husai_mpi_die). defines: husai_run_ctx, husai_phase, husai_phase_run, husai_train_reference */
#ifndef HUSAI_SWEEP_PHASE_H
#define HUSAI_SWEEP_PHASE_H

#include <mpi.h>
#include <stdint.h>

#include "config/config.h"
#include "common/split.h"
#include "mpi/dataset.h"
#include "report/results.h"

typedef struct {
    const husai_config *cfg;
    husai_dataset *ds; /* not const: a streamed dataset loads chunks into its window */
    int reverse_order; /* run each rank's tasks last-first (results must not change) */
    MPI_Comm comm;
    const char *ckpt_dir;      /* where tasks checkpoint (shared by all ranks), or NULL for none */
    uint64_t config_hash;      /* recorded in and checked against every checkpoint */
    double ckpt_every_seconds; /* periodic checkpoints while training; <= 0: only on stop and at task end */
    const husai_split *split;  /* training and held-out rows of ds, shared by every task */
    const float *gt_dict; /* (gt_atoms, d_model) true dictionary on every rank (data.dictionary), or NULL */
    int gt_atoms;
    husai_results_h5 *sink; /* rank 0: results.h5 (required), which takes each condition as it completes */
    int *keep_checkpoints;  /* or NULL: set to 1 on every rank by a failure after which the same
                             * configuration can resume (disk full, out of memory), not the inputs' fault */
    int precision; /* husai_precision the tasks train in, train.precision with auto resolved (fp32 or bf16) */
} husai_run_ctx;

typedef struct {
    const char *phase; /* label of the results' phase field ("" in a plain sweep) */
    int prefix_names;  /* result name = "<phase>/<condition name>" (else the condition name as is) */
    const husai_condition *conds;
    int n_conds;
    const uint64_t *seeds;
    int n_seeds;
    const float *ref_rows; /* (ref_n, d_model) unit reference features on every rank, or NULL */
    int ref_n;
} husai_phase;

/* Collective. Trains the phase's tasks (resuming any checkpointed ones) and, on rank 0, fills
 * res[0..n_conds) (zeroed by the caller) with every per-condition metric; free each with
 * husai_condition_result_free. Checkpoints the phase will resume are validated first. Returns, agreed on
 * every rank: HUSAI_OK when the phase completed; HUSAI_STOPPED if a stop was requested on any rank (tasks
 * in progress were checkpointed and nothing was gathered); else the error (message set on every rank)
 * of the lowest rank that refused a checkpoint or failed to train or checkpoint a task. */
husai_status husai_phase_run(const husai_run_ctx *ctx, const husai_phase *ph, husai_condition_result *res);

/* Collective. Rank 0 trains the reference SAE (condition cond, seed) and broadcasts its unit feature
 * rows into ref_rows (d_sae x d_model, allocated by every caller); on rank 0 also writes the decoder in
 * file layout to ref_decoder ([d_model, d_sae]) and its metrics to *m. Returns, agreed on every rank,
 * HUSAI_OK, HUSAI_STOPPED (the reference is then checkpointed) or rank 0's training failure. */
husai_status husai_train_reference(const husai_run_ctx *ctx, const husai_condition *cond, uint64_t seed,
                                   float *ref_rows, float *ref_decoder, husai_seed_metrics *m);

#endif
