/* test_bf16.c: the bf16 encoder product and its certified TopK (src/sae/bf16.c), on every backend this
 * machine has: the emulated product always, oneDNN's when the build has it and the CPU runs it.
 * - husai_bf16_round against an independent rounding (scaling to 8 significant bits, rint's ties to even);
 * - the bound: every latent's bf16 score and dot8 fp32 score lie within the row's bound of the exact
 *   (fp64) score, including rows of extreme scale;
 * - the selection equals the dot8 fp32 rule's exactly (latents and value bits) and the fp64 rule's wherever
 *   fp64's k-th and (k+1)-th scores are further apart than fp32 rounding, for topk (signed and ReLU),
 *   matryoshka and a decoder bias;
 * - the fallback: rows built so that bf16 cannot separate the candidates (weights differing only below
 *   bf16's precision, all-tied rows) are rescored in full and still select the exact top k;
 * - the second candidate set: a row the first set cannot certify and the second can;
 * - all of it with candidates rescored all at once and one by one (husai_bf16_set_incremental);
 * - the candidate sets' one-pass selection (husai_topk_row_scan) against husai_topk_row and a naive one;
 * - training: at every step the codes equal the dot8 rule's on that step's model and batch (topk), and the
 *   trained parameters are bitwise the same for the emulated and oneDNN products and for 1 and 2 threads
 *   (topk, batchtopk, relu_l1, matryoshka);
 * - the threshold rules and top-k: codes, loss and gradients of the certified path equal a full rescoring;
 * - PWMCC with certified maxima: bitwise the naive dot8 rescoring of every pair, on 1 and 2 threads, for
 *   unrelated decoders and near copies, and within 1e-6 of sgemm's. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/pwmcc.h"
#include "sae/bf16.h"
#include "sae/kernels.h"
#include "sae/model.h"
#include "sae/train.h"

static uint64_t lcg = 88172645463325252ull;
static double urand(void) { /* xorshift64 in [0, 1) */
    lcg ^= lcg << 13;
    lcg ^= lcg >> 7;
    lcg ^= lcg << 17;
    return (double)(lcg >> 11) * 0x1p-53;
}
static float nrand(void) {
    const double u1 = urand() + 1e-300, u2 = urand();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* The backends to run: emulated, and oneDNN where available. */
static int n_backends(void) {
    return husai_bf16_dnnl_available() ? 2 : 1;
}
static husai_bf16_backend backend_at(int i) {
    return i == 0 ? HUSAI_BF16_EMULATED : HUSAI_BF16_DNNL;
}

/* Independent bf16 rounding: scale to 8 significant bits and let rint (ties to even) round. */
static float ref_round(float x) {
    if (isnan(x)) return x;
    if (fabsf(x) < FLT_MIN) { /* bf16's subnormal spacing 2^-133, then the units' flush */
        const double q = ldexp(rint(ldexp((double)x, 133)), -133);
        return fabs(q) < FLT_MIN ? copysignf(0.0f, x) : (float)q;
    }
    int e;
    frexp((double)x, &e); /* x = f 2^e, 0.5 <= |f| < 1 */
    const double q = ldexp(rint(ldexp((double)x, 8 - e)), e - 8);
    if (fabs(q) < FLT_MIN) return copysignf(0.0f, x);
    return fabs(q) > FLT_MAX ? copysignf(INFINITY, x) : (float)q;
}

static void test_round(void **state) {
    (void)state;
    assert_true(husai_bf16_round(1.0f) == 1.0f);
    assert_true(husai_bf16_round(1.0f + 0x1p-8f) == 1.0f);               /* tie, to even */
    assert_true(husai_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f); /* tie, to even (up) */
    assert_true(husai_bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    assert_true(husai_bf16_round(1e-40f) == 0.0f && !signbit(husai_bf16_round(1e-40f)));
    assert_true(signbit(husai_bf16_round(-1e-40f)));
    assert_true(isinf(husai_bf16_round(FLT_MAX)));
    assert_true(isnan(husai_bf16_round(NAN)));
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)(urand() * 4294967296.0);
        float x;
        memcpy(&x, &u, sizeof x);
        const float a = husai_bf16_round(x), b = ref_round(x);
        if (isnan(x)) {
            assert_true(isnan(a));
            continue;
        }
        if (memcmp(&a, &b, sizeof a))
            fail_msg("bf16(%a) = %a, reference %a", (double)x, (double)a, (double)b);
        if (isfinite(a) && a != 0.0f) assert_true(fabs((double)a - x) <= 0x1p-8 * fabs((double)x));
    }
}

