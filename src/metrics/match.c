#include "metrics/match.h"
#include "metrics/pwmcc.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/threads.h"

/* ---------- the assignment solver ---------- */

/* Scratch of the shortest augmenting path solver for n rows <= m columns. */
typedef struct {
    double *u, *v, *dist; /* row potentials (n), column potentials (m), path lengths (m) */
    int32_t *path;        /* (m) row from which each column was reached */
    int32_t *col4row;     /* (n) the column matched to each row, -1 if none yet */
    int32_t *row4col;     /* (m) the row matched to each column, -1 if none */
    int32_t *remaining;   /* (m) unscanned columns, kept in increasing order */
    int32_t *rows_seen;   /* (n) rows visited by the current search */
    int32_t *cols_seen;   /* (m) columns scanned by the current search */
    void *block;
} lsap_work;

static int lsap_alloc(lsap_work *w, int n, int m) {
    const size_t doubles = (size_t)n + 2 * (size_t)m, ints = 2 * (size_t)n + 5 * (size_t)m;
    memset(w, 0, sizeof *w);
    w->block = malloc(doubles * sizeof(double) + ints * sizeof(int32_t));
    if (!w->block) return 0;
    double *d = w->block;
    w->u = d;
    w->v = d + n;
    w->dist = d + n + m;
    int32_t *p = (int32_t *)(d + doubles);
    w->path = p;
    w->col4row = p + m;
    w->row4col = p + m + n;
    w->remaining = p + 2 * (size_t)m + n;
    w->rows_seen = p + 3 * (size_t)m + n;
    w->cols_seen = p + 3 * (size_t)m + 2 * (size_t)n;
    return 1;
}

static void lsap_free(lsap_work *w) {
    free(w->block);
    w->block = NULL;
}

/* Minimum-cost assignment with cost = -W on W [n, m], n <= m, all finite: every row gets a distinct
 * column (w->col4row). One Dijkstra search per row over reduced costs -W - u - v, which stay >= 0 on
 * the matched part thanks to the potentials; the path to the nearest free column is then flipped. */
static void lsap_solve(const float *W, int n, int m, lsap_work *w) {
    double *u = w->u, *v = w->v, *dist = w->dist;
    int32_t *path = w->path, *col4row = w->col4row, *row4col = w->row4col, *rem = w->remaining;
    for (int i = 0; i < n; i++) {
        u[i] = 0.0;
        col4row[i] = -1;
    }
    for (int j = 0; j < m; j++) {
        v[j] = 0.0;
        row4col[j] = -1;
    }
    for (int cur = 0; cur < n; cur++) {
        int nrem = m, nsr = 0, nsc = 0, i = cur, sink = -1;
        for (int j = 0; j < m; j++) {
            rem[j] = j;
            dist[j] = HUGE_VAL;
        }
        double minval = 0.0;
        while (sink < 0) {
            w->rows_seen[nsr++] = i;
            const float *row = W + (size_t)i * m;
            const double base = minval - u[i];
            double lowest = HUGE_VAL;
            int best = -1;
            for (int it = 0; it < nrem; it++) {
                const int j = rem[it];
                const double r = base - (double)row[j] - v[j];
                if (r < dist[j]) {
                    path[j] = i;
                    dist[j] = r;
                }
                /* ties: an unassigned column first (it ends the search), then the lowest index */
                if (dist[j] < lowest ||
                    (dist[j] == lowest && best >= 0 && row4col[j] < 0 && row4col[rem[best]] >= 0)) {
                    lowest = dist[j];
                    best = it;
                }
            }
            minval = lowest;
            const int j = rem[best];
            memmove(rem + best, rem + best + 1, (size_t)(nrem - best - 1) * sizeof *rem);
            nrem--;
            w->cols_seen[nsc++] = j;
            if (row4col[j] < 0)
                sink = j;
            else
                i = row4col[j];
        }
        /* potentials: keep reduced costs >= 0 on the visited part and 0 on matched pairs */
        u[cur] += minval;
        for (int s = 1; s < nsr; s++) {
            const int r = w->rows_seen[s];
            u[r] += minval - dist[col4row[r]];
        }
        for (int s = 0; s < nsc; s++) {
            const int c = w->cols_seen[s];
            v[c] -= minval - dist[c];
        }
        /* flip the alternating path ending at the free column sink */
        int j = sink;
        for (;;) {
            const int r = path[j];
            row4col[j] = r;
            const int prev = col4row[r];
            col4row[r] = j;
            if (r == cur) break;
            j = prev;
        }
    }
}

static int all_finite(const float *W, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(W[i])) return 0;
    return 1;
}

