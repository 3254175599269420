/* PWMCC against its definition: invariances, a naive double-precision reference on
 * shapes on both sides of d_sae == d_model (HUSAI's transpose bug lived there), and the
 * random baseline's published expectation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "metrics/pwmcc.h"

static float *random_matrix(uint64_t seed, int d, int n) {
    float *m = malloc((size_t)d * n * sizeof(float));
    husai_pwmcc_random_decoder(seed, d, n, m);
    return m;
}

/* Straight from the definition, in double, holding the whole |cos| matrix. */
static double naive_pwmcc(const float *A, int na, const float *B, int nb, int d) {
    double *an = calloc((size_t)na, sizeof(double)), *bn = calloc((size_t)nb, sizeof(double));
    for (int j = 0; j < na; j++) {
        for (int i = 0; i < d; i++)
            an[j] += (double)A[i * na + j] * A[i * na + j];
        an[j] = fmax(sqrt(an[j]), 1e-12);
    }
    for (int j = 0; j < nb; j++) {
        for (int i = 0; i < d; i++)
            bn[j] += (double)B[i * nb + j] * B[i * nb + j];
        bn[j] = fmax(sqrt(bn[j]), 1e-12);
    }
    double *rmax = calloc((size_t)na, sizeof(double)), *cmax = calloc((size_t)nb, sizeof(double));
    for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++) {
            double dot = 0;
            for (int i = 0; i < d; i++)
                dot += (double)A[i * na + a] * B[i * nb + b];
            const double c = fabs(dot) / (an[a] * bn[b]);
            rmax[a] = fmax(rmax[a], c);
            cmax[b] = fmax(cmax[b], c);
        }
    double rs = 0, cs = 0;
    for (int a = 0; a < na; a++)
        rs += rmax[a];
    for (int b = 0; b < nb; b++)
        cs += cmax[b];
    free(an);
    free(bn);
    free(rmax);
    free(cmax);
    return 0.5 * (rs / na + cs / nb);
}

static void test_identical_permuted_flipped(void **state) {
    const int d = 24, n = 40;
    float *A = random_matrix(1, d, n);
    float *B = malloc((size_t)d * n * sizeof(float));
    husai_rng r;
    husai_rng_init(&r, 7, "test", 0);
    uint32_t perm[40];
    husai_rng_permutation(&r, perm, n);
    for (int j = 0; j < n; j++) {
        /* column j of B is column perm[j] of A, sign-flipped on odd j and rescaled */
        const float s = (j % 2 ? -1.0f : 1.0f) * (0.5f + (float)j);
        for (int i = 0; i < d; i++)
            B[i * n + j] = s * A[i * n + perm[j]];
    }
    double v;
    assert_int_equal(husai_pwmcc_pair(A, n, A, n, d, &v), HUSAI_OK);
    assert_true(fabs(v - 1.0) < 1e-6);
    assert_int_equal(husai_pwmcc_pair(A, n, B, n, d, &v), HUSAI_OK);
    assert_true(fabs(v - 1.0) < 1e-6);
    free(A);
    free(B);
}

static void test_symmetric_and_matches_naive(void **state) {
    /* d_sae < d_model, == d_model, > d_model, and more than one sgemm block. */
    const int shapes[][2] = {{64, 16}, {32, 32}, {16, 96}, {20, HUSAI_PWMCC_BLOCK + 37}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int d = shapes[s][0], n = shapes[s][1];
        float *A = random_matrix(10 + s, d, n), *B = random_matrix(100 + s, d, n);
        double ab, ba;
        assert_int_equal(husai_pwmcc_pair(A, n, B, n, d, &ab), HUSAI_OK);
        assert_int_equal(husai_pwmcc_pair(B, n, A, n, d, &ba), HUSAI_OK);
        const double ref = naive_pwmcc(A, n, B, n, d);
        assert_true(fabs(ab - ba) < 1e-7);
        assert_true(fabs(ab - ref) < 1e-6); /* float sgemm vs double loop on unit vectors */
        free(A);
        free(B);
    }
}

static void test_unequal_widths(void **state) {
    const int d = 12, na = 30, nb = 300;
    float *A = random_matrix(3, d, na), *B = random_matrix(4, d, nb);
    double v;
    assert_int_equal(husai_pwmcc_pair(A, na, B, nb, d, &v), HUSAI_OK);
    assert_true(fabs(v - naive_pwmcc(A, na, B, nb, d)) < 1e-6);
    free(A);
    free(B);
}