/* A model with random encoder, b_enc and (if bias) b_dec. */
static void make_model(husai_sae *m, husai_arch arch, int d, int s, int k, int relu, int bias) {
    husai_sae_spec spec = husai_sae_spec_topk(d, s, k);
    spec.arch = arch;
    spec.relu = relu;
    spec.decoder_bias = bias;
    spec.n_prefixes = 3;
    assert_int_equal(husai_sae_alloc(m, &spec), HUSAI_OK);
    husai_sae_init(m, 7);
    for (int j = 0; j < s; j++)
        m->b_enc[j] = 0.1f * nrand();
    if (m->b_dec)
        for (int i = 0; i < d; i++)
            m->b_dec[i] = 0.3f * nrand();
}

/* The encoder input row r (x - b_dec with the model's fp32 subtraction). */
static void input_row(const husai_sae *m, const float *x, int r, float *out) {
    for (int i = 0; i < m->d_model; i++)
        out[i] = m->b_dec ? x[(size_t)r * m->d_model + i] - m->b_dec[i] : x[(size_t)r * m->d_model + i];
}

/* Reference top k of vals (ties to the lower index, NaN never: inputs are finite) into a 0/1 mask. */
static void ref_topk(const float *vals, int s, int k, unsigned char *mask) {
    for (int j = 0; j < s; j++)
        mask[j] = 0;
    for (int c = 0; c < k; c++) {
        int best = -1;
        for (int j = 0; j < s; j++)
            if (!mask[j] && (best < 0 || vals[j] > vals[best])) best = j;
        if (best < 0)
            fail_msg("k = %d exceeds the row's %d entries", k, s);
        else
            mask[best] = 1;
    }
}

/* Checks one encoded batch: the bound on every latent, and the codes against the dot8 and fp64 rules. */
static void check_batch(const husai_sae *m, const float *x, int n, const husai_sae_batch *b) {
    const int d = m->d_model, s = m->d_sae, k = m->k;
    float *in = malloc((size_t)d * sizeof(float)), *v = malloc((size_t)s * sizeof(float));
    double *t = malloc((size_t)s * sizeof(double));
    float *tf = malloc((size_t)s * sizeof(float));
    unsigned char *mask = malloc((size_t)s), *mask64 = malloc((size_t)s);
    int fp64_checked = 0;
    for (int r = 0; r < n; r++) {
        input_row(m, x, r, in);
        const double E = husai_bf16_row_bound(b->bf16, r);
        for (int j = 0; j < s; j++) {
            double acc = m->b_enc[j];
            for (int i = 0; i < d; i++)
                acc += (double)in[i] * m->W_enc[(size_t)j * d + i];
            t[j] = acc;
            tf[j] = (float)acc;
            v[j] = m->b_enc[j] + husai_dot8(in, m->W_enc + (size_t)j * d, d);
            const float p = b->pre[(size_t)r * s + j];
            if (!(fabs((double)p - t[j]) <= E) || !(fabs((double)v[j] - t[j]) <= E))
                fail_msg("row %d latent %d: bf16 %.9g dot8 %.9g exact %.9g, bound %.3g", r, j, (double)p,
                         (double)v[j], t[j], E);
        }
        ref_topk(v, s, k, mask);
        int64_t a = b->row_ptr[r];
        for (int j = 0; j < s; j++) {
            const int want = mask[j] && (!m->spec.relu || v[j] > 0.0f);
            const int got = a < b->row_ptr[r + 1] && b->idx[a] == j;
            if (want != got) fail_msg("row %d latent %d: selected %d, dot8 rule %d", r, j, got, want);
            if (got) {
                assert_memory_equal(&b->val[a], &v[j], sizeof(float));
                a++;
            }
        }
        assert_int_equal(a, b->row_ptr[r + 1]);
        /* fp64: the same set unless its k-th and (k+1)-th are within fp32 rounding of each other */
        ref_topk(tf, s, k, mask64);
        double kth = INFINITY, next = -INFINITY, scale = 0.0;
        for (int j = 0; j < s; j++) {
            if (mask64[j] && t[j] < kth) kth = t[j];
            if (!mask64[j] && t[j] > next) next = t[j];
            scale = fmax(scale, fabs(t[j]));
        }
        if (kth - next > 1e-5 * scale) {
            fp64_checked++;
            for (int j = 0; j < s; j++)
                assert_int_equal(mask[j], mask64[j]);
        }
    }
    assert_true(fp64_checked > n / 2);
    free(in);
    free(v);
    free(t);
    free(tf);
    free(mask);
    free(mask64);
}

