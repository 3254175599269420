/* test_threads.c: one SAE's step split over OpenMP threads (HUSAI_THREADS) gives the same bits as one
 * thread. For every architecture, and for a decoder large enough to be decoded latent by latent, training
 * on 2 and 3 threads must reproduce the 1-thread parameters, Adam moments, losses and adaptive state
 * exactly (memcmp), over batches that span several encoder blocks, a short last batch, and model widths
 * with and without vector tails. The threaded forward's MSE is also checked against a naive
 * double-precision decode, so "equal" cannot mean "equally wrong". PWMCC's blocks and matched agreement's
 * pairs over threads: the same matrices bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "metrics/match.h"
#include "metrics/pwmcc.h"
#include "sae/model.h"
#include "sae/train.h"

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    assert_non_null(p);
    return p;
}

/* n rows of d: 0.2 + a sparse sum of 3 random directions + small noise (a mean for b_dec, structure for
 * the codes). */
static float *make_data(size_t n, int d, uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, "test-threads", 0);
    enum { ATOMS = 40 };
    float *atoms = xmalloc((size_t)ATOMS * d * sizeof(float));
    for (size_t i = 0; i < (size_t)ATOMS * d; i++)
        atoms[i] = (float)husai_rng_normal(&r);
    float *X = xmalloc(n * (size_t)d * sizeof(float));
    for (size_t row = 0; row < n; row++) {
        float *x = X + row * d;
        for (int i = 0; i < d; i++)
            x[i] = (float)(0.2 + 0.05 * husai_rng_normal(&r));
        for (int q = 0; q < 3; q++) {
            const float c = (float)(0.5 + husai_rng_uniform(&r));
            const float *a = atoms + (size_t)husai_rng_below(&r, ATOMS) * d;
            for (int i = 0; i < d; i++)
                x[i] += c * a[i] / (float)sqrt((double)d);
        }
    }
    free(atoms);
    return X;
}

/* What a run leaves behind that must not depend on the thread count. */
typedef struct {
    float *params, *adam_m, *adam_v;
    size_t n;
    double last_epoch_loss, coeff, threshold, last_l0;
    int64_t steps;
} outcome;

static outcome train_on(const float *X, size_t rows, int d, const husai_train_opts *o, int threads) {
    omp_set_num_threads(threads);
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, X, rows, d, o), HUSAI_OK);
    /* The batch must really run on that many threads, or the comparison below proves nothing. */
    assert_int_equal(t.batch.threads, threads);
    while (!husai_trainer_done(&t))
        assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
    outcome out = {.n = t.model.n_params,
                   .last_epoch_loss = t.last_epoch_loss,
                   .coeff = t.coeff,
                   .threshold = t.model.threshold,
                   .last_l0 = t.last_l0,
                   .steps = t.steps};
    const size_t bytes = out.n * sizeof(float);
    out.params = xmalloc(bytes);
    out.adam_m = xmalloc(bytes);
    out.adam_v = xmalloc(bytes);
    memcpy(out.params, t.model.params, bytes);
    memcpy(out.adam_m, t.adam.m, bytes);
    memcpy(out.adam_v, t.adam.v, bytes);
    husai_trainer_free(&t);
    return out;
}

static void outcome_free(outcome *o) {
    free(o->params);
    free(o->adam_m);
    free(o->adam_v);
}

static void assert_same(const outcome *a, const outcome *b, const char *label) {
    if (a->n != b->n || memcmp(a->params, b->params, a->n * sizeof(float)) ||
        memcmp(a->adam_m, b->adam_m, a->n * sizeof(float)) ||
        memcmp(a->adam_v, b->adam_v, a->n * sizeof(float)) ||
        memcmp(&a->last_epoch_loss, &b->last_epoch_loss, sizeof(double)) ||
        memcmp(&a->coeff, &b->coeff, sizeof(double)) ||
        memcmp(&a->threshold, &b->threshold, sizeof(double)) ||
        memcmp(&a->last_l0, &b->last_l0, sizeof(double)) || a->steps != b->steps) {
        size_t first = 0;
        while (first < a->n && first < b->n && !memcmp(a->params + first, b->params + first, sizeof(float)))
            first++;
        fail_msg("%s: threaded training differs from 1 thread (first differing parameter %zu of %zu; loss "
                 "%.17g vs %.17g)",
                 label, first, a->n, a->last_epoch_loss, b->last_epoch_loss);
    }
}

