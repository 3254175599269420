/* Per-feature stability and consensus features against naive loops: best matches from PWMCC's pass equal a
 * double-precision double loop and leave PWMCC's bits unchanged; a planted set of shared columns is found
 * exactly; random decoders give no consensus at tau 0.7; the result does not depend on seed order.
 * With `--dump IN OUTDIR` it is also the driver tests/features_numpy.sh checks against numpy. */
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
#include "metrics/features.h"
#include "metrics/pwmcc.h"

/* S decoders [d, n] sharing `shared` planted columns (each seed: its own permutation, sign flips and
 * rescaling, plus noise of relative size `noise`), the other columns independent normals. */
static float *planted(int S, int d, int n, int shared, double noise, uint64_t seed) {
    float *D = malloc((size_t)S * d * n * sizeof(float)), *atoms = malloc((size_t)d * shared * sizeof(float));
    husai_pwmcc_random_decoder(seed, d, shared, atoms);
    husai_rng r;
    husai_rng_init(&r, seed, "planted", 0);
    uint32_t *perm = malloc((size_t)n * sizeof(uint32_t));
    for (int s = 0; s < S; s++) {
        float *Ds = D + (size_t)s * d * n;
        husai_pwmcc_random_decoder(seed * 100 + (uint64_t)s + 1, d, n, Ds);
        husai_rng_permutation(&r, perm, (uint32_t)n);
        for (int a = 0; a < shared; a++) {
            const int j = (int)perm[a];
            const float sc =
                (husai_rng_uniform(&r) < 0.5 ? -1.0f : 1.0f) * (float)(0.5 + husai_rng_uniform(&r));
            for (int i = 0; i < d; i++)
                Ds[(size_t)i * n + j] =
                    sc * (atoms[(size_t)i * shared + a] + (float)(noise * husai_rng_normal(&r)));
        }
    }
    free(perm);
    free(atoms);
    return D;
}

static float *rows_of(const float *D, int S, int d, int n) {
    float *F = malloc((size_t)S * d * n * sizeof(float));
    for (int s = 0; s < S; s++)
        husai_normalized_feature_rows(D + (size_t)s * d * n, d, n, F + (size_t)s * d * n);
    return F;
}

static husai_boot_opts small_boot(void) {
    husai_boot_opts o = husai_boot_defaults();
    o.resamples = 200;
    return o;
}

static void test_best_matches_naive_and_pwmcc_unchanged(void **state) {
    (void)state;
    const int S = 4, d = 16, n = 300; /* two row blocks */
    float *D = planted(S, d, n, 40, 0.05, 3), *F = rows_of(D, S, d, n);
    husai_features f;
    double *M = malloc((size_t)S * S * sizeof(double)), *M0 = malloc((size_t)S * S * sizeof(double));
    assert_int_equal(husai_features_best(&f, F, S, d, n, M), HUSAI_OK);
    assert_int_equal(husai_pwmcc_matrix(D, S, d, n, M0), HUSAI_OK);
    assert_memory_equal(M, M0, (size_t)S * S * sizeof(double));
    int checked = 0;
    for (int s = 0; s < S; s++)
        for (int t = 0; t < S; t++) {
            if (s == t) continue;
            for (int i = 0; i < n; i++) {
                double best = -1, second = -1;
                int arg = -1;
                for (int j = 0; j < n; j++) {
                    double dot = 0;
                    for (int k = 0; k < d; k++)
                        dot += (double)F[((size_t)s * n + i) * d + k] * F[((size_t)t * n + j) * d + k];
                    dot = fabs(dot);
                    if (dot > best) {
                        second = best;
                        best = dot;
                        arg = j;
                    } else if (dot > second) {
                        second = dot;
                    }
                }
                const size_t at = ((size_t)s * S + t) * n + i;
                assert_true(fabs(f.best_cos[at] - best) < 1e-5);
                if (best - second > 1e-4) {
                    assert_int_equal(f.best_index[at], arg);
                    checked++;
                }
            }
        }
    assert_true(checked > S * (S - 1) * n * 9 / 10);
    /* The same tensors from parts placed one by one (as ranks would). */
    husai_features g;
    assert_int_equal(husai_features_init(&g, S, d, n), HUSAI_OK);
    for (int part = 0; part < 3; part++) {
        const long np = husai_pwmcc_part_pairs(S, part, 3);
        float *pc = malloc((size_t)np * 2 * n * sizeof(float));
        int32_t *pi = malloc((size_t)np * 2 * n * sizeof(int32_t));
        assert_int_equal(husai_pwmcc_rows_part_best(F, S, d, n, part, 3, M0, pc, pi), HUSAI_OK);
        assert_int_equal(husai_features_place(&g, part, 3, pc, pi), HUSAI_OK);
        free(pc);
        free(pi);
    }
    assert_memory_equal(f.best_cos, g.best_cos, (size_t)S * S * n * sizeof(float));
    assert_memory_equal(f.best_index, g.best_index, (size_t)S * S * n * sizeof(int32_t));
    husai_features_free(&g);
    husai_features_free(&f);
    free(M);
    free(M0);
    free(D);
    free(F);
}

