#define _POSIX_C_SOURCE 200809L
#include "sae/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "sae/arch.h"
#include "sae/bf16.h"

husai_train_opts husai_train_defaults(void) {
    return (husai_train_opts){.d_sae = 128,
                              .k = 32,
                              .epochs = 25,
                              .batch_size = 2048,
                              .lr = 3e-4,
                              .beta1 = 0.9,
                              .beta2 = 0.999,
                              .eps = 1e-8,
                              .seed = 42,
                              .arch = HUSAI_ARCH_TOPK,
                              .n_prefixes = 4,
                              .bandwidth = 1e-3,
                              .aux_coeff = 1.0 / 32.0};
}

husai_sae_spec husai_train_spec(const husai_train_opts *o, int d_model) {
    return (husai_sae_spec){.arch = o->arch,
                            .ops = o->ops,
                            .d_model = d_model,
                            .d_sae = o->d_sae,
                            .k = o->k,
                            .relu = o->relu,
                            .decoder_bias = o->decoder_bias,
                            .n_prefixes = o->n_prefixes,
                            .bandwidth = o->bandwidth};
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
    if (!(o->sparsity_coeff >= 0.0) || !isfinite(o->sparsity_coeff))
        return husai_error(HUSAI_ERR_ARG, "sparsity_coeff=%g must be >= 0", o->sparsity_coeff);
    if (o->aux_k < 0 || o->aux_k > o->d_sae)
        return husai_error(HUSAI_ERR_ARG, "aux_k=%d must be between 0 and d_sae=%d", o->aux_k, o->d_sae);
    if (!(o->aux_coeff >= 0.0) || !isfinite(o->aux_coeff) || !(o->dead_after >= 0.0))
        return husai_error(HUSAI_ERR_ARG, "aux_coeff=%g and dead_after=%g must be >= 0", o->aux_coeff,
                           o->dead_after);
    const husai_sae_spec spec = husai_train_spec(o, 1);
    return husai_sae_spec_check(&spec);
}

static void new_epoch_order(husai_trainer *t) {
    husai_rng r;
    husai_rng_init(&r, t->opts.seed, HUSAI_RNG_SHUFFLE, (uint64_t)t->epoch);
    husai_rng_permutation(&r, t->perm, t->n_rows);
    t->pos = 0;
    t->epoch_loss_sum = 0.0;
    t->epoch_batches = 0;
}

/* Gathers rows perm[pos .. pos + n) of the training set into t->xb. */
static void gather_batch(husai_trainer *t, size_t n) {
    const int d = t->d_model;
    const uint32_t *rows = t->opts.row_index;
#pragma omp parallel for schedule(static) num_threads(t->batch.threads) if (n * (size_t)d >= 65536)
    for (size_t r = 0; r < n; r++) {
        const uint32_t p = t->perm[t->pos + r];
        /* Rows are 512 B-4 KB at random places of a dataset that other steps' data push out of cache
         * between epochs: fetch every line of the row 16 ahead (at 128 x 128 this took the gather from
         * 6.5% to 3.5% of a step). */
        if (r + 16 < n) {
            const uint32_t q = t->perm[t->pos + r + 16];
            const char *src = (const char *)(t->X + (size_t)(rows ? rows[q] : q) * d);
            for (size_t o = 0; o < (size_t)d * sizeof(float); o += 64)
                __builtin_prefetch(src + o);
        }
        memcpy(t->xb + r * d, t->X + (size_t)(rows ? rows[p] : p) * d, (size_t)d * sizeof(float));
    }
}

static size_t batch_rows(const husai_trainer *t) {
    const size_t n = t->n_rows - t->pos;
    return n > (size_t)t->batch.cap ? (size_t)t->batch.cap : n;
}

/* The data-dependent part of the init (see husai_train_opts): b_dec and the sparsity weight here, the
 * rest (thresholds, encoder scale) by the architecture. Every sum runs over the training rows in row
 * order, so the result does not depend on the rank. */