static void run_case(husai_arch arch, int d, int s, int k, int relu, int bias) {
    const int n = 96;
    for (int be = 0; be < n_backends(); be++) {
        husai_sae m;
        make_model(&m, arch, d, s, k, relu, bias);
        float *x = malloc((size_t)n * d * sizeof(float));
        for (int r = 0; r < n; r++) {
            /* rows of very different scales, one of them all zero */
            const float sc = r == 5 ? 0.0f : (r % 7 == 0 ? 1e-30f : (r % 11 == 0 ? 1e20f : 1.0f));
            for (int i = 0; i < d; i++)
                x[(size_t)r * d + i] = sc * nrand();
        }
        husai_sae_batch b;
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        assert_int_equal(husai_bf16_create(&b, &m, backend_at(be)), HUSAI_OK);
        assert_int_equal(husai_sae_encode(&m, x, n, HUSAI_SAE_TRAIN, &b), HUSAI_OK);
        check_batch(&m, x, n, &b);
        int64_t rows, second, full;
        husai_bf16_stats(b.bf16, &rows, &second, &full);
        assert_int_equal(rows, n);
        print_message("    %s d=%d s=%d k=%d: %lld of %d rows needed the second set, %lld rescored in full\n",
                      husai_bf16_isa(b.bf16), d, s, k, (long long)second, n, (long long)full);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
        free(x);
    }
}

static void test_topk_signed(void **state) {
    (void)state;
    run_case(HUSAI_ARCH_TOPK, 64, 1024, 8, 0, 0);
}
static void test_topk_relu_bias(void **state) {
    (void)state;
    run_case(HUSAI_ARCH_TOPK, 45, 300, 5, 1, 1); /* d not a multiple of 8: dot8's tail */
}
static void test_matryoshka(void **state) {
    (void)state;
    run_case(HUSAI_ARCH_MATRYOSHKA, 32, 128, 32, 0, 1);
}

/* Rows bf16 cannot separate: weights equal in bf16 and different below its precision, so every bf16
 * score ties while the exact scores rise with the latent; and an all-zero input, where every score is
 * b_enc = 0 and the ties go to the lowest latents. Both must fall back and still be exact. */
