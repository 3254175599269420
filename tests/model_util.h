/* model_util.h: shortcuts the model and trainer tests share (HUSAI TopK allocation, loss of one pass). */
#ifndef HUSAI_TESTS_MODEL_UTIL_H
#define HUSAI_TESTS_MODEL_UTIL_H

#include <math.h>

#include "sae/model.h"

/* HUSAI's TopK of the given shape (the model tests' common case). */
static inline husai_status alloc_topk(husai_sae *m, int d_model, int d_sae, int k) {
    const husai_sae_spec spec = husai_sae_spec_topk(d_model, d_sae, k);
    return husai_sae_alloc(m, &spec);
}

/* The training loss of one forward pass (the MSE for TopK). */
static inline double forward_mse(const husai_sae *m, const float *x, int n, husai_sae_batch *b) {
    husai_sae_loss loss;
    if (husai_sae_forward(m, x, n, HUSAI_SAE_TRAIN, 0.0, b, &loss) != HUSAI_OK) return NAN;
    return loss.total;
}

#endif
