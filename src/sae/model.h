/* model.h: one sparse autoencoder of any supported architecture, forward and backward.
 * Every architecture shares one shape: pre = W_enc (x - b_dec) + b_enc, a sparse code z
 * chosen from pre by the architecture's rule, x_hat = sum_j z_j D_j + b_dec. The rules, one file each
 * (arch_<name>.c filling a husai_arch_ops table, arch.h), over the shared kernels of kernels.h:
 *   topk        the k largest pre per row (signed, HUSAI's recipe; with relu, then ReLU)
 *   batchtopk   the n*k largest ReLU(pre) over a batch of n rows; at inference pre > threshold (the
 *               trainer's mean, over the last epoch, of each batch's smallest kept code)
 *   jumprelu    pre where pre > theta_j (learned per latent, straight-through estimator)
 *   relu_l1     ReLU(pre), with an L1 penalty on z
 *   matryoshka  topk's code, loss averaged over nested prefixes of the latents
 * Parameters live in one contiguous buffer (W_enc | b_enc | W_dec | b_dec | log_theta, the
 * last two only when used) so Adam, checkpoints and copies work over a single array. The
 * decoder is stored feature-major, one row per latent, because the sparse decode and its
 * gradient touch only the active rows; husai_sae_export_decoder gives the file layout
 * [d_model, d_sae]. Codes are kept per batch in CSR form (row_ptr, idx, val), idx ascending
 * within a row. No MPI here.
 * defines: husai_arch, husai_arch_name, husai_arch_parse, husai_arch_ops (declared), husai_sae_spec,
 *          husai_sae, husai_sae_batch, husai_sae_loss, husai_sae_*, husai_kth_largest, HUSAI_MAX_PREFIXES */
#ifndef HUSAI_SAE_MODEL_H
#define HUSAI_SAE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef enum {
    HUSAI_ARCH_TOPK,
    HUSAI_ARCH_BATCHTOPK,
    HUSAI_ARCH_JUMPRELU,
    HUSAI_ARCH_RELU_L1,
    HUSAI_ARCH_MATRYOSHKA,
    HUSAI_ARCH_COUNT
} husai_arch;

/* The config name of an architecture ("topk", ...); "?" outside the enum. */
const char *husai_arch_name(int arch);

/* The architecture called name, or -1 if none is. */
int husai_arch_parse(const char *name);

#define HUSAI_MAX_PREFIXES 8

/* An architecture's table of rules (sae/arch.h). */
typedef struct husai_arch_ops husai_arch_ops;

/* What a model is; fixed for its lifetime. */
typedef struct {
    husai_arch arch;
    int d_model, d_sae, k;
    int relu;         /* topk, matryoshka: ReLU after selection (batchtopk always, the others by rule) */
    int decoder_bias; /* learn b_dec, subtracted before the encoder and added to the output */
    int n_prefixes;   /* matryoshka: prefixes d_sae/2^(n-1), ..., d_sae/2, d_sae */
    double bandwidth; /* jumprelu: width of the rectangle kernel of the straight-through estimator */
    const husai_arch_ops *ops; /* NULL: the registered table of arch; else this one (arch is then unused) */
} husai_sae_spec;

/* HUSAI's TopK: signed top-k, no decoder bias. */
husai_sae_spec husai_sae_spec_topk(int d_model, int d_sae, int k);

/* Checks a spec (shapes >= 1, 1 <= k <= d_sae, prefixes fit d_sae, bandwidth > 0 for jumprelu). */
husai_status husai_sae_spec_check(const husai_sae_spec *s);

typedef struct {
    husai_sae_spec spec;
    const husai_arch_ops *ops; /* the architecture's rules (static, not owned) */
    int d_model, d_sae, k;     /* copies of spec's, read in every loop */
    int nested;                /* copy of ops->nested: the decode and backward loops read it per tile */
    size_t n_params;
    float *params;    /* owner of the views below */
    float *W_enc;     /* (d_sae, d_model) */
    float *b_enc;     /* (d_sae) */
    float *W_dec;     /* (d_sae, d_model): row j is feature j, i.e. column j of the decoder matrix */
    float *b_dec;     /* (d_model), or NULL without decoder bias */
    float *log_theta; /* (d_sae) jumprelu thresholds theta_j = exp(log_theta_j), or NULL */
    int prefix[HUSAI_MAX_PREFIXES]; /* nested (matryoshka) prefix ends, ascending, the last d_sae */
    double threshold; /* batchtopk inference threshold (estimated while training, not a gradient parameter) */
} husai_sae;

typedef enum { HUSAI_SAE_TRAIN, HUSAI_SAE_EVAL } husai_sae_mode;

/* Scratch for one batch of up to `cap` rows; owned by the caller, reusable across steps. Encode,
 * decode and backward run on `threads` OpenMP threads, the count when the scratch was allocated
 * (omp_get_max_threads()); work is split so that every result is bitwise the same for any count. The
 * threads call sgemm on their own row blocks, so OpenBLAS is best left at one thread (husai sweep sets it).
 */