static void test_fallback(void **state) {
    (void)state;
    const int d = 16, s = 512, k = 4, n = 2;
    for (int be = 0; be < n_backends(); be++) {
        husai_sae m;
        make_model(&m, HUSAI_ARCH_TOPK, d, s, k, 0, 0);
        memset(m.b_enc, 0, (size_t)s * sizeof(float));
        for (int j = 0; j < s; j++)
            for (int i = 0; i < d; i++)
                m.W_enc[(size_t)j * d + i] = i == 0 ? 1.0f + (float)j * 0x1p-20f : 0.5f;
        float x[2 * 16];
        for (int i = 0; i < d; i++) {
            x[i] = 1.0f;
            x[d + i] = 0.0f;
        }
        husai_sae_batch b;
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        assert_int_equal(husai_bf16_create(&b, &m, backend_at(be)), HUSAI_OK);
        assert_int_equal(husai_sae_encode(&m, x, n, HUSAI_SAE_TRAIN, &b), HUSAI_OK);
        int64_t rows, second, full;
        husai_bf16_stats(b.bf16, &rows, &second, &full);
        assert_int_equal(full, 2);
        for (int a = 0; a < k; a++) {
            assert_int_equal(b.idx[a], s - k + a); /* the largest exact scores: the last latents */
            assert_int_equal(b.idx[k + a], a);     /* all tied: the lowest latents */
        }
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

/* A row the first candidate set cannot certify and the second can: 20 latents whose scores tie in bf16
 * (1 + j 1e-4 all round to 1) over 492 scoring 0.1. The 2k = 8 candidates are latents 0..7, all within the
 * bound of the bf16 ties; the 8k = 32 candidates reach down to 0.1, so the top 4 (latents 16..19) certify. */
static void test_second_set(void **state) {
    (void)state;
    const int d = 16, s = 512, k = 4;
    for (int be = 0; be < n_backends(); be++) {
        husai_sae m;
        make_model(&m, HUSAI_ARCH_TOPK, d, s, k, 0, 0);
        memset(m.b_enc, 0, (size_t)s * sizeof(float));
        memset(m.W_enc, 0, (size_t)s * d * sizeof(float));
        for (int j = 0; j < s; j++)
            m.W_enc[(size_t)j * d] = j < 20 ? 1.0f + (float)j * 1e-4f : 0.1f;
        float x[16] = {1.0f};
        husai_sae_batch b;
        assert_int_equal(husai_sae_batch_alloc(&b, &m, 1), HUSAI_OK);
        assert_int_equal(husai_bf16_create(&b, &m, backend_at(be)), HUSAI_OK);
        assert_int_equal(husai_sae_encode(&m, x, 1, HUSAI_SAE_TRAIN, &b), HUSAI_OK);
        int64_t rows, second, full;
        husai_bf16_stats(b.bf16, &rows, &second, &full);
        assert_int_equal(second, 1);
        assert_int_equal(full, 0);
        for (int a = 0; a < k; a++)
            assert_int_equal(b.idx[a], 16 + a);
        check_batch(&m, x, 1, &b);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

/* One forward and backward of rule `arch` (mode) with the certificate and with every row rescored in full:
 * codes, loss parts and gradients bitwise equal. Thresholds sit among the scores and jumprelu's window is
 * wide enough to hold some of them, so the boundaries are exercised. */
static void certified_equals_full(husai_arch arch, husai_sae_mode mode, int be) {
    const int d = 40, s = 256, k = 8, n = 64;
    husai_sae m;
    make_model(&m, arch, d, s, k, 0, 1);
    if (m.log_theta)
        for (int j = 0; j < s; j++)
            m.log_theta[j] = logf(1.2f + 0.3f * (float)urand());
    m.spec.bandwidth = 0.2;
    m.threshold = 1.5;
    float *x = malloc((size_t)n * d * sizeof(float));
    for (int i = 0; i < n * d; i++)
        x[i] = 1.5f * nrand();
    husai_sae_batch b[2];
    husai_sae_loss loss[2];
    float *grad[2];
    for (int q = 0; q < 2; q++) {
        assert_int_equal(husai_sae_batch_alloc(&b[q], &m, n), HUSAI_OK);
        assert_int_equal(husai_bf16_create(&b[q], &m, backend_at(be)), HUSAI_OK);
        husai_bf16_force_full(b[q].bf16, q);
        assert_int_equal(husai_sae_forward(&m, x, n, mode, 0.01, &b[q], &loss[q]), HUSAI_OK);
        grad[q] = calloc(m.n_params, sizeof(float));
        if (mode == HUSAI_SAE_TRAIN) husai_sae_backward(&m, x, 0.01, &b[q], grad[q]);
    }
    const int64_t nnz = b[0].row_ptr[n];
    assert_true(nnz > 0 && nnz < (int64_t)n * s);
    assert_memory_equal(b[0].row_ptr, b[1].row_ptr, (size_t)(n + 1) * sizeof(int64_t));
    assert_memory_equal(b[0].idx, b[1].idx, (size_t)nnz * sizeof(int32_t));
    assert_memory_equal(b[0].val, b[1].val, (size_t)nnz * sizeof(float));
    assert_memory_equal(&loss[0], &loss[1], sizeof loss[0]);
    assert_memory_equal(grad[0], grad[1], m.n_params * sizeof(float));
    int64_t rows, second, full[2];
    husai_bf16_stats(b[0].bf16, &rows, &second, &full[0]);
    husai_bf16_stats(b[1].bf16, &rows, &second, &full[1]);
    assert_int_equal(full[1], n);
    print_message(
        "    %s %s (%s): L0 %.1f, %lld of %d rows rescored in full, codes and gradients as in full\n",
        husai_arch_name(arch), mode == HUSAI_SAE_TRAIN ? "train" : "eval", husai_bf16_isa(b[0].bf16),
        loss[0].l0, (long long)full[0], n);
    if (arch == HUSAI_ARCH_JUMPRELU) { /* some pre-activation in the straight-through window */
        double g = 0.0;
        for (int j = 0; j < s; j++)
            g += fabs((double)grad[0][(m.log_theta - m.params) + j]);
        assert_true(g > 0.0);
    }
    for (int q = 0; q < 2; q++) {
        husai_sae_batch_free(&b[q]);
        free(grad[q]);
    }
    husai_sae_free(&m);
    free(x);
}

static void test_threshold_rules(void **state) {
    (void)state;
    for (int be = 0; be < n_backends(); be++) {
        certified_equals_full(HUSAI_ARCH_JUMPRELU, HUSAI_SAE_TRAIN, be);
        certified_equals_full(HUSAI_ARCH_RELU_L1, HUSAI_SAE_TRAIN, be);
        certified_equals_full(HUSAI_ARCH_BATCHTOPK, HUSAI_SAE_TRAIN, be);
        certified_equals_full(HUSAI_ARCH_BATCHTOPK, HUSAI_SAE_EVAL, be);
        certified_equals_full(HUSAI_ARCH_TOPK, HUSAI_SAE_TRAIN, be);
        certified_equals_full(HUSAI_ARCH_MATRYOSHKA, HUSAI_SAE_TRAIN, be);
    }
}

/* Trains with the given backend (-1: fp32 path) and thread count, checking every step's codes against
 * the dot8 rule on the step's model and batch; returns the trained parameters (malloc'd). */
static float *train(husai_arch arch, int backend, int threads, int check, size_t *np) {
    const int d = 24, n_rows = 512;
    float *X = malloc((size_t)n_rows * d * sizeof(float));
    lcg = 12345;
    for (int r = 0; r < n_rows; r++)
        for (int i = 0; i < d; i++)
            X[(size_t)r * d + i] = nrand() + (i % 3 == 0 ? 1.0f : 0.0f);
    husai_train_opts o = husai_train_defaults();
    o.d_sae = 160;
    o.k = 6;
    o.epochs = 3;
    o.batch_size = 100; /* the last batch of each epoch is short */
    o.decoder_bias = 1;
    o.arch = arch;
    o.lr = 3e-3;
    o.precision = backend >= 0 ? HUSAI_PRECISION_BF16 : HUSAI_PRECISION_FP32;
    o.bf16_emulate = backend == HUSAI_BF16_EMULATED;
    omp_set_num_threads(threads);
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, X, (size_t)n_rows, d, &o), HUSAI_OK);
    assert_true((t.batch.bf16 != NULL) == (backend >= 0));
    husai_sae before;
    const husai_sae_spec spec = husai_train_spec(&o, d);
    assert_int_equal(husai_sae_alloc(&before, &spec), HUSAI_OK);
    while (!husai_trainer_done(&t)) {
        memcpy(before.params, t.model.params, t.model.n_params * sizeof(float));
        assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
        if (check) check_batch(&before, t.xb, t.batch.n, &t.batch);
    }
    *np = t.model.n_params;
    float *p = malloc(*np * sizeof(float));
    memcpy(p, t.model.params, *np * sizeof(float));
    husai_sae_free(&before);
    husai_trainer_free(&t);
    free(X);
    omp_set_num_threads(2);
    return p;
}

/* Bitwise the same trained parameters on 1 and 2 threads and with oneDNN, and close to sgemm's. */
static void train_rule(husai_arch arch) {
    size_t np, np2;
    const int check = arch == HUSAI_ARCH_TOPK; /* check_batch knows top-k codes */
    float *ref = train(arch, HUSAI_BF16_EMULATED, 1, check, &np);
    float *two = train(arch, HUSAI_BF16_EMULATED, 2, 0, &np2);
    assert_memory_equal(ref, two, np * sizeof(float));
    free(two);
    if (husai_bf16_dnnl_available()) {
        float *dn = train(arch, HUSAI_BF16_DNNL, 2, check, &np2);
        assert_memory_equal(ref, dn, np * sizeof(float)); /* the backend does not change a bit */
        free(dn);
    }
    /* against the fp32 (sgemm) path: the same training up to fp32 rounding of the scores */
    float *f = train(arch, -1, 1, 0, &np2);
    double diff = 0.0, mag = 0.0;
    for (size_t i = 0; i < np; i++) {
        diff = fmax(diff, fabs((double)f[i] - ref[i]));
        mag = fmax(mag, fabs((double)ref[i]));
    }
    print_message("    %s, fp32 vs bf16 path after 3 epochs: max |param diff| %.3g (max |param| %.3g)\n",
                  husai_arch_name(arch), diff, mag);
    assert_true(diff < 1e-3 * mag);
    free(f);
    free(ref);
}

static void test_training(void **state) {
    (void)state;
    train_rule(HUSAI_ARCH_TOPK);
    train_rule(HUSAI_ARCH_BATCHTOPK);
    train_rule(HUSAI_ARCH_RELU_L1);
    train_rule(HUSAI_ARCH_MATRYOSHKA);
}

/* PWMCC of two [d, n] decoders by the dot8 rule, naively: every |cos| rescored, maxima, sums in order. */
static double ref_pwmcc(const float *A, const float *B, int d, int n) {
    float *a = malloc((size_t)n * d * sizeof(float)), *b = malloc((size_t)n * d * sizeof(float));
    float *cm = calloc((size_t)n, sizeof(float));
    husai_normalized_feature_rows(A, d, n, a);
    husai_normalized_feature_rows(B, d, n, b);
    double rows = 0.0, cols = 0.0;
    for (int i = 0; i < n; i++) {
        float m = 0.0f;
        for (int j = 0; j < n; j++) {
            const float v = fabsf(husai_dot8(a + (size_t)i * d, b + (size_t)j * d, d));
            m = v > m ? v : m;
            cm[j] = v > cm[j] ? v : cm[j];
        }
        rows += m;
    }
    for (int j = 0; j < n; j++)
        cols += cm[j];
    free(a);
    free(b);
    free(cm);
    return 0.5 * (rows / n + cols / n);
}

/* Certified PWMCC: bitwise the naive dot8 rule's, within 1e-6 of sgemm's, for unrelated decoders and for
 * near copies (maxima within bf16's error of the runners-up), on 1 and 2 threads. */
static void test_pwmcc(void **state) {
    (void)state;
    const int d = 48, n = 600; /* 3 blocks of rows, the last short */
    float *D = malloc((size_t)3 * d * n * sizeof(float));
    for (size_t i = 0; i < (size_t)2 * d * n; i++)
        D[i] = nrand();
    for (size_t i = 0; i < (size_t)d * n; i++) /* the third: the first plus noise below bf16's resolution */
        D[(size_t)2 * d * n + i] = D[i] * (1.0f + 1e-3f * nrand());
    for (int pair = 0; pair < 2; pair++) {
        const float *B = D + (size_t)(pair ? 2 : 1) * d * n;
        const double ref = ref_pwmcc(D, B, d, n);
        double f32, b16[2];
        husai_pwmcc_set_bf16(0);
        assert_int_equal(husai_pwmcc_pair(D, n, B, n, d, &f32), HUSAI_OK);
        husai_pwmcc_set_bf16(1);
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t + 1);
            assert_int_equal(husai_pwmcc_pair(D, n, B, n, d, &b16[t]), HUSAI_OK);
            if (memcmp(&b16[t], &ref, sizeof ref))
                fail_msg("%s, %d thread(s): certified PWMCC %.17g, dot8 rule %.17g",
                         pair ? "near copies" : "unrelated", t + 1, b16[t], ref);
        }
        husai_pwmcc_set_bf16(0);
        print_message("    PWMCC %s: bf16 certified %.9f, sgemm %.9f\n", pair ? "near copies" : "unrelated",
                      b16[0], f32);
        assert_true(fabs(f32 - ref) < 1e-6);
    }
    free(D);
}

