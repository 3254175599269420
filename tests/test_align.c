/* The consistency penalty's alignment (src/sae/align.c) against its definition:
 *   husai_align_rows: best[i] = argmax_j |cos(D_i, R_j)| (ties to the lower index), cosv[i] the signed
 *     cosine there, return mean_i |cosv[i]|, checked against a naive double loop over more rows than one
 *     sgemm block and on exactly representable ties;
 *   husai_align_add_grad: the gradient of lambda * (1 - mean_i |cos(D_i / |D_i|, R_best[i])|) with the
 *     argmax held fixed, checked against central finite differences in double at unit-norm D. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "sae/align.h"

/* n random rows of length d, each normalised to unit L2 norm (in double, then rounded to float). */
static float *unit_rows(uint64_t seed, int n, int d) {
    husai_rng r;
    husai_rng_init(&r, seed, "test_align", 0);
    float *m = malloc((size_t)n * d * sizeof(float));
    assert_non_null(m);
    double *row = malloc((size_t)d * sizeof(double));
    assert_non_null(row);
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int t = 0; t < d; t++) {
            row[t] = husai_rng_normal(&r);
            ss += row[t] * row[t];
        }
        for (int t = 0; t < d; t++)
            m[(size_t)i * d + t] = (float)(row[t] / sqrt(ss));
    }
    free(row);
    return m;
}

static double dot_d(const float *a, const float *b, int d) {
    double s = 0;
    for (int t = 0; t < d; t++)
        s += (double)a[t] * b[t];
    return s;
}

static void test_rows_match_naive(void **state) {
    (void)state;
    const int n = 2 * HUSAI_ALIGN_BLOCK + 37, m = 45, d = 20; /* three sgemm blocks, the last one partial */
    float *D = unit_rows(1, n, d), *R = unit_rows(2, m, d);
    int32_t *best = malloc((size_t)n * sizeof(int32_t));
    float *cosv = malloc((size_t)n * sizeof(float));
    float *scratch = malloc(husai_align_scratch_floats(m) * sizeof(float));
    assert_true(best && cosv && scratch);
    const double got = husai_align_rows(D, n, R, m, d, best, cosv, scratch);

    /* Float sgemm over d = 20 terms of magnitude <= 1 is within ~20 * 2^-24 of the double dot; 1e-5 leaves a
     * wide margin. Where the naive top two |cos| are closer than that, float rounding may legitimately pick
     * either, so such near-ties only need the picked value to be maximal within the tolerance. */
    const double tol = 1e-5;
    double mean = 0;
    int near_ties = 0, negative = 0;
    for (int i = 0; i < n; i++) {
        const float *Di = D + (size_t)i * d;
        int arg = 0;
        double top = -1, second = -1;
        for (int j = 0; j < m; j++) {
            const double c = fabs(dot_d(Di, R + (size_t)j * d, d));
            if (c > top) {
                second = top;
                top = c;
                arg = j;
            } else if (c > second) {
                second = c;
            }
        }
        mean += top;
        assert_true(best[i] >= 0 && best[i] < m);
        const double at_best = dot_d(Di, R + (size_t)best[i] * d, d);
        if (top - second > tol) {
            if (best[i] != arg)
                fail_msg("row %d: best %d, naive argmax %d (|cos| %.7f vs %.7f)", i, best[i], arg,
                         fabs(at_best), top);
        } else {
            near_ties++;
            assert_true(fabs(at_best) >= top - tol);
        }
        /* signed cosine at the chosen index */
        if (fabs(cosv[i] - at_best) > tol) fail_msg("row %d: cosv %.8f, naive %.8f", i, cosv[i], at_best);
        negative += cosv[i] < 0;
    }
    mean /= n;
    if (fabs(got - mean) > 1e-6) fail_msg("mean |cos| %.9f, naive %.9f", got, mean);
    assert_true(near_ties < n / 20); /* the comparison above was not vacuous */
    assert_true(negative > n / 4);   /* both signs were exercised */
    assert_true(negative < 3 * n / 4);
    free(D);
    free(R);
    free(best);
    free(cosv);
    free(scratch);
}

/* Exactly representable rows (entries 0, +-1, +-1/2), so every |cos| is exact whatever the sgemm's summation
 * order and ties are genuine; special rows sit in the first and the last (partial) block. */
