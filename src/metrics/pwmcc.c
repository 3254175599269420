#include "metrics/pwmcc.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/threads.h"
#include "sae/bf16.h"

static int g_bf16;

void husai_pwmcc_set_bf16(int on) {
    g_bf16 = on;
}

void husai_unit_rows(const float *src, int n, int d, size_t row_step, size_t elem_step, float *out) {
    for (int j = 0; j < n; j++) {
        const float *in = src + (size_t)j * row_step;
        double ss = 0.0;
        for (int i = 0; i < d; i++) {
            const double v = in[(size_t)i * elem_step];
            ss += v * v;
        }
        double norm = sqrt(ss);
        if (norm < 1e-12) norm = 1e-12;
        float *row = out + (size_t)j * d;
        for (int i = 0; i < d; i++)
            row[i] = (float)(in[(size_t)i * elem_step] / norm);
    }
}

void husai_normalized_feature_rows(const float *D, int d, int n, float *out) {
    husai_unit_rows(D, n, d, 1, (size_t)n, out);
}

/* Bytes of pwmcc_rows' scratch for na x nb on T threads: the row maxima, and per thread a block of the
 * |cos| matrix, its column maxima and their arg-max rows (4-byte ints after the floats). */
static size_t pwmcc_scratch_bytes(int na, int nb, int T) {
    return ((size_t)na + (size_t)T * ((size_t)HUSAI_PWMCC_BLOCK + 2) * nb) * sizeof(float);
}

/* PWMCC of two sets of unit feature rows Af [na, d], Bf [nb, d], their row blocks spread over T threads.
 * Each row's maximum has its own slot and the row maxima are summed in row order; each thread keeps
 * column maxima of its blocks, merged afterwards (max is exact in any order): the value is the same for
 * any T. When best is given, best[0..na) receives the row maxima and best[na..na+nb) the column maxima,
 * arg the index attaining each, the smallest among ties: a thread takes its blocks in increasing order
 * and keeps the first row it sees, and the merge prefers the smaller row on equal values, so the
 * arg-max too is the same for any T. Tracking it costs a compare per |cos|, against d_model
 * multiply-adds. */
static double pwmcc_rows(const float *Af, int na, const float *Bf, int nb, int d, void *scratch, int T,
                         float *best, int32_t *arg) {
    float *rmax = best ? best : scratch, *colmax_all = (float *)scratch + na,
          *blk_all = colmax_all + (size_t)T * nb;
    int32_t *colarg_all = (int32_t *)(blk_all + (size_t)T * HUSAI_PWMCC_BLOCK * nb);
    const int n_blocks = (na + HUSAI_PWMCC_BLOCK - 1) / HUSAI_PWMCC_BLOCK;
    memset(colmax_all, 0, (size_t)T * nb * sizeof(float));
    memset(colarg_all, 0, (size_t)T * nb * sizeof(int32_t));
#pragma omp parallel num_threads(T) if (T > 1 && n_blocks > 1)
    {
        const int t = husai_thread_num();
        float *colmax = colmax_all + (size_t)t * nb, *blk = blk_all + (size_t)t * HUSAI_PWMCC_BLOCK * nb;
        int32_t *colarg = colarg_all + (size_t)t * nb;
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < n_blocks; q++) {
            const int i0 = q * HUSAI_PWMCC_BLOCK;
            const int bs = na - i0 < HUSAI_PWMCC_BLOCK ? na - i0 : HUSAI_PWMCC_BLOCK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bs, nb, d, 1.0f, Af + (size_t)i0 * d, d, Bf,
                        d, 0.0f, blk, nb);
            for (int i = 0; i < bs; i++) {
                const float *c = blk + (size_t)i * nb;
                float m = 0.0f;
                int32_t a = 0;
                for (int j = 0; j < nb; j++) {
                    const float v = fabsf(c[j]);
                    if (v > m) {
                        m = v;
                        a = j;
                    }
                    if (v > colmax[j]) {
                        colmax[j] = v;
                        colarg[j] = i0 + i;
                    }
                }
                rmax[i0 + i] = m;
                if (arg) arg[i0 + i] = a;
            }
        }
    }
    for (int t = 1; t < T; t++)
        for (int j = 0; j < nb; j++) {
            const float v = colmax_all[(size_t)t * nb + j];
            const int32_t a = colarg_all[(size_t)t * nb + j];
            if (v > colmax_all[j] || (v == colmax_all[j] && a < colarg_all[j])) {
                colmax_all[j] = v;
                colarg_all[j] = a;
            }
        }
    double rowsum = 0.0, colsum = 0.0;
    for (int i = 0; i < na; i++)
        rowsum += rmax[i];
    for (int j = 0; j < nb; j++)
        colsum += colmax_all[j];
    if (best) {
        memcpy(best + na, colmax_all, (size_t)nb * sizeof(float));
        memcpy(arg + na, colarg_all, (size_t)nb * sizeof(int32_t));
    }
    return 0.5 * (rowsum / na + colsum / nb);
}