static husai_status data_init(husai_trainer *t) {
    const int d = t->d_model;
    const uint32_t *rows = t->opts.row_index;
    husai_sae *m = &t->model;
    double *mean = calloc((size_t)d, sizeof(double)), sq = 0.0;
    if (!mean) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the data mean");
    for (size_t r = 0; r < t->n_rows; r++) {
        const float *x = t->X + (size_t)(rows ? rows[r] : r) * d;
        for (int i = 0; i < d; i++) {
            mean[i] += x[i];
            sq += (double)x[i] * x[i];
        }
    }
    if (m->b_dec)
        for (int i = 0; i < d; i++)
            m->b_dec[i] = (float)(mean[i] / (double)t->n_rows);
    free(mean);
    /* Balances d(coeff * L1)/dz = coeff/n against the MSE's 2/(n d) <r, D_j> for a residual the size
     * of x; the controller (or the user's fixed value) takes it from there. */
    t->coeff =
        t->opts.sparsity_coeff > 0.0 ? t->opts.sparsity_coeff : 2.0 * sqrt(sq / ((double)t->n_rows * d)) / d;
    t->coeff_unit = t->coeff;
    return m->ops->train_init ? m->ops->train_init(t) : HUSAI_OK;
}

husai_status husai_trainer_scale_encoder(husai_trainer *t, size_t *n_out) {
    const int d = t->d_model, s = t->opts.d_sae;
    husai_sae *m = &t->model;
    const size_t n = *n_out = batch_rows(t);
    gather_batch(t, n);
    husai_sae_loss parts;
    husai_status st = husai_sae_forward(m, t->xb, (int)n, HUSAI_SAE_TRAIN, 0.0, &t->batch, &parts);
    if (st) return st;
    /* HUSAI's encoder scale starts with reconstructions several times the size of x when every positive
     * pre-activation fires. Scale W_enc (b_enc is 0, so the firing pattern stays). */
    double norm_x = 0.0, norm_h = 0.0;
    for (size_t r = 0; r < n; r++) {
        double sx = 0.0, sh = 0.0;
        for (int i = 0; i < d; i++) {
            const double c = m->b_dec ? m->b_dec[i] : 0.0;
            const double xv = t->xb[r * d + i] - c, hv = t->batch.x_hat[r * d + i] - c;
            sx += xv * xv;
            sh += hv * hv;
        }
        norm_x += sqrt(sx);
        norm_h += sqrt(sh);
    }
    if (norm_h > 0.0 && norm_x > 0.0) {
        const float scale = (float)(norm_x / norm_h);
        for (size_t i = 0; i < (size_t)s * d; i++)
            m->W_enc[i] *= scale;
        for (size_t i = 0; i < n * (size_t)s; i++)
            t->batch.pre[i] *= scale; /* what encode would now give (b_enc = 0) */
    }
    return HUSAI_OK;
}

double husai_trainer_sparsity_error(const husai_trainer *t, double l0) {
    const double u = 0.05 * (l0 - t->opts.k) / t->opts.k;
    return u > 0.05 ? 0.05 : u < -0.05 ? -0.05 : u;
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
    const size_t most = o->max_rows > n_rows ? o->max_rows : n_rows;
    const int cap = (size_t)o->batch_size < most ? o->batch_size : (int)most;
    const husai_sae_spec spec = husai_train_spec(o, d_model);
    if ((st = husai_sae_alloc(&t->model, &spec))) goto fail;
    husai_sae_init(&t->model, o->seed);
    if ((st = husai_adam_alloc(&t->adam, t->model.n_params, o->lr, o->beta1, o->beta2, o->eps))) goto fail;
    if ((st = husai_sae_batch_alloc(&t->batch, &t->model, cap))) goto fail;
    t->grad = malloc(t->model.n_params * sizeof(float));
    t->xb = malloc((size_t)cap * (size_t)d_model * sizeof(float));
    t->perm = malloc(most * sizeof(uint32_t));
    if (o->lambda > 0.0) {
        t->align_scratch = malloc(husai_align_scratch_floats(o->ref_n) * sizeof(float));
        t->align_best = malloc((size_t)o->d_sae * sizeof(int32_t));
        t->align_cos = malloc((size_t)o->d_sae * sizeof(float));
        if (!t->align_scratch || !t->align_best || !t->align_cos) {
            st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate consistency-penalty buffers");
            goto fail;
        }
    }
    if (o->aux_k > 0) {
        t->rows_since = calloc((size_t)o->d_sae, sizeof(double));
        t->dead = malloc((size_t)o->d_sae);
    }
    if (!t->grad || !t->xb || !t->perm || (o->aux_k > 0 && (!t->rows_since || !t->dead))) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate training buffers");
        goto fail;
    }
    new_epoch_order(t);
    if ((st = data_init(t))) goto fail;
    /* After the init, whose first-batch forward (relu_l1, jumprelu) reads every pre-activation: sgemm's. */
    if (o->precision == HUSAI_PRECISION_BF16 && husai_bf16_eligible(&t->model, o->aux_k) &&
        (st = husai_bf16_create(&t->batch, &t->model,
                                o->bf16_emulate ? HUSAI_BF16_EMULATED : HUSAI_BF16_BEST)))
        goto fail;
    return HUSAI_OK;
