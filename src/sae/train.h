/* train.h: the training loop for one seed's SAE (any architecture) on an in-memory dataset.
 * A trainer is a resumable state machine (model, Adam moments, epoch, batch position);
 * the data order of epoch e comes from stream (seed, "shuffle", e), so the state needs
 * no RNG bytes and a seed's result is the same on any rank. No MPI here.
 * defines: husai_train_opts, husai_train_defaults, husai_train_opts_check, husai_train_spec,
 *          husai_train_stats, husai_trainer, husai_trainer_*, husai_train_sae */
#ifndef HUSAI_SAE_TRAIN_H
#define HUSAI_SAE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sae/adam.h"
#include "sae/align.h"
#include "sae/model.h"

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
    /* Architecture (model.h, arch.h). The data-dependent init is done here and by the architecture's
     * train_init hook: b_dec starts at the training rows' mean; jumprelu's theta_j at the (k / d_sae)
     * upper quantile of latent j's pre-activations on the first batch, so every architecture starts near
     * L0 = k. */
    husai_arch arch;
    const husai_arch_ops *ops; /* NULL: arch's registered table; else this one (sae/arch.h) */
    int relu, decoder_bias, n_prefixes;
    double bandwidth;
    /* relu_l1, jumprelu: weight of the sparsity term. 0 adapts it after every step (a multiplicative
     * controller, at most 5% per step) so the batch L0 tracks k: architectures compare at matched L0. */
    double sparsity_coeff;
    int aux_k;           /* AuxK: dead latents that model the residual (0: off) */
    double aux_coeff;    /* AuxK loss weight (Gao et al.: 1/32) */
    double dead_after;   /* rows without firing after which a latent counts as dead (0: one epoch) */
    int grad_projection; /* drop each decoder gradient row's component along its (unit) column */
    /* Streaming: the most rows any husai_trainer_set_rows call will pass (0: the n_rows of init). */
    size_t max_rows;
    /* husai_precision (sae/bf16.h): HUSAI_PRECISION_BF16 runs the encoder on the bf16 path when the rule is
     * eligible (husai_bf16_eligible), else fp32; anything else is fp32 (auto is resolved before training). */
    int precision;
    int bf16_emulate; /* bf16: the emulated product even where oneDNN is available (tests) */
} husai_train_opts;

/* HUSAI's recipe: d_sae 128, k 32, 25 epochs, batch 2048, Adam(3e-4, 0.9, 0.999, 1e-8). */
husai_train_opts husai_train_defaults(void);

/* Checks every field (k in [1, d_sae], batch >= 1, epochs >= 1, lr > 0 and finite, betas in [0,1), eps > 0,
 * architecture options). */
husai_status husai_train_opts_check(const husai_train_opts *o);

typedef struct {
    int64_t steps;
    double last_epoch_loss; /* mean batch loss over the final epoch */
    double seconds;
} husai_train_stats;

typedef struct husai_trainer {
    husai_train_opts opts;
    const float *X; /* (n_rows, d_model), borrowed */
    size_t n_rows;
    int d_model;
    husai_sae model;
    husai_adam adam;
    double coeff;          /* current sparsity weight (relu_l1, jumprelu) */
    double coeff_unit;     /* its data-derived starting value, the controller's step unit */
    double *rows_since;    /* (d_sae) AuxK: training rows since each latent last fired */
    unsigned char *dead;   /* (d_sae) AuxK scratch */
    double last_l0;        /* batch L0 of the latest step */
    double thr_sum, thr_n; /* batchtopk: this epoch's sum and count of batch minima (the threshold) */
    husai_sae_batch batch;
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

/* Prepares training of a freshly initialised model on X; X must stay alive while the trainer does. Its
 * steps run on omp_get_max_threads() threads at this call (t->batch.threads), bitwise the same for any
 * count. */
husai_status husai_trainer_init(husai_trainer *t, const float *X, size_t n_rows, int d_model,
                                const husai_train_opts *o);

/* Takes one optimiser step (one batch); returns HUSAI_ERR_NUMERIC if the loss is not finite. */
husai_status husai_trainer_step(husai_trainer *t);

/* True once every epoch has been consumed. */
int husai_trainer_done(const husai_trainer *t);

/* Streaming: trains the current epoch on rows row_index[0..n_rows) of X (NULL: X's first n_rows) instead,
 * with a fresh order from (seed, "shuffle", epoch); n_rows must be in [1, max_rows]. A streaming run
 * sets opts.epochs to epochs x chunks, so each of these "virtual epochs" is one chunk. */
husai_status husai_trainer_set_rows(husai_trainer *t, const float *X, size_t n_rows,
                                    const uint32_t *row_index);

/* Re-derives the current epoch's row order and rewinds to its start (used when restoring a checkpoint). */
void husai_trainer_restart_epoch(husai_trainer *t);

/* Releases everything the trainer owns, including the model unless it was taken. */
void husai_trainer_free(husai_trainer *t);

/* The model spec the options describe for data of width d_model. */
husai_sae_spec husai_train_spec(const husai_train_opts *o, int d_model);

/* Number of doubles of trainer state beyond parameters and Adam moments (for checkpoints). */
size_t husai_trainer_state_len(const husai_trainer *t);

/* Copies that state out to buf (husai_trainer_state_len doubles). */
void husai_trainer_state_get(const husai_trainer *t, double *buf);

/* Restores that state from buf (husai_trainer_state_len doubles). */
void husai_trainer_state_set(husai_trainer *t, const double *buf);

/* Trains one SAE to completion; on success *out owns the trained model (free with husai_sae_free). */
husai_status husai_train_sae(const float *X, size_t n_rows, int d_model, const husai_train_opts *o,
                             husai_sae *out, husai_train_stats *stats);

#endif