static void test_rows_ties_to_lower_index(void **state) {
    (void)state;
    enum { d = 8, m = 9 };
    const int n = 2 * HUSAI_ALIGN_BLOCK + 10;
    float R[m * d] = {0};
    R[0 * d + 1] = 1;  /* e1 */
    R[1 * d + 2] = -1; /* -e2 */
    R[2 * d + 0] = 1;  /* e0 */
    R[3 * d + 2] = 1;  /* e2 */
    R[4 * d + 0] = -1; /* -e0 */
    R[5 * d + 0] = 1;  /* e0 again */
    for (int t = 3; t < 7; t++) {
        R[6 * d + t] = 0.5f;  /* (e3 + e4 + e5 + e6) / 2 */
        R[7 * d + t] = -0.5f; /* its negation */
    }
    R[8 * d + 7] = 1; /* e7 */
    float *D = calloc((size_t)n * d, sizeof(float));
    int32_t *best = malloc((size_t)n * sizeof(int32_t)), *want_best = malloc((size_t)n * sizeof(int32_t));
    float *cosv = malloc((size_t)n * sizeof(float)), *want_cos = malloc((size_t)n * sizeof(float));
    float *scratch = malloc(husai_align_scratch_floats(m) * sizeof(float));
    assert_true(D && best && want_best && cosv && want_cos && scratch);
    for (int i = 0; i < n; i++) {
        D[(size_t)i * d + 7] = 1; /* e7: only R8 aligns */
        want_best[i] = 8;
        want_cos[i] = 1;
    }
    struct {
        int row, best;
        float cos;
        float v[d];
    } special[] = {
        {5, 2, 1, {1, 0, 0, 0, 0, 0, 0, 0}},                       /* e0: |cos| 1 at 2, 4, 5 */
        {6, 2, -1, {-1, 0, 0, 0, 0, 0, 0, 0}},                     /* -e0: same ties, cos -1 */
        {HUSAI_ALIGN_BLOCK + 44, 1, -1, {0, 0, 1, 0, 0, 0, 0, 0}}, /* e2: -1 at 1 beats +1 at 3 */
        {n - 5, 6, 1, {0, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, 0}},       /* +1 at 6, -1 at 7 */
        {n - 4, 6, -1, {0, 0, 0, -0.5f, -0.5f, -0.5f, -0.5f, 0}},  /* -1 at 6, +1 at 7 */
        {n - 3, 6, 0.5f, {0, 0, 0, 0, 0, 0, 1, 0}},                /* e6: 0.5 at 6, -0.5 at 7 */
        {n - 1, 0, 1, {0, 1, 0, 0, 0, 0, 0, 0}},                   /* e1: unique, index 0 */
    };
    const int n_special = (int)(sizeof special / sizeof special[0]);
    for (int s = 0; s < n_special; s++) {
        memcpy(D + (size_t)special[s].row * d, special[s].v, sizeof special[s].v);
        want_best[special[s].row] = special[s].best;
        want_cos[special[s].row] = special[s].cos;
    }
    const double got = husai_align_rows(D, n, R, m, d, best, cosv, scratch);
    double want_mean = 0;
    for (int i = 0; i < n; i++) {
        if (best[i] != want_best[i]) fail_msg("row %d: best %d, expected %d", i, best[i], want_best[i]);
        if (cosv[i] != want_cos[i]) fail_msg("row %d: cos %.9g, expected %.9g", i, cosv[i], want_cos[i]);
        want_mean += fabs(want_cos[i]);
    }
    want_mean /= n;
    assert_true(fabs(got - want_mean) < 1e-12);
    free(D);
    free(best);
    free(want_best);
    free(cosv);
    free(want_cos);
    free(scratch);
}

/* The penalty in double with the argmax held fixed: each row normalised before its cosine. */
static double penalty(const double *D, int n, const float *R, int d, const int32_t *best, double lambda) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        const double *u = D + (size_t)i * d;
        const float *r = R + (size_t)best[i] * d;
        double ss = 0, dot = 0;
        for (int t = 0; t < d; t++) {
            ss += u[t] * u[t];
            dot += u[t] * r[t];
        }
        sum += fabs(dot / sqrt(ss));
    }
    return lambda * (1.0 - sum / n);
}

