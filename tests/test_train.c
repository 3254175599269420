/* test_train.c: the training loop (src/sae/train.c) on synthetic sparse data, and the
 * reconstruction metrics (src/metrics/recon.c).
 * Data: a dictionary of 64 random unit atoms in 32 dimensions; every row is the sum of 3
 * distinct atoms with coefficients in [0.5, 2), so a 64-latent TopK SAE with k = 4 can
 * reconstruct it well. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "metrics/recon.h"
#include "model_util.h"
#include "sae/model.h"
#include "sae/train.h"

enum { N_ROWS = 2048, D_MODEL = 32, N_ATOMS = 64, N_ACTIVE = 3 };

static float *g_X; /* (N_ROWS, D_MODEL), built once in the group setup */

static void make_sparse_data(float *X, size_t n_rows, int d_model, uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, "test-train-data", 0);
    double *atoms = malloc((size_t)N_ATOMS * d_model * sizeof(double));
    assert_non_null(atoms);
    for (int a = 0; a < N_ATOMS; a++) {
        double *v = atoms + (size_t)a * d_model, ss = 0.0;
        for (int i = 0; i < d_model; i++) {
            v[i] = husai_rng_normal(&r);
            ss += v[i] * v[i];
        }
        for (int i = 0; i < d_model; i++)
            v[i] /= sqrt(ss);
    }
    for (size_t row = 0; row < n_rows; row++) {
        int chosen[N_ACTIVE];
        for (int c = 0; c < N_ACTIVE; c++) {
            int a, dup;
            do { /* distinct atoms per row */
                a = (int)husai_rng_below(&r, N_ATOMS);
                dup = 0;
                for (int e = 0; e < c; e++)
                    dup |= chosen[e] == a;
            } while (dup);
            chosen[c] = a;
        }
        double acc[D_MODEL] = {0};
        for (int c = 0; c < N_ACTIVE; c++) {
            const double coef = 0.5 + 1.5 * husai_rng_uniform(&r);
            for (int i = 0; i < d_model; i++)
                acc[i] += coef * atoms[(size_t)chosen[c] * d_model + i];
        }
        for (int i = 0; i < d_model; i++)
            X[row * d_model + i] = (float)acc[i];
    }
    free(atoms);
}

static int setup(void **state) {
    (void)state;
    g_X = malloc((size_t)N_ROWS * D_MODEL * sizeof(float));
    if (!g_X) return -1;
    make_sparse_data(g_X, N_ROWS, D_MODEL, 2024);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(g_X);
    g_X = NULL;
    return 0;
}

static husai_train_opts small_opts(void) {
    husai_train_opts o = husai_train_defaults();
    o.d_sae = 64;
    o.k = 4;
    o.epochs = 40;
    o.batch_size = 64;
    o.lr = 1e-3;
    o.seed = 5;
    return o;
}

/* Loss of a freshly initialised model (the state before the first step) on rows X[0..n). */
static double initial_loss(const husai_train_opts *o, const float *X, int n) {
    husai_sae m;
    husai_sae_batch b;
    assert_int_equal(alloc_topk(&m, D_MODEL, o->d_sae, o->k), HUSAI_OK);
    husai_sae_init(&m, o->seed);
    assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
    const double loss = forward_mse(&m, X, n, &b);
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
    return loss;
}

static double mean_square(const float *X, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)X[i] * X[i];
    return s / (double)n;
}

/* ---------- training ---------- */

