/* test_bootstrap: percentile bootstrap CIs. The numpy-generator results are checked against
 * values computed with numpy 1.24.2 (/usr/bin/python3); how each was produced is said next to it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "common/rng.h"
#include "common/status.h"
#include "metrics/bootstrap.h"

/* DESIGN.md section 5: HUSAI's committed pair values and its published CI (seed 13, B 10000). */
static const double design_v[10] = {
    0.2992132753133774, 0.2938457131385803,  0.2950201630592346, 0.2964489907026291, 0.2908322513103485,
    0.2901238203048706, 0.29808808863162994, 0.2958742827177048, 0.2929214835166931, 0.2899872809648514};

static husai_boot_opts numpy_opts(uint64_t seed, int resamples) {
    husai_boot_opts o = husai_boot_defaults();
    o.rng = HUSAI_BOOT_NUMPY;
    o.seed = seed;
    o.resamples = resamples;
    return o;
}

static void test_defaults(void **state) {
    (void)state;
    const husai_boot_opts o = husai_boot_defaults();
    assert_int_equal(o.resamples, 10000);
    assert_int_equal(o.seed, 13);
    assert_int_equal(o.rng, HUSAI_BOOT_NATIVE);
    assert_int_equal(o.unit, HUSAI_BOOT_SEEDS);
}

static void test_design_vector_numpy(void **state) {
    (void)state;
    const husai_boot_opts o = numpy_opts(13, 10000);
    husai_ci ci;
    assert_int_equal(husai_ci_mean(design_v, 10, &o, &ci), HUSAI_OK);
    assert_int_equal(ci.n, 10);
    assert_true(fabs(ci.lo - 0.2923336489498615) < 1e-12);
    assert_true(fabs(ci.hi - 0.29615735478699207) < 1e-12);
    assert_true(fabs(ci.mean - 0.294235534965992) < 1e-12);
    /* np.std(v, ddof=1) */
    assert_true(fabs(ci.std - 0.0032699894983028556) < 1e-15);
}

/* Hand-computed: sorted {1, 2, 4, 8, 16}, h = q * 4. */
static void test_percentile_interpolation(void **state) {
    (void)state;
    const double s[5] = {1, 2, 4, 8, 16};
    assert_true(fabs(husai_percentile_sorted(s, 5, 0.025) - 1.1) < 1e-14);  /* h 0.1: 1 + 0.1 * 1 */
    assert_true(fabs(husai_percentile_sorted(s, 5, 0.975) - 15.2) < 1e-14); /* h 3.9: 8 + 0.9 * 8 */
    assert_true(fabs(husai_percentile_sorted(s, 5, 0.3) - 2.4) < 1e-14);    /* h 1.2: 2 + 0.2 * 2 */
    assert_true(fabs(husai_percentile_sorted(s, 5, 0.625) - 6.0) < 1e-14);  /* h 2.5: 4 + 0.5 * 4 */
    assert_true(husai_percentile_sorted(s, 5, 0.5) == 4.0);
    assert_true(husai_percentile_sorted(s, 5, 0.0) == 1.0);
    assert_true(husai_percentile_sorted(s, 5, 1.0) == 16.0);
    const double one = 7.5;
    assert_true(husai_percentile_sorted(&one, 1, 0.975) == 7.5);
}

/* The 5 x 5 matrices of the numpy references below: only the upper triangle is used. */
static void ref_matrices(double *M, double *My) {
    const int S = 5;
    for (int p = 0; p < S; p++) {
        M[p * S + p] = My[p * S + p] = NAN; /* the diagonal must never be read */
        for (int q = p + 1; q < S; q++) {
            M[p * S + q] = M[q * S + p] = 0.2 + 0.01 * p + 0.02 * q + 0.001 * ((p * q) % 3);
            My[p * S + q] = My[q * S + p] = 0.3 - 0.005 * p + 0.001 * q;
        }
    }
}

