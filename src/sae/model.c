#include "sae/model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

static const char *const ARCH_NAMES[HUSAI_ARCH_COUNT] = {"topk", "batchtopk", "jumprelu", "relu_l1",
                                                         "matryoshka"};

const char *husai_arch_name(int arch) {
    return arch >= 0 && arch < HUSAI_ARCH_COUNT ? ARCH_NAMES[arch] : "?";
}

int husai_arch_parse(const char *name) {
    for (int a = 0; a < HUSAI_ARCH_COUNT; a++)
        if (!strcmp(name, ARCH_NAMES[a])) return a;
    return -1;
}

husai_sae_spec husai_sae_spec_topk(int d_model, int d_sae, int k) {
    return (husai_sae_spec){.arch = HUSAI_ARCH_TOPK,
                            .d_model = d_model,
                            .d_sae = d_sae,
                            .k = k,
                            .n_prefixes = 4,
                            .bandwidth = 1e-3};
}

husai_status husai_sae_spec_check(const husai_sae_spec *s) {
    if (s->arch < 0 || s->arch >= HUSAI_ARCH_COUNT)
        return husai_error(HUSAI_ERR_ARG, "unknown SAE architecture %d", (int)s->arch);
    if (s->d_model < 1 || s->d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "d_model=%d and d_sae=%d must be >= 1", s->d_model, s->d_sae);
    if (s->k < 1 || s->k > s->d_sae)
        return husai_error(HUSAI_ERR_ARG, "k=%d must be between 1 and d_sae=%d", s->k, s->d_sae);
    if (s->arch == HUSAI_ARCH_MATRYOSHKA) {
        if (s->n_prefixes < 1 || s->n_prefixes > HUSAI_MAX_PREFIXES)
            return husai_error(HUSAI_ERR_ARG, "matryoshka prefixes=%d must be between 1 and %d",
                               s->n_prefixes, HUSAI_MAX_PREFIXES);
        if ((s->d_sae >> (s->n_prefixes - 1)) < 1)
            return husai_error(HUSAI_ERR_ARG, "d_sae=%d is too small for %d matryoshka prefixes (halving)",
                               s->d_sae, s->n_prefixes);
    }
    if (s->arch == HUSAI_ARCH_JUMPRELU && !(s->bandwidth > 0.0 && isfinite(s->bandwidth)))
        return husai_error(HUSAI_ERR_ARG, "jumprelu bandwidth=%g must be > 0", s->bandwidth);
    return HUSAI_OK;
}

/* Whether codes are non-negative (ReLU'd) under this spec. */
static int code_is_relu(const husai_sae_spec *s) {
    return s->relu || s->arch == HUSAI_ARCH_BATCHTOPK || s->arch == HUSAI_ARCH_JUMPRELU ||
           s->arch == HUSAI_ARCH_RELU_L1;
}

husai_status husai_sae_alloc(husai_sae *m, const husai_sae_spec *spec) {
    memset(m, 0, sizeof *m);
    husai_status st = husai_sae_spec_check(spec);
    if (st) return st;
    m->spec = *spec;
    const int d_model = spec->d_model, d_sae = spec->d_sae;
    const size_t w = (size_t)d_sae * (size_t)d_model;
    m->d_model = d_model;
    m->d_sae = d_sae;
    m->k = spec->k;
    m->n_params = 2 * w + (size_t)d_sae;
    if (spec->decoder_bias) m->n_params += (size_t)d_model;
    if (spec->arch == HUSAI_ARCH_JUMPRELU) m->n_params += (size_t)d_sae;
    m->params = calloc(m->n_params, sizeof(float));
    if (!m->params) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu SAE parameters", m->n_params);
    m->W_enc = m->params;
    m->b_enc = m->W_enc + w;
    m->W_dec = m->b_enc + d_sae;
    float *next = m->W_dec + w;
    if (spec->decoder_bias) {
        m->b_dec = next;
        next += d_model;
    }
    if (spec->arch == HUSAI_ARCH_JUMPRELU) m->log_theta = next;
    if (spec->arch == HUSAI_ARCH_MATRYOSHKA)
        for (int l = 0; l < spec->n_prefixes; l++)
            m->prefix[l] = d_sae >> (spec->n_prefixes - 1 - l);
    return HUSAI_OK;
}