husai_status husai_assign_max(const float *W, int rows, int cols, int32_t *row_to_col, double *total) {
    if (rows < 1 || cols < 1 || !W || !row_to_col)
        return husai_error(HUSAI_ERR_ARG, "assignment needs a non-empty weight matrix (got %d x %d)", rows,
                           cols);
    const size_t cells = (size_t)rows * cols;
    if (!all_finite(W, cells)) return husai_error(HUSAI_ERR_DATA, "assignment weights contain NaN or Inf");
    const int n = rows <= cols ? rows : cols, m = rows <= cols ? cols : rows;
    float *T = NULL;
    if (rows > cols) { /* solve on the transpose so the smaller side is the rows */
        T = malloc(cells * sizeof(float));
        if (!T) return husai_error(HUSAI_ERR_NOMEM, "cannot transpose a %d x %d weight matrix", rows, cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                T[(size_t)c * rows + r] = W[(size_t)r * cols + c];
    }
    lsap_work w;
    if (!lsap_alloc(&w, n, m)) {
        free(T);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the assignment solver for %d x %d", rows, cols);
    }
    lsap_solve(T ? T : W, n, m, &w);
    if (T) {
        for (int r = 0; r < rows; r++)
            row_to_col[r] = -1;
        for (int c = 0; c < cols; c++)
            row_to_col[w.col4row[c]] = c;
    } else {
        memcpy(row_to_col, w.col4row, (size_t)rows * sizeof *row_to_col);
    }
    if (total) {
        double s = 0.0;
        for (int r = 0; r < rows; r++)
            if (row_to_col[r] >= 0) s += W[(size_t)r * cols + row_to_col[r]];
        *total = s;
    }
    free(T);
    lsap_free(&w);
    return HUSAI_OK;
}

/* ---------- matched agreement ---------- */

static husai_status check_cells(int na, int nb) {
    if ((size_t)na * (size_t)nb > HUSAI_MATCH_MAX_CELLS)
        return husai_error(HUSAI_ERR_ARG,
                           "matched agreement would hold a %d x %d |cos| matrix (%.1f GiB as float); the "
                           "limit is %zu cells (16384 x 16384, 1 GiB)",
                           na, nb, (double)na * nb * sizeof(float) / (1024.0 * 1024.0 * 1024.0),
                           (size_t)HUSAI_MATCH_MAX_CELLS);
    return HUSAI_OK;
}

/* Matches the unit feature rows Sf [ns, d] to Lf [nl, d], ns <= nl, on C = |Sf Lf^T| (formed in C, ns x nl);
 * the assignment is left in w->col4row. Writes the mean matched |cos| and the fraction >= threshold. */
static husai_status match_rows(const float *Sf, int ns, const float *Lf, int nl, int d, double threshold,
                               float *C, lsap_work *w, double *mean, double *frac) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ns, nl, d, 1.0f, Sf, d, Lf, d, 0.0f, C, nl);
    const size_t cells = (size_t)ns * nl;
    for (size_t i = 0; i < cells; i++)
        C[i] = fabsf(C[i]);
    if (!all_finite(C, cells))
        return husai_error(HUSAI_ERR_DATA, "a decoder contains NaN or Inf: matched agreement is undefined");
    lsap_solve(C, ns, nl, w);
    double sum = 0.0;
    int above = 0;
    for (int i = 0; i < ns; i++) {
        const double c = C[(size_t)i * nl + w->col4row[i]];
        sum += c;
        above += c >= threshold;
    }
    *mean = sum / ns;
    *frac = (double)above / ns;
    return HUSAI_OK;
}

husai_status husai_match_pair(const float *A, int na, const float *B, int nb, int d_model,
                              double *mean_matched_cos, double *frac_above, double threshold,
                              int32_t *assignment) {
    if (na < 1 || nb < 1 || d_model < 1)
        return husai_error(HUSAI_ERR_ARG,
                           "matched agreement needs non-empty decoders (got %d and %d features of dim %d)",
                           na, nb, d_model);
    if (isnan(threshold)) return husai_error(HUSAI_ERR_ARG, "matched agreement threshold is NaN");
    husai_status st = check_cells(na, nb);
    if (st) return st;
    const int a_small = na <= nb, ns = a_small ? na : nb, nl = a_small ? nb : na;
    float *Af = malloc((size_t)na * d_model * sizeof(float));
    float *Bf = malloc((size_t)nb * d_model * sizeof(float));
    float *C = malloc((size_t)ns * nl * sizeof(float));
    lsap_work w;
    const int have_w = lsap_alloc(&w, ns, nl);
    if (!Af || !Bf || !C || !have_w) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate matched-agreement buffers for %d x %d features",
                         na, nb);
        goto done;
    }
    husai_normalized_feature_rows(A, d_model, na, Af);
    husai_normalized_feature_rows(B, d_model, nb, Bf);
    double mean = 0.0, frac = 0.0;
    st = a_small ? match_rows(Af, na, Bf, nb, d_model, threshold, C, &w, &mean, &frac)
                 : match_rows(Bf, nb, Af, na, d_model, threshold, C, &w, &mean, &frac);
    if (st) goto done;
    if (mean_matched_cos) *mean_matched_cos = mean;
    if (frac_above) *frac_above = frac;
    if (assignment) {
        if (a_small) {
            memcpy(assignment, w.col4row, (size_t)na * sizeof *assignment);
        } else {
            for (int i = 0; i < na; i++)
                assignment[i] = -1;
            for (int j = 0; j < nb; j++)
                assignment[w.col4row[j]] = j;
        }
    }
