/* topk.h: the TopK sparse autoencoder (HUSAI's recipe), forward and backward.
 * Parameters live in one contiguous buffer (W_enc | b_enc | W_dec) so Adam, checkpoints
 * and copies work over a single array. The decoder is stored feature-major, one
 * contiguous row per latent, because the sparse decode and its gradient touch only
 * the k active rows; husai_topk_export_decoder gives the file layout [d_model, d_sae].
 * No MPI here.
 * defines: husai_topk, husai_topk_batch, husai_topk_init, husai_topk_free, ... */
#ifndef HUSAI_SAE_TOPK_H
#define HUSAI_SAE_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    int d_model, d_sae, k;
    size_t n_params; /* d_sae*d_model + d_sae + d_sae*d_model */
    float *params;   /* owner of the three views below */
    float *W_enc;    /* (d_sae, d_model) */
    float *b_enc;    /* (d_sae) */
    float *W_dec;    /* (d_sae, d_model): row j is feature j, i.e. column j of the decoder matrix */
} husai_topk;

/* Scratch for one batch of up to `cap` rows; owned by the caller, reusable across steps. */
typedef struct {
    int cap, d_model, d_sae, k;
    float *pre;    /* (cap, d_sae) encoder pre-activations */
    int32_t *idx;  /* (cap, k) active latent indices, ascending within a row */
    float *val;    /* (cap, k) active latent values (signed) */
    float *x_hat;  /* (cap, d_model) reconstruction */
    float *g_xhat; /* (cap, d_model) dLoss/dx_hat */
    float *g_val;  /* (cap, k) dLoss/d(active value) */
    float *select; /* (d_sae) top-k selection scratch */
} husai_topk_batch;

/* Allocates a model of the given shape with zeroed parameters; 1 <= k <= d_sae is checked. */
husai_status husai_topk_alloc(husai_topk *m, int d_model, int d_sae, int k);

/* HUSAI's init from stream (seed, "init"): W_enc ~ U(+-sqrt(6/d_model)), b_enc = 0,
 * W_dec ~ U(+-sqrt(6/d_sae)) then unit-norm columns. Same seed and shape give the same bits anywhere. */
void husai_topk_init(husai_topk *m, uint64_t seed);

/* Releases the parameters and zeroes the struct; safe on a zeroed or freed model. */
void husai_topk_free(husai_topk *m);

/* Rescales every decoder column (feature) to unit L2 norm; columns of norm 0 are left as they are. */
void husai_topk_normalize_decoder(husai_topk *m);

/* Writes the decoder in file layout: out[i * d_sae + j] = feature j's component i, shape [d_model, d_sae]. */
void husai_topk_export_decoder(const husai_topk *m, float *out);

/* Allocates scratch for batches of up to cap rows of model m. */
husai_status husai_topk_batch_alloc(husai_topk_batch *b, const husai_topk *m, int cap);

/* Releases batch scratch; safe on a zeroed or freed struct. */
void husai_topk_batch_free(husai_topk_batch *b);

/* Encodes n rows of x (n, d_model): sgemm pre-activations, then per row the k largest
 * signed values (ties to the lower index) into b->idx / b->val. No ReLU. */
void husai_topk_encode(const husai_topk *m, const float *x, int n, husai_topk_batch *b);

/* Sparse decode of the encoded rows into b->x_hat; touches only the k active features per row. */
void husai_topk_decode(const husai_topk *m, int n, husai_topk_batch *b);

/* Forward pass and MSE (mean over n*d_model elements, accumulated in double). */
double husai_topk_forward(const husai_topk *m, const float *x, int n, husai_topk_batch *b);

/* Backward of the MSE after husai_topk_forward on the same x: ADDS gradients into grad,
 * a buffer laid out like m->params (the caller zeroes it). Cost O(n * k * d_model). */
void husai_topk_backward(const husai_topk *m, const float *x, int n, husai_topk_batch *b, float *grad);

#endif
