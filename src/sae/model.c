#include "sae/model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/threads.h"
#include "sae/arch.h"
#include "sae/kernels.h"

husai_sae_spec husai_sae_spec_topk(int d_model, int d_sae, int k) {
    return (husai_sae_spec){.arch = HUSAI_ARCH_TOPK,
                            .d_model = d_model,
                            .d_sae = d_sae,
                            .k = k,
                            .n_prefixes = 4,
                            .bandwidth = 1e-3};
}

husai_status husai_sae_spec_check(const husai_sae_spec *s) {
    const husai_arch_ops *ops = husai_arch_ops_of(s);
    if (!ops) return husai_error(HUSAI_ERR_ARG, "unknown SAE architecture %d", (int)s->arch);
    if (s->d_model < 1 || s->d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "d_model=%d and d_sae=%d must be >= 1", s->d_model, s->d_sae);
    if (s->k < 1 || s->k > s->d_sae)
        return husai_error(HUSAI_ERR_ARG, "k=%d must be between 1 and d_sae=%d", s->k, s->d_sae);
    if (ops->nested) {
        if (s->n_prefixes < 1 || s->n_prefixes > HUSAI_MAX_PREFIXES)
            return husai_error(HUSAI_ERR_ARG, "matryoshka prefixes=%d must be between 1 and %d",
                               s->n_prefixes, HUSAI_MAX_PREFIXES);
        if ((s->d_sae >> (s->n_prefixes - 1)) < 1)
            return husai_error(HUSAI_ERR_ARG, "d_sae=%d is too small for %d matryoshka prefixes (halving)",
                               s->d_sae, s->n_prefixes);
    }
    return ops->check ? ops->check(s) : HUSAI_OK;
}