static void test_loss_decreases(void **state) {
    (void)state;
    const husai_train_opts o = small_opts();
    husai_sae m;
    husai_train_stats st;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_OK);
    const double l_init = initial_loss(&o, g_X, N_ROWS);
    const double l_zero = mean_square(g_X, (size_t)N_ROWS * D_MODEL); /* loss of x_hat = 0 */

    /* the first step's loss is the initial model's loss on its first batch; the full-data loss of
     * the same model estimates it, and it is cross-checked on the trainer's own first batch below */
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, g_X, N_ROWS, D_MODEL, &o), HUSAI_OK);
    assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
    const double l_first = t.epoch_loss_sum;
    husai_trainer_free(&t);

    print_message(
        "loss: first step %.4g, initial full data %.4g, zero predictor %.4g, last epoch %.4g (%lld steps)\n",
        l_first, l_init, l_zero, st.last_epoch_loss, (long long)st.steps);
    assert_true(isfinite(st.last_epoch_loss));
    assert_true(st.last_epoch_loss < 0.5 * l_first);
    assert_true(st.last_epoch_loss < 0.5 * l_init);
    assert_true(st.last_epoch_loss < 0.5 * l_zero); /* learnt something beyond shrinking the output */
    assert_true(st.seconds >= 0.0);
    assert_int_equal(m.d_model, D_MODEL);
    assert_int_equal(m.d_sae, o.d_sae);
    assert_int_equal(m.k, o.k);
    for (size_t i = 0; i < m.n_params; i++)
        assert_true(isfinite(m.params[i]));
    for (int j = 0; j < m.d_sae; j++) { /* decoder renormalised after the last step */
        double ss = 0.0;
        for (int i = 0; i < D_MODEL; i++)
            ss += (double)m.W_dec[(size_t)j * D_MODEL + i] * m.W_dec[(size_t)j * D_MODEL + i];
        assert_true(fabs(sqrt(ss) - 1.0) < 1e-6);
    }
    husai_sae_free(&m);
}

static void test_same_seed_bitwise_other_seed_differs(void **state) {
    (void)state;
    husai_train_opts o = small_opts();
    o.epochs = 3;
    husai_sae a, b, c;
    husai_train_stats sa, sb, sc;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &a, &sa), HUSAI_OK);
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &b, &sb), HUSAI_OK);
    o.seed += 1;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &c, &sc), HUSAI_OK);
    assert_int_equal(a.n_params, b.n_params);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    assert_true(sa.last_epoch_loss == sb.last_epoch_loss);
    assert_true(memcmp(a.params, c.params, a.n_params * sizeof(float)) != 0);
    husai_sae_free(&a);
    husai_sae_free(&b);
    husai_sae_free(&c);
}

/* The step-by-step trainer and husai_train_sae are the same computation. */
static void test_trainer_matches_train_topk(void **state) {
    (void)state;
    husai_train_opts o = small_opts();
    o.epochs = 2;
    husai_sae a;
    husai_train_stats sa;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &a, &sa), HUSAI_OK);
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, g_X, N_ROWS, D_MODEL, &o), HUSAI_OK);
    int64_t steps = 0;
    while (!husai_trainer_done(&t)) {
        assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
        steps++;
    }
    assert_int_equal(husai_trainer_step(&t), HUSAI_OK); /* a step after the end does nothing */
    assert_int_equal(t.steps, steps);
    assert_int_equal(steps, sa.steps);
    assert_memory_equal(t.model.params, a.params, a.n_params * sizeof(float));
    husai_trainer_free(&t);
    husai_sae_free(&a);
}

static void test_step_count(void **state) {
    (void)state;
    struct {
        size_t n_rows;
        int batch, epochs;
    } cases[] = {
        {2000, 128, 3}, /* 2000 = 15 * 128 + 80: a short last batch every epoch */
        {2048, 128, 2}, /* exact multiple */
        {1000, 999, 2}, /* one full batch and one of a single row */
        {100, 4096, 3}, /* batch larger than the dataset: one step per epoch */
        {1, 1, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        husai_train_opts o = small_opts();
        o.batch_size = cases[c].batch;
        o.epochs = cases[c].epochs;
        husai_sae m;
        husai_train_stats st;
        assert_int_equal(husai_train_sae(g_X, cases[c].n_rows, D_MODEL, &o, &m, &st), HUSAI_OK);
        const int64_t per_epoch =
            (int64_t)((cases[c].n_rows + (size_t)o.batch_size - 1) / (size_t)o.batch_size);
        assert_int_equal(st.steps, (int64_t)o.epochs * per_epoch);
        husai_sae_free(&m);
    }
}

static void test_bad_options(void **state) {
    (void)state;
    husai_sae m;
    husai_train_stats st;
    husai_train_opts o;

    o = small_opts();
    o.k = o.d_sae + 1;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.k = 0;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.batch_size = 0;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.lr = 0.0;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.lr = -1e-3;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.lr = NAN;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.epochs = 0;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.d_sae = 0;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.beta2 = 1.0f;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    o = small_opts();
    o.eps = 0.0f;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_ERR_ARG);
    /* the defaults themselves are valid */
    o = husai_train_defaults();
    assert_int_equal(husai_train_opts_check(&o), HUSAI_OK);
    assert_int_equal(o.d_sae, 128);
    assert_int_equal(o.k, 32);
    assert_int_equal(o.batch_size, 2048);
}

