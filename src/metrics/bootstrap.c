#include "metrics/bootstrap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/nprng.h"
#include "common/rng.h"

#define BOOT_MIN_RESAMPLES 100
#define BOOT_Q_LO 0.025
#define BOOT_Q_HI 0.975

husai_boot_opts husai_boot_defaults(void) {
    husai_boot_opts o = {.resamples = 10000, .seed = 13, .rng = HUSAI_BOOT_NATIVE, .unit = HUSAI_BOOT_SEEDS};
    return o;
}

/* One index source for both generators, so every resampling loop below is written once and
 * draws in the same order whichever generator is selected. */
typedef struct {
    husai_boot_rng kind;
    husai_rng native;
    husai_nprng np;
} boot_gen;

static void gen_init(boot_gen *g, const husai_boot_opts *o) {
    g->kind = o->rng;
    if (o->rng == HUSAI_BOOT_NUMPY)
        husai_nprng_seed(&g->np, o->seed);
    else
        husai_rng_init(&g->native, o->seed, HUSAI_RNG_BOOTSTRAP, 0);
}

/* Index uniform on [0, n); callers guarantee n fits the numpy generator's 32-bit range. */
static size_t gen_index(boot_gen *g, size_t n) {
    if (g->kind == HUSAI_BOOT_NUMPY) return husai_nprng_index(&g->np, (uint32_t)n);
    return (size_t)husai_rng_below(&g->native, (uint64_t)n);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double husai_percentile_sorted(const double *sorted, size_t n, double q) {
    if (n == 0 || isnan(q)) return NAN;
    if (n == 1 || q <= 0.0) return sorted[0];
    if (q >= 1.0) return sorted[n - 1];
    const double h = (double)(n - 1) * q;
    size_t lo = (size_t)floor(h);
    if (lo >= n - 1) return sorted[n - 1];
    const double t = h - (double)lo;
    const double a = sorted[lo], b = sorted[lo + 1], d = b - a;
    /* numpy's _lerp interpolates from the nearer end, which keeps the result monotone in t
     * and lets us match its rounding, not only its formula. */
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

static husai_status check_opts(const husai_boot_opts *o) {
    if (o->resamples < BOOT_MIN_RESAMPLES)
        return husai_error(HUSAI_ERR_ARG, "bootstrap resamples=%d must be at least %d", o->resamples,
                           BOOT_MIN_RESAMPLES);
    if (o->rng != HUSAI_BOOT_NATIVE && o->rng != HUSAI_BOOT_NUMPY)
        return husai_error(HUSAI_ERR_ARG, "unknown bootstrap generator %d", (int)o->rng);
    return HUSAI_OK;
}

static husai_status check_values(const double *v, size_t n, const char *what) {
    if (n == 0) return husai_error(HUSAI_ERR_DATA, "bootstrap of %s: no values", what);
    if (!v) return husai_error(HUSAI_ERR_ARG, "bootstrap of %s: NULL value array", what);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return husai_error(HUSAI_ERR_DATA, "bootstrap of %s: value %zu is %g", what, i, v[i]);
    return HUSAI_OK;
}

/* The numpy generator draws 32-bit indices, so it cannot address more values than that. */
static husai_status check_index_range(const husai_boot_opts *o, size_t n, const char *what) {
    if (o->rng == HUSAI_BOOT_NUMPY && n > UINT32_MAX)
        return husai_error(HUSAI_ERR_ARG,
                           "bootstrap of %s: %zu values exceed the numpy generator's 2^32 range", what, n);
    return HUSAI_OK;
}

static double mean_of(const double *v, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s / (double)n;
}

static double sample_std(const double *v, size_t n, double mean) {
    if (n < 2) return 0.0;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (v[i] - mean) * (v[i] - mean);
    return sqrt(ss / (double)(n - 1));
}

/* Fills stat[0..B) with the means of B resamples of v, drawn row by row as numpy's
 * choice(n, (B, n)) does; the generator is left where the last draw put it. */
static void resample_means(boot_gen *g, const double *v, size_t n, int B, double *stat) {
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++)
            s += v[gen_index(g, n)];
        stat[b] = s / (double)n;
    }
}

