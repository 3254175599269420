/* train.h: the training loop for one seed's TopK SAE on an in-memory dataset.
 * A trainer is a resumable state machine (model, Adam moments, epoch, batch position);
 * the data order of epoch e comes from stream (seed, "shuffle", e), so the state needs
 * no RNG bytes and a seed's result is the same on any rank. No MPI here.
 * defines: husai_train_opts, husai_train_stats, husai_trainer, husai_trainer_*, husai_train_topk */
#ifndef HUSAI_SAE_TRAIN_H
#define HUSAI_SAE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sae/adam.h"
#include "sae/align.h"
#include "sae/topk.h"

typedef struct {
    int d_sae, k, epochs, batch_size;
    double lr, beta1, beta2, eps; /* double, as PyTorch holds them, so the float32 update matches */
    uint64_t seed;
    /* Consistency penalty lambda * (1 - mean_i max_j |cos(D_i, R_j)|); off when lambda == 0 or ref NULL. */
    double lambda;
    const float *ref_rows; /* (ref_n, d_model) unit reference features, borrowed */
    int ref_n;
    /* Train on X's rows row_index[0..n_rows) only (a held-out split); NULL: rows 0..n_rows-1. */
    const uint32_t *row_index;
} husai_train_opts;

/* HUSAI's recipe: d_sae 128, k 32, 25 epochs, batch 2048, Adam(3e-4, 0.9, 0.999, 1e-8). */
husai_train_opts husai_train_defaults(void);

/* Checks every field (k in [1, d_sae], batch >= 1, epochs >= 1, lr > 0 and finite, betas in [0,1), eps > 0).
 */
husai_status husai_train_opts_check(const husai_train_opts *o);

typedef struct {
    int64_t steps;
    double last_epoch_loss; /* mean batch loss over the final epoch */
    double seconds;
} husai_train_stats;

typedef struct {
    husai_train_opts opts;
    const float *X; /* (n_rows, d_model), borrowed */
    size_t n_rows;
    int d_model;
    husai_topk model;
    husai_adam adam;
    husai_topk_batch batch;
    float *grad;          /* like model.params */
    float *xb;            /* (batch_size, d_model) gathered rows */
    uint32_t *perm;       /* (n_rows) current epoch's order */
    float *align_scratch; /* consistency penalty only */
    int32_t *align_best;  /* (d_sae) */
    float *align_cos;     /* (d_sae) */
    int epoch;            /* epoch in progress */
    size_t pos;           /* next row of perm to consume */
    int64_t steps;
    double epoch_loss_sum;
    int64_t epoch_batches;
    double last_epoch_loss;
} husai_trainer;

/* Prepares training of a freshly initialised model on X; X must stay alive while the trainer does. */
husai_status husai_trainer_init(husai_trainer *t, const float *X, size_t n_rows, int d_model,
                                const husai_train_opts *o);

/* Takes one optimiser step (one batch); returns HUSAI_ERR_NUMERIC if the loss is not finite. */
husai_status husai_trainer_step(husai_trainer *t);

/* True once every epoch has been consumed. */
int husai_trainer_done(const husai_trainer *t);

/* Re-derives the current epoch's row order and rewinds to its start (used when restoring a checkpoint). */
void husai_trainer_restart_epoch(husai_trainer *t);

/* Releases everything the trainer owns, including the model unless it was taken. */
void husai_trainer_free(husai_trainer *t);

/* Trains one SAE to completion; on success *out owns the trained model (free with husai_topk_free). */
husai_status husai_train_topk(const float *X, size_t n_rows, int d_model, const husai_train_opts *o,
                              husai_topk *out, husai_train_stats *stats);

#endif
