/* bf16.c: the bf16 encoder product (oneDNN or emulated), the certified exact TopK on its scores, the
 * threshold rules' certified boundaries, the start-up calibration, and the all-pairs product PWMCC uses.
 *
 * The bound (README "bf16 precision" states it too). For one row, let x be the encoder input (x or
 * x - b_dec, fp32), x^ its bf16 rounding (husai_bf16_round), e_x = x^ - x; for latent j let w_j, w^_j,
 * e_j be the same for row j of W_enc and b_j = b_enc[j]; T_j = b_j + sum_i x_i w_ji is the exact score.
 * u = 2^-24 is fp32's unit roundoff and gamma_n = n u / (1 - n u).
 *  (1) The unit's score sigma_j accumulates b_j and the d products x^_i w^_ji in fp32. A product of two
 *      bf16 numbers (8 significant bits each) is exact in fp32 unless it underflows; whatever the order
 *      and grouping (pairs, tiles, K blocks, b_j added last or used as the accumulator's start), no term
 *      passes more than 2d + 2 roundings, so |sigma_j - (b_j + sum x^_i w^_ji)| <=
 *      gamma_{2d+2} (|b_j| + sum |x^_i| |w^_ji|) + A <= gamma_{2d+2} (B + |x^| W^) + A, where B = max |b_j|,
 *      W^ = max_j |w^_j| (L2 norms) and, by Cauchy-Schwarz, sum |x^_i||w^_ji| <= |x^| |w^_j|.
 *      A = (4d + 4) 2^-126 covers products and partial sums flushed to zero (each flush loses < 2^-126).
 *  (2) sum x^_i w^_ji - sum x_i w_ji = sum e_x,i w^_ji + sum x_i e_j,i, so it is at most
 *      |e_x| W^ + |x| E_W with E_W = max_j |e_j| (Cauchy-Schwarz again). Round-to-nearest to 8 bits gives
 *      |e_x| <= 2^-8 |x| and |e_j| <= 2^-8 |w_j|, but the norms themselves are measured, which is tighter.
 *  (3) The exact fp32 rule v_j = b_j + dot8(x, w_j) (husai_dot8's fixed order, one rounding for + b_j):
 *      |v_j - T_j| <= gamma_{d+1} (B + |x| W) + A with W = max_j |w_j|.
 * So E1 = gamma_{2d+2} (B + |x^| W^) + |e_x| W^ + |x| E_W + A (plus 2^-8 B, in case an implementation rounds
 * the bias to bf16) bounds |sigma_j - T_j| and E2 =
 * gamma_{d+1} (B + |x| W) + A bounds |v_j - T_j| for every j; the row's bound is E = (E1 + E2)(1 + 2^-20),
 * the factor covering the double-precision rounding of the norms and sums.
 * The certificate: rescore a set C of latents and let S bound sigma_j for every j outside C (C the m
 * largest sigma and S the smallest sigma in C; or, rescoring in descending sigma order, C the first r and
 * S the (r+1)-th sigma). For j outside C, v_j <= T_j + E2 <= sigma_j + E1 + E2 <= S + E. If the k-th
 * largest v over C exceeds S + E, no latent outside C reaches or ties it, so the top k of v over C (ties
 * to the lower latent) is the top k of v over all latents: the dot8 fp32 rule's selection.
 * A row whose norms are not finite, or large enough for an fp32 sum to overflow, gets E = inf. */
#define _POSIX_C_SOURCE 200809L
#include "sae/bf16.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/threads.h"
#include "sae/arch.h"
#include "sae/kernels.h"

#ifdef HUSAI_HAVE_DNNL
#include <dnnl.h>
#endif

static const char *const PRECISION_NAMES[] = {"fp32", "bf16", "auto"};

const char *husai_precision_name(int p) {
    return p >= 0 && p < 3 ? PRECISION_NAMES[p] : "?";
}

int husai_precision_parse(const char *name) {
    for (int p = 0; p < 3; p++)
        if (!strcmp(name, PRECISION_NAMES[p])) return p;
    return -1;
}

/* Rows per emulated sgemm call (the emulated product's bits do not matter: the certificate makes the
 * codes independent of them, so this is for speed only). */
#define EMU_ROWS 512

/* Rows per group of the TopK selection (husai_bf16_encode). */
#define ROW_GROUP 16

/* d_model from which candidates are rescored one by one in score order (select_row): below it a rescoring
 * costs less than keeping the order (at 128 x 128 the incremental path took 9.0 ms a step against 6.3). */
#define INCREMENTAL_D 256

/* husai_bf16_set_incremental's choice: -1 by INCREMENTAL_D. */
static int g_incremental = -1;

void husai_bf16_set_incremental(int mode) {
    __atomic_store_n(&g_incremental, mode, __ATOMIC_RELAXED);
}

#ifdef HUSAI_HAVE_DNNL
/* A matmul primitive for one row count (the last batch of an epoch is shorter). */
typedef struct {
    int n;
    dnnl_primitive_t prim;
} dnnl_slot;
#endif

struct husai_bf16 {
    husai_bf16_backend backend;
    int cap, d, s, k, threads;
    float *xh_f, *wh_f;       /* emulated: bf16-valued fp32 copies of X (cap x d) and W_enc (s x d) */
    uint16_t *xh, *wh;        /* oneDNN: the same as bf16 bits */
    double *bound;            /* (cap) each row's E of the latest encode */
    double w, wh_max, ew_max; /* max |w_j|, max |w^_j|, max |e_j| */
    double b_max;             /* max |b_j| */
    int32_t *cidx, *pos;      /* per thread: 2 x s candidate latents (two rows); s positions */
    float *cval, *vc, *pv;    /* per thread: 2 x s candidate scores, s rescored values, s picked values */
    int64_t rows, second, full;
    int force_full;  /* husai_bf16_force_full */
    int incremental; /* rescoring candidates one by one in score order (select_row) */
    char isa[96];
#ifdef HUSAI_HAVE_DNNL
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_slot slot[2];
    int next_slot;
#endif
};

/* The decision a rule takes from the pre-activations, as far as the bf16 path knows it. */
typedef enum { RULE_NONE, RULE_TOPK, RULE_THRESHOLD, RULE_BATCH } bf16_rule;

