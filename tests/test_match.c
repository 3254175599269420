/* Matched agreement against its definition: the assignment solver equals an independent brute-force
 * enumeration of all one-to-one matchings (n <= 8, square and rectangular), is never worse than greedy
 * matching, recovers exact permutations (with sign flips and rescaling), never exceeds the unconstrained
 * row-max (PWMCC-style) mean, breaks ties deterministically, refuses oversize or non-finite input, and
 * runs n = 1024 in reasonable time (printed). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "metrics/match.h"
#include "metrics/pwmcc.h"

static float *random_matrix(uint64_t seed, int d, int n) {
    float *m = malloc((size_t)d * n * sizeof(float));
    husai_pwmcc_random_decoder(seed, d, n, m);
    return m;
}

/* |cos| of A's column a and B's column b, straight from the definition in double. */
static double *abs_cos_matrix(const float *A, int na, const float *B, int nb, int d) {
    double *C = malloc((size_t)na * nb * sizeof(double));
    for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++) {
            double dot = 0, sa = 0, sb = 0;
            for (int i = 0; i < d; i++) {
                const double x = A[i * na + a], y = B[i * nb + b];
                dot += x * y;
                sa += x * x;
                sb += y * y;
            }
            C[(size_t)a * nb + b] = fabs(dot) / (fmax(sqrt(sa), 1e-12) * fmax(sqrt(sb), 1e-12));
        }
    return C;
}

/* ---------- an independent brute force: every injective map of the smaller side ---------- */

typedef struct {
    const double *W;
    int rows, cols, transposed; /* enumerate over the smaller side */
    int cur[8], best[8];
    double best_total, second_total;
    unsigned used;
} brute;

static double brute_w(const brute *b, int s, int l) {
    return b->transposed ? b->W[(size_t)l * b->cols + s] : b->W[(size_t)s * b->cols + l];
}

static void brute_rec(brute *b, int s, int ns, int nl, double acc) {
    if (s == ns) {
        if (acc > b->best_total) {
            b->second_total = b->best_total;
            b->best_total = acc;
            memcpy(b->best, b->cur, sizeof b->cur);
        } else if (acc > b->second_total) {
            b->second_total = acc;
        }
        return;
    }
    for (int l = 0; l < nl; l++) {
        if (b->used & (1u << l)) continue;
        b->used |= 1u << l;
        b->cur[s] = l;
        brute_rec(b, s + 1, ns, nl, acc + brute_w(b, s, l));
        b->used &= ~(1u << l);
    }
}

/* Fills row_to_col (rows entries, -1 when unmatched) with the best matching; returns its total and
 * the margin to the second best total. */
static double brute_force(const double *W, int rows, int cols, int32_t *row_to_col, double *margin) {
    brute b = {.W = W, .rows = rows, .cols = cols, .transposed = rows > cols};
    b.best_total = -HUGE_VAL;
    b.second_total = -HUGE_VAL;
    const int ns = rows <= cols ? rows : cols, nl = rows <= cols ? cols : rows;
    brute_rec(&b, 0, ns, nl, 0.0);
    for (int r = 0; r < rows; r++)
        row_to_col[r] = -1;
    for (int s = 0; s < ns; s++) {
        if (b.transposed)
            row_to_col[b.best[s]] = s;
        else
            row_to_col[s] = b.best[s];
    }
    *margin = b.best_total - b.second_total;
    return b.best_total;
}

/* Asserts that asg (n entries) maps min(n, m) rows to distinct columns in [0, m) and leaves the rest -1. */
static void assert_injective(const int32_t *asg, int n, int m) {
    char *seen = calloc((size_t)m, 1);
    int matched = 0;
    for (int i = 0; i < n; i++) {
        if (asg[i] < 0) {
            assert_int_equal(asg[i], -1);
            continue;
        }
        assert_true(asg[i] < m);
        assert_false(seen[asg[i]]);
        seen[asg[i]] = 1;
        matched++;
    }
    assert_int_equal(matched, n < m ? n : m);
    free(seen);
}