static void test_divergence_reported(void **state) {
    (void)state;
    const size_t n = 512;
    float *X = malloc(n * D_MODEL * sizeof(float));
    assert_non_null(X);
    memcpy(X, g_X, n * D_MODEL * sizeof(float));
    /* 1e30 is finite in float, but the gradient it produces (~1e30 times an O(1e27) error)
     * overflows to inf, Adam turns that into NaN parameters and the next loss is not finite. */
    X[77 * D_MODEL + 5] = 1e30f;
    husai_train_opts o = small_opts();
    o.epochs = 2;
    o.batch_size = 64;
    husai_sae m;
    husai_train_stats st;
    husai_error_clear();
    assert_int_equal(husai_train_sae(X, n, D_MODEL, &o, &m, &st), HUSAI_ERR_NUMERIC);
    print_message("divergence message: %s\n", husai_error_message());
    assert_non_null(strstr(husai_error_message(), "diverged"));
    free(X);
}

/* ---------- reconstruction metrics ---------- */

/* Straightforward reference: dense encode, brute-force top-k, dense decode, two-pass variances. */
/* husai_recon_eval through the trained model's forward, batch_rows rows a call. */
static husai_status recon_eval(const husai_sae *m, const float *X, size_t n, int batch_rows, husai_recon *r) {
    husai_forward f;
    husai_status st = husai_sae_forward_open(&f, m, batch_rows);
    if (!st) st = husai_recon_eval(&f, X, n, r);
    husai_forward_close(&f);
    return st;
}

static void reference_recon(const husai_sae *m, const float *X, size_t n_rows, husai_recon *out) {
    const int d = m->d_model, s = m->d_sae, k = m->k;
    const double N = (double)n_rows * d;
    double *xh = calloc((size_t)d, sizeof(double));
    double *e = malloc(n_rows * (size_t)d * sizeof(double));
    float *pre = malloc((size_t)s * sizeof(float));
    unsigned char *sel = malloc((size_t)s), *fired = calloc((size_t)s, 1);
    assert_true(xh && e && pre && sel && fired);
    double nnz = 0.0;
    for (size_t r = 0; r < n_rows; r++) {
        const float *x = X + r * d;
        for (int j = 0; j < s; j++) {
            double acc = m->b_enc[j];
            for (int i = 0; i < d; i++)
                acc += (double)m->W_enc[(size_t)j * d + i] * x[i];
            pre[j] = (float)acc;
        }
        for (int j = 0; j < s; j++)
            sel[j] = 0;
        for (int a = 0; a < k; a++) {
            int best = -1;
            for (int j = 0; j < s; j++)
                if (!sel[j] && (best < 0 || pre[j] > pre[best])) best = j;
            if (best < 0) break; /* cannot happen for k <= d_sae; tells the compiler so */
            sel[best] = 1;
        }
        memset(xh, 0, (size_t)d * sizeof(double));
        for (int j = 0; j < s; j++) {
            if (!sel[j] || pre[j] == 0.0f) continue;
            nnz += 1.0;
            fired[j] = 1;
            for (int i = 0; i < d; i++)
                xh[i] += (double)pre[j] * m->W_dec[(size_t)j * d + i];
        }
        for (int i = 0; i < d; i++)
            e[r * d + i] = xh[i] - x[i];
    }
    double mx = 0.0, me = 0.0, sse = 0.0;
    for (size_t i = 0; i < n_rows * (size_t)d; i++) {
        mx += X[i];
        me += e[i];
        sse += e[i] * e[i];
    }
    mx /= N;
    me /= N;
    double vx = 0.0, ve = 0.0;
    for (size_t i = 0; i < n_rows * (size_t)d; i++) {
        vx += (X[i] - mx) * (X[i] - mx);
        ve += (e[i] - me) * (e[i] - me);
    }
    vx /= N - 1.0;
    ve /= N - 1.0;
    int dead = 0;
    for (int j = 0; j < s; j++)
        dead += !fired[j];
    out->mse = sse / N;
    out->ev = 1.0 - ve / vx;
    out->l0 = nnz / (double)n_rows;
    out->dead_fraction = (double)dead / s;
    free(xh);
    free(e);
    free(pre);
    free(sel);
    free(fired);
}