static bf16_rule rule_of(const husai_sae *m, husai_sae_mode mode) {
    if (m->ops->select_rows == husai_select_topk_rows) return RULE_TOPK;
    if (m->ops == &husai_arch_jumprelu || m->ops == &husai_arch_relu_l1) return RULE_THRESHOLD;
    if (m->ops == &husai_arch_batchtopk) return mode == HUSAI_SAE_TRAIN ? RULE_BATCH : RULE_THRESHOLD;
    return RULE_NONE;
}

/* jumprelu has its certificate (husai_bf16_create takes it, test_bf16 checks it bit for bit), but its
 * straight-through training turns the fp32 rounding difference between sgemm's scores and dot8's into
 * 1e-4-sized differences of PWMCC and EV (seen in tests/sweep_bf16.sh), past the 1e-5 promised against
 * fp32: training keeps it on sgemm. */
int husai_bf16_eligible(const husai_sae *m, int aux_k) {
    return rule_of(m, HUSAI_SAE_TRAIN) != RULE_NONE && m->ops != &husai_arch_jumprelu && aux_k == 0;
}

/* Selects instead of branches, so that round_vec vectorises. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t h = (u + 0x7fffu + (u >> 16 & 1u)) >> 16; /* round to nearest even */
    h = nan ? (u >> 16 | 0x40u) : h;                   /* a quiet NaN */
    h = (h & 0x7f80u) == 0 ? h & 0x8000u : h;          /* below the smallest normal: the units read zero */
    return (uint16_t)h;
}

static inline float bf16_float(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

float husai_bf16_round(float x) {
    return bf16_float(bf16_bits(x));
}

/* ---- oneDNN ---- */

#ifdef HUSAI_HAVE_DNNL
/* The matmul's memory: md[0] in (n x d bf16), md[1] W^T (d x s bf16 stored s x d), md[2] dst (n x s fp32),
 * md[3] bias (1 x s fp32). */
static dnnl_status_t dnnl_descs(int n, int d, int s, dnnl_memory_desc_t md[4]) {
    const dnnl_dims_t sd = {n, d}, wd = {d, s}, dd = {n, s}, bd = {1, s};
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&md[0], 2, sd, dnnl_bf16, dnnl_ab);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&md[1], 2, wd, dnnl_bf16, dnnl_ba);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&md[2], 2, dd, dnnl_f32, dnnl_ab);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&md[3], 2, bd, dnnl_f32, dnnl_ab);
    return st;
}

/* The matmul dst = in W^T + bias: in (n x d bf16), W^T (d x s bf16, stored s x d), bias (1 x s fp32,
 * b_enc), dst (n x s fp32, overwritten: no pass over it beforehand, unlike sgemm's beta = 1). The bound
 * covers the bias whether it starts the accumulator or is added last. *impl gets oneDNN's implementation
 * name if not NULL. */
static dnnl_status_t dnnl_matmul_make(dnnl_engine_t eng, int n, int d, int s, int with_bias,
                                      dnnl_primitive_t *prim, char *impl, size_t impl_len) {
    dnnl_memory_desc_t md[4];
    dnnl_status_t st = dnnl_descs(n, d, s, md);
    dnnl_matmul_desc_t mm;
    if (st == dnnl_success)
        st = dnnl_matmul_desc_init(&mm, &md[0], &md[1], with_bias ? &md[3] : NULL, &md[2]);
    if (st != dnnl_success) return st;
    dnnl_primitive_desc_t pd = NULL;
    st = dnnl_primitive_desc_create(&pd, &mm, NULL, eng, NULL);
    if (st == dnnl_success && impl) {
        const char *name = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name)
            snprintf(impl, impl_len, "%s", name);
    }
    if (st == dnnl_success) st = dnnl_primitive_create(prim, pd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return st;
}

static int dnnl_ok;
static char dnnl_probe_impl[96] = "none";
static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;

/* oneDNN counts as available when it makes a bf16 matmul that is not its reference (scalar) code. */
static void dnnl_probe(void) {
    dnnl_engine_t eng;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) return;
    dnnl_primitive_t prim = NULL;
    char impl[96] = "";
    snprintf(dnnl_probe_impl, sizeof dnnl_probe_impl, "no bf16 matmul on this CPU");
    if (dnnl_matmul_make(eng, 64, 64, 64, 1, &prim, impl, sizeof impl) == dnnl_success) {
        dnnl_ok = strncmp(impl, "ref", 3) != 0;
        snprintf(dnnl_probe_impl, sizeof dnnl_probe_impl, "%s", impl);
        dnnl_primitive_destroy(prim);
    }
    dnnl_engine_destroy(eng);
}
#endif

int husai_bf16_dnnl_available(void) {
#ifdef HUSAI_HAVE_DNNL
    pthread_once(&dnnl_once, dnnl_probe);
    return dnnl_ok;
#else
    return 0;
#endif
}

const char *husai_bf16_isa(const husai_bf16 *c) {
    if (c) return c->isa;
#ifdef HUSAI_HAVE_DNNL
    pthread_once(&dnnl_once, dnnl_probe);
    return dnnl_probe_impl;
#else
    return "none";
#endif
}

/* ---- context ---- */

void husai_bf16_free(husai_bf16 *c) {
    if (!c) return;
#ifdef HUSAI_HAVE_DNNL
    for (int i = 0; i < 2; i++)
        if (c->slot[i].prim) dnnl_primitive_destroy(c->slot[i].prim);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
#endif
    free(c->xh_f);
    free(c->wh_f);
    free(c->xh);
    free(c->wh);
    free(c->bound);
    free(c->cidx);
    free(c->pos);
    free(c->cval);
    free(c->vc);
    free(c->pv);
    free(c);
}

