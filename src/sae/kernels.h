/* kernels.h: what the shared SAE kernels (select.c: top-k selection; encode.c: the encoder product and
 * threshold codes; decode.c: the sparse decode; backward.c: the sparse backward and AuxK; adam.h: Adam)
 * offer the architecture backends (arch_*.c) and each other: the selection rules backends plug into their
 * tables, and the compile-time helpers the kernel files share (multiversioning, vector tiles, grouping
 * codes by latent). Internal to src/sae: the public interface is model.h. Every kernel is bitwise the
 * same for any thread count; none allocates except husai_codes_threshold, which grows the batch's code
 * arrays (owned by the batch) when the codes outgrow them.
 * defines: husai_select_topk_rows, husai_topk_keep, husai_encoder_input, husai_codes_topk,
 * husai_codes_threshold, husai_topk_row, husai_topk_row_scan, husai_fetch, husai_sort_pairs, husai_dot8,
 * husai_axpy, HUSAI_MULTIVERSION, HUSAI_INLINE, HUSAI_NOINLINE, husai_v8, V8_LOAD, V8_STORE, husai_code_run,
 * husai_group_by_latent */
#ifndef HUSAI_SAE_KERNELS_H
#define HUSAI_SAE_KERNELS_H

#include <stdint.h>
#include <string.h>

#include "common/status.h"
#include "sae/model.h"

/* The sparse loops are compiled twice, for AVX2 and for baseline x86-64, and picked at load time.
 * Both give the same bits: the loops are element-wise or use dot8's fixed summation order, and
 * contraction to FMA is off for the whole build. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HUSAI_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define HUSAI_MULTIVERSION
#endif
/* Helpers of multiversioned functions must be inlined to be compiled for each version. */
#if defined(__GNUC__)
#define HUSAI_INLINE static inline __attribute__((always_inline))
#define HUSAI_NOINLINE __attribute__((noinline))
#else
#define HUSAI_INLINE static inline
#define HUSAI_NOINLINE
#endif

/* Per-row top-k of rows [r0, r1) (signed; ties to the lower latent, NaN as -inf), row r's codes into slots
 * r*k .. r*k + k in ascending latent order and how many it keeps into row_ptr[r + 1]: with spec.relu,
 * non-positive picks are dropped (ReLU makes them 0 and stops their gradient), so a row may keep fewer than
 * k. scratch: 2 * d_sae floats. An ops->select_rows. */
void husai_select_topk_rows(const husai_sae *m, int r0, int r1, husai_sae_batch *b, float *scratch);

/* Drops the non-positive of a row's k picks when relu is set (ReLU makes them 0 and stops their
 * gradient), keeping the order; returns how many stay. */
int husai_topk_keep(int32_t *id, float *v, int k, int relu);

/* Readies rows [r0, r1) for the encoder product: pre = b_enc if fill_pre (a product that adds into it) and,
 * with a decoder bias, b->xc = x - b_dec. Returns the product's input: x or b->xc. */
const float *husai_encoder_input(const husai_sae *m, const float *x, int r0, int r1, int fill_pre,
                                 husai_sae_batch *b);

/* Packs husai_select_topk_rows's per-row codes of n rows into CSR form. An ops->codes. */
husai_status husai_codes_topk(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b);

/* Threshold rules: z_j = pre_j where pre_j > t[j] for each of n rows, into CSR form, growing the code
 * arrays as needed (HUSAI_ERR_NOMEM if they cannot grow). */
husai_status husai_codes_threshold(const husai_sae *m, int n, const float *t, husai_sae_batch *b);

/* Selects the k top entries of one row of d_sae floats (signed; ties to the lower index, NaN as -inf) into
 * idx, in ascending index order, and their values into val. scratch holds 2 * d_sae floats. */
void husai_topk_row(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch);

/* Sorts n (id, val, val2) triples (val2 may be NULL): by val descending (by_value; as the selections
 * order values: NaN as -inf, -0 as +0), else by id ascending, ties in their present order. scratch holds
 * 2n ints. */
void husai_sort_pairs(int32_t *id, float *val, float *val2, int n, int by_value, int32_t *scratch);

/* Memory to fetch into cache while a scan streams its row: n rows of row_bytes at base + rows[i] * row_bytes
 * (the bf16 path's next rescoring; a hint, nothing is read). */