static void test_stability_and_mutual_naive(void **state) {
    (void)state;
    const int S = 5, d = 12, n = 30;
    float *D = planted(S, d, n, 10, 0.2, 5), *F = rows_of(D, S, d, n);
    husai_features f;
    const husai_boot_opts bo = small_boot();
    assert_int_equal(husai_features_best(&f, F, S, d, n, NULL), HUSAI_OK);
    assert_int_equal(husai_features_analyse(&f, D, NULL, NULL, 0.6, 0, &bo), HUSAI_OK);
    int mutual = 0;
    for (int s = 0; s < S; s++)
        for (int i = 0; i < n; i++) {
            int hits = 0;
            double sum = 0;
            for (int t = 0; t < S; t++) {
                if (t == s) continue;
                const size_t at = ((size_t)s * S + t) * n + i;
                hits += f.best_cos[at] >= 0.6f;
                sum += f.best_cos[at];
                const int j = f.best_index[at];
                if (t > s && f.best_cos[at] >= 0.6f && f.best_index[((size_t)t * S + s) * n + j] == i)
                    mutual++;
            }
            assert_float_equal(f.stability[(size_t)s * n + i], (double)hits / (S - 1), 1e-6);
            assert_float_equal(f.mean_best[(size_t)s * n + i], sum / (S - 1), 1e-6);
        }
    assert_int_equal(f.n_mutual, mutual);
    /* Every consensus feature has one member per listed seed, and cluster[] points back to it. */
    for (int c = 0; c < f.n_consensus; c++) {
        int m = 0;
        for (int s = 0; s < S; s++) {
            const int i = f.members[(size_t)c * S + s];
            if (i < 0) continue;
            m++;
            assert_int_equal(f.cluster[(size_t)s * n + i], c);
        }
        assert_int_equal(m, f.n_members[c]);
        assert_true(m >= S - 1);
        assert_true(c == 0 || f.n_members[c] <= f.n_members[c - 1]);
    }
    husai_features_free(&f);
    free(D);
    free(F);
}

static void test_planted_found_exactly(void **state) {
    (void)state;
    const int S = 4, d = 32, n = 64, shared = 24;
    float *D = planted(S, d, n, shared, 0.02, 11), *F = rows_of(D, S, d, n);
    float *atoms = malloc((size_t)d * shared * sizeof(float));
    husai_pwmcc_random_decoder(11, d, shared, atoms);
    husai_features f;
    const husai_boot_opts bo = small_boot();
    assert_int_equal(husai_features_best(&f, F, S, d, n, NULL), HUSAI_OK);
    assert_int_equal(husai_features_analyse(&f, D, NULL, NULL, 0.7, S, &bo), HUSAI_OK);
    assert_int_equal(f.n_consensus, shared);
    /* Each consensus direction is one planted atom, each atom is found once. */
    int found[24] = {0};
    for (int c = 0; c < f.n_consensus; c++) {
        assert_int_equal(f.n_members[c], S);
        assert_true(f.coherence[c] > 0.99f);
        int best = -1;
        double bv = 0;
        for (int a = 0; a < shared; a++) {
            double dot = 0, nn = 0;
            for (int k = 0; k < d; k++) {
                dot += (double)f.consensus[(size_t)c * d + k] * atoms[(size_t)k * shared + a];
                nn += (double)atoms[(size_t)k * shared + a] * atoms[(size_t)k * shared + a];
            }
            if (fabs(dot) / sqrt(nn) > bv) {
                bv = fabs(dot) / sqrt(nn);
                best = a;
            }
        }
        assert_true(bv > 0.999);
        found[best]++;
    }
    for (int a = 0; a < shared; a++)
        assert_int_equal(found[a], 1);
    assert_float_equal(f.stats.count.mean, shared, 0);
    assert_float_equal(f.stats.share.mean, (double)shared / n, 1e-12);
    assert_true(f.stats.count.lo <= f.stats.count.mean && f.stats.count.mean <= f.stats.count.hi);
    husai_features_free(&f);
    free(atoms);
    free(D);
    free(F);
}