husai_status husai_bf16_create(husai_sae_batch *b, const husai_sae *m, husai_bf16_backend backend) {
    if (rule_of(m, HUSAI_SAE_TRAIN) == RULE_NONE)
        return husai_error(HUSAI_ERR_ARG, "precision = bf16 has no certificate for the %s rule",
                           m->ops->name);
    if (backend == HUSAI_BF16_BEST)
        backend = husai_bf16_dnnl_available() ? HUSAI_BF16_DNNL : HUSAI_BF16_EMULATED;
    if (backend == HUSAI_BF16_DNNL && !husai_bf16_dnnl_available())
        return husai_error(HUSAI_ERR_ARG, "the oneDNN bf16 product is not available here (%s)",
                           husai_bf16_isa(NULL));
    husai_bf16 *c = calloc(1, sizeof *c);
    if (!c) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the bf16 context");
    c->backend = backend;
    c->cap = b->cap;
    c->d = m->d_model;
    c->s = m->d_sae;
    c->k = m->k;
    c->threads = b->threads;
    const int mode = __atomic_load_n(&g_incremental, __ATOMIC_RELAXED);
    c->incremental = mode >= 0 ? mode : c->d >= INCREMENTAL_D;
    const size_t cap = (size_t)b->cap, d = (size_t)c->d, s = (size_t)c->s, t = (size_t)c->threads;
    int ok = 1;
    if (backend == HUSAI_BF16_EMULATED) {
        ok &= (c->xh_f = malloc(cap * d * sizeof(float))) != NULL;
        ok &= (c->wh_f = malloc(s * d * sizeof(float))) != NULL;
        snprintf(c->isa, sizeof c->isa, "emulated");
    } else {
        ok &= (c->xh = malloc(cap * d * sizeof(uint16_t))) != NULL;
        ok &= (c->wh = malloc(s * d * sizeof(uint16_t))) != NULL;
        snprintf(c->isa, sizeof c->isa, "%s", husai_bf16_isa(NULL));
    }
    ok &= (c->bound = malloc(cap * sizeof(double))) != NULL;
    ok &= (c->cidx = malloc(2 * t * s * sizeof(int32_t))) != NULL;
    ok &= (c->pos = malloc(t * s * sizeof(int32_t))) != NULL;
    ok &= (c->cval = malloc(2 * t * s * sizeof(float))) != NULL;
    ok &= (c->vc = malloc(t * s * sizeof(float))) != NULL;
    ok &= (c->pv = malloc(t * s * sizeof(float))) != NULL;
#ifdef HUSAI_HAVE_DNNL
    if (ok && backend == HUSAI_BF16_DNNL) {
        ok = dnnl_engine_create(&c->engine, dnnl_cpu, 0) == dnnl_success &&
             dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags) == dnnl_success;
        if (!ok) {
            husai_bf16_free(c);
            return husai_error(HUSAI_ERR_ARG, "oneDNN cannot create a CPU engine");
        }
    }
#endif
    if (!ok) {
        husai_bf16_free(c);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate bf16 buffers for %d x %d", b->cap, m->d_sae);
    }
    husai_bf16_free(b->bf16);
    b->bf16 = c;
    return HUSAI_OK;
}

/* The process's totals (husai_bf16_totals), added to atomically: trainers may run on several threads. */
static int64_t g_rows, g_second, g_full;

void husai_bf16_totals(int64_t *rows, int64_t *second, int64_t *full) {
    *rows = __atomic_load_n(&g_rows, __ATOMIC_RELAXED);
    *second = __atomic_load_n(&g_second, __ATOMIC_RELAXED);
    *full = __atomic_load_n(&g_full, __ATOMIC_RELAXED);
}

void husai_bf16_stats(const husai_bf16 *c, int64_t *rows, int64_t *second, int64_t *full) {
    *rows = c->rows;
    *second = c->second;
    *full = c->full;
}

void husai_bf16_force_full(husai_bf16 *c, int on) {
    c->force_full = on;
}

double husai_bf16_row_bound(const husai_bf16 *c, int r) {
    return c->bound[r];
}

/* ---- the encode ---- */

/* Eight floats' bits, their bf16 bits (bf16_bits lane by lane) and eight doubles, as GCC vectors: round_vec
 * in these keeps every lane in registers (written lane by lane, the compiler spilled them). */
typedef uint32_t bf16_u8 __attribute__((vector_size(8 * sizeof(uint32_t))));
typedef uint16_t bf16_h8 __attribute__((vector_size(8 * sizeof(uint16_t))));
typedef float bf16_f4 __attribute__((vector_size(4 * sizeof(float))));
typedef double bf16_d4 __attribute__((vector_size(4 * sizeof(double))));

/* Rounds n floats to bf16 (into h or f, whichever is set) and returns |v|^2, |v^|^2 and |v^ - v|^2 in
 * nrm[0..3], each summed in 8 fixed double lanes (lane l takes elements l, l + 8, ... in order). */
HUSAI_MULTIVERSION
static void round_vec(const float *v, int n, uint16_t *h, float *f, double nrm[3]) {
    bf16_d4 a[2] = {{0}}, ah[2] = {{0}}, ae[2] = {{0}}; /* lanes 0-3 and 4-7 */
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        bf16_u8 u, q;
        /* 4 KB ahead, past the row's end into the next (rows are converted in order; a prefetch never
         * faults): without it this loop ran at a third of the speed on W_enc, the hardware's prefetch
         * not keeping up here. */
        __builtin_prefetch(v + i + 1024);
        memcpy(&u, v + i, sizeof u);
        const bf16_u8 nan = (bf16_u8)((u & 0x7fffffffu) > 0x7f800000u);
        q = (u + 0x7fffu + (u >> 16 & 1u)) >> 16;
        q = (nan & (u >> 16 | 0x40u)) | (~nan & q);
        const bf16_u8 flush = (bf16_u8)((q & 0x7f80u) == 0);
        q = (flush & (q & 0x8000u)) | (~flush & q);
        const bf16_u8 rb = q << 16;
        if (h) {
            const bf16_h8 q16 = __builtin_convertvector(q, bf16_h8);
            memcpy(h + i, &q16, sizeof q16);
        }
        if (f) memcpy(f + i, &rb, sizeof rb);
        for (int half = 0; half < 2; half++) {
            bf16_f4 x, r;
            memcpy(&x, v + i + 4 * half, sizeof x);
            memcpy(&r, (const char *)&rb + sizeof r * (size_t)half, sizeof r);
            const bf16_d4 xd = __builtin_convertvector(x, bf16_d4), rd = __builtin_convertvector(r, bf16_d4);
            const bf16_d4 e = rd - xd;
            a[half] += xd * xd;
            ah[half] += rd * rd;
            ae[half] += e * e;
        }
    }
    for (; i < n; i++) {
        const uint16_t q = bf16_bits(v[i]);
        const float r = bf16_float(q);
        if (h) h[i] = q;
        if (f) f[i] = r;
        const double e = (double)r - (double)v[i];
        a[0][0] += (double)v[i] * v[i];
        ah[0][0] += (double)r * r;
        ae[0][0] += e * e;
    }
    nrm[0] = nrm[1] = nrm[2] = 0.0;
    for (int l = 0; l < 8; l++) {
        nrm[0] += a[l / 4][l % 4];
        nrm[1] += ah[l / 4][l % 4];
        nrm[2] += ae[l / 4][l % 4];
    }
}