/* Reference: rng = default_rng(3); for each of 1000 resamples, s = rng.choice(5, 5) (redrawn while all
 * equal), statistic = mean of M[s[p], s[q]] over p < q with s[p] != s[q] (and minus the same for My,
 * same s, for the paired difference); np.percentile(stats, [2.5, 97.5]). */
static void test_seed_unit_matches_numpy_reference(void **state) {
    (void)state;
    double M[25], My[25];
    ref_matrices(M, My);
    husai_boot_opts o = numpy_opts(3, 1000);
    o.unit = HUSAI_BOOT_SEEDS;
    husai_ci ci;
    assert_int_equal(husai_ci_pair_matrix(M, 5, &o, &ci), HUSAI_OK);
    assert_int_equal(ci.n, 5);
    assert_true(fabs(ci.lo - 0.23314285714285715) < 1e-12);
    assert_true(fabs(ci.hi - 0.3005) < 1e-12);

    husai_diff_ci d;
    assert_int_equal(husai_ci_diff_paired_matrix(M, My, 5, &o, &d), HUSAI_OK);
    assert_true(fabs(d.lo - -0.06725000000000003) < 1e-12);
    assert_true(fabs(d.hi - 0.00924999999999998) < 1e-12);
}

/* Reference: rng = default_rng(13); mx = x[rng.choice(7, (1000, 7))].mean(1);
 * my = y[rng.choice(5, (1000, 5))].mean(1); np.percentile(mx - my, [2.5, 97.5]). */
static void test_unpaired_diff_matches_numpy_reference(void **state) {
    (void)state;
    const double x[7] = {0.31, 0.29, 0.35, 0.30, 0.28, 0.33, 0.27}, y[5] = {0.26, 0.25, 0.27, 0.24, 0.26};
    const husai_boot_opts o = numpy_opts(13, 1000);
    husai_diff_ci d;
    assert_int_equal(husai_ci_diff_unpaired(x, 7, y, 5, &o, &d), HUSAI_OK);
    assert_true(fabs(d.diff - 0.048285714285714265) < 1e-12);
    assert_true(fabs(d.lo - 0.027707142857142836) < 1e-12);
    assert_true(fabs(d.hi - 0.06914999999999998) < 1e-12);
}

/* A PWMCC-like matrix over S seeds: M[p][q] = base + a_p + a_q + noise, a per-seed effect
 * that every pair containing the seed shares. */
#define NS 8
static void correlated_matrix(double *M, const double *a, double base, double noise, uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, "test", 0);
    for (int p = 0; p < NS; p++) {
        M[p * NS + p] = 1.0;
        for (int q = p + 1; q < NS; q++)
            M[p * NS + q] = M[q * NS + p] = base + a[p] + a[q] + noise * husai_rng_normal(&r);
    }
}

static void seed_effects(double *a) {
    husai_rng r;
    husai_rng_init(&r, 99, "test", 1);
    for (int p = 0; p < NS; p++)
        a[p] = 0.01 * husai_rng_normal(&r);
}

/* Pairs sharing seeds are not independent; the cluster bootstrap over seeds must see that. */
static void test_seed_unit_wider_than_pair_unit(void **state) {
    (void)state;
    double a[NS], M[NS * NS];
    seed_effects(a);
    correlated_matrix(M, a, 0.26, 0.001, 1);
    husai_boot_opts o = husai_boot_defaults();
    husai_ci seeds, pairs;
    o.unit = HUSAI_BOOT_SEEDS;
    assert_int_equal(husai_ci_pair_matrix(M, NS, &o, &seeds), HUSAI_OK);
    o.unit = HUSAI_BOOT_PAIRS;
    assert_int_equal(husai_ci_pair_matrix(M, NS, &o, &pairs), HUSAI_OK);
    assert_true(seeds.mean == pairs.mean);
    assert_true(seeds.lo <= seeds.mean && seeds.mean <= seeds.hi);
    assert_true(seeds.hi - seeds.lo > 2.0 * (pairs.hi - pairs.lo));
}

