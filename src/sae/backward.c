/* backward.c: the sparse backward (gradients of W_enc, b_enc, W_dec, b_dec from the codes, latent-major
 * within blocks of rows, threads over disjoint latent ranges) and AuxK; the architecture adds its own
 * parameters' gradients through its backward hook. */
#include <string.h>

#include "common/threads.h"
#include "sae/arch.h"
#include "sae/kernels.h"

/* Four codes of one latent at once, in one pass over their residual-gradient rows a[0..3]: out[q] =
 * husai_dot8(a[q], w, n), four independent latency chains, and gWd += v[q] * a[q] for the first nq of them
 * (1 <= nq <= 4; the other slots may repeat a row, whose dot is then not used), code by code as axpy
 * calls would add them. The two share each row's loads: as separate passes over the rows the backward
 * read every residual gradient twice. */
HUSAI_INLINE void dot8x4_axpy(const float *const a[4], const float *restrict w, int n, const float v[4],
                              int nq, float *restrict gWd, float out[4]) {
    husai_v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, t0, t1, t2, t3, wv, D;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        V8_LOAD(wv, w + i);
        V8_LOAD(D, gWd + i);
        V8_LOAD(t0, a[0] + i);
        V8_LOAD(t1, a[1] + i);
        V8_LOAD(t2, a[2] + i);
        V8_LOAD(t3, a[3] + i);
        c0 += t0 * wv;
        c1 += t1 * wv;
        c2 += t2 * wv;
        c3 += t3 * wv;
        /* nq is loop-invariant: GCC unswitches the loop on it */
        D += v[0] * t0;
        if (nq > 1) D += v[1] * t1;
        if (nq > 2) D += v[2] * t2;
        if (nq > 3) D += v[3] * t3;
        V8_STORE(gWd + i, D);
    }
    /* dot8's final sum, ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) + tail, for the four at once:
     * pairwise sums of adjacent lanes, twice, then the two halves. */
    const husai_v8 p01 = __builtin_shufflevector(c0, c1, 0, 2, 8, 10, 4, 6, 12, 14) +
                         __builtin_shufflevector(c0, c1, 1, 3, 9, 11, 5, 7, 13, 15);
    const husai_v8 p23 = __builtin_shufflevector(c2, c3, 0, 2, 8, 10, 4, 6, 12, 14) +
                         __builtin_shufflevector(c2, c3, 1, 3, 9, 11, 5, 7, 13, 15);
    const husai_v8 q = __builtin_shufflevector(p01, p23, 0, 2, 8, 10, 4, 6, 12, 14) +
                       __builtin_shufflevector(p01, p23, 1, 3, 9, 11, 5, 7, 13, 15);
    husai_v4 tail = {0, 0, 0, 0};
    for (; i < n; i++) {
        for (int u = 0; u < 4; u++)
            tail[u] += a[u][i] * w[i];
        for (int u = 0; u < nq; u++)
            gWd[i] += v[u] * a[u][i];
    }
    const husai_v4 sum =
        (__builtin_shufflevector(q, q, 0, 1, 2, 3) + __builtin_shufflevector(q, q, 4, 5, 6, 7)) + tail;
    memcpy(out, &sum, sizeof sum);
}

/* Latent j's encoder gradient row from its codes e0..e1 in a block grouped by latent (rows ascending):
 * gWe += g_val * xin, code by code, as axpy calls would, in tiles of 64 elements held in registers.
 * Out of line (and so multiversioned itself): inlined into the backward, GCC ran short of registers
 * and kept one of the sums in memory, a store-to-load chain per code. */
