#include "sae/align.h"

#include <cblas.h>
#include <math.h>

size_t husai_align_scratch_floats(int m) {
    return (size_t)HUSAI_ALIGN_BLOCK * (size_t)m;
}

double husai_align_rows(const float *D, int n, const float *R, int m, int d, int32_t *best, float *cosv,
                        float *scratch) {
    double sum = 0.0;
    for (int i0 = 0; i0 < n; i0 += HUSAI_ALIGN_BLOCK) {
        const int bs = n - i0 < HUSAI_ALIGN_BLOCK ? n - i0 : HUSAI_ALIGN_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bs, m, d, 1.0f, D + (size_t)i0 * d, d, R, d,
                    0.0f, scratch, m);
        for (int i = 0; i < bs; i++) {
            const float *c = scratch + (size_t)i * m;
            int arg = 0;
            for (int j = 1; j < m; j++)
                if (fabsf(c[j]) > fabsf(c[arg])) arg = j; /* ties to the lower index */
            best[i0 + i] = arg;
            cosv[i0 + i] = c[arg];
            sum += fabsf(c[arg]);
        }
    }
    return sum / n;
}

void husai_align_add_grad(const float *D, int n, const float *R, int d, const int32_t *best,
                          const float *cosv, double lambda, float *gD) {
    const float scale = (float)(-lambda / n);
    for (int i = 0; i < n; i++) {
        const float c = cosv[i];
        if (c == 0.0f) continue; /* |cos| has no direction at 0 */
        const float s = scale * (c > 0.0f ? 1.0f : -1.0f);
        const float *r = R + (size_t)best[i] * d, *u = D + (size_t)i * d;
        float *g = gD + (size_t)i * d;
        for (int t = 0; t < d; t++)
            g[t] += s * (r[t] - c * u[t]);
    }
}