static double gamma_n(double n) {
    const double u = 0x1p-24;
    return n * u / (1.0 - n * u);
}

/* W_enc to bf16 and the maxima of the bound (W, W^, E_W, B). */
static void prepare_weights(husai_bf16 *c, const husai_sae *m) {
    const int d = c->d, s = c->s;
    double w = 0.0, wh = 0.0, ew = 0.0;
#pragma omp parallel for schedule(static) num_threads(c->threads)                                            \
    reduction(max                                                                                            \
              : w, wh, ew) if ((size_t)s * d >= 65536)
    for (int j = 0; j < s; j++) {
        double nrm[3];
        const size_t o = (size_t)j * d;
        round_vec(m->W_enc + o, d, c->wh ? c->wh + o : NULL, c->wh_f ? c->wh_f + o : NULL, nrm);
        /* !(x <= w) keeps a NaN (it then makes every bound infinite) */
        w = !(nrm[0] <= w) ? nrm[0] : w;
        wh = !(nrm[1] <= wh) ? nrm[1] : wh;
        ew = !(nrm[2] <= ew) ? nrm[2] : ew;
    }
    double bmax = 0.0;
    for (int j = 0; j < s; j++) {
        const double a = fabs((double)m->b_enc[j]);
        bmax = !(a <= bmax) ? a : bmax;
    }
    c->w = sqrt(w);
    c->wh_max = sqrt(wh);
    c->ew_max = sqrt(ew);
    c->b_max = bmax;
}

/* Rows [r0, r1): the bf16 copy of the encoder input and each row's bound. */
static void prepare_rows(husai_bf16 *c, const float *in, int r0, int r1) {
    const int d = c->d;
    const double g2 = gamma_n(2.0 * d + 2.0), g1 = gamma_n((double)d + 1.0), A = (4.0 * d + 4.0) * 0x1p-126;
    for (int r = r0; r < r1; r++) {
        double nrm[3];
        const size_t o = (size_t)r * d;
        round_vec(in + o, d, c->xh ? c->xh + o : NULL, c->xh_f ? c->xh_f + o : NULL, nrm);
        const double x = sqrt(nrm[0]), xh = sqrt(nrm[1]), ex = sqrt(nrm[2]);
        /* 2^-8 B: insurance against an implementation that rounds the fp32 bias to bf16 */
        const double e1 =
            g2 * (c->b_max + xh * c->wh_max) + ex * c->wh_max + x * c->ew_max + 0x1p-8 * c->b_max + A;
        const double e2 = g1 * (c->b_max + x * c->w) + A;
        /* Sums stay below 2^100 < FLT_MAX, so no fp32 partial sum can overflow. */
        const int sane = c->b_max + xh * c->wh_max < 0x1p100 && c->b_max + x * c->w < 0x1p100;
        c->bound[r] = sane && !c->force_full ? (e1 + e2) * (1.0 + 0x1p-20) : INFINITY;
    }
}

/* pre[0..n) = bias + bf16(in) bf16(W)^T; the emulated product adds into pre, which holds the bias. */
static husai_status product(husai_bf16 *c, int n, const float *bias, float *pre) {
    const int d = c->d, s = c->s;
    if (c->backend == HUSAI_BF16_EMULATED) {
        const int blocks = (n + EMU_ROWS - 1) / EMU_ROWS;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (blocks > 1)
        for (int q = 0; q < blocks; q++) {
            const int r0 = q * EMU_ROWS, r1 = n - r0 < EMU_ROWS ? n : r0 + EMU_ROWS;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, s, d, 1.0f,
                        c->xh_f + (size_t)r0 * d, d, c->wh_f, d, 1.0f, pre + (size_t)r0 * s, s);
        }
        return HUSAI_OK;
    }
#ifdef HUSAI_HAVE_DNNL
    /* oneDNN's OpenMP runtime uses omp_get_max_threads() of the calling thread: husai's count. */
    const int was = omp_get_max_threads();
    omp_set_num_threads(c->threads);
    dnnl_primitive_t prim = NULL;
    for (int i = 0; i < 2; i++)
        if (c->slot[i].prim && c->slot[i].n == n) prim = c->slot[i].prim;
    dnnl_status_t st = dnnl_success;
    if (!prim) {
        dnnl_slot *sl = &c->slot[c->next_slot];
        c->next_slot ^= 1;
        if (sl->prim) dnnl_primitive_destroy(sl->prim);
        sl->prim = NULL;
        st = dnnl_matmul_make(c->engine, n, d, s, 1, &sl->prim, NULL, 0);
        sl->n = n;
        prim = sl->prim;
    }
    dnnl_memory_t mem[4] = {NULL, NULL, NULL, NULL};
    if (st == dnnl_success) {
        dnnl_memory_desc_t md[4];
        st = dnnl_descs(n, d, s, md);
        void *ptr[4] = {c->xh, c->wh, pre, (void *)bias};
        for (int i = 0; i < 4 && st == dnnl_success; i++)
            st = dnnl_memory_create(&mem[i], &md[i], c->engine, ptr[i]);
    }
    if (st == dnnl_success) {
        const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, mem[0]},
                                         {DNNL_ARG_WEIGHTS, mem[1]},
                                         {DNNL_ARG_DST, mem[2]},
                                         {DNNL_ARG_BIAS, mem[3]}};
        st = dnnl_primitive_execute(prim, c->stream, 4, args);
        if (st == dnnl_success) st = dnnl_stream_wait(c->stream);
    }
    for (int i = 0; i < 4; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    omp_set_num_threads(was);
    if (st != dnnl_success)
        return husai_error(HUSAI_ERR_NUMERIC, "oneDNN's bf16 matmul of %d x %d x %d failed (status %d)", n, d,
                           s, (int)st);
    return HUSAI_OK;
#else
    (void)pre;
    (void)bias;
    return husai_error(HUSAI_ERR_ARG, "this husai was built without oneDNN");
#endif
}

