#define _POSIX_C_SOURCE 200809L
#include "sae/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"

husai_train_opts husai_train_defaults(void) {
    return (husai_train_opts){.d_sae = 128,
                              .k = 32,
                              .epochs = 25,
                              .batch_size = 2048,
                              .lr = 3e-4,
                              .beta1 = 0.9,
                              .beta2 = 0.999,
                              .eps = 1e-8,
                              .seed = 42};
}

husai_status husai_train_opts_check(const husai_train_opts *o) {
    if (o->d_sae < 1) return husai_error(HUSAI_ERR_ARG, "d_sae=%d must be >= 1", o->d_sae);
    if (o->k < 1 || o->k > o->d_sae)
        return husai_error(HUSAI_ERR_ARG, "k=%d must be between 1 and d_sae=%d", o->k, o->d_sae);
    if (o->epochs < 1) return husai_error(HUSAI_ERR_ARG, "epochs=%d must be >= 1", o->epochs);
    if (o->batch_size < 1) return husai_error(HUSAI_ERR_ARG, "batch_size=%d must be >= 1", o->batch_size);
    if (!(o->lr > 0.0) || !isfinite(o->lr)) return husai_error(HUSAI_ERR_ARG, "lr=%g must be > 0", o->lr);
    if (!(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0))
        return husai_error(HUSAI_ERR_ARG, "Adam betas (%g, %g) must lie in [0, 1)", o->beta1, o->beta2);
    if (!(o->eps > 0.0)) return husai_error(HUSAI_ERR_ARG, "Adam eps=%g must be > 0", o->eps);
    if (!(o->lambda >= 0.0) || !isfinite(o->lambda))
        return husai_error(HUSAI_ERR_ARG, "lambda=%g must be >= 0", o->lambda);
    if (o->lambda > 0.0 && (!o->ref_rows || o->ref_n < 1))
        return husai_error(HUSAI_ERR_ARG, "lambda=%g needs a reference decoder", o->lambda);
    return HUSAI_OK;
}

static void new_epoch_order(husai_trainer *t) {
    husai_rng r;
    husai_rng_init(&r, t->opts.seed, HUSAI_RNG_SHUFFLE, (uint64_t)t->epoch);
    husai_rng_permutation(&r, t->perm, t->n_rows);
    t->pos = 0;
    t->epoch_loss_sum = 0.0;
    t->epoch_batches = 0;
}

husai_status husai_trainer_init(husai_trainer *t, const float *X, size_t n_rows, int d_model,
                                const husai_train_opts *o) {
    memset(t, 0, sizeof *t);
    husai_status st = husai_train_opts_check(o);
    if (st) return st;
    if (n_rows < 1) return husai_error(HUSAI_ERR_DATA, "the dataset has no rows");
    if (n_rows > UINT32_MAX) return husai_error(HUSAI_ERR_DATA, "%zu rows exceed the 2^32 row limit", n_rows);
    t->opts = *o;
    t->X = X;
    t->n_rows = n_rows;
    t->d_model = d_model;
    const int cap = (size_t)o->batch_size < n_rows ? o->batch_size : (int)n_rows;
    if ((st = husai_topk_alloc(&t->model, d_model, o->d_sae, o->k))) goto fail;
    husai_topk_init(&t->model, o->seed);
    if ((st = husai_adam_alloc(&t->adam, t->model.n_params, o->lr, o->beta1, o->beta2, o->eps))) goto fail;
    if ((st = husai_topk_batch_alloc(&t->batch, &t->model, cap))) goto fail;
    t->grad = malloc(t->model.n_params * sizeof(float));
    t->xb = malloc((size_t)cap * (size_t)d_model * sizeof(float));
    t->perm = malloc(n_rows * sizeof(uint32_t));
    if (o->lambda > 0.0) {
        t->align_scratch = malloc(husai_align_scratch_floats(o->ref_n) * sizeof(float));
        t->align_best = malloc((size_t)o->d_sae * sizeof(int32_t));
        t->align_cos = malloc((size_t)o->d_sae * sizeof(float));
        if (!t->align_scratch || !t->align_best || !t->align_cos) {
            st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate consistency-penalty buffers");
            goto fail;
        }
    }
    if (!t->grad || !t->xb || !t->perm) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate training buffers");
        goto fail;
    }
    new_epoch_order(t);
    return HUSAI_OK;