HUSAI_MULTIVERSION HUSAI_NOINLINE static void encoder_grad_row(float *restrict gWe, const int32_t *grp_row,
                                                               const float *grp_val, int e0, int e1,
                                                               const float *xin, int d) {
    int i0 = 0;
    for (; i0 + 64 <= d; i0 += 64) {
        husai_v8 E0, E1, E2, E3, E4, E5, E6, E7, t;
        V8_LOAD(E0, gWe + i0);
        V8_LOAD(E1, gWe + i0 + 8);
        V8_LOAD(E2, gWe + i0 + 16);
        V8_LOAD(E3, gWe + i0 + 24);
        V8_LOAD(E4, gWe + i0 + 32);
        V8_LOAD(E5, gWe + i0 + 40);
        V8_LOAD(E6, gWe + i0 + 48);
        V8_LOAD(E7, gWe + i0 + 56);
        for (int e = e0; e < e1; e++) {
            const float z = grp_val[2 * (size_t)e + 1];
            const float *x = xin + (size_t)grp_row[e] * d + i0;
            V8_LOAD(t, x);
            E0 += z * t;
            V8_LOAD(t, x + 8);
            E1 += z * t;
            V8_LOAD(t, x + 16);
            E2 += z * t;
            V8_LOAD(t, x + 24);
            E3 += z * t;
            V8_LOAD(t, x + 32);
            E4 += z * t;
            V8_LOAD(t, x + 40);
            E5 += z * t;
            V8_LOAD(t, x + 48);
            E6 += z * t;
            V8_LOAD(t, x + 56);
            E7 += z * t;
        }
        V8_STORE(gWe + i0, E0);
        V8_STORE(gWe + i0 + 8, E1);
        V8_STORE(gWe + i0 + 16, E2);
        V8_STORE(gWe + i0 + 24, E3);
        V8_STORE(gWe + i0 + 32, E4);
        V8_STORE(gWe + i0 + 40, E5);
        V8_STORE(gWe + i0 + 48, E6);
        V8_STORE(gWe + i0 + 56, E7);
    }
    for (; i0 + 8 <= d; i0 += 8) {
        husai_v8 E, t;
        V8_LOAD(E, gWe + i0);
        for (int e = e0; e < e1; e++) {
            V8_LOAD(t, xin + (size_t)grp_row[e] * d + i0);
            E += grp_val[2 * (size_t)e + 1] * t;
        }
        V8_STORE(gWe + i0, E);
    }
    for (; i0 < d; i0++) {
        float E = gWe[i0];
        for (int e = e0; e < e1; e++)
            E += grp_val[2 * (size_t)e + 1] * xin[(size_t)grp_row[e] * d + i0];
        gWe[i0] = E;
    }
}

/* Adds the gradient that code gradient gz of latent j in row r sends to the encoder: W_enc row j,
 * b_enc j, and (through x - b_dec) the row's b_dec accumulator gbd. */
static inline void encoder_grad(const husai_sae *m, int j, float gz, const float *xin, float *gW_enc,
                                float *gb_enc, float *gbd) {
    const int d = m->d_model;
    gb_enc[j] += gz;
    husai_axpy(gW_enc + (size_t)j * d, gz, xin, d);
    if (gbd) husai_axpy(gbd, -gz, m->W_enc + (size_t)j * d, d);
}

/* dLoss/d(x_hat) for rows [r0, r1), in place of their reconstructions in g_xhat (matryoshka) or from
 * x_hat. */
HUSAI_INLINE void residual_grad(const husai_sae *m, const float *x, husai_sae_batch *b, float scale, int r0,
                                int r1) {
    const int d = m->d_model, mat = m->nested, P = mat ? m->spec.n_prefixes : 1;
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * d;
        float *G = b->g_xhat + (size_t)r * P * d;
        if (mat) {
            /* Latents of prefix group l appear in every reconstruction l..P-1: their residual gradient
             * is the sum of those levels', built from the widest prefix down. */
            for (int l = P - 1; l >= 0; l--) {
                float *g = G + (size_t)l * d;
                const float *above = l + 1 < P ? g + d : NULL;
                for (int i = 0; i < d; i++)
                    g[i] = scale * (g[i] - xr[i]) + (above ? above[i] : 0.0f);
            }
        } else {
            const float *xh = b->x_hat + (size_t)r * d;
            for (int i = 0; i < d; i++)
                G[i] = scale * (xh[i] - xr[i]);
        }
    }
}

/* residual_grad, compiled for each instruction set. */
HUSAI_MULTIVERSION
static void residual_grad_rows(const husai_sae *m, const float *x, husai_sae_batch *b, float scale, int r0,
                               int r1) {
    residual_grad(m, x, b, scale, r0, r1);
}

/* Rows per block of the backward's latent-major pass: enough that a latent's gradient rows, fetched
 * once per block, serve about 16 codes, and at least 64. */
static int backward_block_rows(int n, int d_sae, int64_t nnz) {
    const double per_row = nnz > 0 ? (double)nnz / n : 1.0;
    double rows = 16.0 * d_sae / per_row;
    if (rows < 64.0) rows = 64.0;
    if (rows > (double)INT32_MAX / d_sae) rows = (double)INT32_MAX / d_sae; /* block positions fit int32 */
    return rows < n ? (int)rows : n;
}

/* The code gradients and the encoder and decoder rows' gradients of latents [ja, jb), latent by latent
 * within blocks of R rows: a latent's two gradient rows then stay in L1 while the block's codes of that
 * latent add into them, instead of being fetched from L2 (or DRAM at LLM sizes) for every code. Each
 * gradient element still receives its terms in ascending row order, as a row-by-row loop adds them, so
 * the bits are the same for any R and any split of the latents. */