static void test_recon_vs_reference(void **state) {
    (void)state;
    const husai_train_opts o = small_opts();
    husai_sae m;
    husai_train_stats st;
    assert_int_equal(husai_train_sae(g_X, N_ROWS, D_MODEL, &o, &m, &st), HUSAI_OK);
    /* make a few latents dead: zero encoder rows and a very negative bias never reach the top k */
    for (int j = 60; j < 64; j++) {
        memset(m.W_enc + (size_t)j * D_MODEL, 0, D_MODEL * sizeof(float));
        m.b_enc[j] = -1e6f;
    }
    husai_recon ref;
    reference_recon(&m, g_X, N_ROWS, &ref);
    const int batches[] = {1, 7, 500, N_ROWS, 100000};
    for (size_t c = 0; c < sizeof batches / sizeof batches[0]; c++) {
        husai_recon r;
        assert_int_equal(recon_eval(&m, g_X, N_ROWS, batches[c], &r), HUSAI_OK);
        if (c == 0)
            print_message("recon: ev %.6f (ref %.6f) mse %.6g (ref %.6g) l0 %.4f dead %.4f\n", r.ev, ref.ev,
                          r.mse, ref.mse, r.l0, r.dead_fraction);
        /* float encoder (sgemm) vs double reference: pre-activations agree to ~1e-6 relative, so the
         * metrics agree to ~1e-5 relative; the selection itself has no near ties on this data */
        assert_true(fabs(r.ev - ref.ev) < 1e-5);
        assert_true(fabs(r.mse - ref.mse) < 1e-5 * ref.mse);
        assert_true(r.l0 == ref.l0);
        assert_true(r.dead_fraction == ref.dead_fraction);
        assert_true(r.dead_fraction >= 4.0 / 64.0);
        assert_true(r.l0 == 4.0); /* every selected value is non-zero on this data */
        assert_true(r.ev > 0.5 && r.ev <= 1.0);
    }
    husai_sae_free(&m);
}

static void test_recon_known_answers(void **state) {
    (void)state;
    const size_t n = 300;
    husai_recon r;
    husai_sae m;

    /* identity SAE (d_sae = k = d_model): perfect reconstruction */
    assert_int_equal(alloc_topk(&m, D_MODEL, D_MODEL, D_MODEL), HUSAI_OK);
    for (int j = 0; j < D_MODEL; j++) {
        m.W_enc[(size_t)j * D_MODEL + j] = 1.0f;
        m.W_dec[(size_t)j * D_MODEL + j] = 1.0f;
    }
    assert_int_equal(recon_eval(&m, g_X, n, 64, &r), HUSAI_OK);
    assert_true(r.mse == 0.0);
    assert_true(r.ev == 1.0);
    assert_true(r.dead_fraction == 0.0);
    assert_true(r.l0 <= (double)D_MODEL && r.l0 > D_MODEL - 1.0); /* exact zeros in X are not counted */
    husai_sae_free(&m);

    /* all-zero SAE: every selected value is 0, so L0 = 0, all latents dead, x_hat = 0,
     * MSE = mean(x^2) and EV = 0, also for data with a large mean (one global mean) */
    float *Xs = malloc(n * D_MODEL * sizeof(float));
    assert_non_null(Xs);
    for (size_t i = 0; i < n * D_MODEL; i++)
        Xs[i] = g_X[i] + 10.0f;
    assert_int_equal(alloc_topk(&m, D_MODEL, 16, 4), HUSAI_OK);
    assert_int_equal(recon_eval(&m, Xs, n, 50, &r), HUSAI_OK);
    assert_true(r.l0 == 0.0);
    assert_true(r.dead_fraction == 1.0);
    assert_true(fabs(r.ev) < 1e-9);
    const double ms = mean_square(Xs, n * D_MODEL);
    assert_true(fabs(r.mse - ms) < 1e-12 * ms);
    husai_sae_free(&m);
    free(Xs);

    /* fewer than two rows: no variance */
    assert_int_equal(alloc_topk(&m, D_MODEL, 16, 4), HUSAI_OK);
    assert_int_equal(recon_eval(&m, g_X, 1, 8, &r), HUSAI_ERR_DATA);
    husai_sae_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_decreases),
        cmocka_unit_test(test_same_seed_bitwise_other_seed_differs),
        cmocka_unit_test(test_trainer_matches_train_topk),
        cmocka_unit_test(test_step_count),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_divergence_reported),
        cmocka_unit_test(test_recon_vs_reference),
        cmocka_unit_test(test_recon_known_answers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