static void test_zero_column_is_harmless(void **state) {
    const int d = 8, n = 10;
    float *A = random_matrix(5, d, n);
    for (int i = 0; i < d; i++)
        A[i * n + 3] = 0.0f;
    double v;
    assert_int_equal(husai_pwmcc_pair(A, n, A, n, d, &v), HUSAI_OK);
    assert_true(isfinite(v));
    assert_true(fabs(v - naive_pwmcc(A, n, A, n, d)) < 1e-6);
    free(A);
}

static void test_matrix_agrees_with_pairs(void **state) {
    const int S = 4, d = 16, n = 20;
    float *D = malloc((size_t)S * d * n * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(50 + s, d, n, D + (size_t)s * d * n);
    double M[16];
    assert_int_equal(husai_pwmcc_matrix(D, S, d, n, M), HUSAI_OK);
    double sum = 0;
    for (int p = 0; p < S; p++) {
        assert_true(M[p * S + p] == 1.0);
        for (int q = 0; q < S; q++) {
            assert_true(M[p * S + q] == M[q * S + p]);
            if (q <= p) continue;
            double v;
            husai_pwmcc_pair(D + (size_t)p * d * n, n, D + (size_t)q * d * n, n, d, &v);
            assert_true(fabs(v - M[p * S + q]) < 1e-12);
            sum += v;
        }
    }
    assert_true(fabs(husai_pwmcc_pair_mean(M, S) - sum / 6.0) < 1e-12);
    assert_true(isnan(husai_pwmcc_pair_mean(M, 1)));
    free(D);
}

/* Parts of the matrix (the pairs one rank computes) sum to the whole, bitwise, for any number of parts;
 * every pair is in exactly one part. */
static void test_matrix_parts_sum_to_whole(void **state) {
    (void)state;
    const int S = 6, d = 12, n = 18;
    float *D = malloc((size_t)S * d * n * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(70 + s, d, n, D + (size_t)s * d * n);
    double M[36], P[36], sum[36];
    assert_int_equal(husai_pwmcc_matrix(D, S, d, n, M), HUSAI_OK);
    for (int parts = 1; parts <= 7; parts++) {
        int owners[36] = {0};
        for (int i = 0; i < 36; i++)
            sum[i] = 0.0;
        for (int part = 0; part < parts; part++) {
            assert_int_equal(husai_pwmcc_matrix_part(D, S, d, n, part, parts, P), HUSAI_OK);
            for (int i = 0; i < 36; i++) {
                sum[i] += P[i];
                owners[i] += P[i] != 0.0;
            }
        }
        assert_memory_equal(sum, M, sizeof M);
        for (int i = 0; i < 36; i++)
            assert_int_equal(owners[i], 1);
    }
    assert_int_equal(husai_pwmcc_matrix_part(D, S, d, n, 3, 3, P), HUSAI_ERR_ARG);
    free(D);
}

/* Seed blocks: every pair p < q of S in exactly one block pair and one part, each part as many pairs as
 * husai_pwmcc_part_pairs says, b >= S the row-major order; and each pair's value and best matches from
 * rows copied elsewhere (as a blocked window holds them) bitwise those of the whole matrix. */
static void test_block_pairs_cover_and_match(void **state) {
    (void)state;
    enum { S = 7, d = 10, n = 14, ALL = S * (S - 1) / 2 };
    float *D = malloc((size_t)S * d * n * sizeof(float)), *F = malloc((size_t)S * d * n * sizeof(float));
    float *G = malloc((size_t)S * d * n * sizeof(float));
    for (int s = 0; s < S; s++) {
        husai_pwmcc_random_decoder(90 + s, d, n, D + (size_t)s * d * n);
        husai_normalized_feature_rows(D + (size_t)s * d * n, d, n, F + (size_t)s * d * n);
    }
    double M[S * S], B[S * S];
    float *bc = malloc((size_t)ALL * 2 * n * sizeof(float)),
          *cc = malloc((size_t)ALL * 2 * n * sizeof(float));
    int32_t *bi = malloc((size_t)ALL * 2 * n * sizeof(int32_t)),
            *ci = malloc((size_t)ALL * 2 * n * sizeof(int32_t));
    assert_int_equal(husai_pwmcc_rows_part_best(F, S, d, n, 0, 1, M, bc, bi), HUSAI_OK);
    int pq[2 * ALL], row_major[2 * ALL];
    for (int p = 0, k = 0; p < S; p++)
        for (int q = p + 1; q < S; q++, k++) {
            row_major[2 * k] = p;
            row_major[2 * k + 1] = q;
        }
    assert_int_equal(husai_pwmcc_block_pairs(S, S, -1, 0, 1, pq), ALL);
    assert_memory_equal(pq, row_major, sizeof pq);
    for (int b = 1; b <= S; b++)
        for (int parts = 1; parts <= 4; parts++) {
            int seen[S * S] = {0};
            const int nb = (S + b - 1) / b;
            for (int part = 0; part < parts; part++) {
                long total = 0;
                for (int k = 0; k < nb * (nb + 1) / 2; k++) {
                    const long m = husai_pwmcc_block_pairs(S, b, k, part, parts, pq);
                    total += m;
                    const float *rows[S] = {0};
                    for (long i = 0; i < m; i++) { /* the pair's rows copied to G, away from F */
                        const int p = pq[2 * i], q = pq[2 * i + 1];
                        assert_true(p < q && p / b <= q / b);
                        seen[p * S + q]++;
                        for (int s = 0; s < 2; s++) {
                            const int t = s ? q : p;
                            memcpy(G + (size_t)t * d * n, F + (size_t)t * d * n,
                                   (size_t)d * n * sizeof(float));
                            rows[t] = G + (size_t)t * d * n;
                        }
                    }
                    for (int e = 0; e < S * S; e++)
                        B[e] = -1.0;
                    assert_int_equal(husai_pwmcc_pairs_best(rows, S, d, n, pq, m, B, cc, ci), HUSAI_OK);
                    for (long i = 0; i < m; i++) {
                        const int p = pq[2 * i], q = pq[2 * i + 1];
                        const long g = (long)p * S - (long)p * (p + 1) / 2 + (q - p - 1); /* row-major */
                        assert_memory_equal(&B[p * S + q], &M[p * S + q], sizeof(double));
                        assert_memory_equal(&B[q * S + p], &M[q * S + p], sizeof(double));
                        assert_memory_equal(cc + i * 2 * n, bc + g * 2 * n, 2 * n * sizeof(float));
                        assert_memory_equal(ci + i * 2 * n, bi + g * 2 * n, 2 * n * sizeof(int32_t));
                    }
                }
                assert_int_equal(total, husai_pwmcc_part_pairs(S, part, parts));
                assert_int_equal(husai_pwmcc_block_pairs(S, b, -1, part, parts, NULL), total);
            }
            for (int p = 0; p < S; p++)
                for (int q = 0; q < S; q++)
                    assert_int_equal(seen[p * S + q], p < q);
        }
    free(D);
    free(F);
    free(G);
    free(bc);
    free(bi);
    free(cc);
    free(ci);
}

static void test_random_baseline_128(void **state) {
    /* DESIGN.md: expected random PWMCC at 128 x 128 is 0.2474 +- 0.0028; we allow 0.005. */
    const int S = 5, d = 128, n = 128;
    float *D = malloc((size_t)S * d * n * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(1000 + s, d, n, D + (size_t)s * d * n);
    double M[25];
    assert_int_equal(husai_pwmcc_matrix(D, S, d, n, M), HUSAI_OK);
    const double mean = husai_pwmcc_pair_mean(M, S);
    assert_true(fabs(mean - 0.2474) < 0.005);
    free(D);
}

static void test_random_decoder_deterministic(void **state) {
    float *a = random_matrix(42, 16, 16), *b = random_matrix(42, 16, 16), *c = random_matrix(43, 16, 16);
    assert_memory_equal(a, b, 16 * 16 * sizeof(float));
    assert_memory_not_equal(a, c, 16 * 16 * sizeof(float));
    free(a);
    free(b);
    free(c);
}

static void test_bad_shapes(void **state) {
    double v;
    float x = 1.0f;
    assert_int_equal(husai_pwmcc_pair(&x, 0, &x, 1, 1, &v), HUSAI_ERR_ARG);
    assert_true(strlen(husai_error_message()) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical_permuted_flipped),
        cmocka_unit_test(test_symmetric_and_matches_naive),
        cmocka_unit_test(test_unequal_widths),
        cmocka_unit_test(test_zero_column_is_harmless),
        cmocka_unit_test(test_matrix_agrees_with_pairs),
        cmocka_unit_test(test_matrix_parts_sum_to_whole),
        cmocka_unit_test(test_block_pairs_cover_and_match),
        cmocka_unit_test(test_random_baseline_128),
        cmocka_unit_test(test_random_decoder_deterministic),
        cmocka_unit_test(test_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