/* v[c] = b_enc[j] + dot8(x, w_j) for the n latents j = idx[c] (every latent when idx is NULL). */
HUSAI_MULTIVERSION
static void rescore(const husai_sae *m, const float *x, const int32_t *idx, int n, float *v) {
    const int d = m->d_model;
    for (int a = 0; a < n; a++) {
        const int j = idx ? idx[a] : a;
        /* Candidates are scattered rows of W_enc, mostly out of cache: fetch the next one meanwhile. */
        if (idx && a + 2 < n) {
            const char *next = (const char *)(m->W_enc + (size_t)idx[a + 2] * d);
            for (size_t o = 0; o < (size_t)d * sizeof(float); o += 64)
                __builtin_prefetch(next + o);
        }
        v[a] = m->b_enc[j] + husai_dot8(x, m->W_enc + (size_t)j * d, d);
    }
}

/* vc[a] = b_enc[j] + dot8(x, w_j) for the q <= 4 candidates j = cidx[a], a = r .. r + q - 1, four at once
 * (each lane of a v8 accumulator takes dot8's terms in dot8's order, the tail and the final sums too: the
 * same bits; one dot product is a chain of dependent adds, four interleave). Fetches the W_enc rows of the
 * next four candidates (of n) meanwhile: they are scattered, mostly out of cache. */
HUSAI_MULTIVERSION
static void rescore_four(const husai_sae *m, const float *x, const int32_t *cidx, int r, int q, int n,
                         float *vc) {
    const int d = m->d_model;
    for (int a = r + 4; a < r + 8 && a < n; a++) {
        const char *next = (const char *)(m->W_enc + (size_t)cidx[a] * d);
        for (size_t o = 0; o < (size_t)d * sizeof(float); o += 64)
            __builtin_prefetch(next + o);
    }
    if (q < 4) {
        for (int a = r; a < r + q; a++)
            vc[a] = m->b_enc[cidx[a]] + husai_dot8(x, m->W_enc + (size_t)cidx[a] * d, d);
        return;
    }
    const float *w[4];
    for (int a = 0; a < 4; a++)
        w[a] = m->W_enc + (size_t)cidx[r + a] * d;
    husai_v8 acc[4] = {{0}, {0}, {0}, {0}};
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        husai_v8 xv, wv;
        V8_LOAD(xv, x + i);
        for (int a = 0; a < 4; a++) {
            V8_LOAD(wv, w[a] + i);
            acc[a] += xv * wv;
        }
    }
    for (int a = 0; a < 4; a++) {
        float tail = 0.0f;
        for (int e = i; e < d; e++)
            tail += x[e] * w[a][e];
        const husai_v8 c = acc[a];
        vc[r + a] = m->b_enc[cidx[r + a]] +
                    (((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7])) + tail);
    }
}

/* A row's first candidate set (the top HUSAI_BF16_CAND_FIRST * k by bf16 score) in rescoring order into
 * cidx/cval, ahead of its rescoring, while `also` (the previous row's first candidates) is fetched; returns
 * whether select_row will use it (it will not for rows it rescores in full). */
static int first_set(const husai_bf16 *c, double E, const float *pre, int32_t *cidx, float *cval,
                     float *scratch, const husai_fetch *also) {
    const int mc = HUSAI_BF16_CAND_FIRST * c->k;
    if (!(E < INFINITY) || mc >= c->s) return 0;
    husai_topk_row_scan(pre, c->s, mc, cidx, cval, scratch, also);
    if (c->incremental) husai_sort_pairs(cidx, cval, NULL, mc, 1, (int32_t *)scratch);
    return 1;
}

/* Row r's top k under the dot8 rule into id/v (ascending latents); returns 0 when the first candidate set
 * certified it, 1 the second, 2 when it was rescored in full (its pre-activations then become the exact
 * scores). E: its bound; scratch: 2 d_sae floats; t: this thread; cidx/cval: candidate buffers of d_sae,
 * holding first_set's result if `ready`.
 * The candidates (the top m by bf16 score) are rescored in score order, highest first, and the row is
 * certified as soon as it can be: with the first r rescored, every other latent's score is at most the
 * (r+1)-th (the m-th for r = m), which is the certificate's S (bf16.c's header) for the set of those r.
 * Most rows certify well before m. The second set's first m are the first set (the same order), so its
 * rescoring goes on where the first stopped. */
static int select_row(husai_bf16 *c, const husai_sae *m, const float *x, double E, float *pre, int32_t *id,
                      float *v, float *scratch, int t, int32_t *cidx, float *cval, int ready) {
    const int s = c->s, k = c->k;
    const size_t o = (size_t)t * s;
    int32_t *pos = c->pos + o;
    float *vc = c->vc + o, *pv = c->pv + o, *top = pv + k;
    const int cand[2] = {HUSAI_BF16_CAND_FIRST * k, HUSAI_BF16_CAND_SECOND * k};
    int r = 0, lo = 0; /* rescored; top[0..k) the k largest rescored values once r >= k, top[lo] the least */
    for (int stage = 0; stage < 2 && E < INFINITY; stage++) {
        const int mc = cand[stage];
        if (mc >= s) break;
        if (stage > 0 || !ready) {
            husai_topk_row_scan(pre, s, mc, cidx, cval, scratch, NULL);
            if (c->incremental)
                husai_sort_pairs(cidx, cval, NULL, mc, 1, (int32_t *)scratch); /* the first r: in vc */
        }
        if (!c->incremental) { /* all mc at once, the certificate's S the least score among them */
            float S = cval[0];
            for (int a = 1; a < mc; a++)
                S = cval[a] < S ? cval[a] : S;
            for (r = 0; r < mc; r += 4)
                rescore_four(m, x, cidx, r, mc - r < 4 ? mc - r : 4, mc, vc);
            husai_topk_row(vc, mc, k, pos, pv, scratch);
            float vk = pv[0];
            for (int a = 1; a < k; a++)
                vk = pv[a] < vk ? pv[a] : vk;
            if (!((double)vk - (double)S > E)) continue; /* also for a NaN */
            for (int a = 0; a < k; a++) {
                id[a] = cidx[pos[a]];
                v[a] = pv[a];
            }
            return stage;
        }
        for (int done = r; r < mc; r++) {
            if (r == done) { /* four at a time: at most three rescored past the row's certificate */
                const int q = mc - r < 4 ? mc - r : 4;
                rescore_four(m, x, cidx, r, q, mc, vc);
                done = r + q;
            }
            /* top[lo] changes only when a value enters the k largest: rare past k, the scores' order being
             * nearly the exact one */
            int changed = 1;
            if (r < k) {
                top[r] = vc[r];
                if (r + 1 < k) continue;
            } else if (vc[r] > top[lo] || !(vc[r] == vc[r])) {
                top[lo] = vc[r]; /* a NaN (not with a finite bound) keeps the row from certifying */
            } else {
                changed = 0;
            }
            for (int a = 0; changed && a < k; a++)
                lo = top[a] < top[lo] || !(top[a] == top[a]) ? a : lo;
            const float S = cval[r + 1 < mc ? r + 1 : mc - 1];
            if ((double)top[lo] - (double)S > E) { /* false for a NaN */
                const int n = r + 1;
                husai_sort_pairs(cidx, vc, cval, n, 0, (int32_t *)scratch);
                husai_topk_row(vc, n, k, pos, pv, scratch);
                for (int a = 0; a < k; a++) {
                    id[a] = cidx[pos[a]];
                    v[a] = pv[a];
                }
                return stage;
            }
        }
    }
    rescore(m, x, NULL, s, pre);
    husai_topk_row(pre, s, k, id, v, scratch);
    return 2;
}