/* Unit pairs is exactly husai_ci_mean of the upper triangle in row-major p < q order. */
static void test_pair_unit_is_mean_of_upper_triangle(void **state) {
    (void)state;
    double a[NS], M[NS * NS], up[NS * (NS - 1) / 2];
    seed_effects(a);
    correlated_matrix(M, a, 0.26, 0.001, 2);
    int k = 0;
    for (int p = 0; p < NS; p++)
        for (int q = p + 1; q < NS; q++)
            up[k++] = M[p * NS + q];
    husai_boot_opts o = numpy_opts(13, 500);
    o.unit = HUSAI_BOOT_PAIRS;
    husai_ci m, v;
    assert_int_equal(husai_ci_pair_matrix(M, NS, &o, &m), HUSAI_OK);
    assert_int_equal(husai_ci_mean(up, (size_t)k, &o, &v), HUSAI_OK);
    assert_int_equal(m.n, NS);
    assert_true(m.lo == v.lo && m.hi == v.hi && m.mean == v.mean && m.std == v.std);
}

static void test_paired_identical_is_zero(void **state) {
    (void)state;
    double a[NS], M[NS * NS];
    seed_effects(a);
    correlated_matrix(M, a, 0.26, 0.003, 3);
    const husai_boot_opts o = husai_boot_defaults();
    husai_diff_ci d;
    assert_int_equal(husai_ci_diff_paired_matrix(M, M, NS, &o, &d), HUSAI_OK);
    assert_true(d.diff == 0.0 && d.lo == 0.0 && d.hi == 0.0);
}

/* When x and y share the per-seed effects, pairing cancels them; the unpaired bootstrap of the
 * pair values cannot. */
static void test_paired_narrower_than_unpaired(void **state) {
    (void)state;
    double a[NS], Mx[NS * NS], My[NS * NS];
    seed_effects(a);
    correlated_matrix(Mx, a, 0.27, 0.001, 4);
    correlated_matrix(My, a, 0.26, 0.001, 5);
    double ux[NS * (NS - 1) / 2], uy[NS * (NS - 1) / 2];
    int k = 0;
    for (int p = 0; p < NS; p++)
        for (int q = p + 1; q < NS; q++, k++) {
            ux[k] = Mx[p * NS + q];
            uy[k] = My[p * NS + q];
        }
    const husai_boot_opts o = husai_boot_defaults();
    husai_diff_ci paired, unpaired;
    assert_int_equal(husai_ci_diff_paired_matrix(Mx, My, NS, &o, &paired), HUSAI_OK);
    assert_int_equal(husai_ci_diff_unpaired(ux, (size_t)k, uy, (size_t)k, &o, &unpaired), HUSAI_OK);
    assert_true(fabs(paired.diff - unpaired.diff) < 1e-15);
    assert_true(paired.lo <= paired.diff && paired.diff <= paired.hi);
    assert_true(paired.hi - paired.lo < 0.25 * (unpaired.hi - unpaired.lo));
}

static void test_native_contains_mean_and_is_deterministic(void **state) {
    (void)state;
    husai_boot_opts o = husai_boot_defaults();
    husai_ci c1, c2, c3;
    assert_int_equal(husai_ci_mean(design_v, 10, &o, &c1), HUSAI_OK);
    assert_int_equal(husai_ci_mean(design_v, 10, &o, &c2), HUSAI_OK);
    assert_true(c1.lo < c1.mean && c1.mean < c1.hi);
    assert_memory_equal(&c1.lo, &c2.lo, sizeof c1.lo);
    assert_memory_equal(&c1.hi, &c2.hi, sizeof c1.hi);
    /* another seed draws another stream */
    o.seed = 14;
    assert_int_equal(husai_ci_mean(design_v, 10, &o, &c3), HUSAI_OK);
    assert_true(c3.lo != c1.lo || c3.hi != c1.hi);

    double a[NS], M[NS * NS];
    seed_effects(a);
    correlated_matrix(M, a, 0.26, 0.001, 6);
    o.seed = 13;
    husai_ci m1, m2;
    assert_int_equal(husai_ci_pair_matrix(M, NS, &o, &m1), HUSAI_OK);
    assert_int_equal(husai_ci_pair_matrix(M, NS, &o, &m2), HUSAI_OK);
    assert_memory_equal(&m1.lo, &m2.lo, sizeof m1.lo);
    assert_memory_equal(&m1.hi, &m2.hi, sizeof m1.hi);
}