fail:
    husai_trainer_free(t);
    return st;
}

void husai_trainer_restart_epoch(husai_trainer *t) {
    new_epoch_order(t);
}

int husai_trainer_done(const husai_trainer *t) {
    return t->epoch >= t->opts.epochs;
}

husai_status husai_trainer_step(husai_trainer *t) {
    if (husai_trainer_done(t)) return HUSAI_OK;
    const int d = t->d_model;
    size_t n = t->n_rows - t->pos;
    if (n > (size_t)t->batch.cap) n = (size_t)t->batch.cap; /* the last batch of an epoch may be short */
    const uint32_t *rows = t->opts.row_index;
    for (size_t r = 0; r < n; r++) {
        const uint32_t p = t->perm[t->pos + r];
        memcpy(t->xb + r * d, t->X + (size_t)(rows ? rows[p] : p) * d, (size_t)d * sizeof(float));
    }
    double loss = husai_topk_forward(&t->model, t->xb, (int)n, &t->batch);
    double align = 0.0;
    if (t->opts.lambda > 0.0) {
        align = husai_align_rows(t->model.W_dec, t->model.d_sae, t->opts.ref_rows, t->opts.ref_n, d,
                                 t->align_best, t->align_cos, t->align_scratch);
        loss += t->opts.lambda * (1.0 - align);
    }
    if (!isfinite(loss))
        return husai_error(HUSAI_ERR_NUMERIC, "training diverged: loss is %g at step %lld (seed %llu, lr %g)",
                           loss, (long long)t->steps, (unsigned long long)t->opts.seed, t->opts.lr);
    memset(t->grad, 0, t->model.n_params * sizeof(float));
    husai_topk_backward(&t->model, t->xb, (int)n, &t->batch, t->grad);
    if (t->opts.lambda > 0.0) {
        float *gW_dec = t->grad + (size_t)t->model.d_sae * d + t->model.d_sae;
        husai_align_add_grad(t->model.W_dec, t->model.d_sae, t->opts.ref_rows, d, t->align_best, t->align_cos,
                             t->opts.lambda, gW_dec);
    }
    husai_adam_step(&t->adam, t->model.params, t->grad);
    husai_topk_normalize_decoder(&t->model);
    /* A finite loss can still come with an overflowing gradient; catch it at the step it happens.
     * O(n_params) per step is 1/batch of the encoder's cost. */
    for (size_t i = 0; i < t->model.n_params; i++)
        if (!isfinite(t->model.params[i]))
            return husai_error(HUSAI_ERR_NUMERIC,
                               "training diverged: parameters became NaN/Inf at step %lld (seed %llu, lr %g)",
                               (long long)t->steps, (unsigned long long)t->opts.seed, t->opts.lr);
    t->steps++;
    t->epoch_loss_sum += loss;
    t->epoch_batches++;
    t->pos += n;
    if (t->pos >= t->n_rows) {
        t->last_epoch_loss = t->epoch_loss_sum / (double)t->epoch_batches;
        t->epoch++;
        if (!husai_trainer_done(t)) new_epoch_order(t);
    }
    return HUSAI_OK;
}

void husai_trainer_free(husai_trainer *t) {
    if (!t) return;
    husai_topk_free(&t->model);
    husai_adam_free(&t->adam);
    husai_topk_batch_free(&t->batch);
    free(t->grad);
    free(t->xb);
    free(t->perm);
    free(t->align_scratch);
    free(t->align_best);
    free(t->align_cos);
    memset(t, 0, sizeof *t);
}

husai_status husai_train_topk(const float *X, size_t n_rows, int d_model, const husai_train_opts *o,
                              husai_topk *out, husai_train_stats *stats) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    husai_trainer t;
    husai_status st = husai_trainer_init(&t, X, n_rows, d_model, o);
    if (st) return st;
    while (!husai_trainer_done(&t))
        if ((st = husai_trainer_step(&t))) {
            husai_trainer_free(&t);
            return st;
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (stats) {
        stats->steps = t.steps;
        stats->last_epoch_loss = t.last_epoch_loss;
        stats->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    *out = t.model; /* hand the model over; the trainer no longer owns it */
    memset(&t.model, 0, sizeof t.model);
    husai_trainer_free(&t);
    return HUSAI_OK;
}