/* Threshold rules. Latent j of a row decides on pre_j > t_j, and jumprelu's backward also reads pre_j where
 * |pre_j - t_j| < margin. A latent with sigma_j < t_j - margin - E has v_j < t_j - margin: inactive and
 * outside the window by its exact value and by its bf16 score alike, so only the others are rescored,
 * their exact values written into pre, and the rule then runs on pre unchanged. Rows with an infinite bound
 * are rescored in full. Returns whether the row was. The 2^-22 slack covers the rule's own float rounding of
 * pre_j - t_j. */
HUSAI_MULTIVERSION
static int exact_where_needed(const husai_sae *m, const float *x, double E, const float *t, double margin,
                              float *pre) {
    const int s = m->d_sae, d = m->d_model, full = !(E < INFINITY);
    for (int j = 0; j < s; j++)
        if (full || (double)pre[j] >= (double)t[j] - margin - E -
                                          0x1p-22 * (fabs((double)t[j]) + margin + fabs((double)pre[j])))
            pre[j] = m->b_enc[j] + husai_dot8(x, m->W_enc + (size_t)j * d, d);
    return full;
}

/* BatchTopK in training keeps the n k largest ReLU(pre) of the batch. With tau the (n k)-th largest of
 * sigma - E_r (a lower bound on n k exact values), an entry with sigma + E_r < max(tau, 0) has an exact
 * value below every one of those (or below 0) and a bf16 score below them too: never selected either way.
 * The others are rescored. tau's elements are rounded down, which only lowers it. */
static void batch_threshold(const husai_bf16 *c, const husai_sae *m, int n, husai_sae_batch *b, float *t) {
    const int s = m->d_sae;
    const size_t total = (size_t)n * s;
    for (size_t i = 0; i < total; i++) {
        const double lo = (double)b->pre[i] - c->bound[i / (size_t)s];
        float f = (float)lo;
        if ((double)f > lo) f = nextafterf(f, -INFINITY);
        b->select[i] = lo < INFINITY && lo > -INFINITY ? f : -INFINITY;
    }
    const float tau = husai_kth_largest(b->select, (int)total, n * m->k);
    for (int j = 0; j < s; j++)
        t[j] = tau > 0.0f ? tau : 0.0f;
}

/* The threshold rules' encode after the product: each row exact where its decision needs it. */
static void exact_thresholds(husai_bf16 *c, const husai_sae *m, const float *in, int n, husai_sae_mode mode,
                             husai_sae_batch *b) {
    const int s = m->d_sae, d = m->d_model;
    float *t = c->vc; /* thread 0's rescoring buffer (s floats), free here */
    double margin = 0.0;
    if (rule_of(m, mode) == RULE_BATCH) {
        batch_threshold(c, m, n, b, t);
    } else if (m->ops == &husai_arch_jumprelu) {
        for (int j = 0; j < s; j++)
            t[j] = expf(m->log_theta[j]);                   /* as the rule computes it */
        margin = (double)(0.5f * (float)m->spec.bandwidth); /* the backward's half-width, as it computes it */
    } else {
        const float th = m->ops == &husai_arch_batchtopk && m->threshold > 0.0 ? (float)m->threshold : 0.0f;
        for (int j = 0; j < s; j++)
            t[j] = th;
    }
    int64_t full = 0;
#pragma omp parallel for schedule(dynamic, 16) num_threads(c->threads) reduction(+ : full)
    for (int r = 0; r < n; r++)
        full += exact_where_needed(m, in + (size_t)r * d, c->bound[r], t, margin, b->pre + (size_t)r * s);
    c->full += full;
    __atomic_fetch_add(&g_full, full, __ATOMIC_RELAXED);
}