/* Sorts stat in place and returns its 2.5 and 97.5 percentiles. */
static void percentile_ci(double *stat, int B, double *lo, double *hi) {
    qsort(stat, (size_t)B, sizeof *stat, cmp_double);
    *lo = husai_percentile_sorted(stat, (size_t)B, BOOT_Q_LO);
    *hi = husai_percentile_sorted(stat, (size_t)B, BOOT_Q_HI);
}

husai_status husai_ci_mean(const double *v, size_t n, const husai_boot_opts *o, husai_ci *out) {
    const husai_boot_opts def = husai_boot_defaults();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    husai_status st = check_opts(o);
    if (st == HUSAI_OK) st = check_values(v, n, "a mean");
    if (st == HUSAI_OK) st = check_index_range(o, n, "a mean");
    if (st != HUSAI_OK) return st;
    if (n > INT32_MAX) return husai_error(HUSAI_ERR_ARG, "bootstrap of a mean: %zu values is too many", n);

    const double mean = mean_of(v, n), std = sample_std(v, n, mean);
    if (!isfinite(mean) || !isfinite(std))
        return husai_error(HUSAI_ERR_DATA, "bootstrap of a mean: values too large for double arithmetic");

    double *stat = malloc((size_t)o->resamples * sizeof *stat);
    if (!stat) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d bootstrap statistics", o->resamples);
    boot_gen g;
    gen_init(&g, o);
    resample_means(&g, v, n, o->resamples, stat);
    percentile_ci(stat, o->resamples, &out->lo, &out->hi);
    free(stat);
    out->mean = mean;
    out->std = std;
    out->n = (int)n;
    return HUSAI_OK;
}

/* Only the strict upper triangle of a pair matrix is read (and checked): the diagonal, a seed
 * with itself, carries no pair information and may hold anything, e.g. 1 or NaN. */
static husai_status check_matrix(const double *M, int S, const char *what) {
    if (S < 2) return husai_error(HUSAI_ERR_ARG, "%s: S=%d seeds, need at least 2 for a pair", what, S);
    if (!M) return husai_error(HUSAI_ERR_ARG, "%s: NULL matrix", what);
    for (int p = 0; p < S; p++)
        for (int q = p + 1; q < S; q++)
            if (!isfinite(M[(size_t)p * S + q]))
                return husai_error(HUSAI_ERR_DATA, "%s: entry [%d][%d] is %g", what, p, q,
                                   M[(size_t)p * S + q]);
    return HUSAI_OK;
}

/* Copies the strict upper triangle, row-major p < q, into a new array of S(S-1)/2 values. */
static double *pair_values(const double *M, int S, size_t *n_pairs) {
    const size_t np = (size_t)S * (size_t)(S - 1) / 2;
    double *pv = malloc(np * sizeof *pv);
    if (!pv) return NULL;
    size_t k = 0;
    for (int p = 0; p < S; p++)
        for (int q = p + 1; q < S; q++)
            pv[k++] = M[(size_t)p * S + q];
    *n_pairs = np;
    return pv;
}

/* One cluster-bootstrap draw: S seed positions with replacement, kept as counts per seed
 * (count[a]) and the list of distinct drawn seeds in increasing order (seen[0..*n_seen)).
 * A draw of one repeated seed has no pair with different seeds, so it is redrawn. */
static void draw_seeds(boot_gen *g, int S, int *count, int *seen, int *n_seen) {
    int distinct;
    do {
        memset(count, 0, (size_t)S * sizeof *count);
        for (int p = 0; p < S; p++)
            count[gen_index(g, (size_t)S)]++;
        distinct = 0;
        for (int a = 0; a < S; a++)
            if (count[a]) seen[distinct++] = a;
    } while (distinct < 2);
    *n_seen = distinct;
}

/* Mean of M[s_p][s_q] over position pairs p < q with s_p != s_q. Grouping positions by seed,
 * seeds a < b contribute count[a] * count[b] pairs each, so the cost is O(distinct^2), not O(S^2)
 * position pairs, and the weight total is (S^2 - sum count^2) / 2. seen[] is increasing, so a < b and
 * only the upper triangle is read. */