static void test_random_gives_no_consensus(void **state) {
    (void)state;
    const uint64_t seeds[5] = {1, 2, 3, 4, 5};
    const husai_boot_opts bo = small_boot();
    husai_feature_stats st;
    assert_int_equal(husai_features_random_stats(seeds, 5, 64, 128, 0.7, 0, &bo, &st), HUSAI_OK);
    assert_float_equal(st.count.mean, 0, 0);
    assert_float_equal(st.stable_share.mean, 0, 0);
    assert_float_equal(st.count.hi, 0, 0);
    /* Two seeds: no interval. */
    assert_int_equal(husai_features_random_stats(seeds, 2, 64, 128, 0.7, 0, &bo, &st), HUSAI_OK);
    assert_true(isnan(st.count.lo) && isnan(st.count.hi));
}

static void test_seed_order_independent(void **state) {
    (void)state;
    const int S = 5, d = 16, n = 40;
    float *D = planted(S, d, n, 15, 0.3, 17), *F = rows_of(D, S, d, n);
    const uint64_t ids[5] = {50, 10, 40, 20, 30};
    const int perm[5] = {3, 0, 4, 1, 2}; /* new position p holds old seed perm[p] */
    float *F2 = malloc((size_t)S * d * n * sizeof(float)), *D2 = malloc((size_t)S * d * n * sizeof(float));
    uint64_t ids2[5];
    for (int p = 0; p < S; p++) {
        memcpy(F2 + (size_t)p * d * n, F + (size_t)perm[p] * d * n, (size_t)d * n * sizeof(float));
        memcpy(D2 + (size_t)p * d * n, D + (size_t)perm[p] * d * n, (size_t)d * n * sizeof(float));
        ids2[p] = ids[perm[p]];
    }
    const husai_boot_opts bo = small_boot();
    husai_features a, b;
    assert_int_equal(husai_features_best(&a, F, S, d, n, NULL), HUSAI_OK);
    assert_int_equal(husai_features_analyse(&a, D, ids, NULL, 0.5, 3, &bo), HUSAI_OK);
    assert_int_equal(husai_features_best(&b, F2, S, d, n, NULL), HUSAI_OK);
    assert_int_equal(husai_features_analyse(&b, D2, ids2, NULL, 0.5, 3, &bo), HUSAI_OK);
    assert_true(a.n_consensus > 3);
    assert_int_equal(a.n_consensus, b.n_consensus);
    assert_int_equal(a.n_mutual, b.n_mutual);
    for (int c = 0; c < a.n_consensus; c++) {
        for (int p = 0; p < S; p++)
            assert_int_equal(b.members[(size_t)c * S + p], a.members[(size_t)c * S + perm[p]]);
        for (int k = 0; k < d; k++)
            assert_float_equal(a.consensus[(size_t)c * d + k], b.consensus[(size_t)c * d + k], 1e-6);
        assert_float_equal(a.coherence[c], b.coherence[c], 1e-6);
    }
    for (int p = 0; p < S; p++)
        for (int i = 0; i < n; i++) {
            assert_int_equal(b.cluster[(size_t)p * n + i], a.cluster[(size_t)perm[p] * n + i]);
            assert_float_equal(b.stability[(size_t)p * n + i], a.stability[(size_t)perm[p] * n + i], 0);
        }
    assert_float_equal(a.stats.count.mean, b.stats.count.mean, 0);
    assert_float_equal(a.stats.stable_share.mean, b.stats.stable_share.mean, 0);
    husai_features_free(&a);
    husai_features_free(&b);
    free(D);
    free(F);
    free(F2);
    free(D2);
}

