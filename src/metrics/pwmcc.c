#include "metrics/pwmcc.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

void husai_normalized_feature_rows(const float *D, int d, int n, float *out) {
    for (int j = 0; j < n; j++) {
        double ss = 0.0;
        for (int i = 0; i < d; i++) {
            const double v = D[(size_t)i * n + j];
            ss += v * v;
        }
        double norm = sqrt(ss);
        if (norm < 1e-12) norm = 1e-12;
        float *row = out + (size_t)j * d;
        for (int i = 0; i < d; i++)
            row[i] = (float)(D[(size_t)i * n + j] / norm);
    }
}

/* PWMCC of two sets of unit feature rows Af [na, d], Bf [nb, d]; scratch holds
 * HUSAI_PWMCC_BLOCK * nb floats for the block and nb for the column maxima. */
static double pwmcc_rows(const float *Af, int na, const float *Bf, int nb, int d, float *scratch) {
    float *blk = scratch;
    float *colmax = scratch + (size_t)HUSAI_PWMCC_BLOCK * nb;
    for (int j = 0; j < nb; j++)
        colmax[j] = 0.0f;
    double rowsum = 0.0;
    for (int i0 = 0; i0 < na; i0 += HUSAI_PWMCC_BLOCK) {
        const int bs = na - i0 < HUSAI_PWMCC_BLOCK ? na - i0 : HUSAI_PWMCC_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bs, nb, d, 1.0f, Af + (size_t)i0 * d, d, Bf, d,
                    0.0f, blk, nb);
        for (int i = 0; i < bs; i++) {
            const float *c = blk + (size_t)i * nb;
            float rmax = 0.0f;
            for (int j = 0; j < nb; j++) {
                const float v = fabsf(c[j]);
                if (v > rmax) rmax = v;
                if (v > colmax[j]) colmax[j] = v;
            }
            rowsum += rmax;
        }
    }
    double colsum = 0.0;
    for (int j = 0; j < nb; j++)
        colsum += colmax[j];
    return 0.5 * (rowsum / na + colsum / nb);
}

husai_status husai_pwmcc_pair(const float *A, int na, const float *B, int nb, int d_model, double *out) {
    if (na < 1 || nb < 1 || d_model < 1)
        return husai_error(HUSAI_ERR_ARG, "PWMCC needs non-empty decoders (got %d and %d features of dim %d)",
                           na, nb, d_model);
    float *Af = malloc((size_t)na * d_model * sizeof(float));
    float *Bf = malloc((size_t)nb * d_model * sizeof(float));
    float *scratch = malloc(((size_t)HUSAI_PWMCC_BLOCK + 1) * nb * sizeof(float));
    if (!Af || !Bf || !scratch) {
        free(Af);
        free(Bf);
        free(scratch);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers");
    }
    husai_normalized_feature_rows(A, d_model, na, Af);
    husai_normalized_feature_rows(B, d_model, nb, Bf);
    *out = pwmcc_rows(Af, na, Bf, nb, d_model, scratch);
    free(Af);
    free(Bf);
    free(scratch);
    return HUSAI_OK;
}

husai_status husai_pwmcc_matrix_part(const float *decoders, int S, int d_model, int d_sae, int part,
                                     int n_parts, double *M) {
    if (S < 1 || d_model < 1 || d_sae < 1 || n_parts < 1 || part < 0 || part >= n_parts)
        return husai_error(HUSAI_ERR_ARG,
                           "PWMCC matrix needs S >= 1 decoders of positive shape and a valid part");
    const size_t per = (size_t)d_model * d_sae;
    float *F = malloc((size_t)S * per * sizeof(float));
    float *scratch = malloc(((size_t)HUSAI_PWMCC_BLOCK + 1) * d_sae * sizeof(float));
    if (!F || !scratch) {
        free(F);
        free(scratch);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate PWMCC buffers for %d decoders", S);
    }
    for (int s = 0; s < S; s++)
        husai_normalized_feature_rows(decoders + s * per, d_model, d_sae, F + s * per);
    memset(M, 0, (size_t)S * S * sizeof(double));
    long pair = 0;
    for (int p = 0; p < S; p++) {
        if (part == 0) M[(size_t)p * S + p] = 1.0;
        for (int q = p + 1; q < S; q++, pair++) {
            if (pair % n_parts != part) continue;
            const double v = pwmcc_rows(F + p * per, d_sae, F + q * per, d_sae, d_model, scratch);
            M[(size_t)p * S + q] = v;
            M[(size_t)q * S + p] = v;
        }
    }
    free(F);
    free(scratch);
    return HUSAI_OK;
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