/* Largest |c[j]| of a row of nb, folding each |c[j]| into the running column maxima; 8 fixed lanes so that
 * it vectorises (max is exact in any order). */
static inline float row_scan(const float *c, int nb, float *colrun) {
    float m8[8] = {0, 0, 0, 0, 0, 0, 0, 0}, m = 0.0f;
    int j = 0;
    for (; j + 8 <= nb; j += 8)
        for (int l = 0; l < 8; l++) {
            const float v = fabsf(c[j + l]);
            m8[l] = v > m8[l] ? v : m8[l];
            colrun[j + l] = v > colrun[j + l] ? v : colrun[j + l];
        }
    for (; j < nb; j++) {
        const float v = fabsf(c[j]);
        m = v > m ? v : m;
        colrun[j] = v > colrun[j] ? v : colrun[j];
    }
    for (int l = 0; l < 8; l++)
        m = m8[l] > m ? m8[l] : m;
    return m;
}

/* A float threshold at or below t, so comparing floats against it keeps everything a comparison with t
 * would. */
static float float_at_or_below(double t) {
    float f = (float)t;
    if ((double)f > t) f = nextafterf(f, -INFINITY);
    return f;
}

/* pwmcc_rows on bf16 products, every maximum exact. With E the product bound (|c - v| <= E for the bf16
 * product c and the exact dot8 value v of every pair): in row i, every j with |c_ij| < max_j |c_ij| - 2E has
 * |v_ij| < max - E <= |v| of the row's bf16 argmax, so the row maximum of |v| is taken over the other j,
 * rescored. A column's running bf16 maximum only grows towards its final value, so a row rescored when
 * |c_ij| >= (running maximum, this block included) - 2E includes every row that can hold the column's
 * maximum |v|. *done = 0 when the bound is not finite (the caller then uses sgemm). */