husai_status husai_sae_alloc(husai_sae *m, const husai_sae_spec *spec) {
    memset(m, 0, sizeof *m);
    husai_status st = husai_sae_spec_check(spec);
    if (st) return st;
    m->spec = *spec;
    m->ops = husai_arch_ops_of(spec);
    const int d_model = spec->d_model, d_sae = spec->d_sae;
    const size_t w = (size_t)d_sae * (size_t)d_model;
    m->d_model = d_model;
    m->d_sae = d_sae;
    m->k = spec->k;
    m->n_params = 2 * w + (size_t)d_sae;
    if (spec->decoder_bias) m->n_params += (size_t)d_model;
    if (m->ops->thresholds) m->n_params += (size_t)d_sae;
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
    if (m->ops->thresholds) m->log_theta = next;
    if (m->ops->nested)
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
#pragma omp parallel for schedule(static) if ((size_t)m->d_sae * d >= 65536)
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
    b->threads = husai_max_threads();
    b->d_model = m->d_model;
    b->d_sae = m->d_sae;
    const size_t c = (size_t)cap, d = (size_t)m->d_model, s = (size_t)m->d_sae;
    const size_t levels = m->ops->nested ? (size_t)m->spec.n_prefixes : 1;
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
    const size_t sel = m->ops->batch_select && c > 2 * (size_t)b->threads ? c : 2 * (size_t)b->threads;
    b->select = malloc(sel * s * sizeof(float));
    b->row_sse = malloc(c * sizeof(double));
    b->split = malloc(((size_t)b->threads + 1) * sizeof(int32_t));
    b->row = malloc(2 * d * sizeof(float));
    b->aux_cand = malloc(s * sizeof(float));
    b->aux_id = malloc(s * sizeof(int32_t));
    b->aux_pos = malloc(s * sizeof(int32_t));
    b->aux_val = malloc(s * sizeof(float));
    b->grp_end = malloc(s * sizeof(int32_t));
    b->grp_code = malloc(b->nnz_cap * sizeof(int32_t));
    b->grp_row = malloc(b->nnz_cap * sizeof(int32_t));
    b->grp_val = malloc(2 * b->nnz_cap * sizeof(float));
    if (!b->pre || (m->spec.decoder_bias && !b->xc) || !b->row_ptr || !b->idx || !b->val || !b->g_val ||
        !b->x_hat || !b->g_xhat || !b->select || !b->row_sse || !b->split || !b->row || !b->aux_cand ||
        !b->aux_id || !b->aux_pos || !b->aux_val || !b->grp_end || !b->grp_code || !b->grp_row ||
        !b->grp_val) {
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
    free(b->row_sse);
    free(b->split);
    free(b->row);
    free(b->aux_cand);
    free(b->aux_id);
    free(b->aux_pos);
    free(b->aux_val);
    free(b->grp_end);
    free(b->grp_code);
    free(b->grp_row);
    free(b->grp_val);
    memset(b, 0, sizeof *b);
}

/* Makes room for nnz codes (contents not kept: callers reserve before filling). */
static husai_status reserve_codes(husai_sae_batch *b, size_t nnz) {
    if (nnz <= b->nnz_cap) return HUSAI_OK;
    void **arr[] = {(void **)&b->idx,      (void **)&b->val,     (void **)&b->g_val,
                    (void **)&b->grp_code, (void **)&b->grp_row, (void **)&b->grp_val};
    const size_t per_code[] = {4, 4, 4, 4, 4, 8}; /* bytes per code of each */
    int ok = 1;
    for (int a = 0; a < 6; a++) {
        free(*arr[a]);
        ok &= (*arr[a] = malloc(nnz * per_code[a])) != NULL;
    }
    if (!ok) {
        for (int a = 0; a < 6; a++) {
            free(*arr[a]);
            *arr[a] = NULL;
        }
        b->nnz_cap = 0;
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu sparse codes", nnz);
    }
    b->nnz_cap = nnz;
    return HUSAI_OK;
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

/* Top-k selection works on integer keys that order like the floats: a > b iff key(a) > key(b) and
 * a == b iff key(a) == key(b). NaN gets -inf's key (selection treats it as -inf) and -0 gets +0's (the
 * two compare equal as floats), so the set, the ties and the NaN rule are those of float comparisons.
 * Counting keys against a threshold is branch-free and vectorises; the quickselect it replaced spent
 * most of its time on mispredicted branches. */
static inline int32_t order_key(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) u = 0xff800000u;
    if (u == 0x80000000u) u = 0;
    return (int32_t)(u & 0x80000000u ? u ^ 0x7fffffffu : u);
}

/* The float of a key (key_value(order_key(x)) == x up to NaN and -0); NaN above +inf's key. */
static inline float key_value(int64_t key) {
    const uint32_t u = key < 0 ? (uint32_t)key ^ 0x7fffffffu : (uint32_t)key;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

HUSAI_INLINE int count_ge(const int32_t *key, int n, int32_t t) {
    int c = 0;
    for (int j = 0; j < n; j++)
        c += key[j] >= t;
    return c;
}

/* A row's top k: every key above thr, then the first `ties` keys equal to thr (in position order). */
typedef struct {
    int32_t thr;
    int ties;
} topk_cut;

/* Smallest and largest of key[0..n), n >= 1. */
HUSAI_INLINE void key_range(const int32_t *key, int n, int32_t *mn, int32_t *mx) {
    int32_t lo = key[0], hi = key[0];
    for (int j = 1; j < n; j++) {
        lo = key[j] < lo ? key[j] : lo;
        hi = key[j] > hi ? key[j] : hi;
    }
    *mn = lo;
    *mx = hi;
}

/* The search for the top k of key[0..n) (1 <= k <= n): a bracket [lo, hi) of thresholds keeping
 * count(key >= lo) = c_lo >= k > count(key >= hi) = c_hi, narrowed by counting at probes. The first
 * probes interpolate the count linearly between the bracket's floats, which typically ends the search
 * in about four counts; then the float midpoint, and after 24 probes the key midpoint, which bound the
 * total by 56 whatever the values. A count of exactly k ends the search (no ties to break), as does
 * k - 1 (the k-th is then the largest key below the probe: one more pass), as does a bracket of one
 * key. */
typedef struct {
    int64_t lo, hi;
    int c_lo, c_hi, it;
} cut_search;

/* A search over keys within [mn, mx]. */
HUSAI_INLINE cut_search cut_start(int n, int32_t mn, int32_t mx) {
    return (cut_search){mn, (int64_t)mx + 1, n, 0, 0};
}

/* The next probe, strictly inside the bracket (which holds more than one key). */
HUSAI_INLINE int32_t cut_probe(const cut_search *cs, int k) {
    int64_t mid = cs->lo + (cs->hi - cs->lo) / 2;
    const float lf = key_value(cs->lo), hf = key_value(cs->hi);
    if (cs->it < 24 && isfinite(lf) && isfinite(hf)) {
        const float f = cs->it < 6 ? ((float)(cs->c_lo - k) + 0.5f) / (float)(cs->c_lo - cs->c_hi) : 0.5f;
        const int32_t kt = order_key(lf * (1.0f - f) + hf * f);
        if (kt > cs->lo && kt < cs->hi) mid = kt;
    }
    return (int32_t)mid;
}

/* Takes count c = count(key >= t) at probe t; returns 1 with *out set when the search is over. */
HUSAI_INLINE int cut_update(cut_search *cs, const int32_t *key, int n, int k, int32_t t, int c,
                            topk_cut *out) {
    cs->it++;
    if (c == k) {
        *out = (topk_cut){t - 1, 0}; /* t > lo >= INT32_MIN */
        return 1;
    }
    if (c == k - 1) {
        int32_t below = INT32_MIN;
        for (int j = 0; j < n; j++) {
            const int32_t in = -(int32_t)(key[j] < t); /* masks, not ?:, so that it vectorises */
            const int32_t q = (key[j] & in) | (INT32_MIN & ~in);
            below = q > below ? q : below;
        }
        /* below > INT32_MIN: some key is below t, and every key is above INT32_MIN. A unique k-th needs
         * no tie-breaking. */
        *out = count_ge(key, n, below) == k ? (topk_cut){below - 1, 0} : (topk_cut){below, 1};
        return 1;
    }
    if (c > k) {
        cs->lo = t;
        cs->c_lo = c;
    } else {
        cs->hi = t;
        cs->c_hi = c;
    }
    if (cs->hi - cs->lo > 1) return 0;
    *out = (topk_cut){(int32_t)cs->lo, k - cs->c_hi};
    return 1;
}

/* The top k of key[0..n) (1 <= k <= n; keys within [mn, mx]). */
HUSAI_INLINE topk_cut kth_cut(const int32_t *key, int n, int k, int32_t mn, int32_t mx) {
    cut_search cs = cut_start(n, mn, mx);
    topk_cut out = {mn, k}; /* all keys equal */
    if (mn == mx) return out;
    for (;;) {
        const int32_t t = cut_probe(&cs, k);
        if (cut_update(&cs, key, n, k, t, count_ge(key, n, t), &out)) return out;
    }
}

/* kth_cut of two rows at once, key0 and key1 (n each): their searches are independent chains of
 * count-then-decide, which interleaved keep the core busy while each waits on its own. */
HUSAI_INLINE void kth_cut2(const int32_t *key0, const int32_t *key1, int n, int k, const int32_t mn[2],
                           const int32_t mx[2], topk_cut out[2]) {
    cut_search cs0 = cut_start(n, mn[0], mx[0]), cs1 = cut_start(n, mn[1], mx[1]);
    out[0] = (topk_cut){mn[0], k};
    out[1] = (topk_cut){mn[1], k};
    int done0 = mn[0] == mx[0], done1 = mn[1] == mx[1];
    while (!done0 && !done1) {
        const int32_t t0 = cut_probe(&cs0, k), t1 = cut_probe(&cs1, k);
        int c0 = 0, c1 = 0;
        for (int j = 0; j < n; j++) {
            c0 += key0[j] >= t0;
            c1 += key1[j] >= t1;
        }
        done0 = cut_update(&cs0, key0, n, k, t0, c0, &out[0]);
        done1 = cut_update(&cs1, key1, n, k, t1, c1, &out[1]);
    }
    for (; !done0;) {
        const int32_t t = cut_probe(&cs0, k);
        done0 = cut_update(&cs0, key0, n, k, t, count_ge(key0, n, t), &out[0]);
    }
    for (; !done1;) {
        const int32_t t = cut_probe(&cs1, k);
        done1 = cut_update(&cs1, key1, n, k, t, count_ge(key1, n, t), &out[1]);
    }
}

/* Writes the cut's k entries of key[0..n) in position order: their latents (pos[a], or a without pos)
 * into idx, their values pre[latent] into val. Each block of 32 keys becomes a bit mask (vectorised
 * compares) whose set bits are walked, so the work is per kept entry, not per key. */
HUSAI_INLINE void take_top(const int32_t *key, const int32_t *pos, int n, topk_cut cut, int k,
                           const float *pre, int32_t *idx, float *val) {
    int ties = cut.ties, m = 0;
    for (int a0 = 0; m < k; a0 += 32) {
        const int len = n - a0 < 32 ? n - a0 : 32;
        uint32_t gt = 0, eq = 0;
        if (len == 32) {
            for (int i = 0; i < 32; i++)
                gt |= (uint32_t)(key[a0 + i] > cut.thr) << i;
        } else {
            for (int i = 0; i < len; i++)
                gt |= (uint32_t)(key[a0 + i] > cut.thr) << i;
        }
        if (ties > 0)
            for (int i = 0; i < len; i++)
                eq |= (uint32_t)(key[a0 + i] == cut.thr) << i;
        for (uint32_t bits = gt | eq; bits; bits &= bits - 1) {
            const int i = __builtin_ctz(bits);
            if (eq >> i & 1) {
                if (ties == 0) continue; /* the lower-positioned ties are already in */
                ties--;
            }
            const int32_t j = pos ? pos[a0 + i] : a0 + i;
            idx[m] = j;
            val[m++] = pre[j];
        }
    }
}

/* Whether topk_row selects over the whole row (short rows) rather than bounding it first. */
static int topk_direct(int d_sae, int k) {
    return d_sae < 32 * (int64_t)k;
}

/* Selects the k top entries of one row (signed; ties to the lower index, NaN as -inf) into idx, in
 * ascending index order, and their values into val. scratch holds d_sae floats (used as int32 keys).
 * Long rows first bound the answer from below: the k-th largest of the maxima of G >= k strided
 * groups is at most the row's k-th largest (k distinct groups each hold an entry at least as large),
 * so one pass keeps just the entries at or above it, about k of them for G = 8k, and the exact
 * selection runs on those. Short rows, and long rows whose bound leaves too many entries, select
 * over the whole row. */
HUSAI_MULTIVERSION
static void topk_row(const float *pre, int d_sae, int k, int32_t *idx, float *val, float *scratch) {
    int32_t *key = (int32_t *)scratch;
    const int G = 8 * k;
    if (!topk_direct(d_sae, k)) {
        int32_t *gmax = key, *ck = key + G;
        const int cap = (d_sae - G) / 2;
        int32_t *ci = ck + cap;
        for (int g = 0; g < G; g++)
            gmax[g] = order_key(pre[g]);
        for (int j0 = G; j0 < d_sae; j0 += G) {
            const int len = d_sae - j0 < G ? d_sae - j0 : G;
            for (int g = 0; g < len; g++) {
                const int32_t kj = order_key(pre[j0 + g]);
                gmax[g] = kj > gmax[g] ? kj : gmax[g];
            }
        }
        int32_t mn, mx;
        key_range(gmax, G, &mn, &mx);
        const topk_cut gcut = kth_cut(gmax, G, k, mn, mx);
        const int32_t bound = gcut.ties ? gcut.thr : gcut.thr + 1; /* <= the k-th largest maximum */
        if (bound > order_key(-INFINITY)) {
            /* bound is a float above -inf, so comparing floats against it leaves NaN out as -inf would be. */
            const float t = key_value(bound);
            int c = 0;
            for (int j0 = 0; j0 < d_sae && c >= 0; j0 += 32) {
                const int end = d_sae - j0 < 32 ? d_sae : j0 + 32;
                int any = 0;
                for (int j = j0; j < end; j++)
                    any |= pre[j] >= t;
                if (!any) continue;
                for (int j = j0; j < end; j++)
                    if (pre[j] >= t) {
                        if (c == cap) {
                            c = -1;
                            break;
                        }
                        ck[c] = order_key(pre[j]);
                        ci[c++] = j;
                    }
            }
            if (c >= k) {
                key_range(ck, c, &mn, &mx);
                take_top(ck, ci, c, kth_cut(ck, c, k, mn, mx), k, pre, idx, val);
                return;
            }
        }
    }
    int32_t mn = INT32_MAX, mx = INT32_MIN;
    for (int j = 0; j < d_sae; j++) {
        key[j] = order_key(pre[j]);
        mn = key[j] < mn ? key[j] : mn;
        mx = key[j] > mx ? key[j] : mx;
    }
    take_top(key, NULL, d_sae, kth_cut(key, d_sae, k, mn, mx), k, pre, idx, val);
}

/* topk_row for two short rows (topk_direct) at once, their searches interleaved; scratch holds
 * 2 * d_sae floats. */
HUSAI_MULTIVERSION
static void topk_rows2(const float *pre0, const float *pre1, int d_sae, int k, int32_t *idx0, float *val0,
                       int32_t *idx1, float *val1, float *scratch) {
    int32_t *key0 = (int32_t *)scratch, *key1 = key0 + d_sae;
    int32_t mn[2] = {INT32_MAX, INT32_MAX}, mx[2] = {INT32_MIN, INT32_MIN};
    for (int j = 0; j < d_sae; j++) {
        key0[j] = order_key(pre0[j]);
        key1[j] = order_key(pre1[j]);
        mn[0] = key0[j] < mn[0] ? key0[j] : mn[0];
        mx[0] = key0[j] > mx[0] ? key0[j] : mx[0];
        mn[1] = key1[j] < mn[1] ? key1[j] : mn[1];
        mx[1] = key1[j] > mx[1] ? key1[j] : mx[1];
    }
    topk_cut cut[2];
    kth_cut2(key0, key1, d_sae, k, mn, mx, cut);
    take_top(key0, NULL, d_sae, cut[0], k, pre0, idx0, val0);
    take_top(key1, NULL, d_sae, cut[1], k, pre1, idx1, val1);
}

/* Rows per encoder product. The forward works in blocks of this many rows whatever the thread count, so
 * every sgemm call, and with it every pre-activation's bits, is the same for any count: OpenBLAS can give a
 * row different bits in calls of different shapes (measured for small ones). At 128 x 128, blocks of 512
 * rows cost 1.4% over one call per 2048-row batch. */
#define ENCODE_ROWS 512

/* Latents per encoder product when the encoder is too large to repack per row block: above 2M floats
 * (8 MB), each 512-row call would copy all of W_enc again, so the product goes by blocks of latents instead,
 * each over all rows, and packs the (smaller) batch once per block. The block is fixed, so the calls and
 * their bits do not depend on the thread count either. Measured at 4096 x 16384 x 768 against one call:
 * rows of 512 +6.0%, latents of 2048 +3.4%, of 4096 +1.9%. */
#define ENCODE_COLS 4096
#define ENCODE_WIDE_FLOATS ((size_t)2 << 20)

/* Readies rows [r0, r1) for the encoder product: pre = b_enc (the product adds into it) and, with a
 * decoder bias, b->xc = x - b_dec. Returns the product's input: x or b->xc. */
static const float *encoder_input(const husai_sae *m, const float *x, int r0, int r1, husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    for (int r = r0; r < r1; r++)
        memcpy(b->pre + (size_t)r * s, m->b_enc, (size_t)s * sizeof(float));
    if (!m->b_dec) return x;
    for (int r = r0; r < r1; r++)
        for (int i = 0; i < d; i++)
            b->xc[(size_t)r * d + i] = x[(size_t)r * d + i] - m->b_dec[i];
    return b->xc;
}

/* pre[r0..r1, j0..j1) += in[r0..r1) W_enc[j0..j1)^T. */
static void encoder_product(const husai_sae *m, const float *in, int r0, int r1, int j0, int j1,
                            husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, j1 - j0, d, 1.0f, in + (size_t)r0 * d, d,
                m->W_enc + (size_t)j0 * d, d, 1.0f, b->pre + (size_t)r0 * s + j0, s);
}

void husai_select_topk_rows(const husai_sae *m, int r0, int r1, husai_sae_batch *b, float *scratch) {
    const int s = m->d_sae, k = m->k, relu = m->spec.relu;
    for (int r = r0; r < r1;) {
        const int rows = topk_direct(s, k) && r + 1 < r1 ? 2 : 1; /* short rows go two at a time */
        int32_t *id = b->idx + (size_t)r * k;
        float *v = b->val + (size_t)r * k;
        if (rows == 2)
            topk_rows2(b->pre + (size_t)r * s, b->pre + (size_t)(r + 1) * s, s, k, id, v, id + k, v + k,
                       scratch);
        else
            topk_row(b->pre + (size_t)r * s, s, k, id, v, scratch);
        for (int q = 0; q < rows; q++, r++) {
            int kept = 0;
            for (int a = q * k; a < (q + 1) * k; a++)
                if (!relu || v[a] > 0.0f) {
                    id[q * k + kept] = id[a];
                    v[q * k + kept++] = v[a];
                }
            b->row_ptr[r + 1] = kept;
        }
    }
}

/* Turns the per-row counts into CSR offsets, moving each row's codes down behind the previous row's (never
 * past unread ones: a row's codes start at or after its offset). */
husai_status husai_codes_topk(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    (void)mode;
    const int k = m->k;
    int64_t nnz = 0;
    for (int r = 0; r < n; r++) {
        const int64_t c = b->row_ptr[r + 1], from = (int64_t)r * k;
        b->row_ptr[r] = nnz;
        if (nnz != from) {
            memmove(b->idx + nnz, b->idx + from, (size_t)c * sizeof(int32_t));
            memmove(b->val + nnz, b->val + from, (size_t)c * sizeof(float));
        }
        nnz += c;
    }
    b->row_ptr[n] = nnz;
    return HUSAI_OK;
}

/* Counts first, so the codes fit. */
husai_status husai_codes_threshold(const husai_sae *m, int n, const float *t, husai_sae_batch *b) {
    const int s = m->d_sae;
#pragma omp parallel for schedule(static) num_threads(b->threads) if (n >= 64)
    for (int r = 0; r < n; r++) {
        const float *p = b->pre + (size_t)r * s;
        int64_t c = 0;
        for (int j = 0; j < s; j++)
            c += p[j] > t[j];
        b->row_ptr[r + 1] = c;
    }
    b->row_ptr[0] = 0;
    for (int r = 0; r < n; r++)
        b->row_ptr[r + 1] += b->row_ptr[r];
    husai_status st = reserve_codes(b, (size_t)b->row_ptr[n]);
    if (st) return st;
#pragma omp parallel for schedule(static) num_threads(b->threads) if (n >= 64)
    for (int r = 0; r < n; r++) {
        int64_t a = b->row_ptr[r];
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++)
            if (p[j] > t[j]) {
                b->idx[a] = j;
                b->val[a++] = p[j];
            }
    }
    return HUSAI_OK;
}

