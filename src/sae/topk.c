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
    b->select = malloc((size_t)m->d_sae * sizeof(float));
    if (!b->pre || !b->idx || !b->val || !b->x_hat || !b->g_xhat || !b->g_val || !b->select) {
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
    free(b->select);
    memset(b, 0, sizeof *b);
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

/* Value of the k-th largest of a[0..n) (1 <= k <= n), reordering a (Hoare quickselect, median-of-3
 * pivot). Expected O(n); terminates on any input, NaN included. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    const int target = k - 1; /* position in descending order */
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        const float p = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p)
                i++;
            while (a[j] < p)
                j--;
            if (i <= j) {
                const float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return a[target];
    }
    return a[target];
}

/* Selects the k top entries of one row (signed; ties to the lower index) into idx, in ascending
 * index order, and their values into val. scratch holds d_sae floats. The k-th largest value is
 * found by quickselect; one scan in index order then takes every larger entry and, of the entries
 * equal to it, the lowest-indexed ones, so the output needs no sort. */
static void topk_row(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch) {
    for (int j = 0; j < d_sae; j++)
        scratch[j] = isnan(pre[j]) ? -INFINITY : pre[j]; /* a NaN row still selects; the loss reports it */
    const float v = kth_largest(scratch, d_sae, k);
    int greater = 0;
    for (int j = 0; j < d_sae; j++)
        greater += pre[j] > v;
    int equal_left = k - greater, n = 0;
    for (int j = 0; j < d_sae && n < k; j++) {
        const float x = isnan(pre[j]) ? -INFINITY : pre[j];
        if (x > v || (x == v && equal_left-- > 0)) {
            idx[n] = j;
            val[n++] = pre[j];
        }
    }
}

void husai_topk_encode(const husai_topk *m, const float *x, int n, husai_topk_batch *b) {
    const int d = m->d_model, s = m->d_sae, k = m->k;
    for (int r = 0; r < n; r++)
        memcpy(b->pre + (size_t)r * s, m->b_enc, (size_t)s * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s, d, 1.0f, x, d, m->W_enc, d, 1.0f, b->pre, s);
    for (int r = 0; r < n; r++)
        topk_row(b->pre + (size_t)r * s, s, k, b->idx + (size_t)r * k, b->val + (size_t)r * k, b->select);
}

/* The sparse loops are compiled twice, for AVX2 and for baseline x86-64, and picked at load time.
 * Both give the same bits: the loops are element-wise or use dot8's fixed summation order, and
 * contraction to FMA is off for the whole build. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HUSAI_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define HUSAI_MULTIVERSION
#endif

HUSAI_MULTIVERSION
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

HUSAI_MULTIVERSION
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