static husai_status pwmcc_rows_bf16(const float *Af, int na, const float *Bf, int nb, int d, int T,
                                    double *out, int *done, float *best_out, int32_t *arg) {
    *done = 0;
    husai_bf16_nt *nt;
    husai_status st = husai_bf16_nt_create(&nt, Af, na, Bf, nb, d, HUSAI_PWMCC_BLOCK, T, HUSAI_BF16_BEST);
    if (st) return st;
    const double E = husai_bf16_nt_bound(nt);
    if (!(E < INFINITY)) {
        husai_bf16_nt_free(nt);
        return HUSAI_OK;
    }
    float *rmax = malloc((size_t)na * sizeof(float));
    /* per thread: exact column maxima, running bf16 maxima, and the candidate thresholds they give */
    float *col = malloc((size_t)T * 3 * nb * sizeof(float));
    float *blk = malloc((size_t)HUSAI_PWMCC_BLOCK * nb * sizeof(float));
    /* per thread: the row attaining each exact column maximum (with best_out, as pwmcc_rows keeps it) */
    int32_t *colarg = calloc((size_t)T * nb, sizeof(int32_t));
    if (!rmax || !col || !blk || !colarg) {
        free(rmax);
        free(col);
        free(blk);
        free(colarg);
        husai_bf16_nt_free(nt);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers");
    }
    memset(col, 0, (size_t)T * 3 * nb * sizeof(float));
    husai_status failed = HUSAI_OK;
    /* Blocks one after another (each product on T threads inside oneDNN), their rows split over T threads,
     * each keeping its own column maxima: a thread's running maximum is at most the final one, so the
     * column argument holds for every thread's share of the rows. Both row loops split alike (static). */
    for (int i0 = 0; i0 < na && !failed; i0 += HUSAI_PWMCC_BLOCK) {
        const int bs = na - i0 < HUSAI_PWMCC_BLOCK ? na - i0 : HUSAI_PWMCC_BLOCK;
        if ((failed = husai_bf16_nt_block(nt, i0, bs, blk))) break;
#pragma omp parallel num_threads(T) if (T > 1)
        {
            const int t = husai_thread_num();
            float *colex = col + (size_t)t * 3 * nb, *colrun = colex + nb, *colthr = colrun + nb;
            int32_t *ca = colarg + (size_t)t * nb;
#pragma omp for schedule(static) nowait
            for (int i = 0; i < bs; i++) {
                const float *c = blk + (size_t)i * nb, *a = Af + (size_t)(i0 + i) * d;
                const float thr = float_at_or_below((double)row_scan(c, nb, colrun) - 2.0 * E);
                float best = 0.0f;
                int32_t besta = 0; /* the smallest j attaining it, as pwmcc_rows */
                for (int j0 = 0; j0 < nb; j0 += 32) {
                    const int end = nb - j0 < 32 ? nb : j0 + 32;
                    int any = 0;
                    for (int j = j0; j < end; j++)
                        any |= fabsf(c[j]) >= thr;
                    for (int j = j0; any && j < end; j++)
                        if (fabsf(c[j]) >= thr) {
                            const float v = husai_bf16_abs_dot(a, Bf + (size_t)j * d, d);
                            if (v > best) {
                                best = v;
                                besta = j;
                            }
                        }
                }
                rmax[i0 + i] = best;
                if (arg) arg[i0 + i] = besta;
            }
            for (int j = 0; j < nb; j++)
                colthr[j] = float_at_or_below((double)colrun[j] - 2.0 * E);
#pragma omp for schedule(static)
            for (int i = 0; i < bs; i++) {
                const float *c = blk + (size_t)i * nb, *a = Af + (size_t)(i0 + i) * d;
                for (int j0 = 0; j0 < nb; j0 += 32) {
                    const int end = nb - j0 < 32 ? nb : j0 + 32;
                    int any = 0;
                    for (int j = j0; j < end; j++)
                        any |= fabsf(c[j]) >= colthr[j];
                    for (int j = j0; any && j < end; j++)
                        if (fabsf(c[j]) >= colthr[j]) {
                            const float v = husai_bf16_abs_dot(a, Bf + (size_t)j * d, d);
                            if (v > colex[j]) { /* a thread's rows ascend: the first row attaining it */
                                colex[j] = v;
                                ca[j] = i0 + i;
                            }
                        }
                }
            }
        }
    }
    husai_bf16_nt_free(nt);
    if (!failed) {
        for (int t = 1; t < T; t++)
            for (int j = 0; j < nb; j++) {
                const float v = col[(size_t)t * 3 * nb + j];
                const int32_t a = colarg[(size_t)t * nb + j];
                if (v > col[j] || (v == col[j] && a < colarg[j])) {
                    col[j] = v;
                    colarg[j] = a;
                }
            }
        if (best_out) {
            memcpy(best_out, rmax, (size_t)na * sizeof(float));
            memcpy(best_out + na, col, (size_t)nb * sizeof(float));
            memcpy(arg + na, colarg, (size_t)nb * sizeof(int32_t));
        }
        double rowsum = 0.0, colsum = 0.0;
        for (int i = 0; i < na; i++)
            rowsum += rmax[i];
        for (int j = 0; j < nb; j++)
            colsum += col[j];
        *out = 0.5 * (rowsum / na + colsum / nb);
        *done = 1;
    }
    free(rmax);
    free(col);
    free(blk);
    free(colarg);
    return failed;
}

