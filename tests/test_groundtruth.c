/* Ground-truth recovery against a naive double loop (random shapes, more atoms than one sgemm block),
 * a planted decoder (the atoms up to sign, scale and permutation: every atom recovered with |cos| 1),
 * dictionary checks; and the firing densities of recon.h (consistent with L0 and the dead fraction)
 * and their fixed log10 histogram. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/status.h"
#include "metrics/groundtruth.h"
#include "metrics/pwmcc.h"
#include "metrics/recon.h"
#include "sae/model.h"

/* n rows of d i.i.d. standard normals (the random-baseline stream of `seed`). */
static float *random_rows(uint64_t seed, int n, int d) {
    float *m = malloc((size_t)n * d * sizeof(float));
    husai_pwmcc_random_decoder(seed, d, n, m);
    return m;
}

/* Straight from the definition, in double: per atom the largest |cos| with any feature. */
static void naive(const float *A, int na, const float *F, int nf, int d, double *best) {
    for (int a = 0; a < na; a++) {
        double aa = 0;
        for (int i = 0; i < d; i++)
            aa += (double)A[(size_t)a * d + i] * A[(size_t)a * d + i];
        best[a] = 0;
        for (int j = 0; j < nf; j++) {
            double ff = 0, dot = 0;
            for (int i = 0; i < d; i++) {
                ff += (double)F[(size_t)j * d + i] * F[(size_t)j * d + i];
                dot += (double)A[(size_t)a * d + i] * F[(size_t)j * d + i];
            }
            best[a] = fmax(best[a], fabs(dot) / (fmax(sqrt(aa), 1e-12) * fmax(sqrt(ff), 1e-12)));
        }
    }
}