HUSAI_MULTIVERSION
static void backward_latents(const husai_sae *m, const float *x, husai_sae_batch *b, float l1, int R, int ja,
                             int jb, float *gW_enc, float *gb_enc, float *gW_dec) {
    const int d = m->d_model, n = b->n;
    const int mat = m->nested, P = mat ? m->spec.n_prefixes : 1;
    const float *xin_all = m->b_dec ? b->xc : x;
    const size_t g_stride = (size_t)P * d;
    /* b_dec's gradient is the only reader of the row-major code gradients (g_val) */
    const int keep_gval = m->b_dec != NULL;
    int first_level = 0;
    while (mat && ja >= m->prefix[first_level])
        first_level++;
    for (int r0 = 0; r0 < n; r0 += R) {
        const int r1 = n - r0 < R ? n : r0 + R;
        const int64_t base = b->row_ptr[r0];
        const int32_t *grp_end = b->grp_end, *grp_code = b->grp_code + base, *grp_row = b->grp_row + base;
        float *grp_val = b->grp_val + 2 * base;
        int level = first_level;
        const int32_t first = husai_group_by_latent(b, ja, jb, r0, r1, keep_gval);
        for (int j = ja, e0 = first; j < jb; e0 = grp_end[j++]) {
            while (mat && j >= m->prefix[level])
                level++;
            const int e1 = grp_end[j];
            if (e0 == e1) continue;
            const float *Wd = m->W_dec + (size_t)j * d;
            const float *G = b->g_xhat + (size_t)level * d;
            /* The code gradients, four independent dot products at a time (the last one to three with
             * the last row repeated in the unused slots), summed into b_enc's gradient in order, and in the
             * same pass over the residual gradients the decoder's gradient row. */
            float gbe = gb_enc[j], *gWd = gW_dec + (size_t)j * d;
            for (int e = e0; e < e1; e += 4) {
                const float *rows[4];
                float gz[4], v[4];
                const int nq = e1 - e < 4 ? e1 - e : 4;
                for (int q = 0; q < 4; q++) {
                    const int eq = q < nq ? e + q : e1 - 1;
                    rows[q] = G + (size_t)grp_row[eq] * g_stride;
                    v[q] = grp_val[2 * (size_t)eq];
                }
                dot8x4_axpy(rows, Wd, d, v, nq, gWd, gz);
                for (int q = 0; q < nq; q++) {
                    /* + d(coeff * mean L1)/dz for a positive code */
                    const float g = l1 != 0.0f ? gz[q] + l1 : gz[q];
                    if (keep_gval) b->g_val[base + grp_code[e + q]] = g;
                    grp_val[2 * (size_t)(e + q) + 1] = g;
                    gbe += g;
                }
            }
            gb_enc[j] = gbe;
        }
        /* Then the encoder's gradient rows, in a second pass over the latents: it reads the block's
         * inputs where the first read its residual gradients, so each pass works on one block of rows
         * instead of two (at 128 x 128, 2-7% off a step). Every rule passes the gradient to the active
         * pre-activations with slope 1. */
        for (int j = ja, e0 = first; j < jb; e0 = grp_end[j++])
            if (grp_end[j] > e0)
                encoder_grad_row(gW_enc + (size_t)j * d, grp_row, grp_val, e0, grp_end[j], xin_all, d);
    }
}

/* Splits latents [0, d_sae) into T threads' ranges, about equal in codes (plus one per latent for its
 * fixed cost), into b->split. Only the speed depends on the split, so the codes of the first 256 rows
 * stand in for the batch's (a serial count of all of them took a tenth of a threaded backward). */
static void split_latents(const husai_sae_batch *b, int T) {
    const int s = b->d_sae, rows = b->n < 256 ? b->n : 256;
    b->split[0] = 0;
    b->split[T] = s;
    if (T == 1) return;
    int32_t *cnt = b->grp_end; /* free until the backward's grouping */
    memset(cnt, 0, (size_t)s * sizeof(int32_t));
    for (int64_t a = 0; a < b->row_ptr[rows]; a++)
        cnt[b->idx[a]]++;
    const double total = (double)b->row_ptr[rows] + s;
    double acc = 0.0;
    int t = 1;
    b->split[0] = 0;
    for (int j = 0; j < s && t < T; j++) {
        acc += cnt[j] + 1.0;
        while (t < T && acc >= total * t / T)
            b->split[t++] = j + 1;
    }
    while (t <= T)
        b->split[t++] = s;
}

/* b_dec is in every reconstruction and is subtracted before the encoder: per row, G (the first of P
 * levels) minus each code's gradient through W_enc, in latent order, then summed over rows in order.
 * Element-wise, so its AVX2 version gives the same bits; out of the backward's body, the speed of its
 * per-code loop no longer depends on the registers and code placement of the rest (inline, a relu_l1
 * step's time moved by 9% after an unrelated edit). */