void husai_sae_free(husai_sae *m) {
    if (!m) return;
    free(m->params);
    memset(m, 0, sizeof *m);
}

void husai_sae_init(husai_sae *m, uint64_t seed) {
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
    husai_sae_normalize_decoder(m);
}

void husai_sae_normalize_decoder(husai_sae *m) {
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

void husai_sae_export_decoder(const husai_sae *m, float *out) {
    const int d = m->d_model, s = m->d_sae;
    for (int j = 0; j < s; j++)
        for (int i = 0; i < d; i++)
            out[(size_t)i * s + j] = m->W_dec[(size_t)j * d + i];
}

husai_status husai_sae_batch_alloc(husai_sae_batch *b, const husai_sae *m, int cap) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->d_model = m->d_model;
    b->d_sae = m->d_sae;
    const size_t c = (size_t)cap, d = (size_t)m->d_model, s = (size_t)m->d_sae;
    const size_t levels = m->spec.arch == HUSAI_ARCH_MATRYOSHKA ? (size_t)m->spec.n_prefixes : 1;
    /* Selection rules with a fixed count know their codes' size; threshold rules grow on demand. */
    b->nnz_cap = c * (size_t)m->k;
    b->pre = malloc(c * s * sizeof(float));
    b->xc = m->spec.decoder_bias ? malloc(c * d * sizeof(float)) : NULL;
    b->row_ptr = malloc((c + 1) * sizeof(int64_t));
    b->idx = malloc(b->nnz_cap * sizeof(int32_t));
    b->val = malloc(b->nnz_cap * sizeof(float));
    b->g_val = malloc(b->nnz_cap * sizeof(float));
    b->x_hat = malloc(c * d * sizeof(float));
    b->g_xhat = malloc(c * levels * d * sizeof(float));
    b->select = malloc((m->spec.arch == HUSAI_ARCH_BATCHTOPK ? c * s : s) * sizeof(float));
    b->row = malloc(2 * d * sizeof(float));
    b->aux_cand = malloc(s * sizeof(float));
    b->aux_id = malloc(s * sizeof(int32_t));
    b->aux_pos = malloc(s * sizeof(int32_t));
    b->aux_val = malloc(s * sizeof(float));
    if (!b->pre || (m->spec.decoder_bias && !b->xc) || !b->row_ptr || !b->idx || !b->val || !b->g_val ||
        !b->x_hat || !b->g_xhat || !b->select || !b->row || !b->aux_cand || !b->aux_id || !b->aux_pos ||
        !b->aux_val) {
        husai_sae_batch_free(b);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate SAE batch scratch for %d rows", cap);
    }
    return HUSAI_OK;
}

void husai_sae_batch_free(husai_sae_batch *b) {
    if (!b) return;
    free(b->pre);
    free(b->xc);
    free(b->row_ptr);
    free(b->idx);
    free(b->val);
    free(b->g_val);
    free(b->x_hat);
    free(b->g_xhat);
    free(b->select);
    free(b->row);
    free(b->aux_cand);
    free(b->aux_id);
    free(b->aux_pos);
    free(b->aux_val);
    memset(b, 0, sizeof *b);
}