fail:
    husai_trainer_free(t);
    return st;
}

husai_status husai_trainer_set_rows(husai_trainer *t, const float *X, size_t n_rows,
                                    const uint32_t *row_index) {
    const size_t cap = t->opts.max_rows > 0 ? t->opts.max_rows : t->n_rows;
    if (n_rows < 1 || n_rows > cap || n_rows > UINT32_MAX)
        return husai_error(HUSAI_ERR_ARG, "a streamed chunk of %zu training rows does not fit (1..%zu)",
                           n_rows, cap);
    t->X = X;
    t->n_rows = n_rows;
    t->opts.row_index = row_index;
    if (t->opts.max_rows == 0) t->opts.max_rows = cap;
    new_epoch_order(t);
    return HUSAI_OK;
}

void husai_trainer_restart_epoch(husai_trainer *t) {
    new_epoch_order(t);
}

int husai_trainer_done(const husai_trainer *t) {
    return t->epoch >= t->opts.epochs;
}

/* AuxK's dead set before this batch, then the firing counters advanced by it. */
static void track_firing(husai_trainer *t, size_t n) {
    const int s = t->opts.d_sae;
    const double after = t->opts.dead_after > 0.0 ? t->opts.dead_after : (double)t->n_rows;
    for (int j = 0; j < s; j++) {
        t->dead[j] = t->rows_since[j] >= after;
        t->rows_since[j] += (double)n;
    }
    const husai_sae_batch *b = &t->batch;
    for (int64_t a = 0; a < b->row_ptr[b->n]; a++)
        if (b->val[a] != 0.0f) t->rows_since[b->idx[a]] = 0.0;
}

/* Projects each decoder gradient row off its unit column: the step then rotates the column instead of
 * growing it, which the renormalisation would undo anyway. */
static void project_decoder_grad(husai_trainer *t) {
    const int d = t->d_model, s = t->opts.d_sae;
    float *g = t->grad + (size_t)s * d + s;
#pragma omp parallel for schedule(static) num_threads(t->batch.threads) if ((size_t)s * d >= 65536)
    for (int j = 0; j < s; j++) {
        const float *u = t->model.W_dec + (size_t)j * d;
        float *gj = g + (size_t)j * d;
        double dot = 0.0;
        for (int i = 0; i < d; i++)
            dot += (double)gj[i] * u[i];
        for (int i = 0; i < d; i++)
            gj[i] -= (float)dot * u[i];
    }
}

