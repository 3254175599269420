/* test_arch.c: the five architectures (src/sae/arch_*.c over the kernels of model.c, select.c, encode.c,
 * decode.c, backward.c) and their trainer (src/sae/train.c).
 * Every check compares the library with an independent computation written here:
 * - encode rules (topk +-relu, batchtopk train/eval, jumprelu, relu_l1, matryoshka) against naive
 *   per-rule selections on the library's pre-activations, which are themselves checked against a
 *   double-precision dense product; tie-heavy and hand-worked batchtopk cases; matryoshka prefix ends;
 * - forward loss parts (mse, matryoshka recon, l0, sparsity, total) against a naive dense decode;
 * - husai_sae_backward against central finite differences of the forward loss (every parameter),
 *   with the selection asserted unchanged by each perturbation;
 * - jumprelu's log_theta gradient against a naive straight-through estimator;
 * - husai_sae_auxk against finite differences of a naive AuxK loss with x_hat frozen;
 * - the trainer for every architecture: finite loss, bitwise-exact resume from a mid-epoch
 *   checkpoint, AuxK having an effect, the adaptive sparsity weight moving L0 toward k and a
 *   fixed weight staying fixed. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rng.h"
#include "sae/checkpoint.h"
#include "sae/model.h"
#include "sae/train.h"

/* Shapes of the model-level tests: small enough to finite-difference every parameter. */
enum { DM = 8, DS = 16, NR = 5, KK = 3 };

/* ---------- helpers ---------- */

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

static husai_sae_spec make_spec(husai_arch arch, int d_model, int d_sae, int k, int relu, int decoder_bias,
                                int n_prefixes, double bandwidth) {
    return (husai_sae_spec){.arch = arch,
                            .d_model = d_model,
                            .d_sae = d_sae,
                            .k = k,
                            .relu = relu,
                            .decoder_bias = decoder_bias,
                            .n_prefixes = n_prefixes,
                            .bandwidth = bandwidth};
}

static void random_normal(float *a, size_t n, double sd, husai_rng *r) {
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(sd * husai_rng_normal(r));
}

/* A model of the given spec with random parameters: W_enc ~ N(0, 1/d_model) (pre-activations of unit
 * scale for x ~ N(0, 1)), b_enc ~ N(shift, 0.1^2), unit decoder rows, b_dec ~ N(0, 0.3^2), theta_j ~
 * U(0.1, 0.8). */
static void random_model(husai_sae *m, const husai_sae_spec *spec, uint64_t seed, double shift) {
    assert_int_equal(husai_sae_alloc(m, spec), HUSAI_OK);
    husai_rng r;
    husai_rng_init(&r, seed, "test-arch-model", 0);
    const size_t w = (size_t)m->d_sae * m->d_model;
    random_normal(m->W_enc, w, 1.0 / sqrt((double)m->d_model), &r);
    random_normal(m->b_enc, (size_t)m->d_sae, 0.1, &r);
    for (int j = 0; j < m->d_sae; j++)
        m->b_enc[j] += (float)shift;
    random_normal(m->W_dec, w, 1.0, &r);
    husai_sae_normalize_decoder(m);
    if (m->b_dec) random_normal(m->b_dec, (size_t)m->d_model, 0.3, &r);
    if (m->log_theta)
        for (int j = 0; j < m->d_sae; j++)
            m->log_theta[j] = logf((float)(0.1 + 0.7 * husai_rng_uniform(&r)));
}

static float *random_data(size_t n, uint64_t seed) {
    float *x = xmalloc(n * sizeof(float));
    husai_rng r;
    husai_rng_init(&r, seed, "test-arch-data", 0);
    random_normal(x, n, 1.0, &r);
    return x;
}

/* pre = W_enc (x - b_dec) + b_enc for one row and latent, in double. */
static double naive_pre(const husai_sae *m, const float *xr, int j) {
    double acc = m->b_enc[j];
    for (int i = 0; i < m->d_model; i++)
        acc +=
            (double)m->W_enc[(size_t)j * m->d_model + i] * ((double)xr[i] - (m->b_dec ? m->b_dec[i] : 0.0));
    return acc;
}

/* The library's pre-activations agree with the dense double product to float rounding. */
static void check_pre(const husai_sae *m, const float *x, int n, const husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < s; j++) {
            double scale = fabs((double)m->b_enc[j]);
            for (int i = 0; i < d; i++)
                scale += fabs((double)m->W_enc[(size_t)j * d + i]) *
                         (fabs((double)x[(size_t)r * d + i]) + (m->b_dec ? fabs((double)m->b_dec[i]) : 0.0));
            const double ref = naive_pre(m, x + (size_t)r * d, j);
            if (!(fabs(b->pre[(size_t)r * s + j] - ref) <= 1e-6 * scale + 1e-12))
                fail_msg("pre[%d][%d] = %.9g, dense double product %.9g", r, j,
                         (double)b->pre[(size_t)r * s + j], ref);
        }
}

/* Naive selection rules on pre (n, s); sel gets 1 where a code is active. */
static void naive_select(const husai_sae *m, const float *pre, int n, husai_sae_mode mode,
                         unsigned char *sel) {
    const int s = m->d_sae, k = m->k;
    memset(sel, 0, (size_t)n * s);
    switch (m->spec.arch) {
    case HUSAI_ARCH_TOPK:
    case HUSAI_ARCH_MATRYOSHKA:
        for (int r = 0; r < n; r++) {
            const float *p = pre + (size_t)r * s;
            unsigned char *sr = sel + (size_t)r * s;
            for (int a = 0; a < k; a++) {
                int best = -1;
                for (int j = 0; j < s; j++)
                    if (!sr[j] && (best < 0 || p[j] > p[best])) best = j; /* '>' keeps the lower index */
                assert_true(best >= 0);
                sr[best] = 1;
            }
            if (m->spec.relu)
                for (int j = 0; j < s; j++)
                    if (sr[j] && !(p[j] > 0.0f)) sr[j] = 0;
        }
        break;
    case HUSAI_ARCH_BATCHTOPK:
        if (mode == HUSAI_SAE_TRAIN) {
            const size_t total = (size_t)n * s;
            for (int a = 0; a < n * k; a++) {
                size_t best = total;
                for (size_t f = 0; f < total; f++)
                    if (!sel[f] && pre[f] > 0.0f && (best == total || pre[f] > pre[best])) best = f;
                if (best == total) break; /* fewer than n*k positive pre-activations */
                sel[best] = 1;
            }
        } else {
            const float t = m->threshold > 0.0 ? (float)m->threshold : 0.0f;
            for (size_t f = 0; f < (size_t)n * s; f++)
                sel[f] = pre[f] > t;
        }
        break;
    case HUSAI_ARCH_JUMPRELU:
        for (int r = 0; r < n; r++)
            for (int j = 0; j < s; j++)
                sel[(size_t)r * s + j] = pre[(size_t)r * s + j] > expf(m->log_theta[j]);
        break;
    default: /* relu_l1 */
        for (size_t f = 0; f < (size_t)n * s; f++)
            sel[f] = pre[f] > 0.0f;
        break;
    }
}