/* The scan selection (husai_topk_row_scan, the candidate sets' selection) against husai_topk_row and against
 * a naive selection (k rounds of the largest not yet taken, NaN as -inf, ties to the lower index), bit for
 * bit: random, few distinct values (ties at the cut), NaN, -inf and signed zeros, ascending rows (the
 * threshold rises at every block) and constant rows (more ties than the list holds). */
static void test_topk_scan(void **state) {
    (void)state;
    const int n_max = 20000;
    float *row = malloc((size_t)n_max * sizeof(float)), *scratch = malloc(2 * (size_t)n_max * sizeof(float));
    int32_t idx[2][300];
    float val[2][300];
    char *taken = malloc((size_t)n_max);
    for (int trial = 0; trial < 240; trial++) {
        const int kind = trial % 6, n = 16 + (trial * 7919) % (n_max - 16);
        int k = trial % 5 == 4 ? 256 : 1 + trial % 70;
        k = k < n ? k : n;
        for (int j = 0; j < n; j++) {
            const double u = urand();
            row[j] = kind == 0   ? nrand()
                     : kind == 1 ? (float)(int)(7.0 * u)
                     : kind == 2 ? (u < 0.1 ? NAN : (float)(int)(50.0 * u) - 25.0f)
                     : kind == 3 ? (u < 0.2   ? -INFINITY
                                    : u < 0.6 ? -0.0f
                                              : 0.0f)
                     : kind == 4 ? (float)j
                                 : 3.0f;
        }
        husai_topk_row(row, n, k, idx[0], val[0], scratch);
        husai_topk_row_scan(row, n, k, idx[1], val[1], scratch, NULL);
        assert_memory_equal(idx[0], idx[1], (size_t)k * sizeof(int32_t));
        assert_memory_equal(val[0], val[1], (size_t)k * sizeof(float));
        memset(taken, 0, (size_t)n);
        for (int a = 0; a < k; a++) {
            int best = -1;
            for (int j = 0; j < n; j++) {
                const float x = isnan(row[j]) ? -INFINITY : row[j];
                if (!taken[j] && (best < 0 || x > (isnan(row[best]) ? -INFINITY : row[best]))) best = j;
            }
            taken[best] = 1;
        }
        for (int a = 0, j = 0; a < k; a++, j++) {
            while (!taken[j])
                j++;
            assert_int_equal(idx[1][a], j);
            assert_memory_equal(&val[1][a], &row[j], sizeof(float));
        }
    }
    free(row);
    free(scratch);
    free(taken);
}