typedef struct {
    int cap, d_model, d_sae, n;
    int threads;      /* OpenMP threads the batch's work uses */
    float *pre;       /* (cap, d_sae) encoder pre-activations */
    float *xc;        /* (cap, d_model) encoder input x - b_dec (decoder bias only) */
    int64_t *row_ptr; /* (cap + 1) row r's codes are [row_ptr[r], row_ptr[r+1]) */
    int32_t *idx;     /* (nnz) active latents, ascending within a row */
    float *val;       /* (nnz) their codes */
    float *g_val;     /* (nnz) dLoss/d(code), filled by the backward only with a decoder bias */
    size_t nnz_cap;
    float *x_hat;    /* (cap, d_model) full reconstruction */
    float *g_xhat;   /* (cap, n_prefixes or 1, d_model) reconstructions per prefix, then dLoss/d(x_hat) */
    float *select;   /* selection scratch: 2 * d_sae floats per thread (cap * d_sae: ops->batch_select) */
    double *row_sse; /* (cap) each row's squared reconstruction error, summed in row order afterwards */
    int32_t *split;  /* (threads + 1) backward: each thread's range of latents */
    float *row;      /* (2 * d_model) per-row scratch */
    float *aux_cand; /* (d_sae) AuxK: candidate pre-activations of dead latents */
    int32_t *aux_id, *aux_pos; /* (d_sae) AuxK: their latents; the picked candidates */
    float *aux_val;            /* (d_sae) AuxK: the picked codes */
    float batch_min; /* batchtopk, training: smallest selected code (feeds the threshold estimate) */
    /* backward, and decode of large decoders: a block of rows' codes grouped by latent, rows ascending */
    int32_t *grp_end;            /* (d_sae) end of latent j's group; it starts at grp_end[j - 1] (or 0) */
    int32_t *grp_code, *grp_row; /* (nnz) each code's position relative to the block, and its row */
    float *grp_val;              /* (2 nnz) each code's value, then (backward) its gradient, interleaved */
    struct husai_bf16 *bf16;     /* precision = bf16: the product's context (sae/bf16.h); NULL: fp32 sgemm */
} husai_sae_batch;

/* A batch's loss parts (all means over the batch's rows). */
typedef struct {
    double mse;      /* of the full reconstruction, mean over n * d_model elements */
    double recon;    /* the training reconstruction term: mse, or its mean over matryoshka prefixes */
    double l0;       /* mean active latents per row */
    double sparsity; /* relu_l1: mean L1 of z per row; jumprelu: l0; else 0 */
    double total;    /* recon + coeff * sparsity */
} husai_sae_loss;

/* Allocates a model of the given spec with zeroed parameters (b_dec 0, log_theta 0); checks the spec. */
husai_status husai_sae_alloc(husai_sae *m, const husai_sae_spec *spec);

/* HUSAI's init from stream (seed, "init"): W_enc ~ U(+-sqrt(6/d_model)), b_enc = 0,
 * W_dec ~ U(+-sqrt(6/d_sae)) then unit-norm columns. Same seed and shape give the same bits anywhere,
 * for every architecture (data-dependent parts, b_dec and theta, are set by the trainer). */
void husai_sae_init(husai_sae *m, uint64_t seed);

/* Releases the parameters and zeroes the struct; safe on a zeroed or freed model. */
void husai_sae_free(husai_sae *m);

/* Rescales every decoder column (feature) to unit L2 norm; columns of norm 0 are left as they are. */
void husai_sae_normalize_decoder(husai_sae *m);

/* Writes the decoder in file layout: out[i * d_sae + j] = feature j's component i, shape [d_model, d_sae]. */
void husai_sae_export_decoder(const husai_sae *m, float *out);

/* Allocates scratch for batches of up to cap rows of model m. */
husai_status husai_sae_batch_alloc(husai_sae_batch *b, const husai_sae *m, int cap);

/* Releases batch scratch; safe on a zeroed or freed struct. */
void husai_sae_batch_free(husai_sae_batch *b);

/* Encodes n rows of x (n, d_model): sgemm pre-activations, then the architecture's code into b's CSR
 * arrays. mode matters for batchtopk only (batch selection vs the threshold). HUSAI_ERR_NOMEM if the
 * codes outgrow memory. */
husai_status husai_sae_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                              husai_sae_batch *b);

/* Decodes the encoded rows into b->x_hat (and, for matryoshka, each prefix's reconstruction). */
void husai_sae_decode(const husai_sae *m, husai_sae_batch *b);

/* Encode, decode and the loss parts; coeff weighs the sparsity term (relu_l1, jumprelu). */
husai_status husai_sae_forward(const husai_sae *m, const float *x, int n, husai_sae_mode mode, double coeff,
                               husai_sae_batch *b, husai_sae_loss *loss);

/* Backward of loss->total after husai_sae_forward(TRAIN) on the same x: ADDS gradients into grad, a
 * buffer laid out like m->params (the caller zeroes it). jumprelu's thresholds get the straight-through
 * estimate with a rectangle kernel of width spec.bandwidth. Cost O(nnz * d_model), plus O(n * d_sae)
 * comparisons for jumprelu. */
void husai_sae_backward(const husai_sae *m, const float *x, double coeff, husai_sae_batch *b, float *grad);

/* AuxK (Gao et al. 2024) after husai_sae_forward(TRAIN) on the same x: the k_aux largest pre-activations
 * among latents flagged in dead[] (ReLU'd when the model's code is) reconstruct the residual x - x_hat,
 * held constant; ADDS the gradient of coeff * that reconstruction's MSE into grad and returns the MSE. */
double husai_sae_auxk(const husai_sae *m, const float *x, const unsigned char *dead, int k_aux, double coeff,
                      husai_sae_batch *b, float *grad);

/* The k-th largest of a[0..n) (1 <= k <= n), reordering a; expected O(n), NaN-safe termination. */
float husai_kth_largest(float *a, int n, int k);

#endif