/* Makes room for nnz codes (contents not kept: callers reserve before filling). */
static husai_status reserve_codes(husai_sae_batch *b, size_t nnz) {
    if (nnz <= b->nnz_cap) return HUSAI_OK;
    free(b->idx);
    free(b->val);
    free(b->g_val);
    b->idx = malloc(nnz * sizeof(int32_t));
    b->val = malloc(nnz * sizeof(float));
    b->g_val = malloc(nnz * sizeof(float));
    if (!b->idx || !b->val || !b->g_val) {
        free(b->idx);
        free(b->val);
        free(b->g_val);
        b->idx = NULL;
        b->val = b->g_val = NULL;
        b->nnz_cap = 0;
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu sparse codes", nnz);
    }
    b->nnz_cap = nnz;
    return HUSAI_OK;
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
float husai_kth_largest(float *a, int n, int k) {
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
    const float v = husai_kth_largest(scratch, d_sae, k);
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

/* Fills pre = W_enc (x - b_dec) + b_enc for n rows (and b->xc = x - b_dec with a decoder bias). */
static void pre_activations(const husai_sae *m, const float *x, int n, husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    const float *in = x;
    if (m->b_dec) {
        for (int r = 0; r < n; r++)
            for (int i = 0; i < d; i++)
                b->xc[(size_t)r * d + i] = x[(size_t)r * d + i] - m->b_dec[i];
        in = b->xc;
    }
    for (int r = 0; r < n; r++)
        memcpy(b->pre + (size_t)r * s, m->b_enc, (size_t)s * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s, d, 1.0f, in, d, m->W_enc, d, 1.0f, b->pre, s);
}

/* Per-row top-k (topk, matryoshka); with relu, non-positive picks are dropped (ReLU makes them 0 and
 * stops their gradient), so a row may hold fewer than k codes. */
static void encode_topk(const husai_sae *m, int n, husai_sae_batch *b) {
    const int s = m->d_sae, k = m->k, relu = m->spec.relu;
    int64_t nnz = 0;
    for (int r = 0; r < n; r++) {
        b->row_ptr[r] = nnz;
        int32_t *id = b->idx + nnz;
        float *v = b->val + nnz;
        topk_row(b->pre + (size_t)r * s, s, k, id, v, b->select);
        int kept = k;
        if (relu) {
            kept = 0;
            for (int a = 0; a < k; a++)
                if (v[a] > 0.0f) {
                    id[kept] = id[a];
                    v[kept++] = v[a];
                }
        }
        nnz += kept;
    }
    b->row_ptr[n] = nnz;
}

/* The n*k largest positive pre-activations of the whole batch (ties to the lower flat index). */
static void encode_batchtopk(const husai_sae *m, int n, husai_sae_batch *b) {
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

/* Threshold rules: z_j = pre_j where pre_j > t_j (t = 0 for relu_l1, theta for jumprelu, the
 * estimated threshold for batchtopk at inference). Counts first, so the codes fit. */
static husai_status encode_threshold(const husai_sae *m, int n, const float *t, husai_sae_batch *b) {
    const int s = m->d_sae;
    size_t nnz = 0;
    for (int r = 0; r < n; r++) {
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++)
            nnz += p[j] > t[j];
    }
    husai_status st = reserve_codes(b, nnz);
    if (st) return st;
    nnz = 0;
    for (int r = 0; r < n; r++) {
        b->row_ptr[r] = (int64_t)nnz;
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++)
            if (p[j] > t[j]) {
                b->idx[nnz] = j;
                b->val[nnz++] = p[j];
            }
    }
    b->row_ptr[n] = (int64_t)nnz;
    return HUSAI_OK;
}

husai_status husai_sae_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                              husai_sae_batch *b) {
    b->n = n;
    pre_activations(m, x, n, b);
    const int s = m->d_sae;
    switch (m->spec.arch) {
    case HUSAI_ARCH_TOPK:
    case HUSAI_ARCH_MATRYOSHKA:
        encode_topk(m, n, b);
        return HUSAI_OK;
    case HUSAI_ARCH_BATCHTOPK:
        if (mode == HUSAI_SAE_TRAIN) {
            encode_batchtopk(m, n, b);
            return HUSAI_OK;
        }
        for (int j = 0; j < s; j++)
            b->select[j] = m->threshold > 0.0 ? (float)m->threshold : 0.0f;
        return encode_threshold(m, n, b->select, b);
    case HUSAI_ARCH_JUMPRELU:
        for (int j = 0; j < s; j++)
            b->select[j] = expf(m->log_theta[j]);
        return encode_threshold(m, n, b->select, b);
    case HUSAI_ARCH_RELU_L1:
    default:
        memset(b->select, 0, (size_t)s * sizeof(float));
        return encode_threshold(m, n, b->select, b);
    }
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
void husai_sae_decode(const husai_sae *m, husai_sae_batch *b) {
    const int d = m->d_model, n = b->n;
    const int mat = m->spec.arch == HUSAI_ARCH_MATRYOSHKA, P = mat ? m->spec.n_prefixes : 1;
    for (int r = 0; r < n; r++) {
        float *xh = b->x_hat + (size_t)r * d;
        if (m->b_dec)
            memcpy(xh, m->b_dec, (size_t)d * sizeof(float));
        else
            memset(xh, 0, (size_t)d * sizeof(float));
        int level = 0;
        float *snap = b->g_xhat + (size_t)r * P * d;
        for (int64_t a = b->row_ptr[r]; a < b->row_ptr[r + 1]; a++) {
            const int j = b->idx[a];
            /* Codes are in ascending latent order: a prefix's reconstruction is complete at its end. */
            while (mat && j >= m->prefix[level])
                memcpy(snap + (size_t)level++ * d, xh, (size_t)d * sizeof(float));
            axpy(xh, b->val[a], m->W_dec + (size_t)j * d, d);
        }
        while (mat && level < P)
            memcpy(snap + (size_t)level++ * d, xh, (size_t)d * sizeof(float));
    }
}

static double sq_err(const float *a, const float *x, size_t n) {
    double sse = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (double)x[i];
        sse += e * e;
    }
    return sse;
}