HUSAI_MULTIVERSION HUSAI_NOINLINE static void decoder_bias_grad(const husai_sae *m, const husai_sae_batch *b,
                                                                int P, float *gb_dec) {
    const int d = m->d_model;
    float *gbd = b->row;
    for (int r = 0; r < b->n; r++) {
        memcpy(gbd, b->g_xhat + (size_t)r * P * d, (size_t)d * sizeof(float));
        for (int64_t a = b->row_ptr[r]; a < b->row_ptr[r + 1]; a++)
            husai_axpy(gbd, -b->g_val[a], m->W_enc + (size_t)b->idx[a] * d, d);
        for (int i = 0; i < d; i++)
            gb_dec[i] += gbd[i];
    }
}

void husai_sae_backward(const husai_sae *m, const float *x, double coeff, husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    const size_t w = (size_t)s * (size_t)d;
    float *gW_enc = grad, *gb_enc = grad + w, *gW_dec = grad + w + s;
    float *gb_dec = m->b_dec ? gW_dec + w : NULL;
    const int mat = m->nested, P = mat ? m->spec.n_prefixes : 1;
    const float scale = (float)(2.0 / ((double)n * d * P));
    const float l1 = m->ops->code_grad ? m->ops->code_grad(coeff, n) : 0.0f;
    const int R = backward_block_rows(n, s, b->row_ptr[n]);
    /* Threads own disjoint latent ranges: each writes only its latents' gradient rows, b_enc entries and
     * codes' gradients, so nothing is shared and nothing depends on the thread count. */
    const int T = b->threads < s ? b->threads : s;
#pragma omp parallel num_threads(T) if (T > 1 && (size_t)b->row_ptr[n] * d >= 65536)
    {
        const int t = husai_thread_num(), nt = husai_threads_here();
        residual_grad_rows(m, x, b, scale, (int)((int64_t)n * t / nt), (int)((int64_t)n * (t + 1) / nt));
        /* single's closing barrier also puts every row's residual gradient before any latent's use */
#pragma omp single
        split_latents(b, nt);
        backward_latents(m, x, b, l1, R, b->split[t], b->split[t + 1], gW_enc, gb_enc, gW_dec);
    }
    if (gb_dec) decoder_bias_grad(m, b, P, gb_dec);
    if (m->ops->backward) m->ops->backward(m, coeff, b, grad);
}

double husai_sae_auxk(const husai_sae *m, const float *x, const unsigned char *dead, int k_aux, double coeff,
                      husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    int n_dead = 0;
    for (int j = 0; j < s; j++)
        if (dead[j]) b->aux_id[n_dead++] = j;
    if (n_dead == 0 || k_aux < 1) return 0.0;
    const int ka = k_aux < n_dead ? k_aux : n_dead, relu = m->spec.relu || m->ops->always_relu;
    const size_t w = (size_t)s * (size_t)d;
    float *gW_enc = grad, *gb_enc = grad + w, *gW_dec = grad + w + s;
    float *gb_dec = m->b_dec ? gW_dec + w : NULL;
    float *diff = b->row, *gbd = gb_dec ? b->row + d : NULL;
    const float scale = (float)(2.0 * coeff / ((double)n * d));
    double sse = 0.0;
    for (int r = 0; r < n; r++) {
        const float *p = b->pre + (size_t)r * s, *xr = x + (size_t)r * d;
        const float *xin = m->b_dec ? b->xc + (size_t)r * d : xr;
        for (int c = 0; c < n_dead; c++) {
            const float v = p[b->aux_id[c]];
            b->aux_cand[c] = relu && !(v > 0.0f) ? 0.0f : v;
        }
        husai_topk_row(b->aux_cand, n_dead, ka, b->aux_pos, b->aux_val, b->select);
        /* diff = e_hat - e, with e = x - x_hat held constant */
        const float *xh = b->x_hat + (size_t)r * d;
        for (int i = 0; i < d; i++)
            diff[i] = xh[i] - xr[i];
        for (int a = 0; a < ka; a++)
            husai_axpy(diff, b->aux_val[a], m->W_dec + (size_t)b->aux_id[b->aux_pos[a]] * d, d);
        for (int i = 0; i < d; i++) {
            sse += (double)diff[i] * diff[i];
            diff[i] *= scale;
        }
        if (gbd) memset(gbd, 0, (size_t)d * sizeof(float));
        for (int a = 0; a < ka; a++) {
            if (relu && b->aux_val[a] == 0.0f) continue; /* a ReLU'd zero has no gradient */
            const int j = b->aux_id[b->aux_pos[a]];
            const float gz = husai_dot8(diff, m->W_dec + (size_t)j * d, d);
            husai_axpy(gW_dec + (size_t)j * d, b->aux_val[a], diff, d);
            encoder_grad(m, j, gz, xin, gW_enc, gb_enc, gbd);
        }
        if (gbd)
            for (int i = 0; i < d; i++)
                gb_dec[i] += gbd[i];
    }
    return sse / ((double)n * d);
}
