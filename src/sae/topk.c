#include "sae/topk.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

husai_status husai_topk_alloc(husai_topk *m, int d_model, int d_sae, int k) {
    memset(m, 0, sizeof *m);
    if (d_model < 1 || d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "d_model=%d and d_sae=%d must be >= 1", d_model, d_sae);
    if (k < 1 || k > d_sae)
        return husai_error(HUSAI_ERR_ARG, "k=%d must be between 1 and d_sae=%d", k, d_sae);
    const size_t w = (size_t)d_sae * (size_t)d_model;
    m->d_model = d_model;
    m->d_sae = d_sae;
    m->k = k;
    m->n_params = 2 * w + (size_t)d_sae;
    m->params = calloc(m->n_params, sizeof(float));
    if (!m->params) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu SAE parameters", m->n_params);
    m->W_enc = m->params;
    m->b_enc = m->W_enc + w;
    m->W_dec = m->b_enc + d_sae;
    return HUSAI_OK;
}

void husai_topk_free(husai_topk *m) {
    if (!m) return;
    free(m->params);
    memset(m, 0, sizeof *m);
}

void husai_topk_init(husai_topk *m, uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, HUSAI_RNG_INIT, 0);
    const size_t w = (size_t)m->d_sae * (size_t)m->d_model;
    const double be = sqrt(6.0 / m->d_model), bd = sqrt(6.0 / m->d_sae);
    for (size_t i = 0; i < w; i++)
        m->W_enc[i] = (float)((2.0 * husai_rng_uniform(&r) - 1.0) * be);
    memset(m->b_enc, 0, (size_t)m->d_sae * sizeof(float));
    /* Draw in file order (i over d_model, j over d_sae) so the stream maps to W_dec[i][j] as in the recipe.
     */
    for (int i = 0; i < m->d_model; i++)
        for (int j = 0; j < m->d_sae; j++)
            m->W_dec[(size_t)j * m->d_model + i] = (float)((2.0 * husai_rng_uniform(&r) - 1.0) * bd);
    husai_topk_normalize_decoder(m);
}

void husai_topk_normalize_decoder(husai_topk *m) {
    const int d = m->d_model;
    for (int j = 0; j < m->d_sae; j++) {
        float *row = m->W_dec + (size_t)j * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++)
            ss += (double)row[i] * row[i];
        if (ss <= 0.0) continue;
        const float norm = (float)sqrt(ss);
        for (int i = 0; i < d; i++)
            row[i] /= norm;
    }
}

void husai_topk_export_decoder(const husai_topk *m, float *out) {
    const int d = m->d_model, s = m->d_sae;
    for (int j = 0; j < s; j++)
        for (int i = 0; i < d; i++)
            out[(size_t)i * s + j] = m->W_dec[(size_t)j * d + i];
}

husai_status husai_topk_batch_alloc(husai_topk_batch *b, const husai_topk *m, int cap) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->d_model = m->d_model;
    b->d_sae = m->d_sae;
    b->k = m->k;
    const size_t c = (size_t)cap;
    b->pre = malloc(c * (size_t)m->d_sae * sizeof(float));
    b->idx = malloc(c * (size_t)m->k * sizeof(int32_t));
    b->val = malloc(c * (size_t)m->k * sizeof(float));
    b->x_hat = malloc(c * (size_t)m->d_model * sizeof(float));
    b->g_xhat = malloc(c * (size_t)m->d_model * sizeof(float));
    b->g_val = malloc(c * (size_t)m->k * sizeof(float));
    if (!b->pre || !b->idx || !b->val || !b->x_hat || !b->g_xhat || !b->g_val) {
        husai_topk_batch_free(b);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate SAE batch scratch for %d rows", cap);
    }
    return HUSAI_OK;
}

void husai_topk_batch_free(husai_topk_batch *b) {
    if (!b) return;
    free(b->pre);
    free(b->idx);
    free(b->val);
    free(b->x_hat);
    free(b->g_xhat);
    free(b->g_val);
    memset(b, 0, sizeof *b);
}