/* A single value: std 0 and a degenerate CI; the smallest matrix, S = 2, has one pair, so its interval is
 * withheld (NaN), under either unit, and so is a paired difference over 2 seeds. */
static void test_degenerate_sizes(void **state) {
    (void)state;
    const husai_boot_opts o = husai_boot_defaults();
    husai_ci ci;
    const double one = 0.3;
    assert_int_equal(husai_ci_mean(&one, 1, &o, &ci), HUSAI_OK);
    assert_true(ci.std == 0.0 && ci.lo == 0.3 && ci.hi == 0.3 && ci.n == 1);
    const double M2[4] = {1, 0.25, 0.25, 1}, N2[4] = {1, 0.2, 0.2, 1};
    husai_boot_opts op = o;
    op.unit = HUSAI_BOOT_PAIRS;
    for (int u = 0; u < 2; u++) {
        assert_int_equal(husai_ci_pair_matrix(M2, 2, u ? &op : &o, &ci), HUSAI_OK);
        assert_true(ci.mean == 0.25 && ci.n == 2 && isnan(ci.std) && isnan(ci.lo) && isnan(ci.hi));
    }
    husai_diff_ci d;
    assert_int_equal(husai_ci_diff_paired_matrix(M2, N2, 2, &o, &d), HUSAI_OK);
    assert_true(fabs(d.diff - 0.05) < 1e-15 && isnan(d.lo) && isnan(d.hi));
}

/* The few-seed caveat (bootstrap.h): with 3 or 4 seeds the seed-cluster interval of a pair statistic is
 * exactly [smallest pair, largest pair], a draw of two distinct seeds having probability 6/24 (S = 3)
 * or 14/252 (S = 4) per pair, above 2.5%; with 5 seeds (30/3120 < 2.5%) it is inside that range. Never
 * zero width while the pairs differ. The pair unit at S = 3 resamples 3 values: also their range. */
static void test_few_seeds_interval_is_pair_range(void **state) {
    (void)state;
    husai_boot_opts o = husai_boot_defaults();
    for (int S = 3; S <= 5; S++) {
        double M[25];
        double lo = INFINITY, hi = -INFINITY;
        for (int p = 0; p < S; p++)
            for (int q = 0; q < S; q++) {
                const double v = p == q ? 1.0 : 0.2 + 0.01 * (p + q) + 0.003 * p * q;
                M[p * S + q] = v;
                if (p < q) {
                    lo = fmin(lo, v);
                    hi = fmax(hi, v);
                }
            }
        husai_ci ci;
        o.unit = HUSAI_BOOT_SEEDS;
        assert_int_equal(husai_ci_pair_matrix(M, S, &o, &ci), HUSAI_OK);
        assert_true(ci.hi > ci.lo);
        if (S < 5)
            assert_true(ci.lo == lo && ci.hi == hi);
        else
            assert_true(ci.lo > lo && ci.hi < hi);
        o.unit = HUSAI_BOOT_PAIRS;
        assert_int_equal(husai_ci_pair_matrix(M, S, &o, &ci), HUSAI_OK);
        assert_true(ci.hi > ci.lo);
        /* (v + v + v) / 3 may differ from v in the last bit */
        if (S == 3) assert_true(fabs(ci.lo - lo) < 1e-15 && fabs(ci.hi - hi) < 1e-15);
    }
    /* husai_ci_withhold keeps the point estimate and drops only the interval, below 3 seeds only */
    husai_ci c = {.mean = 0.5, .std = 0.1, .lo = 0.4, .hi = 0.6, .n = 2};
    husai_ci_withhold(&c, 3);
    assert_true(c.lo == 0.4 && c.hi == 0.6);
    husai_ci_withhold(&c, 2);
    assert_true(c.mean == 0.5 && c.std == 0.1 && c.n == 2 && isnan(c.lo) && isnan(c.hi));
    husai_diff_ci d = {.diff = 0.1, .lo = 0.0, .hi = 0.2};
    husai_diff_ci_withhold(&d, 2);
    assert_true(d.diff == 0.1 && isnan(d.lo) && isnan(d.hi));
}