static void test_grad_matches_finite_differences(void **state) {
    (void)state;
    const int n = 6, m = 5, d = 7;
    const double lambda = 0.7;
    float *D = unit_rows(3, n, d), *R = unit_rows(4, m, d);
    int32_t best[6];
    float cosv[6], scratch[HUSAI_ALIGN_BLOCK * 5];
    assert_true(husai_align_scratch_floats(m) <= sizeof scratch / sizeof scratch[0]);
    husai_align_rows(D, n, R, m, d, best, cosv, scratch);
    /* Flip rows so both signs of the cosine are exercised (the argmax is unchanged by a flip). */
    for (int i = 0; i < n; i++)
        if ((cosv[i] > 0) != (i % 2 == 0))
            for (int t = 0; t < d; t++)
                D[(size_t)i * d + t] = -D[(size_t)i * d + t];
    husai_align_rows(D, n, R, m, d, best, cosv, scratch);
    for (int i = 0; i < n; i++)
        assert_true((cosv[i] > 0) == (i % 2 == 0));

    float *g = calloc((size_t)n * d, sizeof(float));
    assert_non_null(g);
    husai_align_add_grad(D, n, R, d, best, cosv, lambda, g);

    /* Tolerance: each entry is s * (r - c u) with |s| = lambda / n and |r|, |c u| <= 1, evaluated in float:
     * error <= ~3 ulp(1) |s| ~ 4e-7 |s|, plus ~1e-7 |s| because the float rows are unit only to rounding and
     * cosv is a float. The central difference in double (h = 1e-6) has truncation error O(h^2) ~ 1e-12 and
     * cancellation error ~ 1e-16 / h ~ 1e-10. So 1e-5 |s| has a >= 20x margin, while a wrong formula (a
     * missing -c D_i term, a wrong sign for negative cosines, a missing 1/n) is off by O(|c| |s|) ~ 0.1 |s|
     * or more. */
    const double scale = lambda / n, tol = 1e-5 * scale, h = 1e-6;
    double *Dd = malloc((size_t)n * d * sizeof(double));
    assert_non_null(Dd);
    double max_g = 0;
    for (int i = 0; i < n * d; i++)
        Dd[i] = D[i];
    for (int i = 0; i < n; i++)
        for (int t = 0; t < d; t++) {
            const size_t at = (size_t)i * d + t;
            const double x0 = Dd[at];
            Dd[at] = x0 + h;
            const double up = penalty(Dd, n, R, d, best, lambda);
            Dd[at] = x0 - h;
            const double down = penalty(Dd, n, R, d, best, lambda);
            Dd[at] = x0;
            const double fd = (up - down) / (2 * h);
            if (fabs(g[at] - fd) > tol)
                fail_msg("dP/dD[%d][%d]: analytic %.9g, finite difference %.9g (tol %.3g)", i, t, g[at], fd,
                         tol);
            max_g = fmax(max_g, fabs(fd));
        }
    assert_true(max_g > 0.1 * scale); /* the comparison was not between zeros */

    /* It adds into gD: starting from g0 gives fl(g0 + the gradient from zero), bitwise. */
    float *g2 = malloc((size_t)n * d * sizeof(float));
    assert_non_null(g2);
    for (int i = 0; i < n * d; i++)
        g2[i] = 0.25f * (float)(i % 7) - 0.5f;
    husai_align_add_grad(D, n, R, d, best, cosv, lambda, g2);
    for (int i = 0; i < n * d; i++) {
        const float want = (0.25f * (float)(i % 7) - 0.5f) + g[i];
        assert_true(g2[i] == want);
    }

    /* lambda = 0 leaves gD bitwise untouched: the penalty is exactly off. */
    memcpy(g2, g, (size_t)n * d * sizeof(float));
    husai_align_add_grad(D, n, R, d, best, cosv, 0.0, g2);
    assert_memory_equal(g2, g, (size_t)n * d * sizeof(float));
    free(D);
    free(R);
    free(g);
    free(g2);
    free(Dd);
}

/* A row orthogonal to every reference row has cos 0 and |cos| no direction there: no gradient. */
static void test_grad_zero_cos_row(void **state) {
    (void)state;
    enum { n = 2, m = 2, d = 4 };
    const float R[m * d] = {1, 0, 0, 0, 0, 1, 0, 0};
    const float D[n * d] = {0, 0, 1, 0, 1, 0, 0, 0};
    int32_t best[n];
    float cosv[n], scratch[HUSAI_ALIGN_BLOCK * m];
    husai_align_rows(D, n, R, m, d, best, cosv, scratch);
    assert_true(cosv[0] == 0.0f);
    assert_int_equal(best[0], 0);
    assert_true(cosv[1] == 1.0f);
    float g[n * d] = {0};
    husai_align_add_grad(D, n, R, d, best, cosv, 1.0, g);
    for (int t = 0; t < d; t++)
        assert_true(g[t] == 0.0f);
    /* row 1 sits exactly on R_0: R - c D = 0, so its gradient is zero too (a maximum of |cos|) */
    for (int t = 0; t < d; t++)
        assert_true(fabsf(g[d + t]) < 1e-7f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_match_naive),
        cmocka_unit_test(test_rows_ties_to_lower_index),
        cmocka_unit_test(test_grad_matches_finite_differences),
        cmocka_unit_test(test_grad_zero_cos_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