static void test_bad_arguments(void **state) {
    (void)state;
    const int S = 3, d = 8, n = 10;
    float *D = planted(S, d, n, 2, 0.1, 2), *F = rows_of(D, S, d, n);
    husai_features f;
    assert_int_equal(husai_features_best(&f, F, S, d, n, NULL), HUSAI_OK);
    assert_int_equal(husai_features_analyse(&f, D, NULL, NULL, 0.0, 0, NULL), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "features.tau"));
    assert_int_equal(husai_features_analyse(&f, D, NULL, NULL, 0.7, 4, NULL), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "features.min_seeds"));
    const uint64_t dup[3] = {7, 8, 7};
    assert_int_equal(husai_features_analyse(&f, D, dup, NULL, 0.7, 0, NULL), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "twice"));
    assert_null(f.stability);
    assert_non_null(f.best_cos);
    husai_features_free(&f);
    assert_null(f.best_cos);
    husai_features_free(&f); /* harmless twice */
    free(D);
    free(F);
}

/* --dump IN OUTDIR: IN holds int32 S, d_model, d_sae, min_seeds, float64 tau, S uint64 seed ids, then the S
 * decoders as float32 [d_model, d_sae]; OUTDIR receives each array as raw little-endian .bin files and
 * summary.txt. */
static int write_raw(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return 1;
    const int bad = bytes && fwrite(p, 1, bytes, fp) != bytes;
    return fclose(fp) || bad;
}

static int dump(const char *in, const char *dir) {
    FILE *fp = fopen(in, "rb");
    int32_t hdr[4];
    double tau;
    if (!fp || fread(hdr, sizeof hdr, 1, fp) != 1 || fread(&tau, sizeof tau, 1, fp) != 1) return 2;
    const int S = hdr[0], dm = hdr[1], n = hdr[2], min_seeds = hdr[3];
    uint64_t *ids = malloc((size_t)S * sizeof(uint64_t));
    float *D = malloc((size_t)S * dm * n * sizeof(float));
    if (fread(ids, sizeof *ids, (size_t)S, fp) != (size_t)S ||
        fread(D, sizeof(float), (size_t)S * dm * n, fp) != (size_t)S * dm * n)
        return 2;
    fclose(fp);
    float *F = rows_of(D, S, dm, n);
    husai_features f;
    husai_boot_opts bo = small_boot();
    if (husai_features_best(&f, F, S, dm, n, NULL) ||
        husai_features_analyse(&f, D, ids, NULL, tau, min_seeds, &bo)) {
        fprintf(stderr, "%s\n", husai_error_message());
        return 1;
    }
    const size_t SS = (size_t)S * S * n, N = (size_t)S * n, c = (size_t)f.n_consensus;
    int bad =
        write_raw(dir, "best_cos", f.best_cos, SS * 4) | write_raw(dir, "best_index", f.best_index, SS * 4) |
        write_raw(dir, "stability", f.stability, N * 4) | write_raw(dir, "mean_best", f.mean_best, N * 4) |
        write_raw(dir, "cluster", f.cluster, N * 4) | write_raw(dir, "consensus", f.consensus, c * dm * 4) |
        write_raw(dir, "members", f.members, c * S * 4) | write_raw(dir, "coherence", f.coherence, c * 4);
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.txt", dir);
    FILE *out = fopen(path, "w");
    if (!out) return 1;
    fprintf(out, "n_consensus %d\nn_mutual %d\ncount %.17g %.17g %.17g\nstable_share %.17g %.17g %.17g\n",
            f.n_consensus, f.n_mutual, f.stats.count.mean, f.stats.count.lo, f.stats.count.hi,
            f.stats.stable_share.mean, f.stats.stable_share.lo, f.stats.stable_share.hi);
    bad |= fclose(out);
    husai_features_free(&f);
    free(ids);
    free(D);
    free(F);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--dump")) return dump(argv[2], argv[3]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_best_matches_naive_and_pwmcc_unchanged),
        cmocka_unit_test(test_stability_and_mutual_naive),
        cmocka_unit_test(test_planted_found_exactly),
        cmocka_unit_test(test_random_gives_no_consensus),
        cmocka_unit_test(test_seed_order_independent),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