static double seeds_stat(const double *M, int S, const int *count, const int *seen, int n_seen) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n_seen; i++) {
        const int a = seen[i];
        double row = 0.0, w = 0.0;
        for (int j = i + 1; j < n_seen; j++) {
            const int b = seen[j];
            row += (double)count[b] * M[(size_t)a * S + b];
            w += (double)count[b];
        }
        num += (double)count[a] * row;
        den += (double)count[a] * w;
    }
    return num / den;
}

/* The cluster-bootstrap percentile interval of seeds_stat(Mx), or of seeds_stat(Mx) - seeds_stat(My)
 * under the same draw when My is given; o->resamples draws of S seeds from o's stream. */
static husai_status seeds_ci(const double *Mx, const double *My, int S, const husai_boot_opts *o, double *lo,
                             double *hi) {
    double *stat = malloc((size_t)o->resamples * sizeof *stat);
    int *count = malloc((size_t)S * sizeof *count), *seen = malloc((size_t)S * sizeof *seen);
    if (!stat || !count || !seen) {
        free(stat);
        free(count);
        free(seen);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate bootstrap scratch for %d seeds", S);
    }
    boot_gen g;
    gen_init(&g, o);
    for (int b = 0; b < o->resamples; b++) {
        int n_seen;
        draw_seeds(&g, S, count, seen, &n_seen);
        stat[b] = seeds_stat(Mx, S, count, seen, n_seen);
        if (My) stat[b] -= seeds_stat(My, S, count, seen, n_seen);
    }
    percentile_ci(stat, o->resamples, lo, hi);
    free(stat);
    free(count);
    free(seen);
    return HUSAI_OK;
}

husai_status husai_ci_seed_stat(int S, husai_seed_stat_fn f, void *ctx, const husai_boot_opts *o,
                                husai_ci *out) {
    const husai_boot_opts def = husai_boot_defaults();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    husai_status st = check_opts(o);
    if (st != HUSAI_OK) return st;
    if (S < 2) return husai_error(HUSAI_ERR_ARG, "seed bootstrap: S=%d seeds, need at least 2", S);
    int *count = malloc((size_t)S * sizeof *count), *seen = malloc((size_t)S * sizeof *seen);
    double *stat = malloc((size_t)o->resamples * sizeof *stat);
    if (!stat || !count || !seen) {
        free(stat);
        free(count);
        free(seen);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate bootstrap scratch for %d seeds", S);
    }
    for (int a = 0; a < S; a++)
        count[a] = 1;
    out->mean = f(count, ctx);
    out->std = NAN;
    out->n = S;
    if (S >= HUSAI_CI_MIN_SEEDS) {
        boot_gen g;
        gen_init(&g, o);
        for (int b = 0; b < o->resamples; b++) {
            int n_seen;
            draw_seeds(&g, S, count, seen, &n_seen);
            stat[b] = f(count, ctx);
        }
        percentile_ci(stat, o->resamples, &out->lo, &out->hi);
    }
    free(stat);
    free(count);
    free(seen);
    husai_ci_withhold(out, S);
    return HUSAI_OK;
}

husai_status husai_ci_pair_matrix(const double *M, int S, const husai_boot_opts *o, husai_ci *out) {
    const husai_boot_opts def = husai_boot_defaults();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    husai_status st = check_opts(o);
    if (st == HUSAI_OK) st = check_matrix(M, S, "bootstrap of a pair matrix");
    if (st != HUSAI_OK) return st;
    if (o->unit != HUSAI_BOOT_SEEDS && o->unit != HUSAI_BOOT_PAIRS)
        return husai_error(HUSAI_ERR_ARG, "unknown bootstrap unit %d", (int)o->unit);

    size_t np = 0;
    double *pv = pair_values(M, S, &np);
    if (!pv) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d seeds' pair values", S);
    if (S < HUSAI_CI_MIN_SEEDS) {
        /* One pair: every resample, under either unit, is that pair, and one value has no spread. */
        out->mean = mean_of(pv, np);
        out->std = NAN;
        out->n = S;
        free(pv);
        husai_ci_withhold(out, S);
        return HUSAI_OK;
    }
    if (o->unit == HUSAI_BOOT_PAIRS) {
        st = husai_ci_mean(pv, np, o, out);
        free(pv);
        if (st == HUSAI_OK) out->n = S;
        return st;
    }

    const double mean = mean_of(pv, np), std = sample_std(pv, np, mean);
    free(pv);
    if (!isfinite(mean) || !isfinite(std))
        return husai_error(HUSAI_ERR_DATA,
                           "bootstrap of a pair matrix: values too large for double arithmetic");

    st = seeds_ci(M, NULL, S, o, &out->lo, &out->hi);
    if (st != HUSAI_OK) return st;
    out->mean = mean;
    out->std = std;
    out->n = S;
    return HUSAI_OK;
}

