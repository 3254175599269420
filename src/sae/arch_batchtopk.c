/* arch_batchtopk.c: BatchTopK (Bussmann et al. 2024): in training, the n*k largest ReLU(pre) over a batch
 * of n rows (ties to the lower flat index), so rows share the budget; at inference pre > threshold, the
 * trainer's mean over the last epoch of each batch's smallest kept code (m->threshold). */
#include <math.h>

#include "sae/arch.h"
#include "sae/kernels.h"
#include "sae/train.h"

/* The n*k largest positive pre-activations of the whole batch; b->batch_min gets the smallest kept. */
static void select_batch(const husai_sae *m, int n, husai_sae_batch *b) {
    const int s = m->d_sae;
    const size_t total = (size_t)n * s;
    const int K = n * m->k;
    for (size_t i = 0; i < total; i++)
        b->select[i] = b->pre[i] > 0.0f ? b->pre[i] : 0.0f; /* NaN lands on 0: never selected */
    float v = husai_kth_largest(b->select, (int)total, K);
    if (v < 0.0f) v = 0.0f;
    int64_t greater = 0;
    for (size_t i = 0; i < total; i++)
        greater += b->pre[i] > v;
    int64_t equal_left = v > 0.0f ? K - greater : 0, nnz = 0;
    float lo = INFINITY;
    for (int r = 0; r < n; r++) {
        b->row_ptr[r] = nnz;
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++)
            if (p[j] > v || (p[j] == v && equal_left-- > 0)) {
                b->idx[nnz] = j;
                b->val[nnz++] = p[j];
                if (p[j] < lo) lo = p[j];
            }
    }
    b->row_ptr[n] = nnz;
    b->batch_min = nnz ? lo : 0.0f;
}

static husai_status codes(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    if (mode == HUSAI_SAE_TRAIN) {
        select_batch(m, n, b);
        return HUSAI_OK;
    }
    for (int j = 0; j < m->d_sae; j++)
        b->select[j] = m->threshold > 0.0 ? (float)m->threshold : 0.0f;
    return husai_codes_threshold(m, n, b->select, b);
}

/* Inference threshold: the mean over the current epoch's batches of the smallest code the batch rule
 * kept, so the final value describes the trained model, not its early steps (the trainer clears the sums
 * at each epoch's end). */
static void train_step(husai_trainer *t, const husai_sae_loss *parts) {
    (void)parts;
    if (!(t->batch.batch_min > 0.0f)) return;
    t->thr_sum += t->batch.batch_min;
    t->thr_n += 1.0;
    t->model.threshold = t->thr_sum / t->thr_n;
}

const husai_arch_ops husai_arch_batchtopk = {
    .name = "batchtopk",
    .always_relu = 1,
    .batch_select = 1,
    .codes = codes,
    .train_step = train_step,
};
