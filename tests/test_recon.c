/* test_recon.c: reconstruction metrics (metrics/recon.c) take a model's outputs through sae/forward.h, not
 * the model, so they are checked here on matrices with a hand-made forward and naive double loops:
 * - x_hat = a x with a per-row code pattern: EV, MSE, L0, dead share and densities equal the direct
 *   formulas (EV = 1 - var(x_hat - x) / var(x), one global mean, n-1 denominators) to 1e-12 relative;
 * - rows given by index and every batch size give the same metrics as the contiguous rows;
 * - a forward that fails makes the evaluation fail with its status;
 * - husai_condition_metrics returns a status naming the condition instead of aborting. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "metrics/condition.h"
#include "metrics/recon.h"

enum { D = 6, DS = 5, N = 37 };
static const float A = 0.75f;

/* Row r fires latents r % DS (value 1) and, on even rows, (r + 1) % DS with value 0 (selected but not
 * active, so not counted); latent DS - 1 only ever appears as that zero. x_hat = A x. The row number is
 * read from x's first element, which the test sets to r. */
typedef struct {
    float xh[N * D];
    int64_t ptr[N + 1];
    int32_t idx[2 * N];
    float val[2 * N];
    int fail;
} fake;

static husai_status fake_run(husai_forward *f, const float *x, int n, husai_forward_out *out) {
    fake *s = f->self;
    if (s->fail) return husai_error(HUSAI_ERR_NUMERIC, "fake forward failed");
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        const int r = (int)x[(size_t)i * D];
        for (int j = 0; j < D; j++)
            s->xh[i * D + j] = A * x[(size_t)i * D + j];
        s->ptr[i] = k;
        s->idx[k] = r % (DS - 1);
        s->val[k++] = 1.0f;
        if (r % 2 == 0) {
            s->idx[k] = DS - 1;
            s->val[k++] = 0.0f;
        }
    }
    s->ptr[n] = k;
    *out = (husai_forward_out){s->xh, s->ptr, s->idx, s->val};
    return HUSAI_OK;
}

static float g_X[N * D];

static void make_rows(void) {
    husai_rng r;
    husai_rng_init(&r, 11, "test_recon", 0);
    for (int i = 0; i < N; i++) {
        g_X[i * D] = (float)i;
        for (int j = 1; j < D; j++)
            g_X[i * D + j] = (float)(husai_rng_uniform(&r) * 4.0 - 1.0);
    }
}

static void test_metrics_on_matrices(void **state) {
    (void)state;
    make_rows();
    double mean = 0, var = 0, sse = 0, se = 0;
    for (int i = 0; i < N * D; i++)
        mean += g_X[i];
    mean /= N * D;
    for (int i = 0; i < N * D; i++) {
        const double e = (double)(A * g_X[i]) - g_X[i];
        var += (g_X[i] - mean) * (g_X[i] - mean);
        se += e;
        sse += e * e;
    }
    const double ev = 1.0 - (sse - se * se / (N * D)) / var, mse = sse / (N * D);
    const int batches[] = {1, 4, N};
    for (size_t b = 0; b < sizeof batches / sizeof *batches; b++) {
        fake s = {0};
        husai_forward f = {D, DS, batches[b], fake_run, NULL, &s};
        husai_recon r;
        float dens[DS];
        assert_int_equal(husai_recon_eval_density(&f, g_X, NULL, N, &r, dens), HUSAI_OK);
        assert_true(fabs(r.ev - ev) <= 1e-12 * fabs(ev));
        assert_true(fabs(r.mse - mse) <= 1e-12 * mse);
        assert_true(r.l0 == 1.0);                 /* the zero codes are not counted */
        assert_true(r.dead_fraction == 1.0 / DS); /* latent DS - 1 never non-zero */
        for (int j = 0; j < DS - 1; j++) {        /* latent j fires on rows r with r % 4 == j */
            int rows = 0;
            for (int i = 0; i < N; i++)
                rows += i % (DS - 1) == j;
            assert_true(dens[j] == (float)((double)rows / N));
        }
        assert_true(dens[DS - 1] == 0.0f);
        /* the same rows given by index, in order */
        uint32_t idx[N];
        for (int i = 0; i < N; i++)
            idx[i] = (uint32_t)i;
        husai_recon r2;
        assert_int_equal(husai_recon_eval_rows(&f, g_X, idx, N, &r2), HUSAI_OK);
        assert_true(r2.ev == r.ev && r2.mse == r.mse && r2.l0 == r.l0);
    }
}

static void test_failing_forward(void **state) {
    (void)state;
    make_rows();
    fake s = {.fail = 1};
    husai_forward f = {D, DS, 8, fake_run, NULL, &s};
    husai_recon r;
    assert_int_equal(husai_recon_eval(&f, g_X, N, &r), HUSAI_ERR_NUMERIC);
    assert_non_null(strstr(husai_error_message(), "fake forward failed"));
}

/* A result whose per-seed array is missing (NULL decoders for a PWMCC to compute) cannot be measured:
 * the library returns an error naming the condition; a tiny valid one completes. */
static void test_condition_status(void **state) {
    (void)state;
    enum { S = 3, DM = 4, DSAE = 3 };
    uint64_t seeds[S] = {1, 2, 3};
    float dec[S * DM * DSAE];
    husai_rng r;
    husai_rng_init(&r, 5, "test_recon condition", 0);
    for (size_t i = 0; i < sizeof dec / sizeof *dec; i++)
        dec[i] = (float)(husai_rng_uniform(&r) - 0.5);
    husai_seed_metrics per[S];
    for (int s = 0; s < S; s++)
        per[s] = (husai_seed_metrics){.ev = 0.5 + 0.1 * s, .ho_ev = NAN, .gt_mean_max_cos = NAN};
    double pw[S * S], rp[S * S];
    husai_condition_result c = {.name = "k=2",
                                .S = S,
                                .d_model = DM,
                                .d_sae = DSAE,
                                .seeds = seeds,
                                .decoders = dec,
                                .pwmcc = pw,
                                .random_pwmcc = rp,
                                .per_seed = per};
    husai_condition_opts o = {.boot = {.resamples = 1000, .seed = 0}, .matching_max_d_sae = 0};
    assert_int_equal(husai_condition_metrics(&o, &c, NULL, NULL, 0), HUSAI_OK);
    assert_true(c.trained.mean > 0 && c.trained.mean <= 1);
    assert_true(isfinite(c.delta) && c.delta == c.trained.mean - c.random.mean);
    assert_true(c.ev.mean > 0.59 && c.ev.mean < 0.61);
    /* a negative resample count is refused by the bootstrap; the message names the condition */
    o.boot.resamples = -1;
    husai_condition_result c2 = c;
    c2.pwmcc_done = 1;
    assert_int_not_equal(husai_condition_metrics(&o, &c2, NULL, NULL, 0), HUSAI_OK);
    assert_non_null(strstr(husai_error_message(), "k=2"));
    /* the arrays are this test's; only what the library allocated is freed */
    husai_features *lib[4] = {c.features, c.random_best, c2.features, c2.random_best};
    for (int i = 0; i < 4; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= lib[j] == lib[i];
        if (!lib[i] || seen) continue;
        husai_features_free(lib[i]);
        free(lib[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_on_matrices),
        cmocka_unit_test(test_failing_forward),
        cmocka_unit_test(test_condition_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
