#include "metrics/pwmcc.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/threads.h"

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
    *out = pwmcc_rows(Af, na, Bf, nb, d_model, scratch, T, NULL, NULL);
    free(Af);
    free(Bf);
    free(scratch);
    return HUSAI_OK;
}

long husai_pwmcc_part_pairs(int S, int part, int n_parts) {
    const long n = (long)S * (S - 1) / 2;
    return part < n % n_parts ? n / n_parts + 1 : n / n_parts;
}

husai_status husai_pwmcc_rows_part_best(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                        double *M, float *best_cos, int32_t *best_index) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n_parts < 1 || part < 0 || part >= n_parts)
        return husai_error(HUSAI_ERR_ARG,
                           "PWMCC matrix needs S >= 1 decoders of positive shape and a valid part");
    const size_t per = (size_t)d_model * d_sae;
    const int T = husai_max_threads();
    void *scratch = malloc(pwmcc_scratch_bytes(d_sae, d_sae, T));
    if (!scratch) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers for %d threads", T);
    memset(M, 0, (size_t)S * S * sizeof(double));
    long pair = 0, mine = 0;
    for (int p = 0; p < S; p++) {
        if (part == 0) M[(size_t)p * S + p] = 1.0;
        for (int q = p + 1; q < S; q++, pair++) {
            if (pair % n_parts != part) continue;
            const size_t at = (size_t)mine++ * 2 * d_sae;
            const double v = pwmcc_rows(F + p * per, d_sae, F + q * per, d_sae, d_model, scratch, T,
                                        best_cos ? best_cos + at : NULL, best_cos ? best_index + at : NULL);
            M[(size_t)p * S + q] = v;
            M[(size_t)q * S + p] = v;
        }
    }
    free(scratch);
    return HUSAI_OK;
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