done:
    free(Af);
    free(Bf);
    free(C);
    if (have_w) lsap_free(&w);
    return st;
}

husai_status husai_match_pairs(const float *const *rows, int S, int d_model, int d_sae, const int *pq, long n,
                               double *M_mean, double *M_frac) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n < 0 || n > INT_MAX)
        return husai_error(HUSAI_ERR_ARG, "matched-agreement pairs need S >= 1 decoders of positive shape");
    husai_status st = check_cells(d_sae, d_sae);
    if (st) return st;
    const int n_mine = (int)n;
    /* Pairs go to threads whole (each thread has its own |cos| matrix and solver state), so a pair's
     * value does not depend on the thread count. A failed pair is redone below on this thread, where its
     * message is kept (messages are per thread). */
    int failed = n_mine, nomem = 0; /* the first failed pair, n_mine for none */
    const int T = n_mine < husai_max_threads() ? n_mine : husai_max_threads();
#pragma omp parallel num_threads(T) if (T > 1) reduction(min : failed) reduction(| : nomem)
    {
        float *C = malloc((size_t)d_sae * d_sae * sizeof(float));
        lsap_work w;
        const int have_w = lsap_alloc(&w, d_sae, d_sae);
        if (!C || !have_w) nomem = 1;
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n_mine; i++) {
            if (nomem) continue;
            const int p = pq[2 * i], q = pq[2 * i + 1];
            double mean = 0.0, frac = 0.0;
            if (match_rows(rows[p], d_sae, rows[q], d_sae, d_model, HUSAI_MATCH_THRESHOLD, C, &w, &mean,
                           &frac)) {
                failed = failed < i ? failed : i;
                continue;
            }
            if (M_mean) M_mean[(size_t)p * S + q] = M_mean[(size_t)q * S + p] = mean;
            if (M_frac) M_frac[(size_t)p * S + q] = M_frac[(size_t)q * S + p] = frac;
        }
        free(C);
        if (have_w) lsap_free(&w);
    }
    if (nomem)
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate matched-agreement buffers for %d threads", T);
    if (!st && failed < n_mine) {
        float *C = malloc((size_t)d_sae * d_sae * sizeof(float));
        lsap_work w;
        const int have_w = lsap_alloc(&w, d_sae, d_sae);
        double mean, frac;
        const int p = pq[2 * failed], q = pq[2 * failed + 1];
        st = !C || !have_w ? husai_error(HUSAI_ERR_NOMEM, "cannot allocate matched-agreement buffers")
                           : match_rows(rows[p], d_sae, rows[q], d_sae, d_model, HUSAI_MATCH_THRESHOLD, C, &w,
                                        &mean, &frac);
        free(C);
        if (have_w) lsap_free(&w);
    }
    return st;
}

husai_status husai_match_rows_part(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                   double *M_mean, double *M_frac) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n_parts < 1 || part < 0 || part >= n_parts)
        return husai_error(
            HUSAI_ERR_ARG,
            "matched-agreement matrix needs S >= 1 decoders of positive shape and a valid part");
    husai_status st = check_cells(d_sae, d_sae);
    if (st) return st;
    const size_t per = (size_t)d_model * d_sae;
    /* This part's pairs, in row-major pair order. */
    const long n = husai_pwmcc_part_pairs(S, part, n_parts);
    int *pp = malloc(((size_t)n + 1) * 2 * sizeof(int));
    const float **rows = malloc((size_t)S * sizeof *rows);
    if (!pp || !rows) {
        free(pp);
        free(rows);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the matched-agreement pair list");
    }
    husai_pwmcc_block_pairs(S, S, -1, part, n_parts, pp);
    for (int s = 0; s < S; s++)
        rows[s] = F + (size_t)s * per;
    if (M_mean) memset(M_mean, 0, (size_t)S * S * sizeof(double));
    if (M_frac) memset(M_frac, 0, (size_t)S * S * sizeof(double));
    for (int p = 0; p < S && part == 0; p++) {
        if (M_mean) M_mean[(size_t)p * S + p] = 1.0;
        if (M_frac) M_frac[(size_t)p * S + p] = 1.0;
    }
    st = husai_match_pairs(rows, S, d_model, d_sae, pp, n, M_mean, M_frac);
    free(pp);
    free(rows);
    return st;
}

husai_status husai_match_matrix(const float *decoders, int S, int d_model, int d_sae, double *M_mean,
                                double *M_frac) {
    if (S < 1 || d_model < 1 || d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "matched-agreement matrix needs S >= 1 decoders of positive shape");
    husai_status st = check_cells(d_sae, d_sae);
    if (st) return st;
    const size_t per = (size_t)d_model * d_sae;
    float *F = malloc((size_t)S * per * sizeof(float));
    if (!F)
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate matched-agreement buffers for %d decoders", S);
    for (int s = 0; s < S; s++)
        husai_normalized_feature_rows(decoders + s * per, d_model, d_sae, F + s * per);
    st = husai_match_rows_part(F, S, d_model, d_sae, 0, 1, M_mean, M_frac);
    free(F);
    return st;
}