husai_status husai_sae_forward(const husai_sae *m, const float *x, int n, husai_sae_mode mode, double coeff,
                               husai_sae_batch *b, husai_sae_loss *loss) {
    husai_status st = husai_sae_encode(m, x, n, mode, b);
    if (st) return st;
    husai_sae_decode(m, b);
    const int d = m->d_model;
    const size_t total = (size_t)n * (size_t)d;
    memset(loss, 0, sizeof *loss);
    loss->mse = sq_err(b->x_hat, x, total) / (double)total;
    loss->recon = loss->mse;
    if (m->spec.arch == HUSAI_ARCH_MATRYOSHKA) {
        const int P = m->spec.n_prefixes;
        double sum = 0.0;
        for (int r = 0; r < n; r++)
            for (int l = 0; l < P; l++)
                sum += sq_err(b->g_xhat + ((size_t)r * P + l) * d, x + (size_t)r * d, (size_t)d);
        loss->recon = sum / ((double)total * P);
    }
    const int64_t nnz = b->row_ptr[n];
    loss->l0 = (double)nnz / n;
    if (m->spec.arch == HUSAI_ARCH_RELU_L1) {
        double l1 = 0.0;
        for (int64_t a = 0; a < nnz; a++)
            l1 += b->val[a];
        loss->sparsity = l1 / n;
    } else if (m->spec.arch == HUSAI_ARCH_JUMPRELU) {
        loss->sparsity = loss->l0;
    }
    loss->total = loss->recon + coeff * loss->sparsity;
    return HUSAI_OK;
}

/* Adds the gradient that code gradient gz of latent j in row r sends to the encoder: W_enc row j,
 * b_enc j, and (through x - b_dec) the row's b_dec accumulator gbd. */
static inline void encoder_grad(const husai_sae *m, int j, float gz, const float *xin, float *gW_enc,
                                float *gb_enc, float *gbd) {
    const int d = m->d_model;
    gb_enc[j] += gz;
    axpy(gW_enc + (size_t)j * d, gz, xin, d);
    if (gbd) axpy(gbd, -gz, m->W_enc + (size_t)j * d, d);
}