static void expect_error(husai_status st) {
    assert_int_not_equal(st, HUSAI_OK);
    assert_true(strlen(husai_error_message()) > 0);
    husai_error_clear();
}

static void test_errors(void **state) {
    (void)state;
    husai_boot_opts o = husai_boot_defaults();
    husai_ci ci;
    husai_diff_ci d;
    const double v[3] = {0.1, 0.2, 0.3}, bad[3] = {0.1, NAN, 0.3}, inf[2] = {0.1, INFINITY};
    double M[9] = {1, 0.2, 0.3, 0.2, 1, 0.4, 0.3, 0.4, 1};

    husai_error_clear();
    expect_error(husai_ci_mean(v, 0, &o, &ci));
    expect_error(husai_ci_mean(bad, 3, &o, &ci));
    expect_error(husai_ci_diff_unpaired(v, 3, inf, 2, &o, &d));
    expect_error(husai_ci_diff_unpaired(v, 3, v, 0, &o, &d));
    expect_error(husai_ci_pair_matrix(M, 1, &o, &ci));
    expect_error(husai_ci_diff_paired_matrix(M, M, 0, &o, &d));
    M[5] = NAN; /* [1][2], upper triangle */
    expect_error(husai_ci_pair_matrix(M, 3, &o, &ci));
    M[5] = 0.4;
    o.resamples = 99;
    expect_error(husai_ci_mean(v, 3, &o, &ci));
    expect_error(husai_ci_pair_matrix(M, 3, &o, &ci));
    expect_error(husai_ci_diff_paired_matrix(M, M, 3, &o, &d));
    o.resamples = 100;
    assert_int_equal(husai_ci_pair_matrix(M, 3, &o, &ci), HUSAI_OK);
}

/* The configuration's words map to the enums and back; anything else is refused. */
static void test_unit_and_rng_words(void **state) {
    (void)state;
    assert_int_equal(husai_boot_unit_parse("seeds"), HUSAI_BOOT_SEEDS);
    assert_int_equal(husai_boot_unit_parse("pairs"), HUSAI_BOOT_PAIRS);
    assert_int_equal(husai_boot_unit_parse("Pairs"), -1);
    assert_int_equal(husai_boot_unit_parse(""), -1);
    assert_string_equal(husai_boot_unit_name(HUSAI_BOOT_SEEDS), "seeds");
    assert_string_equal(husai_boot_unit_name(HUSAI_BOOT_PAIRS), "pairs");
    assert_int_equal(husai_boot_rng_parse("native"), HUSAI_BOOT_NATIVE);
    assert_int_equal(husai_boot_rng_parse("numpy"), HUSAI_BOOT_NUMPY);
    assert_int_equal(husai_boot_rng_parse("numpy "), -1);
    assert_string_equal(husai_boot_rng_name(HUSAI_BOOT_NATIVE), "native");
    assert_string_equal(husai_boot_rng_name(HUSAI_BOOT_NUMPY), "numpy");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_design_vector_numpy),
        cmocka_unit_test(test_percentile_interpolation),
        cmocka_unit_test(test_seed_unit_matches_numpy_reference),
        cmocka_unit_test(test_unpaired_diff_matches_numpy_reference),
        cmocka_unit_test(test_seed_unit_wider_than_pair_unit),
        cmocka_unit_test(test_pair_unit_is_mean_of_upper_triangle),
        cmocka_unit_test(test_paired_identical_is_zero),
        cmocka_unit_test(test_paired_narrower_than_unpaired),
        cmocka_unit_test(test_native_contains_mean_and_is_deterministic),
        cmocka_unit_test(test_degenerate_sizes),
        cmocka_unit_test(test_few_seeds_interval_is_pair_range),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unit_and_rng_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