husai_status husai_bf16_encode(const husai_sae *m, const float *x, int n, husai_sae_mode mode,
                               husai_sae_batch *b) {
    husai_bf16 *c = b->bf16;
    b->n = n;
    const int s = m->d_sae, d = m->d_model, k = m->k;
    prepare_weights(c, m);
    const float *in = m->b_dec ? b->xc : x;
    const int blocks = (n + EMU_ROWS - 1) / EMU_ROWS;
#pragma omp parallel for schedule(static) num_threads(c->threads) if (blocks > 1)
    for (int q = 0; q < blocks; q++) {
        const int r0 = q * EMU_ROWS, r1 = n - r0 < EMU_ROWS ? n : r0 + EMU_ROWS;
        husai_encoder_input(m, x, r0, r1, c->backend == HUSAI_BF16_EMULATED, b);
        prepare_rows(c, in, r0, r1);
    }
    husai_status st = product(c, n, m->b_enc, b->pre);
    if (st) return st;
    if (rule_of(m, mode) != RULE_TOPK) {
        exact_thresholds(c, m, in, n, mode, b);
        c->rows += n;
        __atomic_fetch_add(&g_rows, (int64_t)n, __ATOMIC_RELAXED);
        return m->ops->codes(m, n, mode, b);
    }
    int64_t second = 0, full = 0;
    /* Rows go by groups of ROW_GROUP (rows rescored in full cost d_sae dot products: dynamic groups keep the
     * threads even; the codes do not depend on which thread selects a row). Within a group, row r + 1's first
     * candidate set is taken before row r is rescored, and that scan of row r + 1's scores also fetches the
     * W_enc rows row r will rescore first: the two streams from memory overlap instead of taking turns.
     * ahead = 1.5k of them: rows certified after ~1.45k of their 2k candidates on average at 768 x 16384. */
    const int groups = (n + ROW_GROUP - 1) / ROW_GROUP, ahead = k + k / 2;
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->threads) reduction(+ : second, full)
    for (int g = 0; g < groups; g++) {
        const int t = husai_thread_num(), r0 = g * ROW_GROUP, r1 = n - r0 < ROW_GROUP ? n : r0 + ROW_GROUP;
        float *scratch = b->select + (size_t)t * 2 * s;
        int32_t *cidx[2] = {c->cidx + (size_t)2 * t * s, c->cidx + (size_t)(2 * t + 1) * s};
        float *cval[2] = {c->cval + (size_t)2 * t * s, c->cval + (size_t)(2 * t + 1) * s};
        int ready = first_set(c, c->bound[r0], b->pre + (size_t)r0 * s, cidx[0], cval[0], scratch, NULL);
        for (int r = r0; r < r1; r++) {
            const int cur = (r - r0) & 1;
            const husai_fetch prev = {(const char *)m->W_enc, cidx[cur], ready ? ahead : 0,
                                      (size_t)d * sizeof(float)};
            const int next = r + 1 < r1 && first_set(c, c->bound[r + 1], b->pre + (size_t)(r + 1) * s,
                                                     cidx[!cur], cval[!cur], scratch, &prev);
            int32_t *id = b->idx + (size_t)r * k;
            float *v = b->val + (size_t)r * k;
            const int stage = select_row(c, m, in + (size_t)r * d, c->bound[r], b->pre + (size_t)r * s, id, v,
                                         scratch, t, cidx[cur], cval[cur], ready);
            second += stage >= 1;
            full += stage == 2;
            b->row_ptr[r + 1] = husai_topk_keep(id, v, k, m->spec.relu);
            ready = next;
        }
    }
    c->rows += n;
    c->second += second;
    c->full += full;
    __atomic_fetch_add(&g_rows, (int64_t)n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_second, second, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_full, full, __ATOMIC_RELAXED);
    return m->ops->codes(m, n, mode, b);
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of 3 encodes of x after one warm-up. */
static husai_status time_encode(const husai_sae *m, const float *x, int rows, husai_sae_batch *b, double *t) {
    *t = INFINITY;
    for (int rep = 0; rep < 4; rep++) {
        const double t0 = wall();
        husai_status st = husai_sae_encode(m, x, rows, HUSAI_SAE_TRAIN, b);
        if (st) return st;
        const double dt = wall() - t0;
        if (rep > 0 && dt < *t) *t = dt;
    }
    return HUSAI_OK;
}

husai_status husai_bf16_calibrate(int d_model, int d_sae, int k, int rows, double *t_fp32, double *t_bf16) {
    *t_fp32 = *t_bf16 = INFINITY;
    husai_sae m;
    husai_sae_batch b;
    memset(&b, 0, sizeof b);
    const husai_sae_spec spec = husai_sae_spec_topk(d_model, d_sae, k);
    husai_status st = husai_sae_alloc(&m, &spec);
    if (st) return st;
    husai_sae_init(&m, 1);
    float *x = malloc((size_t)rows * (size_t)d_model * sizeof(float));
    if (!x) st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate %d calibration rows", rows);
    /* W_enc's own generator fills the rows: any spread of scores will do for timing */
    for (size_t i = 0; !st && i < (size_t)rows * (size_t)d_model; i++)
        x[i] = m.W_enc[i % ((size_t)d_sae * (size_t)d_model)];
    if (!st) st = husai_sae_batch_alloc(&b, &m, rows);
    if (!st) st = time_encode(&m, x, rows, &b, t_fp32);
    if (!st && husai_bf16_dnnl_available()) {
        st = husai_bf16_create(&b, &m, HUSAI_BF16_DNNL);
        if (!st) st = time_encode(&m, x, rows, &b, t_bf16);
    }
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
    free(x);
    return st;
}

/* ---- all-pairs products ---- */

struct husai_bf16_nt {
    husai_bf16_backend backend;
    int na, nb, d, block, T;
    const float *A;
    uint16_t *ah, *bh; /* oneDNN: A's blocks per thread (T x block x d), B */
    float *af, *bf;    /* emulated: the same as bf16-valued floats */
    double bound;
#ifdef HUSAI_HAVE_DNNL
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t prim[2]; /* for `block` rows and for the last block's */
    int rows[2];
#endif
};

void husai_bf16_nt_free(husai_bf16_nt *nt) {
    if (!nt) return;
#ifdef HUSAI_HAVE_DNNL
    for (int i = 0; i < 2; i++)
        if (nt->prim[i]) dnnl_primitive_destroy(nt->prim[i]);
    if (nt->stream) dnnl_stream_destroy(nt->stream);
    if (nt->engine) dnnl_engine_destroy(nt->engine);
#endif
    free(nt->ah);
    free(nt->bh);
    free(nt->af);
    free(nt->bf);
    free(nt);
}

/* Largest |v|, |v^| and |v^ - v| over n rows of d (no copy kept). */
static void max_norms(const float *v, int n, int d, double out[3]) {
    out[0] = out[1] = out[2] = 0.0;
    for (int r = 0; r < n; r++) {
        double nrm[3];
        round_vec(v + (size_t)r * d, d, NULL, NULL, nrm);
        for (int q = 0; q < 3; q++)
            out[q] = !(nrm[q] <= out[q]) ? nrm[q] : out[q];
    }
    for (int q = 0; q < 3; q++)
        out[q] = sqrt(out[q]);
}