/* b's CSR codes are exactly the selection sel over b->pre, ascending within rows, values = pre. */
static void check_codes(const husai_sae_batch *b, int n, int s, const unsigned char *sel) {
    assert_int_equal(b->row_ptr[0], 0);
    for (int r = 0; r < n; r++) {
        const unsigned char *sr = sel + (size_t)r * s;
        int expect = 0;
        for (int j = 0; j < s; j++)
            expect += sr[j];
        assert_int_equal(b->row_ptr[r + 1] - b->row_ptr[r], expect);
        for (int64_t a = b->row_ptr[r]; a < b->row_ptr[r + 1]; a++) {
            const int j = b->idx[a];
            assert_true(j >= 0 && j < s);
            if (a > b->row_ptr[r]) assert_true(b->idx[a - 1] < j); /* strictly ascending */
            assert_true(sr[j]);
            assert_true(b->val[a] == b->pre[(size_t)r * s + j]);
        }
    }
}

/* ---------- 1. encode rules ---------- */

typedef struct {
    husai_arch arch;
    int relu, decoder_bias;
    double shift; /* added to b_enc: negative shifts make rows with fewer than k positive picks */
} arch_case;

static const arch_case ENCODE_CASES[] = {
    {HUSAI_ARCH_TOPK, 0, 0, 0.0},       {HUSAI_ARCH_TOPK, 1, 1, -1.2},
    {HUSAI_ARCH_TOPK, 1, 0, 0.0},       {HUSAI_ARCH_BATCHTOPK, 0, 1, 0.0},
    {HUSAI_ARCH_BATCHTOPK, 0, 0, -1.8}, {HUSAI_ARCH_JUMPRELU, 0, 1, 0.0},
    {HUSAI_ARCH_RELU_L1, 0, 0, 0.0},    {HUSAI_ARCH_RELU_L1, 0, 1, -0.5},
    {HUSAI_ARCH_MATRYOSHKA, 0, 0, 0.0}, {HUSAI_ARCH_MATRYOSHKA, 1, 1, -1.0},
};
#define N_ENCODE_CASES (sizeof ENCODE_CASES / sizeof ENCODE_CASES[0])

static void test_encode_rules_vs_naive(void **state) {
    (void)state;
    const int n = 7;
    int relu_short_rows = 0, batch_uneven = 0, batch_short = 0;
    for (size_t c = 0; c < N_ENCODE_CASES; c++)
        for (uint64_t seed = 1; seed <= 6; seed++) {
            const arch_case *ac = &ENCODE_CASES[c];
            const husai_sae_spec spec = make_spec(ac->arch, DM, DS, KK, ac->relu, ac->decoder_bias, 3, 0.05);
            husai_sae m;
            husai_sae_batch b;
            random_model(&m, &spec, 100 * c + seed, ac->shift);
            float *x = random_data((size_t)n * DM, seed);
            unsigned char *sel = xmalloc((size_t)n * DS);
            assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
            const int modes = ac->arch == HUSAI_ARCH_BATCHTOPK ? 4 : 1;
            for (int mode = 0; mode < modes; mode++) {
                /* batchtopk: TRAIN, then EVAL at thresholds 0.4, 0 and -1 (a non-positive threshold means 0)
                 */
                const husai_sae_mode md = mode == 0 ? HUSAI_SAE_TRAIN : HUSAI_SAE_EVAL;
                m.threshold = mode == 1 ? 0.4 : mode == 2 ? 0.0 : -1.0;
                assert_int_equal(husai_sae_encode(&m, x, n, md, &b), HUSAI_OK);
                assert_int_equal(b.n, n);
                check_pre(&m, x, n, &b);
                naive_select(&m, b.pre, n, md, sel);
                check_codes(&b, n, DS, sel);
                const int64_t nnz = b.row_ptr[n];
                if (ac->arch == HUSAI_ARCH_TOPK && ac->relu)
                    for (int r = 0; r < n; r++)
                        relu_short_rows += b.row_ptr[r + 1] - b.row_ptr[r] < KK;
                if (ac->arch == HUSAI_ARCH_BATCHTOPK && md == HUSAI_SAE_TRAIN) {
                    float lo = INFINITY;
                    for (int64_t a = 0; a < nnz; a++)
                        lo = b.val[a] < lo ? b.val[a] : lo;
                    assert_true(b.batch_min == (nnz ? lo : 0.0f));
                    batch_short += nnz < n * KK;
                    for (int r = 0; r < n; r++)
                        batch_uneven += b.row_ptr[r + 1] - b.row_ptr[r] != KK;
                }
            }
            husai_sae_batch_free(&b);
            husai_sae_free(&m);
            free(sel);
            free(x);
        }
    print_message("topk+relu rows with < k codes: %d; batchtopk rows with != k codes: %d, batches with < n*k "
                  "codes: %d\n",
                  relu_short_rows, batch_uneven, batch_short);
    assert_true(relu_short_rows > 0); /* the ReLU drop was exercised */
    assert_true(batch_uneven > 0);    /* batchtopk really selects over the batch, not per row */
    assert_true(batch_short > 0);     /* and the "fewer than n*k positive" branch was reached */
}

/* Encodes n rows with W_enc = 0, so every row's pre-activations are b_enc (exact ties across rows). */
static void encode_bias_rows(husai_sae *m, husai_sae_batch *b, int n, husai_sae_mode mode) {
    float *x = random_data((size_t)n * m->d_model, 3);
    assert_int_equal(husai_sae_encode(m, x, n, mode, b), HUSAI_OK);
    free(x);
}

