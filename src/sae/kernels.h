/* kernels.h: the shared SAE kernels the architecture backends (arch_*.c) build their rules from, and the
 * small vector helpers the kernels share. Internal to src/sae: the public interface is model.h. Every
 * kernel is bitwise the same for any thread count; none allocates except husai_codes_threshold, which
 * grows the batch's code arrays (owned by the batch) when the codes outgrow them.
 * defines: husai_select_topk_rows, husai_codes_topk, husai_codes_threshold, husai_dot8, husai_axpy */
#ifndef HUSAI_SAE_KERNELS_H
#define HUSAI_SAE_KERNELS_H

#include "common/status.h"
#include "sae/model.h"

/* Per-row top-k of rows [r0, r1) (signed; ties to the lower latent, NaN as -inf), row r's codes into slots
 * r*k .. r*k + k in ascending latent order and how many it keeps into row_ptr[r + 1]: with spec.relu,
 * non-positive picks are dropped (ReLU makes them 0 and stops their gradient), so a row may keep fewer than
 * k. scratch: 2 * d_sae floats. An ops->select_rows. */
void husai_select_topk_rows(const husai_sae *m, int r0, int r1, husai_sae_batch *b, float *scratch);

/* Packs husai_select_topk_rows's per-row codes of n rows into CSR form. An ops->codes. */
husai_status husai_codes_topk(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b);

/* Threshold rules: z_j = pre_j where pre_j > t[j] for each of n rows, into CSR form, growing the code
 * arrays as needed (HUSAI_ERR_NOMEM if they cannot grow). */
husai_status husai_codes_threshold(const husai_sae *m, int n, const float *t, husai_sae_batch *b);

/* Dot product with 8 fixed partial sums: vectorisable without -ffast-math, and the summation
 * order is set by this code, not by the compiler, so results stay reproducible. */
static inline float husai_dot8(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float tail = 0.0f;
    for (; i < n; i++)
        tail += a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

/* y += a * x over n elements (element-wise, so vectorising it does not change any bit). */
static inline void husai_axpy(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

#endif