husai_status husai_bf16_nt_create(husai_bf16_nt **out, const float *A, int na, const float *B, int nb, int d,
                                  int block, int T, husai_bf16_backend backend) {
    *out = NULL;
    if (backend == HUSAI_BF16_BEST)
        backend = husai_bf16_dnnl_available() ? HUSAI_BF16_DNNL : HUSAI_BF16_EMULATED;
    if (backend == HUSAI_BF16_DNNL && !husai_bf16_dnnl_available())
        return husai_error(HUSAI_ERR_ARG, "the oneDNN bf16 product is not available here (%s)",
                           husai_bf16_isa(NULL));
    husai_bf16_nt *nt = calloc(1, sizeof *nt);
    if (!nt) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate a bf16 product");
    *nt = (husai_bf16_nt){.backend = backend, .na = na, .nb = nb, .d = d, .block = block, .T = T, .A = A};
    const size_t ab = (size_t)block * (size_t)d, bb = (size_t)nb * (size_t)d;
    int ok;
    if (backend == HUSAI_BF16_EMULATED)
        ok = (nt->af = malloc(ab * sizeof(float))) && (nt->bf = malloc(bb * sizeof(float)));
    else
        ok = (nt->ah = malloc(ab * sizeof(uint16_t))) && (nt->bh = malloc(bb * sizeof(uint16_t)));
    if (!ok) {
        husai_bf16_nt_free(nt);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate bf16 copies of %d x %d", nb, d);
    }
    double a[3], b[3] = {0, 0, 0};
    for (int j = 0; j < nb; j++) {
        double nrm[3];
        const size_t o = (size_t)j * d;
        round_vec(B + o, d, nt->bh ? nt->bh + o : NULL, nt->bf ? nt->bf + o : NULL, nrm);
        for (int q = 0; q < 3; q++)
            b[q] = !(nrm[q] <= b[q]) ? nrm[q] : b[q];
    }
    for (int q = 0; q < 3; q++)
        b[q] = sqrt(b[q]);
    /* The encoder's bound without a bias: the unit's |c - a^.b^| <= gamma_{2d+2} |a^||b^| + A, the rounding
     * |a^.b^ - a.b| <= |e_a||b^| + |a||e_b|, dot8's gamma_{d+1} |a||b| + A, each with the sets' maxima. */
    max_norms(A, na, d, a);
    const double g2 = gamma_n(2.0 * d + 2.0), g1 = gamma_n((double)d + 1.0), U = (4.0 * d + 4.0) * 0x1p-126;
    const double e = g2 * a[1] * b[1] + a[2] * b[1] + a[0] * b[2] + g1 * a[0] * b[0] + 2.0 * U;
    nt->bound = a[1] * b[1] < 0x1p100 && a[0] * b[0] < 0x1p100 ? e * (1.0 + 0x1p-20) : INFINITY;
#ifdef HUSAI_HAVE_DNNL
    if (backend == HUSAI_BF16_DNNL) {
        nt->rows[0] = block < na ? block : na;
        nt->rows[1] = na % block;
        ok = dnnl_engine_create(&nt->engine, dnnl_cpu, 0) == dnnl_success &&
             dnnl_stream_create(&nt->stream, nt->engine, dnnl_stream_default_flags) == dnnl_success;
        for (int i = 0; ok && i < 2; i++)
            if (nt->rows[i] > 0)
                ok = dnnl_matmul_make(nt->engine, nt->rows[i], d, nb, 0, &nt->prim[i], NULL, 0) ==
                     dnnl_success;
        if (!ok) {
            husai_bf16_nt_free(nt);
            return husai_error(HUSAI_ERR_ARG, "oneDNN cannot make a bf16 matmul of %d x %d x %d", block, d,
                               nb);
        }
    }
#endif
    *out = nt;
    return HUSAI_OK;
}

HUSAI_MULTIVERSION
float husai_bf16_abs_dot(const float *a, const float *b, int d) {
    return fabsf(husai_dot8(a, b, d));
}

double husai_bf16_nt_bound(const husai_bf16_nt *nt) {
    return nt->bound;
}

husai_status husai_bf16_nt_block(husai_bf16_nt *nt, int i0, int bs, float *C) {
    const int d = nt->d, nb = nt->nb;
    const size_t o = 0;
    for (int i = 0; i < bs; i++) {
        double nrm[3];
        round_vec(nt->A + (size_t)(i0 + i) * d, d, nt->ah ? nt->ah + o + (size_t)i * d : NULL,
                  nt->af ? nt->af + o + (size_t)i * d : NULL, nrm);
    }
    if (nt->backend == HUSAI_BF16_EMULATED) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bs, nb, d, 1.0f, nt->af + o, d, nt->bf, d, 0.0f,
                    C, nb);
        return HUSAI_OK;
    }
#ifdef HUSAI_HAVE_DNNL
    const dnnl_primitive_t prim = bs == nt->rows[0] ? nt->prim[0] : bs == nt->rows[1] ? nt->prim[1] : NULL;
    dnnl_status_t st = prim ? dnnl_success : dnnl_invalid_arguments;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    dnnl_memory_desc_t md[4];
    if (st == dnnl_success) st = dnnl_descs(bs, d, nb, md);
    void *ptr[3] = {nt->ah + o, nt->bh, C};
    for (int i = 0; i < 3 && st == dnnl_success; i++)
        st = dnnl_memory_create(&mem[i], &md[i], nt->engine, ptr[i]);
    if (st == dnnl_success) {
        const dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
        /* oneDNN's OpenMP runtime takes the calling thread's count */
        const int was = omp_get_max_threads();
        omp_set_num_threads(nt->T);
        st = dnnl_primitive_execute(prim, nt->stream, 3, args);
        if (st == dnnl_success) st = dnnl_stream_wait(nt->stream);
        omp_set_num_threads(was);
    }
    for (int i = 0; i < 3; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (st != dnnl_success)
        return husai_error(HUSAI_ERR_NUMERIC, "oneDNN's bf16 matmul of %d x %d x %d failed (status %d)", bs,
                           d, nb, (int)st);
    return HUSAI_OK;
#else
    (void)C;
    return husai_error(HUSAI_ERR_ARG, "this husai was built without oneDNN");
#endif
}