/* husai_sort_pairs (the candidates' rescoring order) against an insertion sort, on values with ties, signed
 * zeros and NaN (which sorts as -inf), by value and by id. */
static void test_sort_pairs(void **state) {
    (void)state;
    for (int trial = 0; trial < 200; trial++) {
        const int n = 1 + trial % 90, by_value = trial % 3 != 0;
        int32_t id[2][90], scratch[180];
        float val[2][90], val2[2][90];
        for (int a = 0; a < n; a++) {
            const double u = urand();
            id[0][a] = by_value ? a : (int32_t)(urand() * 1e6) * 90 + a; /* distinct ids */
            val[0][a] = trial % 4 == 1 ? (u < 0.1 ? NAN : u < 0.3 ? -0.0f : (float)(int)(5.0 * u)) : nrand();
            val2[0][a] = (float)a;
        }
        memcpy(id[1], id[0], sizeof id[0]);
        memcpy(val[1], val[0], sizeof val[0]);
        memcpy(val2[1], val2[0], sizeof val2[0]);
        husai_sort_pairs(id[0], val[0], val2[0], n, by_value, scratch);
        for (int a = 1; a < n; a++) { /* insertion sort, NaN as -inf */
            const int32_t j = id[1][a];
            const float x = val[1][a], y = val2[1][a], xs = isnan(x) ? -INFINITY : x;
            int b = a;
            for (; b > 0; b--) {
                const float p = isnan(val[1][b - 1]) ? -INFINITY : val[1][b - 1];
                if (by_value ? !(p < xs) : !(id[1][b - 1] > j)) break;
                id[1][b] = id[1][b - 1];
                val[1][b] = val[1][b - 1];
                val2[1][b] = val2[1][b - 1];
            }
            id[1][b] = j;
            val[1][b] = x;
            val2[1][b] = y;
        }
        assert_memory_equal(id[0], id[1], (size_t)n * sizeof(int32_t));
        assert_memory_equal(val[0], val[1], (size_t)n * sizeof(float));
        assert_memory_equal(val2[0], val2[1], (size_t)n * sizeof(float));
    }
}