husai_status husai_sae_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                              husai_sae_batch *b) {
    b->n = n;
    const int s = m->d_sae;
    void (*const select_rows)(const husai_sae *, int, int, husai_sae_batch *, float *) = m->ops->select_rows;
    const int blocks = (n + ENCODE_ROWS - 1) / ENCODE_ROWS;
    if ((size_t)s * m->d_model > ENCODE_WIDE_FLOATS) {
        const int col_blocks = (s + ENCODE_COLS - 1) / ENCODE_COLS;
        const float *in = m->b_dec ? b->xc : x;
#pragma omp parallel num_threads(b->threads) if (blocks > 1 || col_blocks > 1)
        {
#pragma omp for schedule(static)
            for (int q = 0; q < blocks; q++) {
                const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
                encoder_input(m, x, r0, r1, b);
            }
#pragma omp for schedule(static)
            for (int q = 0; q < col_blocks; q++)
                encoder_product(m, in, 0, n, q * ENCODE_COLS,
                                s - q * ENCODE_COLS < ENCODE_COLS ? s : (q + 1) * ENCODE_COLS, b);
#pragma omp for schedule(static)
            for (int q = 0; q < blocks; q++) {
                const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
                if (select_rows) select_rows(m, r0, r1, b, b->select + (size_t)husai_thread_num() * 2 * s);
            }
        }
    } else {
        /* A block's selection right after its product, while its pre-activations are in cache. */
#pragma omp parallel for schedule(static) num_threads(b->threads) if (blocks > 1)
        for (int q = 0; q < blocks; q++) {
            const int r0 = q * ENCODE_ROWS, r1 = n - r0 < ENCODE_ROWS ? n : r0 + ENCODE_ROWS;
            encoder_product(m, encoder_input(m, x, r0, r1, b), r0, r1, 0, s, b);
            if (select_rows) select_rows(m, r0, r1, b, b->select + (size_t)husai_thread_num() * 2 * s);
        }
    }
    return m->ops->codes(m, n, mode, b);
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

/* Row r's codes of latents [ja, jb) (all of them if `all`): one run [lo, hi), because a row's latents
 * ascend, so a thread visits its own codes plus two counts per row, not every code of the block. */
HUSAI_INLINE void code_run(const husai_sae_batch *b, int r, int ja, int jb, int all, int64_t *lo,
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
HUSAI_INLINE int32_t group_by_latent(husai_sae_batch *b, int ja, int jb, int r0, int r1, int with_code) {
    const int64_t base = b->row_ptr[r0];
    const int all = ja == 0 && jb == b->d_sae;
    int32_t *grp_end = b->grp_end, below = 0;
    memset(grp_end + ja, 0, (size_t)(jb - ja) * sizeof(int32_t));
    int64_t lo, hi;
    for (int r = r0; r < r1; r++) {
        code_run(b, r, ja, jb, all, &lo, &hi);
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
        code_run(b, r, ja, jb, all, &lo, &hi);
        for (int64_t a = lo; a < hi; a++) {
            const int32_t slot = grp_end[b->idx[a]]++;
            if (with_code) grp_code[slot] = (int32_t)(a - base);
            grp_row[slot] = r;
            grp_val[2 * (size_t)slot] = b->val[a];
        }
    }
    return below;
}

static double sq_err(const float *a, const float *x, size_t n) {
    double sse = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - (double)x[i];
        sse += e * e;
    }
    return sse;
}

/* The forward's squared error, summed while decoding: a row's terms go into sse a few per code of the
 * next row's decode, so that the serial chain of double additions (a fixed order, as in sq_err) runs
 * beside the decode's arithmetic instead of after it. */
typedef struct {
    const float *a, *x; /* the next terms: (a - x)^2 */
    int left;           /* terms of the pending row not yet added */
    double sse;
} sq_err_feed;

HUSAI_INLINE void feed_terms(sq_err_feed *f, int count) {
    for (; count > 0 && f->left > 0; count--, f->left--) {
        const double e = (double)*f->a++ - (double)*f->x++;
        f->sse += e * e;
    }
}

/* feed_terms(f, 4), with the four squares computed as one vector; still added one by one, in order. */
HUSAI_INLINE void feed_terms4(sq_err_feed *f) {
    if (f->left < 4) {
        feed_terms(f, 4);
        return;
    }
    husai_v4 a, x;
    memcpy(&a, f->a, sizeof a);
    memcpy(&x, f->x, sizeof x);
    const husai_v4d e = __builtin_convertvector(a, husai_v4d) - __builtin_convertvector(x, husai_v4d);
    const husai_v4d sq = e * e;
    f->sse = (((f->sse + sq[0]) + sq[1]) + sq[2]) + sq[3];
    f->a += 4;
    f->x += 4;
    f->left -= 4;
}

/* Decodes one row's codes a0..a1 over the reconstruction's elements [i0, i0 + 64): eight vectors of
 * sums held in registers (named: GCC keeps an array of them in memory); with matryoshka, snap gets each
 * prefix's partial sum at its end. Feeds four loss terms per code. */
HUSAI_INLINE void decode_tile64(const husai_sae *m, const husai_sae_batch *b, int64_t a0, int64_t a1, int i0,
                                float *xh, float *snap, sq_err_feed *feed) {
    const int d = m->d_model, mat = m->ops->nested;
    const int P = mat ? m->spec.n_prefixes : 1;
    husai_v8 A0 = {0}, A1 = {0}, A2 = {0}, A3 = {0}, A4 = {0}, A5 = {0}, A6 = {0}, A7 = {0}, t;
#define STORE_SUMS(p)                                                                                        \
    (V8_STORE((p), A0), V8_STORE((p) + 8, A1), V8_STORE((p) + 16, A2), V8_STORE((p) + 24, A3),               \
     V8_STORE((p) + 32, A4), V8_STORE((p) + 40, A5), V8_STORE((p) + 48, A6), V8_STORE((p) + 56, A7))
    if (m->b_dec) {
        const float *bd = m->b_dec + i0;
        V8_LOAD(A0, bd);
        V8_LOAD(A1, bd + 8);
        V8_LOAD(A2, bd + 16);
        V8_LOAD(A3, bd + 24);
        V8_LOAD(A4, bd + 32);
        V8_LOAD(A5, bd + 40);
        V8_LOAD(A6, bd + 48);
        V8_LOAD(A7, bd + 56);
    }
    int level = 0;
    for (int64_t a = a0; a < a1; a++) {
        const int j = b->idx[a];
        /* Codes are in ascending latent order: a prefix's reconstruction is complete at its end. */
        for (; mat && j >= m->prefix[level]; level++)
            STORE_SUMS(snap + (size_t)level * d + i0);
        const float c = b->val[a], *w = m->W_dec + (size_t)j * d + i0;
        V8_LOAD(t, w);
        A0 += c * t;
        V8_LOAD(t, w + 8);
        A1 += c * t;
        V8_LOAD(t, w + 16);
        A2 += c * t;
        V8_LOAD(t, w + 24);
        A3 += c * t;
        V8_LOAD(t, w + 32);
        A4 += c * t;
        V8_LOAD(t, w + 40);
        A5 += c * t;
        V8_LOAD(t, w + 48);
        A6 += c * t;
        V8_LOAD(t, w + 56);
        A7 += c * t;
        feed_terms4(feed);
    }
    for (; mat && level < P; level++)
        STORE_SUMS(snap + (size_t)level * d + i0);
    STORE_SUMS(xh + i0);
#undef STORE_SUMS
}

/* decode_tile64 over eight elements [i0, i0 + 8). */
HUSAI_INLINE void decode_tile8(const husai_sae *m, const husai_sae_batch *b, int64_t a0, int64_t a1, int i0,
                               float *xh, float *snap) {
    const int d = m->d_model, mat = m->ops->nested;
    const int P = mat ? m->spec.n_prefixes : 1;
    husai_v8 A = {0}, t;
    if (m->b_dec) V8_LOAD(A, m->b_dec + i0);
    int level = 0;
    for (int64_t a = a0; a < a1; a++) {
        const int j = b->idx[a];
        for (; mat && j >= m->prefix[level]; level++)
            V8_STORE(snap + (size_t)level * d + i0, A);
        V8_LOAD(t, m->W_dec + (size_t)j * d + i0);
        A += b->val[a] * t;
    }
    for (; mat && level < P; level++)
        V8_STORE(snap + (size_t)level * d + i0, A);
    V8_STORE(xh + i0, A);
}

/* Whether to decode latent by latent: for decoders of more than 16 MiB, which do not stay in cache
 * between codes (at 768 x 16384, 50 MB, this cut the decode from 49 to 16 ms per 4096 rows; at 12.5 MB
 * the two orders measured the same). */
static int decode_by_latent(const husai_sae *m, int n) {
    return n > 1 && (double)m->d_sae * m->d_model * sizeof(float) > 16.0 * 1048576.0 &&
           (size_t)n * m->d_sae <= INT32_MAX;
}

/* Columns [i0, i1) of every row's x_hat (and matryoshka snapshots), latent by latent after
 * group_by_latent over the whole batch: a decoder far larger than the caches would be streamed from DRAM
 * once per code; latent by latent it is read once per batch, and the reconstructions (in cache) take its
 * terms. Each element gets its terms in the row's code order, whatever the column range. */
HUSAI_MULTIVERSION
static void decode_latent_cols(const husai_sae *m, husai_sae_batch *b, int i0, int i1) {
    const int d = m->d_model, n = b->n, w = i1 - i0;
    const int mat = m->ops->nested, P = mat ? m->spec.n_prefixes : 1;
    for (int r = 0; r < n; r++) {
        float *xh = b->x_hat + (size_t)r * d + i0;
        if (m->b_dec)
            memcpy(xh, m->b_dec + i0, (size_t)w * sizeof(float));
        else
            memset(xh, 0, (size_t)w * sizeof(float));
    }
    int level = 0;
    for (int j = 0, e0 = 0; j < m->d_sae; e0 = b->grp_end[j++]) {
        /* Latents come in ascending order: at a prefix's end every row's sum is its reconstruction. */
        for (; mat && j >= m->prefix[level]; level++)
            for (int r = 0; r < n; r++)
                memcpy(b->g_xhat + ((size_t)r * P + level) * d + i0, b->x_hat + (size_t)r * d + i0,
                       (size_t)w * sizeof(float));
        const float *wj = m->W_dec + (size_t)j * d + i0;
        for (int e = e0; e < b->grp_end[j]; e++)
            husai_axpy(b->x_hat + (size_t)b->grp_row[e] * d + i0, b->grp_val[2 * (size_t)e], wj, w);
    }
    for (; mat && level < P; level++)
        for (int r = 0; r < n; r++)
            memcpy(b->g_xhat + ((size_t)r * P + level) * d + i0, b->x_hat + (size_t)r * d + i0,
                   (size_t)w * sizeof(float));
}

/* x_hat = b_dec + the codes' decoder rows for rows [r0, r1), in code order, over tiles of 64 elements kept
 * in registers across the row's codes (as an axpy per code would compute them, without storing the sums
 * between). With x, also row_sse[r] = sq_err of each row. */
HUSAI_MULTIVERSION
static void decode_row_range(const husai_sae *m, husai_sae_batch *b, const float *x, int r0, int r1) {
    const int d = m->d_model;
    const int mat = m->ops->nested, P = mat ? m->spec.n_prefixes : 1;
    sq_err_feed feed = {NULL, NULL, 0, 0.0}; /* terms of the previous row, once it is done */
    for (int r = r0; r < r1; r++) {
        float *xh = b->x_hat + (size_t)r * d, *snap = b->g_xhat + (size_t)r * P * d;
        const int64_t a0 = b->row_ptr[r], a1 = b->row_ptr[r + 1];
        int i0 = 0;
        for (; i0 + 64 <= d; i0 += 64)
            decode_tile64(m, b, a0, a1, i0, xh, snap, &feed);
        for (; i0 + 8 <= d; i0 += 8)
            decode_tile8(m, b, a0, a1, i0, xh, snap);
        for (; i0 < d; i0++) {
            float acc = m->b_dec ? m->b_dec[i0] : 0.0f;
            int level = 0;
            for (int64_t a = a0; a < a1; a++) {
                const int j = b->idx[a];
                for (; mat && j >= m->prefix[level]; level++)
                    snap[(size_t)level * d + i0] = acc;
                acc += b->val[a] * m->W_dec[(size_t)j * d + i0];
            }
            for (; mat && level < P; level++)
                snap[(size_t)level * d + i0] = acc;
            xh[i0] = acc;
        }
        if (x) {
            /* the previous row's remaining terms; this row's are pending */
            feed_terms(&feed, feed.left);
            if (r > r0) b->row_sse[r - 1] = feed.sse;
            feed = (sq_err_feed){xh, x + (size_t)r * d, d, 0.0};
        }
    }
    if (x && r1 > r0) {
        feed_terms(&feed, feed.left);
        b->row_sse[r1 - 1] = feed.sse;
    }
}

/* x_hat (and matryoshka's prefix reconstructions) for the encoded rows, split over the batch's threads;
 * with x, also *sse = the squared error, per row in element order, then over rows in row order. */
static void decode_rows(const husai_sae *m, husai_sae_batch *b, const float *x, double *sse) {
    const int d = m->d_model, n = b->n, T = b->threads;
    if (decode_by_latent(m, n)) {
        group_by_latent(b, 0, m->d_sae, 0, n, 0);
#pragma omp parallel num_threads(T) if (d >= 16 * T)
        {
            /* column ranges on 8-float boundaries, so each keeps decode's vector tiles */
            const int t = husai_thread_num(), nt = husai_threads_here();
            const int i0 = t == 0 ? 0 : (int)((int64_t)d * t / nt) & ~7,
                      i1 = t + 1 == nt ? d : (int)((int64_t)d * (t + 1) / nt) & ~7;
            if (i1 > i0) decode_latent_cols(m, b, i0, i1);
        }
        if (x) {
#pragma omp parallel for schedule(static) num_threads(T) if (n >= 64)
            for (int r = 0; r < n; r++)
                b->row_sse[r] = sq_err(b->x_hat + (size_t)r * d, x + (size_t)r * d, (size_t)d);
        }
    } else {
#pragma omp parallel num_threads(T) if (n >= 4 * T)
        {
            const int t = husai_thread_num(), nt = husai_threads_here();
            decode_row_range(m, b, x, (int)((int64_t)n * t / nt), (int)((int64_t)n * (t + 1) / nt));
        }
    }
    if (x) {
        double total = 0.0;
        for (int r = 0; r < n; r++)
            total += b->row_sse[r];
        *sse = total;
    }
}

void husai_sae_decode(const husai_sae *m, husai_sae_batch *b) {
    decode_rows(m, b, NULL, NULL);
}

husai_status husai_sae_forward(const husai_sae *m, const float *x, int n, husai_sae_mode mode, double coeff,
                               husai_sae_batch *b, husai_sae_loss *loss) {
    husai_status st = husai_sae_encode(m, x, n, mode, b);
    if (st) return st;
    double sse = 0.0;
    decode_rows(m, b, x, &sse);
    const int d = m->d_model;
    const size_t total = (size_t)n * (size_t)d;
    memset(loss, 0, sizeof *loss);
    loss->mse = sse / (double)total;
    loss->recon = loss->mse;
    if (m->ops->nested) {
        const int P = m->spec.n_prefixes;
        double sum = 0.0;
        for (int r = 0; r < n; r++)
            for (int l = 0; l < P; l++)
                sum += sq_err(b->g_xhat + ((size_t)r * P + l) * d, x + (size_t)r * d, (size_t)d);
        loss->recon = sum / ((double)total * P);
    }
    const int64_t nnz = b->row_ptr[n];
    loss->l0 = (double)nnz / n;
    loss->sparsity = m->ops->sparsity ? m->ops->sparsity(m, b, loss->l0) : 0.0;
    loss->total = loss->recon + coeff * loss->sparsity;
    return HUSAI_OK;
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
    const int d = m->d_model, mat = m->ops->nested, P = mat ? m->spec.n_prefixes : 1;
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
    const int mat = m->ops->nested, P = mat ? m->spec.n_prefixes : 1;
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
        const int32_t first = group_by_latent(b, ja, jb, r0, r1, keep_gval);
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

void husai_sae_backward(const husai_sae *m, const float *x, double coeff, husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    const size_t w = (size_t)s * (size_t)d;
    float *gW_enc = grad, *gb_enc = grad + w, *gW_dec = grad + w + s;
    float *gb_dec = m->b_dec ? gW_dec + w : NULL;
    const int mat = m->ops->nested, P = mat ? m->spec.n_prefixes : 1;
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
    /* b_dec is in every reconstruction and is subtracted before the encoder: per row, G minus each
     * code's gradient through W_enc, in latent order, then summed over rows in order. */
    if (gb_dec) {
        float *gbd = b->row;
        for (int r = 0; r < n; r++) {
            memcpy(gbd, b->g_xhat + (size_t)r * P * d, (size_t)d * sizeof(float));
            for (int64_t a = b->row_ptr[r]; a < b->row_ptr[r + 1]; a++)
                husai_axpy(gbd, -b->g_val[a], m->W_enc + (size_t)b->idx[a] * d, d);
            for (int i = 0; i < d; i++)
                gb_dec[i] += gbd[i];
        }
    }
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
        topk_row(b->aux_cand, n_dead, ka, b->aux_pos, b->aux_val, b->select);
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
