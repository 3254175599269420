/* bootstrap.h: percentile bootstrap confidence intervals for husai's statistics.
 * Two resampling units: `pairs` (HUSAI's method, resample pair values as if independent;
 * anti-conservative since pairs share seeds) and `seeds` (a cluster bootstrap over seeds,
 * the default). Percentiles use linear interpolation at h = q (B - 1) (numpy's default).
 * Two generators: native (stream (seed, "bootstrap")) and numpy (bit-exact default_rng).
 * Small samples: with 2 seeds there is one pair, and no seed-level interval exists (see
 * HUSAI_CI_MIN_SEEDS); a withheld interval has lo = hi = NaN. No MPI here.
 * defines: husai_boot_*, husai_ci, husai_ci_*, husai_diff_ci, HUSAI_CI_MIN_SEEDS, HUSAI_CI_FEW_SEEDS,
 *          husai_diff_ci_withhold, husai_percentile_sorted, husai_seed_stat_fn */
#ifndef HUSAI_METRICS_BOOTSTRAP_H
#define HUSAI_METRICS_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/status.h"

/* The fewest seeds behind a reported seed-level interval. With 2 seeds every cluster resample of a pair
 * statistic is the one pair (zero width), and the bootstrap of a mean of 2 values is their range, which
 * covers the mean about half the time, not 95%. */
#define HUSAI_CI_MIN_SEEDS 3
/* Below this many seeds the reports say the intervals rest on few seeds: with 3 or 4 seeds the 2.5 and
 * 97.5 percentiles of the seed-cluster bootstrap of a pair statistic are the smallest and largest pair
 * value (a draw of two distinct seeds, whose statistic is that one pair, has probability above 2.5%). */
#define HUSAI_CI_FEW_SEEDS 5

typedef enum { HUSAI_BOOT_SEEDS = 0, HUSAI_BOOT_PAIRS = 1 } husai_boot_unit;
typedef enum { HUSAI_BOOT_NATIVE = 0, HUSAI_BOOT_NUMPY = 1 } husai_boot_rng;

/* The words the configuration and the reports use: "seeds"/"pairs", "native"/"numpy"; the parsers
 * return -1 for any other word. Inline, so config.c needs no bootstrap code to link (the fuzz drivers
 * build it alone). */
static inline const char *husai_boot_unit_name(husai_boot_unit u) {
    return u == HUSAI_BOOT_PAIRS ? "pairs" : "seeds";
}
static inline int husai_boot_unit_parse(const char *word) {
    return !strcmp(word, "seeds") ? HUSAI_BOOT_SEEDS : !strcmp(word, "pairs") ? HUSAI_BOOT_PAIRS : -1;
}
static inline const char *husai_boot_rng_name(husai_boot_rng r) {
    return r == HUSAI_BOOT_NUMPY ? "numpy" : "native";
}
static inline int husai_boot_rng_parse(const char *word) {
    return !strcmp(word, "native") ? HUSAI_BOOT_NATIVE : !strcmp(word, "numpy") ? HUSAI_BOOT_NUMPY : -1;
}

typedef struct {
    int resamples;      /* B, default 10000; at least 100 */
    uint64_t seed;      /* generator seed, default 13 (HUSAI's) */
    husai_boot_rng rng; /* which generator draws the indices */
    husai_boot_unit unit;
} husai_boot_opts;

typedef struct {
    double mean, std; /* point estimate and sample std (n-1) of the underlying values; NaN for one pair */
    double lo, hi;    /* 2.5 and 97.5 percentiles of the bootstrap distribution; NaN when withheld */
    int n;            /* number of values (or seeds for a matrix statistic) */
} husai_ci;

/* B 10000, seed 13, native generator, unit seeds. */
husai_boot_opts husai_boot_defaults(void);

/* Percentile q in [0, 1] of sorted[0..n) with linear interpolation at h = q (n - 1). */
double husai_percentile_sorted(const double *sorted, size_t n, double q);

/* CI of the mean of n independent values (resampling the values; the unit field is ignored).
 * n == 0 or a non-finite value is an error naming the problem. */
husai_status husai_ci_mean(const double *v, size_t n, const husai_boot_opts *o, husai_ci *out);

/* CI of the mean over pairs p < q of a symmetric S x S matrix M (e.g. PWMCC). Unit pairs:
 * resample the S(S-1)/2 pair values. Unit seeds: draw S seed positions with replacement and
 * average M over position pairs whose drawn seeds differ (a draw of one repeated seed is redrawn).
 * S < 2 is an error; S = 2 gives the mean of the one pair, std, lo and hi NaN (withheld). */
husai_status husai_ci_pair_matrix(const double *M, int S, const husai_boot_opts *o, husai_ci *out);

/* A statistic of a seed resample: count[a] is how many of the S drawn positions are seed a (all 1 for
 * the sample itself). */
typedef double (*husai_seed_stat_fn)(const int *count, void *ctx);

/* Seed-cluster bootstrap of any statistic f: mean is f on the sample, std NaN, and lo, hi the
 * percentiles of f over o->resamples draws of S seed positions, drawn as husai_ci_pair_matrix's
 * (a draw of one repeated seed is redrawn); the unit option is not used. Withheld below
 * HUSAI_CI_MIN_SEEDS; S < 2 is an error. */
husai_status husai_ci_seed_stat(int S, husai_seed_stat_fn f, void *ctx, const husai_boot_opts *o,
                                husai_ci *out);

typedef struct {
    double diff, lo, hi; /* point difference of means (x - y) and its percentile CI */
} husai_diff_ci;

/* HUSAI's unpaired difference of means of two value sets: x's B resamples are drawn first
 * from the stream, then y's; the CI is over the B differences of resample means. */
husai_status husai_ci_diff_unpaired(const double *x, size_t nx, const double *y, size_t ny,
                                    const husai_boot_opts *o, husai_diff_ci *out);

/* Paired difference of the pair-mean statistic of two S x S matrices over the same seeds:
 * each resample draws one set of seed positions (as husai_ci_pair_matrix with unit seeds)
 * and applies it to both matrices. S = 2 gives the difference with lo = hi = NaN (one pair). */
husai_status husai_ci_diff_paired_matrix(const double *Mx, const double *My, int S, const husai_boot_opts *o,
                                         husai_diff_ci *out);

/* Withholds ci's interval (lo = hi = NaN) when it rests on fewer than HUSAI_CI_MIN_SEEDS seeds;
 * mean, std and n stay. */
void husai_ci_withhold(husai_ci *ci, int n_seeds);

/* The same for a difference's interval; diff stays. */
void husai_diff_ci_withhold(husai_diff_ci *d, int n_seeds);

#endif