/* Trains o on 1, 2 and 3 threads and asserts all three agree bit for bit. */
static void check_threads(const float *X, size_t rows, int d, const husai_train_opts *o, const char *label) {
    outcome one = train_on(X, rows, d, o, 1);
    assert_true(isfinite(one.last_epoch_loss));
    for (int threads = 2; threads <= 3; threads++) {
        outcome many = train_on(X, rows, d, o, threads);
        assert_same(&one, &many, label);
        outcome_free(&many);
    }
    outcome_free(&one);
}

static husai_train_opts base_opts(husai_arch arch) {
    husai_train_opts o = husai_train_defaults();
    o.arch = arch;
    o.d_sae = 96;
    o.k = 6;
    o.epochs = 2;
    o.batch_size = 1100; /* encoder blocks of 512, 512 and 76 rows; threaded backward */
    o.lr = 2e-3;
    o.seed = 5;
    o.n_prefixes = 3;
    o.bandwidth = 0.05;
    return o;
}

/* 2300 rows: batches of 1100, 1100 and a short 100 (whose backward runs on one thread). d = 75 has a
 * 64-wide tile, an 8-wide one and 3 scalar elements; d = 64 has no tails. */
static void test_every_arch(void **state) {
    (void)state;
    const size_t rows = 2300;
    for (int d = 64; d <= 75; d += 11) {
        float *X = make_data(rows, d, 3);
        for (int arch = 0; arch < HUSAI_ARCH_COUNT; arch++) {
            husai_train_opts o = base_opts((husai_arch)arch);
            char label[64];
            snprintf(label, sizeof label, "%s, d_model %d", husai_arch_name(arch), d);
            check_threads(X, rows, d, &o, label);
        }
        /* TopK with every option that adds work outside the split loops: ReLU, b_dec, AuxK, projection. */
        husai_train_opts o = base_opts(HUSAI_ARCH_TOPK);
        o.relu = 1;
        o.decoder_bias = 1;
        o.aux_k = 12;
        o.dead_after = 200;
        o.grad_projection = 1;
        check_threads(X, rows, d, &o, "topk + relu + decoder bias + AuxK + projection");
        free(X);
    }
}

/* A decoder over 16 MiB is decoded latent by latent with its columns split over threads; matryoshka adds
 * the per-prefix snapshots on that path. */
static void test_large_decoder(void **state) {
    (void)state;
    const int d = 64;
    const size_t rows = 96;
    float *X = make_data(rows, d, 4);
    const husai_arch archs[] = {HUSAI_ARCH_TOPK, HUSAI_ARCH_MATRYOSHKA};
    for (int a = 0; a < 2; a++) {
        husai_train_opts o = husai_train_defaults();
        o.arch = archs[a];
        o.d_sae = 65600; /* 64 x 65600 floats = 16.8 MB */
        o.k = 8;
        o.epochs = 1;
        o.batch_size = 48;
        o.seed = 9;
        o.decoder_bias = a == 0;
        o.n_prefixes = 4;
        check_threads(X, rows, d, &o, husai_arch_name(archs[a]));
    }
    free(X);
}

/* The threaded forward's MSE (rows split over 3 threads, per-row sums added in row order) against a
 * naive dense decode in double precision: relative error below 1e-5. */