HUSAI_MULTIVERSION
void husai_sae_backward(const husai_sae *m, const float *x, double coeff, husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    const size_t w = (size_t)s * (size_t)d;
    float *gW_enc = grad, *gb_enc = grad + w, *gW_dec = grad + w + s;
    float *gb_dec = m->b_dec ? gW_dec + w : NULL;
    float *glog_theta = m->log_theta ? gW_dec + w + (m->b_dec ? d : 0) : NULL;
    const int mat = m->spec.arch == HUSAI_ARCH_MATRYOSHKA, P = mat ? m->spec.n_prefixes : 1;
    const float scale = (float)(2.0 / ((double)n * d * P));
    const float l1 = m->spec.arch == HUSAI_ARCH_RELU_L1 ? (float)(coeff / n) : 0.0f;
    float *gbd = gb_dec ? b->row : NULL;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        const float *xin = m->b_dec ? b->xc + (size_t)r * d : xr;
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
        if (gbd) memcpy(gbd, G, (size_t)d * sizeof(float)); /* b_dec is in every reconstruction */
        int level = 0;
        for (int64_t a = b->row_ptr[r]; a < b->row_ptr[r + 1]; a++) {
            const int j = b->idx[a];
            while (mat && j >= m->prefix[level])
                level++;
            const float *Gj = G + (size_t)level * d;
            float gz = dot8(Gj, m->W_dec + (size_t)j * d, d);
            if (l1 != 0.0f) gz += l1; /* d(coeff * mean L1)/dz for a positive code */
            b->g_val[a] = gz;
            axpy(gW_dec + (size_t)j * d, b->val[a], Gj, d);
            /* Every rule passes the gradient to the active pre-activations with slope 1. */
            encoder_grad(m, j, gz, xin, gW_enc, gb_enc, gbd);
        }
        if (glog_theta) {
            /* Straight-through estimate (Rajamanoharan et al. 2024), rectangle kernel of width eps:
             * d z / d theta = -(theta / eps) and d L0 / d theta = -1 / eps inside the window. */
            const float eps = (float)m->spec.bandwidth, half = 0.5f * eps;
            const float *p = b->pre + (size_t)r * s;
            for (int j = 0; j < s; j++) {
                const float th = expf(m->log_theta[j]);
                if (!(fabsf(p[j] - th) < half)) continue;
                const float dz = dot8(G, m->W_dec + (size_t)j * d, d);
                const float dtheta = dz * (-th / eps) + (float)(coeff / n) * (-1.0f / eps);
                glog_theta[j] += dtheta * th;
            }
        }
        if (gbd)
            for (int i = 0; i < d; i++)
                gb_dec[i] += gbd[i];
    }
}

double husai_sae_auxk(const husai_sae *m, const float *x, const unsigned char *dead, int k_aux, double coeff,
                      husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    int n_dead = 0;
    for (int j = 0; j < s; j++)
        if (dead[j]) b->aux_id[n_dead++] = j;
    if (n_dead == 0 || k_aux < 1) return 0.0;
    const int ka = k_aux < n_dead ? k_aux : n_dead, relu = code_is_relu(&m->spec);
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
        topk_row(b->aux_cand, n_dead, ka, b->aux_pos, b->aux_val, b->select);
        /* diff = e_hat - e, with e = x - x_hat held constant */
        const float *xh = b->x_hat + (size_t)r * d;
        for (int i = 0; i < d; i++)
            diff[i] = xh[i] - xr[i];
        for (int a = 0; a < ka; a++)
            axpy(diff, b->aux_val[a], m->W_dec + (size_t)b->aux_id[b->aux_pos[a]] * d, d);
        for (int i = 0; i < d; i++) {
            sse += (double)diff[i] * diff[i];
            diff[i] *= scale;
        }
        if (gbd) memset(gbd, 0, (size_t)d * sizeof(float));
        for (int a = 0; a < ka; a++) {
            if (relu && b->aux_val[a] == 0.0f) continue; /* a ReLU'd zero has no gradient */
            const int j = b->aux_id[b->aux_pos[a]];
            const float gz = dot8(diff, m->W_dec + (size_t)j * d, d);
            axpy(gW_dec + (size_t)j * d, b->aux_val[a], diff, d);
            encoder_grad(m, j, gz, xin, gW_enc, gb_enc, gbd);
        }
        if (gbd)
            for (int i = 0; i < d; i++)
                gb_dec[i] += gbd[i];
    }
    return sse / ((double)n * d);
}