/* PWMCC of unit rows on the path husai_pwmcc_set_bf16 chose. */
static husai_status pwmcc_of(const float *Af, int na, const float *Bf, int nb, int d, float *scratch, int T,
                             double *out, float *best, int32_t *arg) {
    int done = 0;
    if (g_bf16) {
        husai_status st = pwmcc_rows_bf16(Af, na, Bf, nb, d, T, out, &done, best, arg);
        if (st) return st;
    }
    if (!done) *out = pwmcc_rows(Af, na, Bf, nb, d, scratch, T, best, arg);
    return HUSAI_OK;
}

husai_status husai_pwmcc_pair(const float *A, int na, const float *B, int nb, int d_model, double *out) {
    if (na < 1 || nb < 1 || d_model < 1)
        return husai_error(HUSAI_ERR_ARG, "PWMCC needs non-empty decoders (got %d and %d features of dim %d)",
                           na, nb, d_model);
    float *Af = malloc((size_t)na * d_model * sizeof(float));
    float *Bf = malloc((size_t)nb * d_model * sizeof(float));
    const int T = husai_max_threads();
    void *scratch = malloc(pwmcc_scratch_bytes(na, nb, T));
    if (!Af || !Bf || !scratch) {
        free(Af);
        free(Bf);
        free(scratch);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers");
    }
    husai_normalized_feature_rows(A, d_model, na, Af);
    husai_normalized_feature_rows(B, d_model, nb, Bf);
    const husai_status st = pwmcc_of(Af, na, Bf, nb, d_model, scratch, T, out, NULL, NULL);
    free(Af);
    free(Bf);
    free(scratch);
    return st;
}

long husai_pwmcc_part_pairs(int S, int part, int n_parts) {
    const long n = (long)S * (S - 1) / 2;
    return part < n % n_parts ? n / n_parts + 1 : n / n_parts;
}

long husai_pwmcc_block_pairs(int S, int b, int block_pair, int part, int n_parts, int *pq) {
    const int nb = (S + b - 1) / b;
    long number = 0, n = 0;
    int k = 0;
    for (int bi = 0; bi < nb; bi++)
        for (int bj = bi; bj < nb; bj++, k++) {
            const int p1 = (bi + 1) * b < S ? (bi + 1) * b : S, q1 = (bj + 1) * b < S ? (bj + 1) * b : S;
            for (int p = bi * b; p < p1; p++)
                for (int q = (bi == bj ? p + 1 : bj * b); q < q1; q++, number++) {
                    if (number % n_parts != part || (block_pair >= 0 && k != block_pair)) continue;
                    if (pq) {
                        pq[2 * n] = p;
                        pq[2 * n + 1] = q;
                    }
                    n++;
                }
        }
    return n;
}