husai_status husai_trainer_step(husai_trainer *t) {
    if (husai_trainer_done(t)) return HUSAI_OK;
    const int d = t->d_model;
    const size_t n = batch_rows(t); /* the last batch of an epoch may be short */
    gather_batch(t, n);
    husai_sae_loss parts;
    husai_status st =
        husai_sae_forward(&t->model, t->xb, (int)n, HUSAI_SAE_TRAIN, t->coeff, &t->batch, &parts);
    if (st) return st;
    /* The logged loss leaves the sparsity term out: its weight is adapted (and may be a negative
     * multiplier), so only the reconstruction, consistency and AuxK terms compare across steps. */
    double loss = parts.recon;
    if (!isfinite(parts.total)) loss = parts.total;
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
    husai_sae_backward(&t->model, t->xb, t->coeff, &t->batch, t->grad);
    if (t->opts.aux_k > 0) {
        track_firing(t, n);
        loss += t->opts.aux_coeff * husai_sae_auxk(&t->model, t->xb, t->dead, t->opts.aux_k,
                                                   t->opts.aux_coeff, &t->batch, t->grad);
    }
    if (t->opts.lambda > 0.0) {
        float *gW_dec = t->grad + (size_t)t->model.d_sae * d + t->model.d_sae;
        husai_align_add_grad(t->model.W_dec, t->model.d_sae, t->opts.ref_rows, d, t->align_best, t->align_cos,
                             t->opts.lambda, gW_dec);
    }
    if (t->opts.grad_projection) project_decoder_grad(t);
    husai_adam_step(&t->adam, t->model.params, t->grad, t->batch.threads);
    husai_sae_normalize_decoder(&t->model);
    /* A finite loss can still come with an overflowing gradient; catch it at the step it happens.
     * O(n_params) per step is 1/batch of the encoder's cost. */
    int bad = 0;
    const float *params = t->model.params;
    const size_t np = t->model.n_params;
    const int T = t->batch.threads;
#pragma omp parallel for reduction(| : bad) num_threads(T) if (np >= 65536)
    for (size_t i = 0; i < np; i++)
        bad |= !isfinite(params[i]);
    if (bad)
        return husai_error(HUSAI_ERR_NUMERIC,
                           "training diverged: parameters became NaN/Inf at step %lld (seed %llu, lr %g)",
                           (long long)t->steps, (unsigned long long)t->opts.seed, t->opts.lr);
    if (t->model.ops->train_step) t->model.ops->train_step(t, &parts);
    t->last_l0 = parts.l0;
    t->steps++;
    t->epoch_loss_sum += loss;
    t->epoch_batches++;
    t->pos += n;
    if (t->pos >= t->n_rows) {
        t->last_epoch_loss = t->epoch_loss_sum / (double)t->epoch_batches;
        t->thr_sum = t->thr_n = 0.0; /* the threshold keeps the finished epoch's estimate */
        t->epoch++;
        if (!husai_trainer_done(t)) new_epoch_order(t);
    }
    return HUSAI_OK;
}

size_t husai_trainer_state_len(const husai_trainer *t) {
    return 6 + (t->rows_since ? (size_t)t->opts.d_sae : 0);
}

void husai_trainer_state_get(const husai_trainer *t, double *buf) {
    buf[0] = t->coeff;
    buf[1] = t->model.threshold;
    buf[2] = t->last_l0;
    buf[3] = t->coeff_unit; /* data-derived at init: a streamed resume may init on another chunk */
    buf[4] = t->thr_sum;
    buf[5] = t->thr_n;
    if (t->rows_since) memcpy(buf + 6, t->rows_since, (size_t)t->opts.d_sae * sizeof(double));
}

void husai_trainer_state_set(husai_trainer *t, const double *buf) {
    t->coeff = buf[0];
    t->model.threshold = buf[1];
    t->last_l0 = buf[2];
    t->coeff_unit = buf[3];
    t->thr_sum = buf[4];
    t->thr_n = buf[5];
    if (t->rows_since) memcpy(t->rows_since, buf + 6, (size_t)t->opts.d_sae * sizeof(double));
}

void husai_trainer_free(husai_trainer *t) {
    if (!t) return;
    husai_sae_free(&t->model);
    husai_adam_free(&t->adam);
    husai_sae_batch_free(&t->batch);
    free(t->grad);
    free(t->xb);
    free(t->perm);
    free(t->align_scratch);
    free(t->align_best);
    free(t->align_cos);
    free(t->rows_since);
    free(t->dead);
    memset(t, 0, sizeof *t);
}

husai_status husai_train_sae(const float *X, size_t n_rows, int d_model, const husai_train_opts *o,
                             husai_sae *out, husai_train_stats *stats) {
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