static void test_batchtopk_ties_and_hand_cases(void **state) {
    (void)state;
    /* hand-worked: d_sae 4, k 1, 3 rows of pre = (1, 2, 2, 0): the 3 largest positive values over the
     * batch are the 2s, ties to the lower flat index: (0,1), (0,2), (1,1); row 2 gets nothing. */
    {
        const husai_sae_spec spec = make_spec(HUSAI_ARCH_BATCHTOPK, 2, 4, 1, 0, 0, 1, 1e-3);
        husai_sae m;
        husai_sae_batch b;
        assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
        const float be[4] = {1.0f, 2.0f, 2.0f, 0.0f};
        memcpy(m.b_enc, be, sizeof be);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, 3), HUSAI_OK);
        encode_bias_rows(&m, &b, 3, HUSAI_SAE_TRAIN);
        const int64_t rp[4] = {0, 2, 3, 3};
        const int32_t id[3] = {1, 2, 1};
        assert_memory_equal(b.row_ptr, rp, sizeof rp);
        assert_memory_equal(b.idx, id, sizeof id);
        assert_true(b.batch_min == 2.0f);
        /* fewer positive values than n*k: b_enc = (-1, 0.5, 0, -2), k = 2 -> K = 6 but only 3 positive */
        const float be2[4] = {-1.0f, 0.5f, 0.0f, -2.0f};
        memcpy(m.b_enc, be2, sizeof be2);
        husai_sae_free(&m);
        husai_sae_batch_free(&b);
        const husai_sae_spec spec2 = make_spec(HUSAI_ARCH_BATCHTOPK, 2, 4, 2, 0, 0, 1, 1e-3);
        assert_int_equal(husai_sae_alloc(&m, &spec2), HUSAI_OK);
        memcpy(m.b_enc, be2, sizeof be2);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, 3), HUSAI_OK);
        encode_bias_rows(&m, &b, 3, HUSAI_SAE_TRAIN);
        const int64_t rp2[4] = {0, 1, 2, 3};
        assert_memory_equal(b.row_ptr, rp2, sizeof rp2);
        for (int a = 0; a < 3; a++)
            assert_int_equal(b.idx[a], 1);
        assert_true(b.batch_min == 0.5f);
        /* nothing positive: no codes, batch_min 0 */
        for (int j = 0; j < 4; j++)
            m.b_enc[j] = -1.0f - (float)j;
        encode_bias_rows(&m, &b, 3, HUSAI_SAE_TRAIN);
        assert_int_equal(b.row_ptr[3], 0);
        assert_true(b.batch_min == 0.0f);
        /* EVAL at threshold 0.25 on (-1, 0.5, 0, -2): latent 1 in every row */
        memcpy(m.b_enc, be2, sizeof be2);
        m.threshold = 0.25;
        encode_bias_rows(&m, &b, 3, HUSAI_SAE_EVAL);
        assert_memory_equal(b.row_ptr, rp2, sizeof rp2);
        m.threshold = 0.5; /* strict: pre == threshold does not fire */
        encode_bias_rows(&m, &b, 3, HUSAI_SAE_EVAL);
        assert_int_equal(b.row_ptr[3], 0);
        husai_sae_free(&m);
        husai_sae_batch_free(&b);
    }
    /* random tie-heavy batches: identical rows with b_enc drawn from {-1, 0, 1, 2}, against the naive rule */
    husai_rng r;
    husai_rng_init(&r, 5, "test-arch-ties", 0);
    for (int trial = 0; trial < 40; trial++) {
        const int n = 1 + (int)husai_rng_below(&r, 6), k = 1 + (int)husai_rng_below(&r, 5);
        const husai_sae_spec spec = make_spec(HUSAI_ARCH_BATCHTOPK, 3, 9, k, 0, 0, 1, 1e-3);
        husai_sae m;
        husai_sae_batch b;
        assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
        for (int j = 0; j < 9; j++)
            m.b_enc[j] = (float)((int)husai_rng_below(&r, 4) - 1);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        unsigned char *sel = xmalloc((size_t)n * 9);
        encode_bias_rows(&m, &b, n, HUSAI_SAE_TRAIN);
        naive_select(&m, b.pre, n, HUSAI_SAE_TRAIN, sel);
        check_codes(&b, n, 9, sel);
        free(sel);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

static void test_matryoshka_prefixes(void **state) {
    (void)state;
    const struct {
        int d_sae, P;
        int expect[HUSAI_MAX_PREFIXES];
    } ok[] = {
        {16, 1, {16}},       {16, 3, {4, 8, 16}}, {16, 5, {1, 2, 4, 8, 16}},
        {12, 3, {3, 6, 12}}, {7, 3, {1, 3, 7}},   {256, 8, {2, 4, 8, 16, 32, 64, 128, 256}},
    };
    for (size_t c = 0; c < sizeof ok / sizeof ok[0]; c++) {
        const husai_sae_spec spec = make_spec(HUSAI_ARCH_MATRYOSHKA, 4, ok[c].d_sae, 1, 0, 0, ok[c].P, 1e-3);
        husai_sae m;
        assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
        for (int l = 0; l < ok[c].P; l++) {
            /* d_sae / 2^(P-1-l), computed here by repeated halving */
            int e = ok[c].d_sae;
            for (int h = 0; h < ok[c].P - 1 - l; h++)
                e /= 2;
            assert_int_equal(e, ok[c].expect[l]);
            assert_int_equal(m.prefix[l], e);
        }
        husai_sae_free(&m);
    }
    const struct { int d_sae, P; } bad[] = {{4, 4}, {16, 9}, {16, 0}, {1, 2}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        const husai_sae_spec spec =
            make_spec(HUSAI_ARCH_MATRYOSHKA, 4, bad[c].d_sae, 1, 0, 0, bad[c].P, 1e-3);
        husai_sae m;
        assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_ERR_ARG);
    }
    /* other specs' checks */
    husai_sae_spec s = make_spec(HUSAI_ARCH_JUMPRELU, 4, 8, 2, 0, 0, 1, 0.0);
    assert_int_equal(husai_sae_spec_check(&s), HUSAI_ERR_ARG);
    s.bandwidth = NAN;
    assert_int_equal(husai_sae_spec_check(&s), HUSAI_ERR_ARG);
    s.bandwidth = 0.01;
    assert_int_equal(husai_sae_spec_check(&s), HUSAI_OK);
    s.arch = (husai_arch)HUSAI_ARCH_COUNT;
    assert_int_equal(husai_sae_spec_check(&s), HUSAI_ERR_ARG);
    /* names round-trip through the parser */
    for (int a = 0; a < HUSAI_ARCH_COUNT; a++)
        assert_int_equal(husai_arch_parse(husai_arch_name(a)), a);
    assert_int_equal(husai_arch_parse("TopK"), -1);
    assert_string_equal(husai_arch_name(HUSAI_ARCH_COUNT), "?");
    /* parameter layout: W_enc | b_enc | W_dec | b_dec | log_theta */
    s = make_spec(HUSAI_ARCH_JUMPRELU, 4, 8, 2, 0, 1, 1, 0.01);
    husai_sae m;
    assert_int_equal(husai_sae_alloc(&m, &s), HUSAI_OK);
    assert_int_equal(m.n_params, 2 * 32 + 8 + 4 + 8);
    assert_ptr_equal(m.b_enc, m.params + 32);
    assert_ptr_equal(m.W_dec, m.params + 40);
    assert_ptr_equal(m.b_dec, m.params + 72);
    assert_ptr_equal(m.log_theta, m.params + 76);
    husai_sae_free(&m);
}

/* Exact boundary values (W_enc = 0, so pre = b_enc in every row): ReLU drops exact zeros, thresholds
 * are strict. */
static void test_exact_boundaries(void **state) {
    (void)state;
    const float be[6] = {0.0f, -1.0f, 2.0f, 0.0f, 0.5f, -3.0f};
    const struct {
        husai_arch arch;
        int relu, n_codes, codes[4];
    } cases[] = {
        {HUSAI_ARCH_TOPK, 0, 3, {0, 2, 4}},    /* the zero at 0 beats the zero at 3 (lower index) */
        {HUSAI_ARCH_TOPK, 1, 2, {2, 4}},       /* ReLU: the picked exact zero is dropped */
        {HUSAI_ARCH_MATRYOSHKA, 1, 2, {2, 4}}, /* same rule */
        {HUSAI_ARCH_RELU_L1, 0, 2, {2, 4}},    /* pre > 0, strictly */
        {HUSAI_ARCH_BATCHTOPK, 0, 2, {2, 4}},  /* K = 6 over 2 rows, but only 2 positive per row */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const husai_sae_spec spec = make_spec(cases[c].arch, 2, 6, 3, cases[c].relu, 0, 2, 1e-3);
        husai_sae m;
        husai_sae_batch b;
        assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
        memcpy(m.b_enc, be, sizeof be);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, 2), HUSAI_OK);
        encode_bias_rows(&m, &b, 2, HUSAI_SAE_TRAIN);
        for (int r = 0; r < 2; r++) {
            assert_int_equal(b.row_ptr[r + 1] - b.row_ptr[r], cases[c].n_codes);
            for (int a = 0; a < cases[c].n_codes; a++)
                assert_int_equal(b.idx[b.row_ptr[r] + a], cases[c].codes[a]);
        }
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
    /* jumprelu: log_theta 0 gives theta exactly 1; pre == 1 does not fire */
    const husai_sae_spec spec = make_spec(HUSAI_ARCH_JUMPRELU, 2, 6, 3, 0, 0, 1, 1e-3);
    husai_sae m;
    husai_sae_batch b;
    assert_int_equal(husai_sae_alloc(&m, &spec), HUSAI_OK);
    const float bj[6] = {1.0f, 1.5f, 0.99f, 3.0f, -1.0f, 1.0f};
    memcpy(m.b_enc, bj, sizeof bj);
    assert_int_equal(husai_sae_batch_alloc(&b, &m, 2), HUSAI_OK);
    encode_bias_rows(&m, &b, 1, HUSAI_SAE_TRAIN);
    assert_int_equal(b.row_ptr[1], 2);
    assert_int_equal(b.idx[0], 1);
    assert_int_equal(b.idx[1], 3);
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
}