static void test_random_matches_naive(void **state) {
    (void)state;
    const int shapes[][3] = {{300, 70, 20}, {5, 3, 7}, {257, 257, 16}, {1, 1, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int na = shapes[t][0], nf = shapes[t][1], d = shapes[t][2];
        float *A = random_rows(10 + t, na, d), *F = random_rows(20 + t, nf, d);
        double *best = malloc((size_t)na * sizeof(double));
        naive(A, na, F, nf, d, best);
        double want_mean = 0, want_frac = 0;
        int near_edge = 0;
        for (int a = 0; a < na; a++) {
            want_mean += best[a] / na;
            want_frac += (best[a] >= HUSAI_GT_RECOVERED) / (double)na;
            near_edge += fabs(best[a] - HUSAI_GT_RECOVERED) < 1e-5;
        }
        double mean, frac;
        assert_int_equal(husai_gt_recovery(A, na, F, nf, d, &mean, &frac), HUSAI_OK);
        assert_true(fabs(mean - want_mean) < 1e-5);
        assert_true(fabs(frac - want_frac) <= (double)near_edge / na + 1e-12);
        assert_true(mean > 0 && mean <= 1 + 1e-6);
        free(A);
        free(F);
        free(best);
    }
}

static void test_planted_recovers_everything(void **state) {
    (void)state;
    const int na = 32, d = 16, nf = 64;
    float *A = random_rows(1, na, d), *F = random_rows(2, nf, d);
    /* Feature perm[a] is atom a, sign-flipped for odd a and scaled by 0.5 + a / 10. */
    int perm[64];
    for (int j = 0; j < nf; j++)
        perm[j] = j;
    husai_rng r;
    husai_rng_init(&r, 3, HUSAI_RNG_RANDOM_BASELINE, 0);
    for (int j = nf - 1; j > 0; j--) {
        const int k = (int)husai_rng_below(&r, (uint64_t)j + 1), tmp = perm[j];
        perm[j] = perm[k];
        perm[k] = tmp;
    }
    for (int a = 0; a < na; a++)
        for (int i = 0; i < d; i++)
            F[(size_t)perm[a] * d + i] = (a % 2 ? -1.0f : 1.0f) * (0.5f + a / 10.0f) * A[(size_t)a * d + i];
    double mean, frac;
    assert_int_equal(husai_gt_recovery(A, na, F, nf, d, &mean, &frac), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_true(frac == 1.0);
    /* Remove half the planted atoms: those atoms fall to their best random match, far below 0.9 in d = 16
     * with these seeds (checked against the naive loop). */
    for (int a = 0; a < na; a += 2)
        for (int i = 0; i < d; i++)
            F[(size_t)perm[a] * d + i] = 0.0f;
    double best[32];
    naive(A, na, F, nf, d, best);
    int hits = 0;
    for (int a = 0; a < na; a++)
        hits += best[a] >= HUSAI_GT_RECOVERED;
    assert_int_equal(husai_gt_recovery(A, na, F, nf, d, &mean, &frac), HUSAI_OK);
    assert_true(fabs(frac - hits / (double)na) < 1e-12);
    assert_true(hits >= na / 2 && hits < na);
    free(A);
    free(F);
}

static void test_checks(void **state) {
    (void)state;
    float D[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    assert_int_equal(husai_gt_check(D, 3, 4, "dict"), HUSAI_OK);
    D[6] = NAN;
    assert_int_equal(husai_gt_check(D, 3, 4, "dict"), HUSAI_ERR_DATA);
    assert_non_null(strstr(husai_error_message(), "atom 1"));
    D[6] = INFINITY;
    assert_int_equal(husai_gt_check(D, 3, 4, "dict"), HUSAI_ERR_DATA);
    D[6] = 0.0f;
    D[5] = 0.0f;
    assert_int_equal(husai_gt_check(D, 3, 4, "dict"), HUSAI_ERR_DATA);
    assert_non_null(strstr(husai_error_message(), "atom 1 is all zeros"));
    assert_int_equal(husai_gt_check(D, 0, 4, "dict"), HUSAI_ERR_DATA);
    double m, f;
    assert_int_equal(husai_gt_recovery(D, 0, D, 3, 4, &m, &f), HUSAI_ERR_ARG);
    assert_int_equal(husai_gt_recovery(D, 3, D, 0, 4, &m, &f), HUSAI_ERR_ARG);
}

static void test_density_histogram(void **state) {
    (void)state;
    const float v[] = {0.0f, 1.0f, 1e-7f, 0.02f, 0.5f, NAN, 1e-6f * 1.0001f, 0.0f, 0.3f};
    long c[HUSAI_DENSITY_BINS + 1];
    husai_density_histogram(v, sizeof v / sizeof v[0], c);
    long total = 0;
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        total += c[b];
    assert_int_equal(total, (long)(sizeof v / sizeof v[0]));
    assert_int_equal(c[0], 3);                          /* 0, 0 and NaN never fire */
    assert_int_equal(c[1 + 0], 2);                      /* 1e-7 (clamped) and just above 1e-6 */
    assert_int_equal(c[1 + 8], 1);                      /* log10(0.02) = -1.7: bin [-2, -1.5) */
    assert_int_equal(c[1 + 10], 1);                     /* log10(0.3) = -0.52: bin [-1, -0.5) */
    assert_int_equal(c[HUSAI_DENSITY_BINS - 1 + 1], 2); /* 0.5 and 1 (the last bin is closed at 0) */
}

static void test_recon_density(void **state) {
    (void)state;
    const int d = 12, s = 40, k = 3, n = 500;
    husai_sae_spec spec = husai_sae_spec_topk(d, s, k);
    spec.relu = 1; /* so some rows keep fewer than k codes and some latents may never fire */
    husai_sae m;
    assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
    husai_sae_init(&m, 7);
    float *X = random_rows(5, n, d);
    float *dens = malloc((size_t)s * sizeof(float));
    husai_recon r, r2;
    husai_forward f;
    assert_int_equal(husai_sae_forward_open(&f, &m, 64), HUSAI_OK);
    assert_int_equal(husai_recon_eval_density(&f, X, NULL, n, &r, dens), HUSAI_OK);
    assert_int_equal(husai_recon_eval(&f, X, n, &r2), HUSAI_OK);
    husai_forward_close(&f);
    assert_true(r.ev == r2.ev && r.l0 == r2.l0 && r.dead_fraction == r2.dead_fraction);
    double sum = 0;
    int never = 0;
    for (int j = 0; j < s; j++) {
        assert_true(dens[j] >= 0.0f && dens[j] <= 1.0f);
        sum += dens[j];
        never += dens[j] == 0.0f;
    }
    assert_true(fabs(sum - r.l0) < 1e-5); /* sum of densities = mean active latents per row */
    assert_true(fabs((double)never / s - r.dead_fraction) < 1e-12);
    /* A subset of rows: densities over those rows only. */
    uint32_t rows[100];
    for (int i = 0; i < 100; i++)
        rows[i] = (uint32_t)(i * 5);
    assert_int_equal(husai_sae_forward_open(&f, &m, 7), HUSAI_OK);
    assert_int_equal(husai_recon_eval_density(&f, X, rows, 100, &r, dens), HUSAI_OK);
    husai_forward_close(&f);
    sum = 0;
    for (int j = 0; j < s; j++)
        sum += dens[j] * 100.0;
    assert_true(fabs(sum - r.l0 * 100) < 1e-3);
    free(dens);
    free(X);
    husai_sae_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_matches_naive),
        cmocka_unit_test(test_planted_recovers_everything),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_density_histogram),
        cmocka_unit_test(test_recon_density),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