static void test_threaded_mse_vs_naive(void **state) {
    (void)state;
    const int d = 75, n = 1100;
    float *X = make_data((size_t)n, d, 6);
    omp_set_num_threads(3);
    husai_sae m;
    husai_sae_spec spec = husai_sae_spec_topk(d, 96, 6);
    assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
    husai_sae_init(&m, 2);
    husai_sae_batch b;
    assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
    assert_int_equal(b.threads, 3);
    husai_sae_loss loss;
    assert_int_equal(husai_sae_forward(&m, X, n, HUSAI_SAE_TRAIN, 0.0, &b, &loss), HUSAI_OK);
    double sse = 0.0;
    for (int r = 0; r < n; r++) {
        assert_int_equal(b.row_ptr[r + 1] - b.row_ptr[r], 6);
        for (int i = 0; i < d; i++) {
            double xh = 0.0;
            for (int64_t a = b.row_ptr[r]; a < b.row_ptr[r + 1]; a++)
                xh += (double)b.val[a] * m.W_dec[(size_t)b.idx[a] * d + i];
            const double e = xh - X[(size_t)r * d + i];
            sse += e * e;
        }
    }
    const double naive = sse / ((double)n * d);
    assert_true(fabs(loss.mse - naive) <= 1e-5 * naive);
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
    free(X);
}

/* PWMCC with its row blocks spread over 3 threads equals the 1-thread matrix bit for bit (700 features:
 * blocks of 256, 256 and 188), and pair by pair equals husai_pwmcc_pair. */
static void test_pwmcc_threads(void **state) {
    (void)state;
    enum { S = 3, D = 24, N = 700 };
    float *dec = xmalloc((size_t)S * D * N * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(40 + s, D, N, dec + (size_t)s * D * N);
    double one[S * S], three[S * S];
    omp_set_num_threads(1);
    assert_int_equal(husai_pwmcc_matrix(dec, S, D, N, one), HUSAI_OK);
    omp_set_num_threads(3);
    assert_int_equal(husai_pwmcc_matrix(dec, S, D, N, three), HUSAI_OK);
    assert_memory_equal(one, three, sizeof one);
    double pair;
    assert_int_equal(husai_pwmcc_pair(dec, N, dec + (size_t)2 * D * N, N, D, &pair), HUSAI_OK);
    assert_memory_equal(&pair, &one[2], sizeof pair);
    assert_true(one[1] > 0.0 && one[1] < 1.0);
    free(dec);
}

/* Matched agreement's pairs over 3 threads equal 1 thread's, and 3 parts (as 3 ranks compute them) sum to
 * the whole matrix. */
static void test_match_threads_and_parts(void **state) {
    (void)state;
    enum { S = 4, D = 16, N = 60 };
    float *dec = xmalloc((size_t)S * D * N * sizeof(float)), *F = xmalloc((size_t)S * D * N * sizeof(float));
    for (int s = 0; s < S; s++) {
        husai_pwmcc_random_decoder(70 + s, D, N, dec + (size_t)s * D * N);
        husai_normalized_feature_rows(dec + (size_t)s * D * N, D, N, F + (size_t)s * D * N);
    }
    double cos1[S * S], frac1[S * S], cos3[S * S], frac3[S * S], pc[S * S], pf[S * S];
    omp_set_num_threads(1);
    assert_int_equal(husai_match_matrix(dec, S, D, N, cos1, frac1), HUSAI_OK);
    omp_set_num_threads(3);
    assert_int_equal(husai_match_matrix(dec, S, D, N, cos3, frac3), HUSAI_OK);
    assert_memory_equal(cos1, cos3, sizeof cos1);
    assert_memory_equal(frac1, frac3, sizeof frac1);
    double sc[S * S] = {0}, sf[S * S] = {0};
    for (int part = 0; part < 3; part++) {
        assert_int_equal(husai_match_rows_part(F, S, D, N, part, 3, pc, pf), HUSAI_OK);
        for (int i = 0; i < S * S; i++) {
            sc[i] += pc[i];
            sf[i] += pf[i];
        }
    }
    assert_memory_equal(sc, cos1, sizeof sc);
    assert_memory_equal(sf, frac1, sizeof sf);
    assert_true(cos1[1] > 0.0 && cos1[1] < 1.0);
    free(dec);
    free(F);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_arch),
        cmocka_unit_test(test_large_decoder),
        cmocka_unit_test(test_threaded_mse_vs_naive),
        cmocka_unit_test(test_pwmcc_threads),
        cmocka_unit_test(test_match_threads_and_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