/* ---------- forward loss parts ---------- */

static void test_forward_losses_vs_naive(void **state) {
    (void)state;
    const int n = NR, d = DM, s = DS;
    for (size_t c = 0; c < N_ENCODE_CASES; c++) {
        const arch_case *ac = &ENCODE_CASES[c];
        const int P = 3;
        const husai_sae_spec spec = make_spec(ac->arch, d, s, KK, ac->relu, ac->decoder_bias, P, 0.05);
        husai_sae m;
        husai_sae_batch b;
        random_model(&m, &spec, 500 + c, ac->shift);
        float *x = random_data((size_t)n * d, 77 + c);
        unsigned char *sel = xmalloc((size_t)n * s);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        const double coeff = 0.37;
        husai_sae_loss L;
        assert_int_equal(husai_sae_forward(&m, x, n, HUSAI_SAE_TRAIN, coeff, &b, &L), HUSAI_OK);
        naive_select(&m, b.pre, n, HUSAI_SAE_TRAIN, sel);
        check_codes(&b, n, s, sel);
        /* naive dense decode, per matryoshka prefix when it applies */
        const int mat = ac->arch == HUSAI_ARCH_MATRYOSHKA, levels = mat ? P : 1;
        double sse = 0.0, sse_levels = 0.0, nnz = 0.0, l1 = 0.0, xhat_err = 0.0;
        for (int r = 0; r < n; r++) {
            for (int l = 0; l < levels; l++) {
                const int end = mat ? m.prefix[l] : s;
                for (int i = 0; i < d; i++) {
                    double xh = m.b_dec ? m.b_dec[i] : 0.0;
                    for (int j = 0; j < end; j++)
                        if (sel[(size_t)r * s + j])
                            xh += (double)b.pre[(size_t)r * s + j] * m.W_dec[(size_t)j * d + i];
                    const double e = xh - x[(size_t)r * d + i];
                    sse_levels += e * e;
                    if (l == levels - 1) {
                        sse += e * e;
                        const double de = fabs(xh - b.x_hat[(size_t)r * d + i]);
                        xhat_err = de > xhat_err ? de : xhat_err;
                    }
                }
            }
            for (int j = 0; j < s; j++)
                if (sel[(size_t)r * s + j]) {
                    nnz += 1.0;
                    l1 += b.pre[(size_t)r * s + j];
                }
        }
        const double mse = sse / (n * d), recon = sse_levels / ((double)n * d * levels), l0 = nnz / n;
        const double sparsity = ac->arch == HUSAI_ARCH_RELU_L1    ? l1 / n
                                : ac->arch == HUSAI_ARCH_JUMPRELU ? l0
                                                                  : 0.0;
        /* x_hat is a float sum of <= d_sae O(1) terms: 1e-5 absolute; losses: 1e-5 relative */
        assert_true(xhat_err < 1e-5);
        assert_true(fabs(L.mse - mse) <= 1e-5 * mse);
        assert_true(fabs(L.recon - recon) <= 1e-5 * recon);
        assert_true(L.l0 == l0);
        assert_true(fabs(L.sparsity - sparsity) <= 1e-6 * (1.0 + sparsity));
        assert_true(fabs(L.total - (recon + coeff * sparsity)) <= 1e-5 * (recon + coeff * sparsity));
        if (mat) assert_true(fabs(L.recon - L.mse) > 1e-3 * L.mse); /* the prefix average is not the mse */
        free(sel);
        free(x);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

/* ---------- 2, 3. finite-difference gradients ---------- */

/* jumprelu: sets theta so that several (row, latent) pairs sit at +-0.02 of their threshold, inside a
 * straight-through window of width 0.1, on both sides (active and inactive). */
static void place_thetas_near_pre(husai_sae *m, const float *x, int n, husai_sae_batch *b) {
    const int s = m->d_sae;
    assert_int_equal(husai_sae_encode(m, x, n, HUSAI_SAE_TRAIN, b), HUSAI_OK); /* pre does not use theta */
    for (int j = 0; j < s; j += 2) {
        int best = 0;
        for (int r = 1; r < n; r++)
            if (b->pre[(size_t)r * s + j] > b->pre[(size_t)best * s + j]) best = r;
        const float p = b->pre[(size_t)best * s + j];
        if (p < 0.1f) continue;
        m->log_theta[j] = logf(p + ((j / 2) % 2 ? 0.02f : -0.02f));
    }
}

typedef struct {
    husai_sae *m;
    const float *x;
    int n;
    double coeff;
    husai_sae_batch *b;
    int64_t *rp0;
    int32_t *idx0;
} fd_ctx;

static double fd_forward(const fd_ctx *c, int *same) {
    husai_sae_loss L;
    assert_int_equal(husai_sae_forward(c->m, c->x, c->n, HUSAI_SAE_TRAIN, c->coeff, c->b, &L), HUSAI_OK);
    *same = !memcmp(c->b->row_ptr, c->rp0, (size_t)(c->n + 1) * sizeof(int64_t)) &&
            !memcmp(c->b->idx, c->idx0, (size_t)c->rp0[c->n] * sizeof(int32_t));
    return L.total;
}

/* Central difference of loss.total w.r.t. params[p]: the largest step eps / 4^t whose two perturbations
 * both leave the selection as it was (asserted: never a difference across a selection change). */
static double fd_grad(const fd_ctx *c, size_t p, double eps, double *eps_used) {
    float *q = c->m->params + p;
    const float orig = *q;
    for (int t = 0; t < 6; t++, eps *= 0.25) {
        const float up = (float)((double)orig + eps), dn = (float)((double)orig - eps);
        int s1, s2;
        *q = up;
        const double lu = fd_forward(c, &s1);
        *q = dn;
        const double ld = fd_forward(c, &s2);
        *q = orig;
        if (s1 && s2) {
            *eps_used = eps;
            return (lu - ld) / ((double)up - (double)dn); /* the float step actually taken */
        }
    }
    fail_msg("param %zu: the selection changes even for a step of %g", p, eps);
    *eps_used = eps;
    return NAN;
}

typedef struct {
    const char *name;
    husai_arch arch;
    int relu, decoder_bias;
    double coeff, shift;
} fd_case;

/* Checks every gradient entry of husai_sae_backward (log_theta excepted: its gradient is a
 * straight-through estimate, checked separately) against central differences of loss.total.
 * With the selection fixed the loss is a quadratic in any single parameter, so central differences
 * have no truncation error; what is left is float rounding of x_hat inside the double loss, ~1e-8 of
 * the loss, i.e. ~1e-5 absolute in a quotient with step 1e-3. Steps: 1e-2 for W_dec (it cannot change
 * the selection), 1e-3 (shrunk if the selection moves) for the encoder and b_dec. Tolerance
 * |fd - g| <= 2e-3 |g| + 2e-4 max|g| (scaled up by 1e-3/step for shrunk steps). */
static void fd_check(const fd_case *fc) {
    const int n = NR, d = DM, s = DS;
    const husai_sae_spec spec = make_spec(fc->arch, d, s, KK, fc->relu, fc->decoder_bias, 3, 0.1);
    husai_sae m;
    husai_sae_batch b;
    random_model(&m, &spec, 900 + (uint64_t)fc->arch * 10 + (uint64_t)fc->relu, fc->shift);
    float *x = random_data((size_t)n * d, 4242);
    assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
    if (m.log_theta) place_thetas_near_pre(&m, x, n, &b);
    husai_sae_loss L;
    assert_int_equal(husai_sae_forward(&m, x, n, HUSAI_SAE_TRAIN, fc->coeff, &b, &L), HUSAI_OK);
    const int64_t nnz = b.row_ptr[n];
    fd_ctx c = {.m = &m, .x = x, .n = n, .coeff = fc->coeff, .b = &b};
    c.rp0 = xmalloc((size_t)(n + 1) * sizeof(int64_t));
    c.idx0 = xmalloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
    memcpy(c.rp0, b.row_ptr, (size_t)(n + 1) * sizeof(int64_t));
    memcpy(c.idx0, b.idx, (size_t)nnz * sizeof(int32_t));
    float *grad = xmalloc(m.n_params * sizeof(float));
    husai_sae_backward(&m, x, fc->coeff, &b, grad);
    /* the gradient is ADDED: a second forward + backward into a buffer holding 0.5 gives 0.5 + grad (up to
     * the rounding of a few float additions onto 0.5) */
    float *grad2 = xmalloc(m.n_params * sizeof(float));
    for (size_t p = 0; p < m.n_params; p++)
        grad2[p] = 0.5f;
    assert_int_equal(husai_sae_forward(&m, x, n, HUSAI_SAE_TRAIN, fc->coeff, &b, &L), HUSAI_OK);
    husai_sae_backward(&m, x, fc->coeff, &b, grad2);
    for (size_t p = 0; p < m.n_params; p++)
        assert_true(fabs((double)grad2[p] - 0.5 - grad[p]) <= 1e-6);

    const size_t w = (size_t)s * d, n_check = m.log_theta ? m.n_params - (size_t)s : m.n_params;
    double gmax = 0.0;
    for (size_t p = 0; p < n_check; p++)
        gmax = fabs(grad[p]) > gmax ? fabs(grad[p]) : gmax;
    double worst = 0.0, min_eps = 1.0;
    int nonzero = 0, nonzero_bdec = 0;
    for (size_t p = 0; p < n_check; p++) {
        const int is_wdec = p >= w + s && p < 2 * w + s;
        double eps_used = 0.0;
        const double fd = fd_grad(&c, p, is_wdec ? 1e-2 : 1e-3, &eps_used);
        min_eps = eps_used < min_eps ? eps_used : min_eps;
        const double g = grad[p];
        const double tol = 2e-3 * fabs(g) + 2e-4 * gmax * (is_wdec ? 1.0 : 1e-3 / eps_used);
        const double err = fabs(fd - g);
        worst = err / tol > worst ? err / tol : worst;
        nonzero += g != 0.0;
        nonzero_bdec += p >= 2 * w + s && g != 0.0;
        if (!(err <= tol))
            fail_msg("%s: param %zu analytic %.8g finite-difference %.8g (err %.3g > tol %.3g, step %g)",
                     fc->name, p, g, fd, err, tol, eps_used);
    }
    print_message("%-24s %zu params, %d non-zero, worst err/tol %.3f, smallest step %.3g, loss %.4g\n",
                  fc->name, n_check, nonzero, worst, min_eps, L.total);
    assert_true(nonzero > (int)(n_check / 4)); /* the active paths are exercised */
    if (m.b_dec) assert_int_equal(nonzero_bdec, d);
    free(grad);
    free(grad2);
    free(c.rp0);
    free(c.idx0);
    free(x);
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
}

static void test_fd_topk_decoder_bias(void **state) {
    (void)state;
    const fd_case c[] = {{"topk signed + b_dec", HUSAI_ARCH_TOPK, 0, 1, 0.0, 0.0},
                         {"topk relu + b_dec", HUSAI_ARCH_TOPK, 1, 1, 0.0, -0.6}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        fd_check(&c[i]);
}

static void test_fd_relu_l1(void **state) {
    (void)state;
    const fd_case c[] = {{"relu_l1 coeff 0.05", HUSAI_ARCH_RELU_L1, 0, 0, 0.05, 0.0},
                         {"relu_l1 coeff 0.3 + b_dec", HUSAI_ARCH_RELU_L1, 0, 1, 0.3, 0.0}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        fd_check(&c[i]);
}

static void test_fd_matryoshka(void **state) {
    (void)state;
    const fd_case c[] = {{"matryoshka signed", HUSAI_ARCH_MATRYOSHKA, 0, 0, 0.0, 0.0},
                         {"matryoshka relu + b_dec", HUSAI_ARCH_MATRYOSHKA, 1, 1, 0.0, -0.4}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        fd_check(&c[i]);
}

static void test_fd_batchtopk(void **state) {
    (void)state;
    const fd_case c[] = {{"batchtopk", HUSAI_ARCH_BATCHTOPK, 0, 0, 0.0, 0.0},
                         {"batchtopk + b_dec", HUSAI_ARCH_BATCHTOPK, 0, 1, 0.0, -0.3}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        fd_check(&c[i]);
}

static void test_fd_jumprelu(void **state) {
    (void)state;
    const fd_case c[] = {{"jumprelu coeff 0.3 + b_dec", HUSAI_ARCH_JUMPRELU, 0, 1, 0.3, 0.0},
                         {"jumprelu coeff -0.2", HUSAI_ARCH_JUMPRELU, 0, 0, -0.2, 0.0}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        fd_check(&c[i]);
}

/* jumprelu's log_theta gradient against the straight-through estimator written out naively. */
static void test_jumprelu_theta_ste(void **state) {
    (void)state;
    const int n = NR, d = DM, s = DS;
    const double bw = 0.1;
    const double coeffs[] = {0.3, -0.2, 0.0};
    for (int db = 0; db < 2; db++)
        for (size_t ci = 0; ci < sizeof coeffs / sizeof coeffs[0]; ci++) {
            const double coeff = coeffs[ci];
            const husai_sae_spec spec = make_spec(HUSAI_ARCH_JUMPRELU, d, s, KK, 0, db, 1, bw);
            husai_sae m;
            husai_sae_batch b;
            random_model(&m, &spec, 31 + (uint64_t)db, 0.0);
            float *x = random_data((size_t)n * d, 808);
            assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
            place_thetas_near_pre(&m, x, n, &b);
            husai_sae_loss L;
            assert_int_equal(husai_sae_forward(&m, x, n, HUSAI_SAE_TRAIN, coeff, &b, &L), HUSAI_OK);
            float *grad = xmalloc(m.n_params * sizeof(float));
            husai_sae_backward(&m, x, coeff, &b, grad);
            const float *g_lt = grad + (m.log_theta - m.params);
            double *ref = xmalloc((size_t)s * sizeof(double));
            int in_window_on = 0, in_window_off = 0;
            for (int r = 0; r < n; r++) {
                const float *pr = b.pre + (size_t)r * s, *xr = x + (size_t)r * d;
                double G[DM];
                for (int i = 0; i < d; i++) {
                    double xh = m.b_dec ? m.b_dec[i] : 0.0;
                    for (int j = 0; j < s; j++)
                        if (pr[j] > expf(m.log_theta[j])) xh += (double)pr[j] * m.W_dec[(size_t)j * d + i];
                    G[i] = 2.0 / ((double)n * d) * (xh - xr[i]);
                }
                for (int j = 0; j < s; j++) {
                    const double th = exp((double)m.log_theta[j]);
                    if (!(fabs((double)pr[j] - th) < bw / 2)) continue;
                    if (pr[j] > expf(m.log_theta[j]))
                        in_window_on++;
                    else
                        in_window_off++;
                    double dot = 0.0;
                    for (int i = 0; i < d; i++)
                        dot += G[i] * m.W_dec[(size_t)j * d + i];
                    const double dtheta = dot * (-th / bw) + coeff / n * (-1.0 / bw);
                    ref[j] += th * dtheta; /* dL/dlog_theta = theta dL/dtheta */
                }
            }
            double rmax = 0.0;
            int nonzero = 0;
            for (int j = 0; j < s; j++) {
                rmax = fabs(ref[j]) > rmax ? fabs(ref[j]) : rmax;
                nonzero += ref[j] != 0.0;
            }
            for (int j = 0; j < s; j++) {
                /* float accumulation of O(1/bw)-amplified terms: 1e-4 relative plus 1e-5 of the largest */
                const double tol = 1e-4 * fabs(ref[j]) + 1e-5 * rmax;
                if (!(fabs(g_lt[j] - ref[j]) <= tol))
                    fail_msg("coeff %g b_dec %d: dL/dlog_theta[%d] = %.8g, naive STE %.8g", coeff, db, j,
                             (double)g_lt[j], ref[j]);
                if (ref[j] == 0.0) assert_true(g_lt[j] == 0.0f); /* outside every window: exactly 0 */
            }
            assert_true(in_window_on > 0 && in_window_off > 0);
            assert_true(nonzero >= 4);
            free(ref);
            free(grad);
            free(x);
            husai_sae_batch_free(&b);
            husai_sae_free(&m);
        }
}

/* ---------- 4. AuxK ---------- */

/* The AuxK loss written out: for each row, the k_aux largest of the dead latents' pre-activations (ReLU'd
 * if relu; ties to the lower latent), their decoder rows reconstruct e = x - x_hat0 (x_hat0 frozen);
 * returns the mean squared error over n * d and records each row's picked latents in picks (n, ka). */
static double naive_auxk(const husai_sae *m, const float *x, const double *xhat0, int n,
                         const unsigned char *dead, int k_aux, int relu, int *picks) {
    const int d = m->d_model, s = m->d_sae;
    int n_dead = 0;
    for (int j = 0; j < s; j++)
        n_dead += dead[j] != 0;
    const int ka = k_aux < n_dead ? k_aux : n_dead;
    double *cand = xmalloc((size_t)s * sizeof(double));
    unsigned char *taken = xmalloc((size_t)s);
    double sse = 0.0;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        for (int j = 0; j < s; j++) {
            const double p = naive_pre(m, xr, j);
            cand[j] = relu && !(p > 0.0) ? 0.0 : p;
            taken[j] = 0;
        }
        for (int a = 0; a < ka; a++) {
            int best = -1;
            for (int j = 0; j < s; j++)
                if (dead[j] && !taken[j] && (best < 0 || cand[j] > cand[best])) best = j;
            assert_true(best >= 0);
            taken[best] = 1;
            picks[(size_t)r * ka + a] = best;
        }
        for (int i = 0; i < d; i++) {
            double e_hat = 0.0;
            for (int j = 0; j < s; j++)
                if (taken[j]) e_hat += cand[j] * m->W_dec[(size_t)j * d + i];
            const double diff = e_hat - ((double)xr[i] - xhat0[(size_t)r * d + i]);
            sse += diff * diff;
        }
    }
    free(cand);
    free(taken);
    return sse / ((double)n * d);
}

static void test_auxk_vs_naive(void **state) {
    (void)state;
    const int n = NR, d = DM, s = DS;
    const struct {
        husai_arch arch;
        int relu, decoder_bias, k_aux;
        double shift;
    } cases[] = {
        {HUSAI_ARCH_TOPK, 0, 1, 2, 0.0},      /* k_aux < dead */
        {HUSAI_ARCH_TOPK, 0, 1, 8, 0.0},      /* k_aux > dead: all dead latents */
        {HUSAI_ARCH_TOPK, 1, 0, 3, -0.5},     /* ReLU'd candidates */
        {HUSAI_ARCH_BATCHTOPK, 0, 0, 3, 0.0}, /* batchtopk codes are ReLU'd */
        {HUSAI_ARCH_RELU_L1, 0, 1, 8, -0.7},  /* fewer positive than k_aux: ReLU'd zeros picked */
    };
    unsigned char dead[DS] = {0};
    const int dead_ids[5] = {1, 4, 7, 10, 13};
    for (int a = 0; a < 5; a++)
        dead[dead_ids[a]] = 1;
    const double coeff = 0.75;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const husai_sae_spec spec =
            make_spec(cases[c].arch, d, s, KK, cases[c].relu, cases[c].decoder_bias, 1, 1e-3);
        const int relu = cases[c].relu || cases[c].arch != HUSAI_ARCH_TOPK;
        husai_sae m;
        husai_sae_batch b;
        random_model(&m, &spec, 60 + c, cases[c].shift);
        float *x = random_data((size_t)n * d, 61 + c);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        husai_sae_loss L;
        assert_int_equal(husai_sae_forward(&m, x, n, HUSAI_SAE_TRAIN, 0.0, &b, &L), HUSAI_OK);
        double *xhat0 = xmalloc((size_t)n * d * sizeof(double));
        for (size_t i = 0; i < (size_t)n * d; i++)
            xhat0[i] = b.x_hat[i];
        const int ka = cases[c].k_aux < 5 ? cases[c].k_aux : 5;
        int *picks0 = xmalloc((size_t)n * ka * sizeof(int)), *picks = xmalloc((size_t)n * ka * sizeof(int));
        const double ref = naive_auxk(&m, x, xhat0, n, dead, cases[c].k_aux, relu, picks0);
        float *grad = xmalloc(m.n_params * sizeof(float));
        const double mse = husai_sae_auxk(&m, x, dead, cases[c].k_aux, coeff, &b, grad);
        assert_true(fabs(mse - ref) <= 1e-5 * ref);
        int zero_picks = 0;
        for (int r = 0; r < n; r++)
            for (int a = 0; a < ka; a++)
                zero_picks += naive_pre(&m, x + (size_t)r * d, picks0[(size_t)r * ka + a]) <= 0.0;
        /* d(coeff * aux)/dp by central differences of the naive loss (double; exact for a quadratic) */
        double gmax = 0.0;
        for (size_t p = 0; p < m.n_params; p++)
            gmax = fabs(grad[p]) > gmax ? fabs(grad[p]) : gmax;
        int nonzero = 0;
        for (size_t p = 0; p < m.n_params; p++) {
            float *q = m.params + p;
            const float orig = *q;
            double eps = 1e-3, fd = NAN;
            for (int t = 0; t < 6 && isnan(fd); t++, eps *= 0.25) {
                const float up = (float)((double)orig + eps), dn = (float)((double)orig - eps);
                *q = up;
                const double lu = naive_auxk(&m, x, xhat0, n, dead, cases[c].k_aux, relu, picks);
                const int same_up = !memcmp(picks, picks0, (size_t)n * ka * sizeof(int));
                *q = dn;
                const double ld = naive_auxk(&m, x, xhat0, n, dead, cases[c].k_aux, relu, picks);
                const int same_dn = !memcmp(picks, picks0, (size_t)n * ka * sizeof(int));
                *q = orig;
                if (same_up && same_dn) fd = coeff * (lu - ld) / ((double)up - (double)dn);
            }
            if (isnan(fd)) fail_msg("auxk case %zu: param %zu changes the aux selection at every step", c, p);
            /* the library's gradient is float: 1e-4 relative plus 1e-5 of the largest */
            const double tol = 1e-4 * fabs(grad[p]) + 1e-5 * gmax;
            if (!(fabs(fd - grad[p]) <= tol))
                fail_msg("auxk case %zu: param %zu analytic %.8g finite-difference %.8g", c, p,
                         (double)grad[p], fd);
            nonzero += grad[p] != 0.0f;
        }
        print_message("auxk case %zu: mse %.5g, %d of %zu grads non-zero, %d ReLU'd zero picks\n", c, mse,
                      nonzero, m.n_params, zero_picks);
        assert_true(nonzero > 0);
        if (cases[c].arch == HUSAI_ARCH_RELU_L1) assert_true(zero_picks > 0);
        /* no dead latents, or k_aux 0: no loss and no gradient */
        unsigned char none[DS] = {0};
        memset(grad, 0, m.n_params * sizeof(float));
        assert_true(husai_sae_auxk(&m, x, none, 4, coeff, &b, grad) == 0.0);
        assert_true(husai_sae_auxk(&m, x, dead, 0, coeff, &b, grad) == 0.0);
        for (size_t p = 0; p < m.n_params; p++)
            assert_true(grad[p] == 0.0f);
        free(grad);
        free(picks);
        free(picks0);
        free(xhat0);
        free(x);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

/* ---------- 5. trainer ---------- */

enum { T_ROWS = 384, T_DM = 8, T_ATOMS = 24 };

/* Rows = 0.3 + the sum of 2 random unit atoms with coefficients in [0.5, 2) (a mean for b_dec to learn). */
static float *sparse_data(uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, "test-arch-sparse", 0);
    double atoms[T_ATOMS][T_DM];
    for (int a = 0; a < T_ATOMS; a++) {
        double ss = 0.0;
        for (int i = 0; i < T_DM; i++) {
            atoms[a][i] = husai_rng_normal(&r);
            ss += atoms[a][i] * atoms[a][i];
        }
        for (int i = 0; i < T_DM; i++)
            atoms[a][i] /= sqrt(ss);
    }
    float *X = xmalloc((size_t)T_ROWS * T_DM * sizeof(float));
    for (int row = 0; row < T_ROWS; row++) {
        const int a1 = (int)husai_rng_below(&r, T_ATOMS);
        const int a2 = (a1 + 1 + (int)husai_rng_below(&r, T_ATOMS - 1)) % T_ATOMS;
        const double c1 = 0.5 + 1.5 * husai_rng_uniform(&r), c2 = 0.5 + 1.5 * husai_rng_uniform(&r);
        for (int i = 0; i < T_DM; i++)
            X[(size_t)row * T_DM + i] = (float)(0.3 + c1 * atoms[a1][i] + c2 * atoms[a2][i]);
    }
    return X;
}

static husai_train_opts arch_opts(husai_arch arch) {
    husai_train_opts o = husai_train_defaults();
    o.arch = arch;
    o.d_sae = 16;
    o.k = 3;
    o.epochs = 4;
    o.batch_size = 32;
    o.lr = 3e-3;
    o.seed = 11;
    o.n_prefixes = 3;
    o.bandwidth = 0.05;
    return o;
}

/* Mean L0 of the model over all rows (EVAL mode). */
static double data_l0(const husai_sae *m, const float *X) {
    husai_sae_batch b;
    assert_int_equal(husai_sae_batch_alloc(&b, m, T_ROWS), HUSAI_OK);
    assert_int_equal(husai_sae_encode(m, X, T_ROWS, HUSAI_SAE_EVAL, &b), HUSAI_OK);
    const double l0 = (double)b.row_ptr[T_ROWS] / T_ROWS;
    husai_sae_batch_free(&b);
    return l0;
}

static void finish(husai_trainer *t) {
    while (!husai_trainer_done(t))
        assert_int_equal(husai_trainer_step(t), HUSAI_OK);
}

static void test_trainer_resume_every_arch(void **state) {
    (void)state;
    float *X = sparse_data(7);
    char path[64];
    snprintf(path, sizeof path, "/tmp/husai_arch_ckpt_XXXXXX");
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct {
        const char *name;
        husai_train_opts o;
    } cases[6];
    cases[0].name = "topk";
    cases[0].o = arch_opts(HUSAI_ARCH_TOPK);
    cases[1].name = "topk relu b_dec auxk proj";
    cases[1].o = arch_opts(HUSAI_ARCH_TOPK);
    cases[1].o.relu = 1;
    cases[1].o.decoder_bias = 1;
    cases[1].o.d_sae = 32; /* with dead_after 48 rows, a few latents are dead at most steps */
    cases[1].o.aux_k = 4;
    cases[1].o.aux_coeff = 0.5;
    cases[1].o.dead_after = 48;
    cases[1].o.grad_projection = 1;
    cases[2].name = "batchtopk b_dec";
    cases[2].o = arch_opts(HUSAI_ARCH_BATCHTOPK);
    cases[2].o.decoder_bias = 1;
    cases[3].name = "jumprelu adaptive";
    cases[3].o = arch_opts(HUSAI_ARCH_JUMPRELU);
    cases[3].o.decoder_bias = 1;
    cases[4].name = "relu_l1 adaptive";
    cases[4].o = arch_opts(HUSAI_ARCH_RELU_L1);
    cases[5].name = "matryoshka relu";
    cases[5].o = arch_opts(HUSAI_ARCH_MATRYOSHKA);
    cases[5].o.relu = 1;
    const husai_ckpt_id id = {.config_hash = 0x1234, .task = "test_arch"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const husai_train_opts *o = &cases[c].o;
        husai_trainer a, b;
        assert_int_equal(husai_trainer_init(&a, X, T_ROWS, T_DM, o), HUSAI_OK);
        const int64_t per_epoch = (T_ROWS + o->batch_size - 1) / o->batch_size;
        const int64_t stop = per_epoch + per_epoch / 2 + 1; /* mid-way through the second epoch */
        const size_t w = (size_t)o->d_sae * T_DM;
        float *u = xmalloc(w * sizeof(float));
        while (a.steps < stop) {
            memcpy(u, a.model.W_dec, w * sizeof(float));
            assert_int_equal(husai_trainer_step(&a), HUSAI_OK);
            /* t->grad keeps the step's gradient: with grad_projection each decoder row is orthogonal to
             * the (unit) column it was taken at; without, it is not */
            const float *g = a.grad + w + (size_t)o->d_sae;
            double worst = 0.0;
            for (int j = 0; j < o->d_sae; j++) {
                double dot = 0.0, gg = 0.0;
                for (int i = 0; i < T_DM; i++) {
                    dot += (double)g[(size_t)j * T_DM + i] * u[(size_t)j * T_DM + i];
                    gg += (double)g[(size_t)j * T_DM + i] * g[(size_t)j * T_DM + i];
                }
                if (gg > 0.0 && fabs(dot) / sqrt(gg) > worst) worst = fabs(dot) / sqrt(gg);
            }
            if (o->grad_projection)
                assert_true(worst < 1e-5);
            else
                assert_true(worst > 1e-2);
        }
        free(u);
        if (o->aux_k > 0) { /* latents are dead at the checkpoint: the resume needs the firing counters */
            int n_dead = 0;
            for (int j = 0; j < o->d_sae; j++)
                n_dead += a.rows_since[j] >= o->dead_after;
            assert_true(n_dead > 0);
        }
        assert_int_equal(husai_checkpoint_save(&a, &id, path), HUSAI_OK);
        const size_t pos = a.pos;
        const int epoch = a.epoch;
        const double coeff_mid = a.coeff;
        finish(&a);
        assert_int_equal(husai_trainer_init(&b, X, T_ROWS, T_DM, o), HUSAI_OK);
        assert_int_equal(husai_checkpoint_load(&b, &id, path), HUSAI_OK);
        assert_int_equal(b.steps, stop);
        assert_int_equal(b.epoch, epoch);
        assert_int_equal(b.pos, pos);
        assert_true(pos > 0 && pos < T_ROWS);
        assert_true(b.coeff == coeff_mid);
        finish(&b);
        assert_true(isfinite(a.last_epoch_loss) && a.last_epoch_loss > 0.0);
        for (size_t p = 0; p < a.model.n_params; p++)
            assert_true(isfinite(a.model.params[p]));
        assert_int_equal(a.steps, (int64_t)o->epochs * per_epoch);
        assert_int_equal(b.steps, a.steps);
        assert_memory_equal(a.model.params, b.model.params, a.model.n_params * sizeof(float));
        assert_memory_equal(a.adam.m, b.adam.m, a.model.n_params * sizeof(float));
        assert_memory_equal(a.adam.v, b.adam.v, a.model.n_params * sizeof(float));
        assert_true(a.coeff == b.coeff);
        assert_true(a.model.threshold == b.model.threshold);
        assert_true(a.last_epoch_loss == b.last_epoch_loss);
        if (o->arch == HUSAI_ARCH_BATCHTOPK)
            assert_true(a.model.threshold > 0.0 && isfinite(a.model.threshold));
        print_message("%-26s final epoch loss %.5g, L0 %.3g (k %d), coeff %.4g\n", cases[c].name,
                      a.last_epoch_loss, data_l0(&a.model, X), o->k, a.coeff);
        if (o->aux_k > 0) {
            /* AuxK takes part: the same run without it ends elsewhere */
            husai_train_opts no_aux = *o;
            no_aux.aux_k = 0;
            husai_trainer e;
            assert_int_equal(husai_trainer_init(&e, X, T_ROWS, T_DM, &no_aux), HUSAI_OK);
            finish(&e);
            assert_true(memcmp(e.model.params, a.model.params, a.model.n_params * sizeof(float)) != 0);
            husai_trainer_free(&e);
        }
        husai_trainer_free(&a);
        husai_trainer_free(&b);
    }
    unlink(path);
    free(X);
}

/* relu_l1 and jumprelu with sparsity_coeff = 0: from a start far above L0 = k, training moves L0 toward
 * k; a fixed sparsity_coeff is left as given. */
static void test_adaptive_sparsity(void **state) {
    (void)state;
    float *X = sparse_data(8);
    for (int arch = HUSAI_ARCH_JUMPRELU; arch <= HUSAI_ARCH_RELU_L1; arch++) {
        husai_train_opts o = arch_opts((husai_arch)arch);
        o.d_sae = 32;
        o.k = 2;
        o.epochs = 12;
        o.lr = 1e-2;
        husai_trainer t;
        assert_int_equal(husai_trainer_init(&t, X, T_ROWS, T_DM, &o), HUSAI_OK);
        if (arch == HUSAI_ARCH_JUMPRELU) /* the init starts jumprelu at L0 ~ k: lower every threshold 8x */
            for (int j = 0; j < o.d_sae; j++)
                t.model.log_theta[j] -= logf(8.0f);
        const double l0_start = data_l0(&t.model, X), coeff_start = t.coeff;
        finish(&t);
        const double l0_end = data_l0(&t.model, X);
        print_message("%s adaptive: L0 %.3g -> %.3g (k = %d), coeff %.4g -> %.4g\n", husai_arch_name(arch),
                      l0_start, l0_end, o.k, coeff_start, t.coeff);
        assert_true(l0_start > 3.0 * o.k); /* the start really is far from k */
        assert_true(fabs(l0_end - o.k) < 0.5 * fabs(l0_start - o.k));
        assert_true(t.coeff != coeff_start);
        husai_trainer_free(&t);

        o.sparsity_coeff = 0.02;
        assert_int_equal(husai_trainer_init(&t, X, T_ROWS, T_DM, &o), HUSAI_OK);
        assert_true(t.coeff == 0.02);
        finish(&t);
        assert_true(t.coeff == 0.02);
        husai_trainer_free(&t);
    }
    free(X);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_rules_vs_naive),
        cmocka_unit_test(test_batchtopk_ties_and_hand_cases),
        cmocka_unit_test(test_exact_boundaries),
        cmocka_unit_test(test_matryoshka_prefixes),
        cmocka_unit_test(test_forward_losses_vs_naive),
        cmocka_unit_test(test_fd_topk_decoder_bias),
        cmocka_unit_test(test_fd_relu_l1),
        cmocka_unit_test(test_fd_matryoshka),
        cmocka_unit_test(test_fd_batchtopk),
        cmocka_unit_test(test_fd_jumprelu),
        cmocka_unit_test(test_jumprelu_theta_ste),
        cmocka_unit_test(test_auxk_vs_naive),
        cmocka_unit_test(test_trainer_resume_every_arch),
        cmocka_unit_test(test_adaptive_sparsity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