husai_status husai_ci_diff_unpaired(const double *x, size_t nx, const double *y, size_t ny,
                                    const husai_boot_opts *o, husai_diff_ci *out) {
    const husai_boot_opts def = husai_boot_defaults();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    husai_status st = check_opts(o);
    if (st == HUSAI_OK) st = check_values(x, nx, "a difference (x)");
    if (st == HUSAI_OK) st = check_values(y, ny, "a difference (y)");
    if (st == HUSAI_OK) st = check_index_range(o, nx, "a difference (x)");
    if (st == HUSAI_OK) st = check_index_range(o, ny, "a difference (y)");
    if (st != HUSAI_OK) return st;

    const double diff = mean_of(x, nx) - mean_of(y, ny);
    if (!isfinite(diff))
        return husai_error(HUSAI_ERR_DATA,
                           "bootstrap of a difference: values too large for double arithmetic");

    const int B = o->resamples;
    double *sx = malloc((size_t)B * sizeof *sx), *sy = malloc((size_t)B * sizeof *sy);
    if (!sx || !sy) {
        free(sx);
        free(sy);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d bootstrap statistics", B);
    }
    /* HUSAI drew all of x's resamples, then all of y's, from one stream. */
    boot_gen g;
    gen_init(&g, o);
    resample_means(&g, x, nx, B, sx);
    resample_means(&g, y, ny, B, sy);
    for (int b = 0; b < B; b++)
        sx[b] -= sy[b];
    percentile_ci(sx, B, &out->lo, &out->hi);
    free(sx);
    free(sy);
    out->diff = diff;
    return HUSAI_OK;
}

husai_status husai_ci_diff_paired_matrix(const double *Mx, const double *My, int S, const husai_boot_opts *o,
                                         husai_diff_ci *out) {
    const husai_boot_opts def = husai_boot_defaults();
    if (!o) o = &def;
    memset(out, 0, sizeof *out);
    husai_status st = check_opts(o);
    if (st == HUSAI_OK) st = check_matrix(Mx, S, "paired bootstrap difference (x)");
    if (st == HUSAI_OK) st = check_matrix(My, S, "paired bootstrap difference (y)");
    if (st != HUSAI_OK) return st;

    size_t np = 0;
    double *px = pair_values(Mx, S, &np);
    double *py = px ? pair_values(My, S, &np) : NULL;
    if (!px || !py) {
        free(px);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d seeds' pair values", S);
    }
    const double diff = mean_of(px, np) - mean_of(py, np);
    free(px);
    free(py);
    if (!isfinite(diff))
        return husai_error(HUSAI_ERR_DATA,
                           "paired bootstrap difference: values too large for double arithmetic");
    out->diff = diff;
    if (S < HUSAI_CI_MIN_SEEDS) {
        husai_diff_ci_withhold(out, S);
        return HUSAI_OK;
    }

    /* One seed draw per resample, shared by both matrices: per-seed effects common to x and y cancel. */
    return seeds_ci(Mx, My, S, o, &out->lo, &out->hi);
}

void husai_ci_withhold(husai_ci *ci, int n_seeds) {
    if (n_seeds < HUSAI_CI_MIN_SEEDS) ci->lo = ci->hi = NAN;
}

void husai_diff_ci_withhold(husai_diff_ci *d, int n_seeds) {
    if (n_seeds < HUSAI_CI_MIN_SEEDS) d->lo = d->hi = NAN;
}
