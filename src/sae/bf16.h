/* bf16.h: the bf16 encoder product and the exact TopK selection built on it (precision = bf16). The
 * product X W_enc^T runs on bf16 inputs with fp32 accumulation, through oneDNN's matmul (the CPU's bf16
 * matrix units where it has them) or, without oneDNN, emulated (sgemm on bf16-rounded copies: the same
 * rounding of the inputs, the speed of fp32). Its scores only pick candidates: per row the top m by bf16
 * score are rescored with exact fp32 dot products (husai_dot8's fixed order, plus b_enc), a per-row bound
 * on the bf16 error (derived in bf16.c and README "bf16 precision") certifies that no other latent can
 * reach the top k, and a row that cannot be certified is rescored over every latent. The selected
 * latents and their values are therefore those of the dot8 fp32 rule on every row, whatever the backend,
 * ISA or thread count. Threshold rules rescore the latents near their boundary instead (bf16.c).
 * defines: husai_precision, husai_precision_name, husai_precision_parse, husai_bf16, husai_bf16_backend,
 *          husai_bf16_create, husai_bf16_free, husai_bf16_dnnl_available, husai_bf16_isa,
 *          husai_bf16_encode, husai_bf16_force_full, husai_bf16_round, husai_bf16_row_bound,
 *          husai_bf16_stats, husai_bf16_eligible, husai_bf16_totals, husai_bf16_calibrate, husai_bf16_nt,
 *          husai_bf16_nt_create, husai_bf16_nt_block, husai_bf16_nt_bound, husai_bf16_nt_free,
 *          husai_bf16_abs_dot, husai_bf16_set_incremental, HUSAI_BF16_CAND_FIRST, HUSAI_BF16_CAND_SECOND */
#ifndef HUSAI_SAE_BF16_H
#define HUSAI_SAE_BF16_H

#include <stdint.h>

#include "common/status.h"
#include "sae/model.h"

/* [train] precision: fp32 (sgemm), bf16 (this file), auto (bf16 where a start-up calibration finds it
 * faster on every rank; resolved by the sweep layer before training). */
typedef enum { HUSAI_PRECISION_FP32, HUSAI_PRECISION_BF16, HUSAI_PRECISION_AUTO } husai_precision;

/* The config name of a precision ("?" outside the enum). */
const char *husai_precision_name(int p);

/* The precision called name, or -1. */
int husai_precision_parse(const char *name);

typedef enum {
    HUSAI_BF16_EMULATED, /* sgemm on bf16-rounded fp32 copies: any machine */
    HUSAI_BF16_DNNL,     /* oneDNN matmul on bf16 inputs (needs HUSAI_HAVE_DNNL and a CPU it supports) */
    HUSAI_BF16_BEST      /* oneDNN when available, else emulated */
} husai_bf16_backend;

typedef struct husai_bf16 husai_bf16;

/* Candidates per row, in multiples of k: the first pass rescores the top HUSAI_BF16_CAND_FIRST * k by
 * bf16 score (highest first, stopping as soon as the row is certified), a row it does not certify the top
 * HUSAI_BF16_CAND_SECOND * k, and a row neither certifies (or any row when that reaches d_sae) is rescored
 * in full. Measured at 768 x 16384, k 32: see README. */
#define HUSAI_BF16_CAND_FIRST 2
#define HUSAI_BF16_CAND_SECOND 8

/* Whether training runs a model's rule on the bf16 path: topk and matryoshka (certified top-k), batchtopk
 * (certified batch cut; its inference threshold too) and relu_l1 (certified zero boundary), without AuxK
 * (which ranks dead latents' bf16 scores). jumprelu has a certificate too but trains on sgemm (bf16.c). */
int husai_bf16_eligible(const husai_sae *m, int aux_k);

/* Whether this build has oneDNN and it runs a bf16 matmul on this CPU (checked once, cached). */
int husai_bf16_dnnl_available(void);

/* The implementation oneDNN chose for the bf16 product (e.g. "brg:avx512_core_amx"), "emulated" for
 * the emulated backend, "none" without oneDNN. Static storage. */
const char *husai_bf16_isa(const husai_bf16 *c);

/* Makes a bf16 context for batches of up to cap rows of model m, run on `threads` threads, and attaches
 * it to b (b->bf16; husai_sae_batch_free releases it). HUSAI_ERR_ARG if m's rule is not eligible or the
 * DNNL backend was asked for and is unavailable; HUSAI_ERR_NOMEM. */