/* Entry a ranks above entry b: larger value, or equal value and lower index. */
static inline int ranks_above(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

/* Min-heap of the k best entries seen so far; the root is the weakest kept entry. */
static void sift_down(float *hv, int32_t *hi, int n, int pos) {
    for (;;) {
        int l = 2 * pos + 1, r = l + 1, w = pos;
        if (l < n && ranks_above(hv[w], hi[w], hv[l], hi[l])) w = l;
        if (r < n && ranks_above(hv[w], hi[w], hv[r], hi[r])) w = r;
        if (w == pos) return;
        float tv = hv[pos];
        hv[pos] = hv[w];
        hv[w] = tv;
        int32_t ti = hi[pos];
        hi[pos] = hi[w];
        hi[w] = ti;
        pos = w;
    }
}

/* Dot product with 8 fixed partial sums: vectorisable without -ffast-math, and the summation
 * order is set by this code, not by the compiler, so results stay reproducible. */
static inline float dot8(const float *restrict a, const float *restrict b, int n) {
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
static inline void axpy(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Selects the k top entries of one row of pre-activations into idx (ascending) and val. */
static void topk_row(const float *pre, int d_sae, int k, int32_t *idx, float *val) {
    float *hv = val; /* the output arrays double as the heap */
    int32_t *hi = idx;
    for (int j = 0; j < k; j++) {
        hv[j] = pre[j];
        hi[j] = j;
    }
    for (int p = k / 2 - 1; p >= 0; p--)
        sift_down(hv, hi, k, p);
    for (int j = k; j < d_sae; j++) {
        /* j is larger than every index in the heap, so it wins only on a strictly larger value. */
        if (pre[j] > hv[0]) {
            hv[0] = pre[j];
            hi[0] = j;
            sift_down(hv, hi, k, 0);
        }
    }
    /* Ascending index order fixes the summation order of the decode. */
    qsort(hi, (size_t)k, sizeof(int32_t), cmp_i32);
    for (int a = 0; a < k; a++)
        val[a] = pre[hi[a]];
}

void husai_topk_encode(const husai_topk *m, const float *x, int n, husai_topk_batch *b) {
    const int d = m->d_model, s = m->d_sae, k = m->k;
    for (int r = 0; r < n; r++)
        memcpy(b->pre + (size_t)r * s, m->b_enc, (size_t)s * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s, d, 1.0f, x, d, m->W_enc, d, 1.0f, b->pre, s);
    for (int r = 0; r < n; r++)
        topk_row(b->pre + (size_t)r * s, s, k, b->idx + (size_t)r * k, b->val + (size_t)r * k);
}

void husai_topk_decode(const husai_topk *m, int n, husai_topk_batch *b) {
    const int d = m->d_model, k = m->k;
    for (int r = 0; r < n; r++) {
        float *xh = b->x_hat + (size_t)r * d;
        memset(xh, 0, (size_t)d * sizeof(float));
        const int32_t *id = b->idx + (size_t)r * k;
        const float *v = b->val + (size_t)r * k;
        for (int a = 0; a < k; a++)
            axpy(xh, v[a], m->W_dec + (size_t)id[a] * d, d);
    }
}

double husai_topk_forward(const husai_topk *m, const float *x, int n, husai_topk_batch *b) {
    husai_topk_encode(m, x, n, b);
    husai_topk_decode(m, n, b);
    const size_t total = (size_t)n * (size_t)m->d_model;
    double sse = 0.0;
    for (size_t i = 0; i < total; i++) {
        const double e = (double)b->x_hat[i] - (double)x[i];
        sse += e * e;
    }
    return sse / (double)total;
}

void husai_topk_backward(const husai_topk *m, const float *x, int n, husai_topk_batch *b, float *grad) {
    const int d = m->d_model, k = m->k;
    const size_t w = (size_t)m->d_sae * (size_t)d;
    float *gW_enc = grad, *gb_enc = grad + w, *gW_dec = grad + w + m->d_sae;
    const float scale = 2.0f / (float)((size_t)n * (size_t)d);
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        const float *xh = b->x_hat + (size_t)r * d;
        float *gx = b->g_xhat + (size_t)r * d;
        for (int i = 0; i < d; i++)
            gx[i] = scale * (xh[i] - xr[i]);
        const int32_t *id = b->idx + (size_t)r * k;
        const float *v = b->val + (size_t)r * k;
        float *gv = b->g_val + (size_t)r * k;
        for (int a = 0; a < k; a++) {
            const size_t j = (size_t)id[a];
            const float *drow = m->W_dec + j * d;
            float *gdrow = gW_dec + j * d;
            const float dot = dot8(gx, drow, d);
            gv[a] = dot;
            axpy(gdrow, v[a], gx, d);
            /* Top-k passes the gradient only to the selected pre-activations. */
            gb_enc[j] += dot;
            axpy(gW_enc + j * d, dot, xr, d);
        }
    }
}