static void test_solver_equals_brute_force(void **state) {
    husai_rng r;
    husai_rng_init(&r, 3, "test-match", 0);
    int compared = 0, unique = 0;
    for (int rows = 1; rows <= 8; rows++)
        for (int cols = 1; cols <= 8; cols++)
            for (int trial = 0; trial < (rows * cols > 30 ? 6 : 3); trial++) {
                const size_t cells = (size_t)rows * cols;
                float *Wf = malloc(cells * sizeof(float));
                double *Wd = malloc(cells * sizeof(double));
                for (size_t c = 0; c < cells; c++) {
                    /* every third trial uses few distinct values, so optimal ties are common */
                    const double u = husai_rng_uniform(&r);
                    Wf[c] = trial % 3 == 2 ? (float)floor(u * 4.0) / 4.0f : (float)u;
                    Wd[c] = Wf[c];
                }
                int32_t got[8], want[8];
                double total = 0.0, margin = 0.0;
                assert_int_equal(husai_assign_max(Wf, rows, cols, got, &total), HUSAI_OK);
                const double best = brute_force(Wd, rows, cols, want, &margin);
                assert_injective(got, rows, cols);
                double recomputed = 0.0;
                for (int i = 0; i < rows; i++)
                    if (got[i] >= 0) recomputed += Wd[(size_t)i * cols + got[i]];
                assert_true(fabs(recomputed - total) < 1e-12);
                assert_true(fabs(total - best) < 1e-9); /* optimal */
                if (margin > 1e-9) {                    /* unique optimum: the same matching */
                    assert_memory_equal(got, want, (size_t)rows * sizeof *got);
                    unique++;
                }
                compared++;
                free(Wf);
                free(Wd);
            }
    printf(
        "test_match: solver == brute force on %d random matrices (1..8 x 1..8), %d with a unique optimum\n",
        compared, unique);
}

static void test_match_pair_equals_brute_force(void **state) {
    /* decoders in a low dimension so the |cos| values are spread; matched mean * min(na, nb) == best total */
    const int d = 5;
    for (int na = 1; na <= 8; na++)
        for (int nb = 1; nb <= 8; nb += 3) {
            float *A = random_matrix(100 + na, d, na), *B = random_matrix(200 + nb * 10 + na, d, nb);
            double *C = abs_cos_matrix(A, na, B, nb, d);
            int32_t got[8], want[8];
            double mean = 0, frac = 0, margin = 0;
            assert_int_equal(husai_match_pair(A, na, B, nb, d, &mean, &frac, 0.7, got), HUSAI_OK);
            const double best = brute_force(C, na, nb, want, &margin);
            const int ns = na < nb ? na : nb;
            assert_injective(got, na, nb);
            assert_true(fabs(mean * ns - best) < 1e-5);
            if (margin > 1e-4) assert_memory_equal(got, want, (size_t)na * sizeof *got);
            int above = 0;
            for (int i = 0; i < na; i++)
                if (got[i] >= 0) above += C[(size_t)i * nb + got[i]] >= 0.7;
            assert_true(fabs(frac - (double)above / ns) < 1e-12);
            free(A);
            free(B);
            free(C);
        }
}

typedef struct {
    double v;
    int a, b;
} cell;

static int by_value_desc(const void *x, const void *y) {
    const cell *p = x, *q = y;
    if (p->v != q->v) return p->v < q->v ? 1 : -1;
    return p->a != q->a ? p->a - q->a : p->b - q->b;
}

/* Greedy matching: repeatedly take the largest |cos| whose two features are both still free. */
static double greedy_mean(const double *C, int na, int nb) {
    cell *cs = malloc((size_t)na * nb * sizeof(cell));
    for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++)
            cs[(size_t)a * nb + b] = (cell){C[(size_t)a * nb + b], a, b};
    qsort(cs, (size_t)na * nb, sizeof(cell), by_value_desc);
    char *ua = calloc((size_t)na, 1), *ub = calloc((size_t)nb, 1);
    double sum = 0;
    int taken = 0;
    for (size_t i = 0; i < (size_t)na * nb; i++)
        if (!ua[cs[i].a] && !ub[cs[i].b]) {
            ua[cs[i].a] = ub[cs[i].b] = 1;
            sum += cs[i].v;
            taken++;
        }
    free(cs);
    free(ua);
    free(ub);
    return sum / taken;
}