husai_status husai_bf16_create(husai_sae_batch *b, const husai_sae *m, husai_bf16_backend backend);

/* Releases a context (NULL is fine). */
void husai_bf16_free(husai_bf16 *c);

/* Tests: how contexts created from now on rescore a TopK row's candidates: 1 one by one in score order,
 * stopping once certified, 0 all at once, -1 (the default) one by one from d_model 256 on. The codes are
 * the same either way. */
void husai_bf16_set_incremental(int mode);

/* The bf16 rounding husai feeds the units: round to nearest even, results below bf16's smallest normal
 * flushed to (signed) zero (what the units do with subnormal inputs), NaN kept a NaN. As a float. */
float husai_bf16_round(float x);

/* The encode of husai_sae_encode on the bf16 path (b->bf16 set, m eligible): pre-activations in b->pre
 * are the bf16 scores (b_enc included), the codes are those of the dot8 fp32 rule. */
husai_status husai_bf16_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                               husai_sae_batch *b);

/* Tests: with on, every row is rescored in full (the dot8 rule computed directly, no certificate), the
 * reference the certified path must match bit for bit. */
void husai_bf16_force_full(husai_bf16 *c, int on);

/* Row r's certified bound after the latest encode: every latent's exact score b_j + <x_r, w_j> lies
 * within it of its bf16 score (b->pre), and every dot8 fp32 score within it of the exact one (so the
 * gap a certificate needs is this sum). Infinite when the row's norms are not finite. */
double husai_bf16_row_bound(const husai_bf16 *c, int r);

/* Totals since creation: rows encoded, rows the first candidate set did not certify, rows rescored in
 * full (uncertified by every candidate set). */
void husai_bf16_stats(const husai_bf16 *c, int64_t *rows, int64_t *second, int64_t *full);

/* This process's totals over every bf16 encode so far (all contexts, freed ones included): rows, rows
 * the first candidate set did not certify, rows rescored in full. */
void husai_bf16_totals(int64_t *rows, int64_t *second, int64_t *full);

/* Times the encode of `rows` random rows by a random model of the given TopK shape on this thread's
 * husai_max_threads() threads, best of 3 after a warm-up: *t_fp32 with sgemm, *t_bf16 on the bf16 path with
 * the best backend (oneDNN if available; else *t_bf16 = INFINITY and nothing is timed). Seconds. */
husai_status husai_bf16_calibrate(int d_model, int d_sae, int k, int rows, double *t_fp32, double *t_bf16);

/* All-pairs products on the same units (PWMCC's |cos| blocks): C = bf16(A rows) bf16(B)^T with fp32
 * accumulation, B converted once, A by blocks of up to `block` rows, one block at a time, each product on T
 * threads (oneDNN's own; the emulated product is one sgemm call). Blocks are not run concurrently: products
 * executed from several OpenMP threads at once gave wrong values here (test_bf16's test_pwmcc; oneDNN's
 * library-managed scratchpad is the likely cause). */
typedef struct husai_bf16_nt husai_bf16_nt;

/* Prepares A (na x d) against B (nb x d), both fp32 rows, for blocks of up to `block` rows, and measures the
 * norms of the bound (husai_bf16_nt_bound). HUSAI_ERR_NOMEM; HUSAI_ERR_ARG for DNNL unavailable. */
husai_status husai_bf16_nt_create(husai_bf16_nt **out, const float *A, int na, const float *B, int nb, int d,
                                  int block, int T, husai_bf16_backend backend);

/* C[0..bs) x nb = bf16(A[i0 .. i0 + bs)) bf16(B)^T (bs <= block; rows bs other than block only for the
 * last block, i0 + bs = na). */
husai_status husai_bf16_nt_block(husai_bf16_nt *nt, int i0, int bs, float *C);

/* E with |c - dot8(a_i, b_j)| <= E for every product c of every block (bf16 error plus dot8's, as in the
 * encoder's bound without a bias); infinite when the norms are not finite. */
double husai_bf16_nt_bound(const husai_bf16_nt *nt);

/* |dot8(a, b)| over d floats: the exact fp32 value the certified maxima are taken over (husai_dot8's fixed
 * summation order, so the same bits wherever it runs). */
float husai_bf16_abs_dot(const float *a, const float *b, int d);

/* Releases nt (NULL is fine). */
void husai_bf16_nt_free(husai_bf16_nt *nt);

#endif