typedef struct {
    const char *base;
    const int32_t *rows;
    int n;
    size_t row_bytes;
} husai_fetch;

/* husai_topk_row's selection (the same latents, values and order for any input) in one pass (rarely two)
 * behind a threshold sampled from the row and rising, for k much smaller than d_sae (the bf16 path's
 * candidate sets), fetching `also` (if not NULL) a few lines per block meanwhile. scratch as there. */
void husai_topk_row_scan(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch,
                         const husai_fetch *also);

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

/* Register-blocked forms of the sparse loops. A husai_v8 is GCC's vector extension: eight floats with
 * element-wise IEEE arithmetic. Each lane holds one element's running sum, which gets the same terms in
 * the same order as in dot8 or a sequence of axpy calls, so the bits are the same; the sums just stay
 * in registers across terms instead of being stored and reloaded for each. */
typedef float husai_v8 __attribute__((vector_size(8 * sizeof(float))));
typedef float husai_v4 __attribute__((vector_size(4 * sizeof(float))));
typedef double husai_v4d __attribute__((vector_size(4 * sizeof(double))));
#define V8_LOAD(v, p) memcpy(&(v), (p), sizeof(husai_v8))
#define V8_STORE(p, v) memcpy((p), &(v), sizeof(husai_v8))

/* Row r's codes of latents [ja, jb) (all of them if `all`): one run [lo, hi), because a row's latents
 * ascend, so a thread visits its own codes plus two counts per row, not every code of the block. */
HUSAI_INLINE void husai_code_run(const husai_sae_batch *b, int r, int ja, int jb, int all, int64_t *lo,
                                 int64_t *hi) {
    *lo = b->row_ptr[r];
    *hi = b->row_ptr[r + 1];
    if (all) return;
    int64_t n_lo = 0, n_hi = 0;
    for (int64_t a = *lo; a < *hi; a++) {
        n_lo += b->idx[a] < ja;
        n_hi += b->idx[a] < jb;
    }
    *hi = *lo + n_hi;
    *lo += n_lo;
}

/* Groups the codes of rows [r0, r1) of latents [ja, jb) by latent with a stable counting sort, so each
 * latent's codes stay in ascending row order: latent j's are entries grp_end[j - 1] (the returned start for
 * j = ja) .. grp_end[j] of grp_code (positions relative to row_ptr[r0]; written only if with_code),
 * grp_row and (values) grp_val, each array offset by row_ptr[r0] (grp_val by twice that). Slots are those
 * of a grouping of all latents, and each block of rows has its own part of the arrays, so threads grouping
 * disjoint latent ranges write disjoint entries even while at different blocks. The latent-major loops below
 * rely on the order to add each element's terms in the sequence a row-major loop would. */
HUSAI_INLINE int32_t husai_group_by_latent(husai_sae_batch *b, int ja, int jb, int r0, int r1,
                                           int with_code) {
    const int64_t base = b->row_ptr[r0];
    const int all = ja == 0 && jb == b->d_sae;
    int32_t *grp_end = b->grp_end, below = 0;
    memset(grp_end + ja, 0, (size_t)(jb - ja) * sizeof(int32_t));
    int64_t lo, hi;
    for (int r = r0; r < r1; r++) {
        husai_code_run(b, r, ja, jb, all, &lo, &hi);
        below += (int32_t)(lo - b->row_ptr[r]);
        for (int64_t a = lo; a < hi; a++)
            grp_end[b->idx[a]]++;
    }
    int32_t sum = below;
    for (int j = ja; j < jb; j++) {
        const int32_t c = grp_end[j];
        grp_end[j] = sum; /* start for now; the scatter advances it to the end */
        sum += c;
    }
    int32_t *grp_code = b->grp_code + base, *grp_row = b->grp_row + base;
    float *grp_val = b->grp_val + 2 * base;
    for (int r = r0; r < r1; r++) {
        husai_code_run(b, r, ja, jb, all, &lo, &hi);
        for (int64_t a = lo; a < hi; a++) {
            const int32_t slot = grp_end[b->idx[a]]++;
            if (with_code) grp_code[slot] = (int32_t)(a - base);
            grp_row[slot] = r;
            grp_val[2 * (size_t)slot] = b->val[a];
        }
    }
    return below;
}

#endif