static void test_never_worse_than_greedy(void **state) {
    const int shapes[][3] = {{16, 100, 100}, {16, 300, 300}, {8, 120, 200}, {32, 250, 90}, {64, 256, 256}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int d = shapes[t][0], na = shapes[t][1], nb = shapes[t][2];
        float *A = random_matrix(300 + t, d, na), *B = random_matrix(400 + t, d, nb);
        double *C = abs_cos_matrix(A, na, B, nb, d);
        double mean = 0, frac = 0;
        assert_int_equal(husai_match_pair(A, na, B, nb, d, &mean, &frac, 0.7, NULL), HUSAI_OK);
        const double g = greedy_mean(C, na, nb);
        printf("test_match: d=%d %dx%d: matched mean %.6f >= greedy %.6f\n", d, na, nb, mean, g);
        assert_true(mean >= g - 1e-6);
        free(A);
        free(B);
        free(C);
    }
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
    int32_t asg[40];
    double mean, frac;
    assert_int_equal(husai_match_pair(A, n, A, n, d, &mean, &frac, 0.7, asg), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_true(frac == 1.0);
    for (int i = 0; i < n; i++)
        assert_int_equal(asg[i], i);
    assert_int_equal(husai_match_pair(A, n, B, n, d, &mean, &frac, 0.7, asg), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_true(frac == 1.0);
    for (int j = 0; j < n; j++) /* A's column perm[j] is B's column j: the inverse permutation */
        assert_int_equal(asg[perm[j]], j);
    /* and the other way round */
    assert_int_equal(husai_match_pair(B, n, A, n, d, &mean, &frac, 0.7, asg), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    for (int j = 0; j < n; j++)
        assert_int_equal(asg[j], (int32_t)perm[j]);
    free(A);
    free(B);
}

static void test_rectangular(void **state) {
    /* B holds A's 30 columns (permuted, flipped) among 20 unrelated ones: every A column finds its copy */
    const int d = 32, na = 30, nb = 50;
    float *A = random_matrix(11, d, na), *extra = random_matrix(12, d, nb);
    float *B = malloc((size_t)d * nb * sizeof(float));
    husai_rng r;
    husai_rng_init(&r, 13, "test", 0);
    uint32_t pos[50];
    husai_rng_permutation(&r, pos, nb); /* A's column a goes to B's column pos[a] */
    for (int j = 0; j < nb; j++)
        for (int i = 0; i < d; i++)
            B[i * nb + j] = extra[i * nb + j];
    for (int a = 0; a < na; a++)
        for (int i = 0; i < d; i++)
            B[i * nb + pos[a]] = (a % 3 ? 2.0f : -0.25f) * A[i * na + a];
    int32_t asg[50];
    double mean, frac;
    assert_int_equal(husai_match_pair(A, na, B, nb, d, &mean, &frac, 0.7, asg), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_true(frac == 1.0);
    for (int a = 0; a < na; a++)
        assert_int_equal(asg[a], (int32_t)pos[a]);
    /* reversed: 50 features against 30; the 20 unrelated ones stay unmatched (-1) */
    assert_int_equal(husai_match_pair(B, nb, A, na, d, &mean, &frac, 0.7, asg), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_true(frac == 1.0);
    assert_injective(asg, nb, na);
    int unmatched = 0;
    for (int j = 0; j < nb; j++)
        unmatched += asg[j] < 0;
    assert_int_equal(unmatched, nb - na);
    for (int a = 0; a < na; a++)
        assert_int_equal(asg[pos[a]], a);
    free(A);
    free(B);
    free(extra);
}

static void test_bounded_by_row_max(void **state) {
    /* A one-to-one matching cannot beat each feature's unconstrained best match. */
    const int shapes[][3] = {{16, 64, 64}, {128, 128, 128}, {16, 40, 90}, {16, 90, 40}, {8, 200, 200}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int d = shapes[t][0], na = shapes[t][1], nb = shapes[t][2];
        float *A = random_matrix(500 + t, d, na), *B = random_matrix(600 + t, d, nb);
        double *C = abs_cos_matrix(A, na, B, nb, d);
        double mean, frac, frac_lo;
        assert_int_equal(husai_match_pair(A, na, B, nb, d, &mean, &frac, 0.7, NULL), HUSAI_OK);
        /* the smaller side's mean of row (or column) maxima */
        double rm = 0;
        const int ns = na <= nb ? na : nb;
        for (int s = 0; s < ns; s++) {
            double mx = 0;
            for (int l = 0; l < (na <= nb ? nb : na); l++)
                mx = fmax(mx, na <= nb ? C[(size_t)s * nb + l] : C[(size_t)l * nb + s]);
            rm += mx;
        }
        rm /= ns;
        assert_true(mean <= rm + 1e-6);
        if (na == nb) {
            double pw;
            assert_int_equal(husai_pwmcc_pair(A, na, B, nb, d, &pw), HUSAI_OK);
            assert_true(mean <= pw + 1e-6);
            printf("test_match: d=%d %dx%d: matched %.4f <= PWMCC %.4f\n", d, na, nb, mean, pw);
        }
        /* a lower threshold never lowers the fraction */
        assert_int_equal(husai_match_pair(A, na, B, nb, d, NULL, &frac_lo, 0.2, NULL), HUSAI_OK);
        assert_true(frac_lo >= frac);
        free(A);
        free(B);
        free(C);
    }
}

static void test_deterministic_ties(void **state) {
    /* a constant matrix: every matching is optimal; the documented rule gives the identity */
    float W[6 * 9];
    for (int i = 0; i < 6 * 9; i++)
        W[i] = 0.5f;
    int32_t asg[9];
    double total;
    assert_int_equal(husai_assign_max(W, 6, 9, asg, &total), HUSAI_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(asg[i], i);
    assert_true(fabs(total - 3.0) < 1e-12);
    assert_int_equal(husai_assign_max(W, 9, 6, asg, &total), HUSAI_OK);
    for (int i = 0; i < 9; i++)
        assert_int_equal(asg[i], i < 6 ? i : -1);

    /* decoders whose columns all point the same way: identity, and the same answer every call */
    const int d = 4, n = 50;
    float *A = malloc((size_t)d * n * sizeof(float));
    for (int i = 0; i < d; i++) /* +-(1,1,1,1): every |cos| is exactly 1 in any summation order */
        for (int j = 0; j < n; j++)
            A[i * n + j] = j % 2 ? -1.0f : 1.0f;
    int32_t a1[50], a2[50];
    double mean;
    assert_int_equal(husai_match_pair(A, n, A, n, d, &mean, NULL, 0.7, a1), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    for (int j = 0; j < n; j++)
        assert_int_equal(a1[j], j);

    /* duplicated columns in both: many optimal matchings; repeated calls agree exactly */
    float *B = random_matrix(21, d, n);
    for (int j = 1; j < n; j += 2)
        for (int i = 0; i < d; i++)
            B[i * n + j] = -B[i * n + j - 1];
    assert_int_equal(husai_match_pair(B, n, B, n, d, &mean, NULL, 0.7, a1), HUSAI_OK);
    assert_true(fabs(mean - 1.0) < 1e-6);
    assert_injective(a1, n, n);
    for (int rep = 0; rep < 3; rep++) {
        assert_int_equal(husai_match_pair(B, n, B, n, d, NULL, NULL, 0.7, a2), HUSAI_OK);
        assert_memory_equal(a1, a2, sizeof a1);
    }
    for (int j = 0; j < n; j++) /* each column pairs with itself or its twin */
        assert_true(a1[j] == j || a1[j] == (j ^ 1));
    free(A);
    free(B);
}

static void test_matrix(void **state) {
    const int S = 4, d = 16, n = 48;
    const size_t per = (size_t)d * n;
    float *D = malloc(S * per * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(700 + s, d, n, D + s * per);
    /* seed 3 is seed 0 with its columns reversed and negated: matched agreement 1 */
    for (int i = 0; i < d; i++)
        for (int j = 0; j < n; j++)
            D[3 * per + i * n + j] = -D[i * n + (n - 1 - j)];
    double Mm[16], Mf[16];
    assert_int_equal(husai_match_matrix(D, S, d, n, Mm, Mf), HUSAI_OK);
    for (int p = 0; p < S; p++) {
        assert_true(Mm[p * S + p] == 1.0 && Mf[p * S + p] == 1.0);
        for (int q = 0; q < S; q++) {
            assert_true(Mm[p * S + q] == Mm[q * S + p]);
            assert_true(Mf[p * S + q] == Mf[q * S + p]);
            if (p >= q) continue;
            double mean, frac;
            assert_int_equal(husai_match_pair(D + p * per, n, D + q * per, n, d, &mean, &frac,
                                              HUSAI_MATCH_THRESHOLD, NULL),
                             HUSAI_OK);
            assert_true(fabs(Mm[p * S + q] - mean) < 1e-12);
            assert_true(fabs(Mf[p * S + q] - frac) < 1e-12);
        }
    }
    assert_true(fabs(Mm[0 * S + 3] - 1.0) < 1e-6 && Mf[0 * S + 3] == 1.0);
    assert_true(Mm[0 * S + 1] < 0.9);
    /* either output may be NULL */
    assert_int_equal(husai_match_matrix(D, S, d, n, NULL, Mf), HUSAI_OK);
    assert_int_equal(husai_match_matrix(D, S, d, n, Mm, NULL), HUSAI_OK);
    free(D);
}

static void test_errors(void **state) {
    float A[8 * 4] = {0};
    for (int i = 0; i < 32; i++)
        A[i] = (float)(i % 7) - 3.0f;
    double mean;
    assert_int_equal(husai_match_pair(A, 0, A, 4, 8, &mean, NULL, 0.7, NULL), HUSAI_ERR_ARG);
    assert_int_equal(husai_match_pair(A, 4, A, 4, 8, &mean, NULL, NAN, NULL), HUSAI_ERR_ARG);
    /* refused before anything is read or allocated */
    assert_int_equal(husai_match_pair(A, 16385, A, 16384, 1, &mean, NULL, 0.7, NULL), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "limit"));
    assert_int_equal(husai_match_matrix(A, 2, 1, 20000, &mean, NULL), HUSAI_ERR_ARG);
    A[5] = NAN;
    assert_int_equal(husai_match_pair(A, 4, A, 4, 8, &mean, NULL, 0.7, NULL), HUSAI_ERR_DATA);
    float W[4] = {1, 2, INFINITY, 4};
    int32_t asg[2];
    assert_int_equal(husai_assign_max(W, 2, 2, asg, NULL), HUSAI_ERR_DATA);
    assert_int_equal(husai_assign_max(W, 0, 2, asg, NULL), HUSAI_ERR_ARG);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void test_performance_1024(void **state) {
    const int n = 1024, d = 128;
    float *A = random_matrix(800, d, n), *B = random_matrix(801, d, n);
    double mean, frac;
    double t0 = now();
    assert_int_equal(husai_match_pair(A, n, B, n, d, &mean, &frac, 0.7, NULL), HUSAI_OK);
    const double t_random = now() - t0;
    /* trained-like: B is A permuted with noise, so most features have a clear partner */
    husai_rng r;
    husai_rng_init(&r, 802, "test", 0);
    uint32_t perm[1024];
    husai_rng_permutation(&r, perm, n);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < d; i++)
            B[i * n + j] = A[i * n + perm[j]] + 0.1f * (float)husai_rng_normal(&r);
    double mean2, frac2;
    t0 = now();
    assert_int_equal(husai_match_pair(A, n, B, n, d, &mean2, &frac2, 0.7, NULL), HUSAI_OK);
    const double t_noisy = now() - t0;
    printf("test_match: n=1024 d_model=128: random decoders %.3f s (mean %.4f, frac %.3f); "
           "noisy permutation %.3f s (mean %.4f, frac %.3f)\n",
           t_random, mean, frac, t_noisy, mean2, frac2);
    assert_true(mean2 > 0.9 && frac2 > 0.99);
    assert_true(t_random < 120.0 && t_noisy < 120.0);
    free(A);
    free(B);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_solver_equals_brute_force),
        cmocka_unit_test(test_match_pair_equals_brute_force),
        cmocka_unit_test(test_never_worse_than_greedy),
        cmocka_unit_test(test_identical_permuted_flipped),
        cmocka_unit_test(test_rectangular),
        cmocka_unit_test(test_bounded_by_row_max),
        cmocka_unit_test(test_deterministic_ties),
        cmocka_unit_test(test_matrix),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_performance_1024),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