husai_status husai_pwmcc_pairs_best(const float *const *rows, int S, int d_model, int d_sae, const int *pq,
                                    long n, double *M, float *best_cos, int32_t *best_index) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n < 0)
        return husai_error(HUSAI_ERR_ARG, "PWMCC pairs need S >= 1 decoders of positive shape");
    const int T = husai_max_threads();
    void *scratch = n ? malloc(pwmcc_scratch_bytes(d_sae, d_sae, T)) : NULL;
    if (n && !scratch) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers for %d threads", T);
    for (long k = 0; k < n; k++) {
        const int p = pq[2 * k], q = pq[2 * k + 1];
        const size_t at = (size_t)k * 2 * d_sae;
        double v;
        const husai_status st = pwmcc_of(rows[p], d_sae, rows[q], d_sae, d_model, scratch, T, &v,
                                         best_cos ? best_cos + at : NULL, best_cos ? best_index + at : NULL);
        if (st) {
            free(scratch);
            return st;
        }
        M[(size_t)p * S + q] = v;
        M[(size_t)q * S + p] = v;
    }
    free(scratch);
    return HUSAI_OK;
}

/* Seed s's rows in F (S sets of d_sae unit rows of d_model floats, one after the other), in rows[s]. */
static const float **rows_of(const float *F, int S, int d_model, int d_sae) {
    const float **rows = malloc((size_t)S * sizeof *rows);
    for (int s = 0; rows && s < S; s++)
        rows[s] = F + (size_t)s * d_model * d_sae;
    return rows;
}

husai_status husai_pwmcc_rows_part_best(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                        double *M, float *best_cos, int32_t *best_index) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n_parts < 1 || part < 0 || part >= n_parts)
        return husai_error(HUSAI_ERR_ARG,
                           "PWMCC matrix needs S >= 1 decoders of positive shape and a valid part");
    const long n = husai_pwmcc_part_pairs(S, part, n_parts);
    int *pq = malloc(((size_t)n + 1) * 2 * sizeof(int));
    const float **rows = rows_of(F, S, d_model, d_sae);
    husai_status st = HUSAI_OK;
    if (!pq || !rows) st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate the PWMCC pair list");
    if (!st) {
        memset(M, 0, (size_t)S * S * sizeof(double));
        for (int p = 0; p < S && part == 0; p++)
            M[(size_t)p * S + p] = 1.0;
        husai_pwmcc_block_pairs(S, S, -1, part, n_parts, pq);
        st = husai_pwmcc_pairs_best(rows, S, d_model, d_sae, pq, n, M, best_cos, best_index);
    }
    free(pq);
    free(rows);
    return st;
}

husai_status husai_pwmcc_rows_part(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                   double *M) {
    return husai_pwmcc_rows_part_best(F, S, d_model, d_sae, part, n_parts, M, NULL, NULL);
}

husai_status husai_pwmcc_matrix_part(const float *decoders, int S, int d_model, int d_sae, int part,
                                     int n_parts, double *M) {
    if (S < 1 || d_model < 1 || d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "PWMCC matrix needs S >= 1 decoders of positive shape");
    const size_t per = (size_t)d_model * d_sae;
    float *F = malloc((size_t)S * per * sizeof(float));
    if (!F) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers for %d decoders", S);
    for (int s = 0; s < S; s++)
        husai_normalized_feature_rows(decoders + s * per, d_model, d_sae, F + s * per);
    const husai_status st = husai_pwmcc_rows_part(F, S, d_model, d_sae, part, n_parts, M);
    free(F);
    return st;
}

husai_status husai_pwmcc_matrix(const float *decoders, int S, int d_model, int d_sae, double *M) {
    return husai_pwmcc_matrix_part(decoders, S, d_model, d_sae, 0, 1, M);
}

double husai_pwmcc_pair_mean(const double *M, int S) {
    if (S < 2) return NAN;
    double sum = 0.0;
    for (int p = 0; p < S; p++)
        for (int q = p + 1; q < S; q++)
            sum += M[(size_t)p * S + q];
    return sum / (0.5 * S * (S - 1));
}

void husai_pwmcc_random_decoder(uint64_t seed, int d_model, int d_sae, float *out) {
    husai_rng r;
    husai_rng_init(&r, seed, HUSAI_RNG_RANDOM_BASELINE, 0);
    const size_t n = (size_t)d_model * d_sae;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)husai_rng_normal(&r);
}