static void test_names(void **state) {
    (void)state;
    assert_int_equal(husai_precision_parse("bf16"), HUSAI_PRECISION_BF16);
    assert_int_equal(husai_precision_parse("auto"), HUSAI_PRECISION_AUTO);
    assert_int_equal(husai_precision_parse("fp16"), -1);
    assert_string_equal(husai_precision_name(HUSAI_PRECISION_FP32), "fp32");
    husai_sae m;
    make_model(&m, HUSAI_ARCH_JUMPRELU, 8, 16, 2, 0, 0);
    assert_false(husai_bf16_eligible(&m, 0)); /* certified, but trains on sgemm (bf16.c) */
    husai_sae_free(&m);
    make_model(&m, HUSAI_ARCH_RELU_L1, 8, 16, 2, 0, 0);
    assert_true(husai_bf16_eligible(&m, 0));
    assert_false(husai_bf16_eligible(&m, 4)); /* AuxK ranks dead latents' bf16 scores */
    husai_sae_free(&m);
    print_message("    oneDNN bf16: %s (%s)\n", husai_bf16_dnnl_available() ? "available" : "not available",
                  husai_bf16_isa(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round),       cmocka_unit_test(test_names),
        cmocka_unit_test(test_topk_signed), cmocka_unit_test(test_topk_relu_bias),
        cmocka_unit_test(test_matryoshka),  cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_training),    cmocka_unit_test(test_pwmcc),
        cmocka_unit_test(test_second_set),  cmocka_unit_test(test_threshold_rules),
        cmocka_unit_test(test_topk_scan),   cmocka_unit_test(test_sort_pairs),
    };
    int failed = 0;
    for (int mode = 0; mode < 2; mode++) { /* candidates rescored all at once, then one by one */
        husai_bf16_set_incremental(mode);
        print_message("candidates rescored %s:\n", mode ? "one by one in score order" : "all at once");
        failed += cmocka_run_group_tests(tests, NULL, NULL);
    }
    return failed;
}
