#include "sae/adam.h"

#include <math.h>
#include <stdlib.h>

husai_status husai_adam_alloc(husai_adam *a, size_t n, double lr, double beta1, double beta2, double eps) {
    *a = (husai_adam){.n = n, .lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .t = 0};
    a->m = calloc(n, sizeof(float));
    a->v = calloc(n, sizeof(float));
    if (!a->m || !a->v) {
        husai_adam_free(a);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate Adam moments for %zu parameters", n);
    }
    return HUSAI_OK;
}

void husai_adam_step(husai_adam *a, float *params, const float *grad, int threads) {
    a->t++;
    /* Bias corrections in double, as PyTorch computes them in Python floats. */
    const double bc1 = 1.0 - pow(a->beta1, (double)a->t);
    const double bc2 = 1.0 - pow(a->beta2, (double)a->t);
    const float step_size = (float)(a->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->eps;
    const float one_b1 = (float)(1.0 - a->beta1), one_b2 = (float)(1.0 - a->beta2);
    float *m = a->m, *v = a->v;
    /* element-wise: any split of the elements gives the same bits */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && a->n >= 65536)
    for (size_t i = 0; i < a->n; i++) {
        const float g = grad[i];
        m[i] = m[i] * b1 + g * one_b1;
        v[i] = v[i] * b2 + g * g * one_b2;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        params[i] += -step_size * (m[i] / denom); /* addcdiv_: value * (m / denom) */
    }
}

void husai_adam_free(husai_adam *a) {
    if (!a) return;
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}
