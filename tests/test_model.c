/* test_model.c: the TopK SAE model (src/sae/model.c and its kernels select.c, encode.c, decode.c,
 * backward.c) and its Adam step (src/sae/adam.c).
 * - top-k selection: signed values, ties to the lower index, ascending indices, L0 == k,
 *   checked against a brute-force reference on random and tie-heavy rows;
 * - forward/backward and two Adam steps + decoder renormalisation against the PyTorch
 *   fixture tests/reference/topk_step.h5 (written by tests/reference/torch_topk_step.py);
 * - a central finite-difference check of the loss gradient;
 * - init, decoder export, decoder renormalisation and argument checks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "sae/adam.h"
#include "model_util.h"
#include "sae/model.h"

#define FIXTURE HUSAI_SOURCE_DIR "/tests/reference/topk_step.h5"

/* ---------- helpers ---------- */

static float *xcalloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return p;
}

static double max_abs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* also propagates NaN */
    }
    return m;
}

/* Transposes a (rows, cols) row-major matrix into out (cols, rows). */
static void transpose(const float *in, int rows, int cols, float *out) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            out[(size_t)c * rows + r] = in[(size_t)r * cols + c];
}

/* Brute-force reference selection: the k entries that rank highest by (value desc, index asc),
 * returned as a 0/1 mask over the row. */
static void reference_topk_mask(const float *pre, int d_sae, int k, unsigned char *mask) {
    memset(mask, 0, (size_t)d_sae);
    for (int a = 0; a < k; a++) {
        int best = -1;
        for (int j = 0; j < d_sae; j++) {
            if (mask[j]) continue;
            if (best < 0 || pre[j] > pre[best]) best = j; /* strict '>' keeps the lower index on ties */
        }
        if (best < 0) break; /* cannot happen for k <= d_sae; tells the compiler so */
        mask[best] = 1;
    }
}

/* Checks b's selection for n rows of pre-activations against the brute-force reference. */
static void check_selection(const husai_sae_batch *b, int n, int d_sae, int k) {
    unsigned char *mask = malloc((size_t)d_sae);
    assert_non_null(mask);
    for (int r = 0; r < n; r++) {
        const float *pre = b->pre + (size_t)r * d_sae;
        const int32_t *id = b->idx + (size_t)r * k;
        const float *v = b->val + (size_t)r * k;
        reference_topk_mask(pre, d_sae, k, mask);
        int l0 = 0;
        for (int a = 0; a < k; a++) {
            assert_true(id[a] >= 0 && id[a] < d_sae);
            if (a > 0) assert_true(id[a - 1] < id[a]); /* strictly ascending: distinct and sorted */
            assert_true(mask[id[a]]);                  /* same set as the reference */
            assert_true(v[a] == pre[id[a]]);           /* value is the signed pre-activation itself */
            l0++;
        }
        assert_int_equal(l0, k);
    }
    free(mask);
}

/* A model whose pre-activations equal b_enc in every row (W_enc = 0): exact control over ties. */
static void select_from_bias(const float *bias, int d_sae, int k, int32_t *idx_out, float *val_out) {
    husai_sae m;
    husai_sae_batch b;
    assert_int_equal(alloc_topk(&m, 3, d_sae, k), HUSAI_OK);
    memcpy(m.b_enc, bias, (size_t)d_sae * sizeof(float));
    assert_int_equal(husai_sae_batch_alloc(&b, &m, 2), HUSAI_OK);
    const float x[6] = {0.5f, -1.0f, 2.0f, 3.0f, 0.0f, -7.0f};
    husai_sae_encode(&m, x, 2, HUSAI_SAE_TRAIN, &b);
    check_selection(&b, 2, d_sae, k);
    /* W_enc = 0, so both rows select identically */
    assert_memory_equal(b.idx, b.idx + k, (size_t)k * sizeof(int32_t));
    memcpy(idx_out, b.idx, (size_t)k * sizeof(int32_t));
    memcpy(val_out, b.val, (size_t)k * sizeof(float));
    husai_sae_batch_free(&b);
    husai_sae_free(&m);
}

/* ---------- fixture ---------- */

typedef struct {
    int d_model, d_sae, k, B;
    double lr, min_margin, loss;
    float *x, *W_enc, *b_enc, *W_dec, *x_hat, *gW_enc, *gb_enc, *gW_dec, *W_enc_2, *b_enc_2, *W_dec_2;
} fixture;

static int read_int_attr(hid_t g, const char *name) {
    int v = 0;
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
    return v;
}

static double read_double_attr(hid_t g, const char *name) {
    double v = 0.0;
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    H5Aclose(a);
    return v;
}

/* Reads a float dataset whose shape must be (d0) or (d0, d1) (d1 = 0 for 1-D). */
static float *read_floats(hid_t g, const char *name, hsize_t d0, hsize_t d1) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    const int rank = H5Sget_simple_extent_ndims(s);
    assert_int_equal(rank, d1 ? 2 : 1);
    H5Sget_simple_extent_dims(s, dims, NULL);
    assert_int_equal(dims[0], d0);
    if (d1) assert_int_equal(dims[1], d1);
    float *out = xcalloc((size_t)(d0 * (d1 ? d1 : 1)));
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    H5Sclose(s);
    H5Dclose(d);
    return out;
}

static void load_fixture(const char *group, fixture *f) {
    memset(f, 0, sizeof *f);
    hid_t file = H5Fopen(FIXTURE, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        fail_msg("cannot open fixture %s (regenerate with tests/reference/torch_topk_step.py)", FIXTURE);
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    assert_true(g >= 0);
    f->d_model = read_int_attr(g, "d_model");
    f->d_sae = read_int_attr(g, "d_sae");
    f->k = read_int_attr(g, "k");
    f->lr = read_double_attr(g, "lr");
    f->min_margin = read_double_attr(g, "min_margin");
    {
        hid_t d = H5Dopen2(g, "x", H5P_DEFAULT);
        hid_t s = H5Dget_space(d);
        hsize_t dims[2];
        H5Sget_simple_extent_dims(s, dims, NULL);
        f->B = (int)dims[0];
        H5Sclose(s);
        H5Dclose(d);
    }
    {
        hid_t d = H5Dopen2(g, "loss", H5P_DEFAULT);
        assert_true(d >= 0);
        assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &f->loss) >= 0);
        H5Dclose(d);
    }
    const hsize_t D = (hsize_t)f->d_model, S = (hsize_t)f->d_sae, B = (hsize_t)f->B;
    f->x = read_floats(g, "x", B, D);
    f->x_hat = read_floats(g, "x_hat", B, D);
    f->W_enc = read_floats(g, "W_enc", S, D);
    f->b_enc = read_floats(g, "b_enc", S, 0);
    f->W_dec = read_floats(g, "W_dec", D, S);
    f->gW_enc = read_floats(g, "grad_W_enc", S, D);
    f->gb_enc = read_floats(g, "grad_b_enc", S, 0);
    f->gW_dec = read_floats(g, "grad_W_dec", D, S);
    f->W_enc_2 = read_floats(g, "W_enc_2", S, D);
    f->b_enc_2 = read_floats(g, "b_enc_2", S, 0);
    f->W_dec_2 = read_floats(g, "W_dec_2", D, S);
    H5Gclose(g);
    H5Fclose(file);
}

static void free_fixture(fixture *f) {
    float **p[] = {&f->x,      &f->W_enc,  &f->b_enc,   &f->W_dec,   &f->x_hat,  &f->gW_enc,
                   &f->gb_enc, &f->gW_dec, &f->W_enc_2, &f->b_enc_2, &f->W_dec_2};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        free(*p[i]);
        *p[i] = NULL;
    }
}

/* Builds a model holding the fixture's initial parameters (decoder transposed to feature-major). */
static void model_from_fixture(const fixture *f, husai_sae *m) {
    assert_int_equal(alloc_topk(m, f->d_model, f->d_sae, f->k), HUSAI_OK);
    const size_t w = (size_t)f->d_sae * (size_t)f->d_model;
    memcpy(m->W_enc, f->W_enc, w * sizeof(float));
    memcpy(m->b_enc, f->b_enc, (size_t)f->d_sae * sizeof(float));
    transpose(f->W_dec, f->d_model, f->d_sae, m->W_dec); /* [d_model, d_sae] -> (d_sae, d_model) */
}

static const char *const CASES[] = {"case1", "case2"};
#define N_CASES (sizeof CASES / sizeof CASES[0])

/* ---------- selection ---------- */

static void test_alloc_rejects_bad_k(void **state) {
    (void)state;
    husai_sae m;
    assert_int_equal(alloc_topk(&m, 8, 16, 17), HUSAI_ERR_ARG);
    assert_int_equal(alloc_topk(&m, 8, 16, 0), HUSAI_ERR_ARG);
    assert_int_equal(alloc_topk(&m, 8, 16, -3), HUSAI_ERR_ARG);
    assert_int_equal(alloc_topk(&m, 0, 16, 4), HUSAI_ERR_ARG);
    assert_int_equal(alloc_topk(&m, 8, 0, 1), HUSAI_ERR_ARG);
    assert_int_equal(alloc_topk(&m, 8, 16, 16), HUSAI_OK); /* k == d_sae is allowed */
    assert_int_equal(m.n_params, (size_t)(2 * 16 * 8 + 16));
    husai_sae_free(&m);
    husai_sae_free(&m); /* freeing twice is harmless */
}

static void test_select_negative_values(void **state) {
    (void)state;
    /* every pre-activation negative: the k largest signed values are still selected (no ReLU) */
    const float bias[6] = {-5.0f, -1.0f, -3.0f, -0.5f, -2.0f, -4.0f};
    int32_t idx[3];
    float val[3];
    select_from_bias(bias, 6, 3, idx, val);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    assert_true(val[0] == -1.0f && val[1] == -0.5f && val[2] == -2.0f);

    /* mixed signs: a negative value is chosen when fewer than k values are positive */
    const float mixed[5] = {-0.25f, 3.0f, -9.0f, -0.125f, -1.0f};
    select_from_bias(mixed, 5, 3, idx, val);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(idx[2], 3);
    assert_true(val[0] == -0.25f && val[1] == 3.0f && val[2] == -0.125f);
}

static void test_select_ties_lower_index(void **state) {
    (void)state;
    int32_t idx[8];
    float val[8];

    /* four-way tie at 2.0 for two slots: indices 1 and 2 win over 3 and 5 */
    const float t1[6] = {1.0f, 2.0f, 2.0f, 2.0f, 0.0f, 2.0f};
    select_from_bias(t1, 6, 2, idx, val);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);

    /* tie for the last slot where the winner (index 0) is seen first and the loser later */
    const float t2[7] = {0.0f, 0.0f, 5.0f, 0.0f, 0.0f, 5.0f, 0.0f};
    select_from_bias(t2, 7, 3, idx, val);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 5);

    /* everything tied: the first k indices */
    const float t3[8] = {0};
    select_from_bias(t3, 8, 5, idx, val);
    for (int a = 0; a < 5; a++)
        assert_int_equal(idx[a], a);

    /* ties among negative values, larger values late in the row */
    const float t4[8] = {-1.0f, -1.0f, -2.0f, -1.0f, -1.0f, -1.0f, 4.0f, 4.0f};
    select_from_bias(t4, 8, 4, idx, val);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(idx[2], 6);
    assert_int_equal(idx[3], 7);

    /* k == d_sae selects everything */
    select_from_bias(t1, 6, 6, idx, val);
    for (int a = 0; a < 6; a++)
        assert_int_equal(idx[a], a);
}

/* Random rows, including rows drawn from a tiny set of values (many exact ties, all signs),
 * against the brute-force reference for every k. */
static void test_select_random_vs_reference(void **state) {
    (void)state;
    husai_rng r;
    husai_rng_init(&r, 99, "test-topk-select", 0);
    const int d_model = 5, d_sae = 23, n = 40;
    float *x = xcalloc((size_t)n * d_model);
    for (size_t i = 0; i < (size_t)n * d_model; i++)
        x[i] = (float)husai_rng_normal(&r);
    for (int k = 1; k <= d_sae; k++) {
        for (int mode = 0; mode < 2; mode++) {
            husai_sae m;
            husai_sae_batch b;
            assert_int_equal(alloc_topk(&m, d_model, d_sae, k), HUSAI_OK);
            if (mode == 0) { /* continuous values */
                for (size_t i = 0; i < (size_t)d_sae * d_model; i++)
                    m.W_enc[i] = (float)husai_rng_normal(&r);
                for (int j = 0; j < d_sae; j++)
                    m.b_enc[j] = (float)husai_rng_normal(&r);
            }
            assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
            if (mode == 0) {
                husai_sae_encode(&m, x, n, HUSAI_SAE_TRAIN, &b);
                check_selection(&b, n, d_sae, k);
            } else {
                /* tie-heavy rows: W_enc = 0 and b_enc drawn from {-2, -1, 0, 1}, one row at a time */
                for (int row = 0; row < n; row++) {
                    for (int j = 0; j < d_sae; j++)
                        m.b_enc[j] = (float)((int)husai_rng_below(&r, 4) - 2);
                    husai_sae_encode(&m, x + (size_t)row * d_model, 1, HUSAI_SAE_TRAIN, &b);
                    check_selection(&b, 1, d_sae, k);
                }
            }
            husai_sae_batch_free(&b);
            husai_sae_free(&m);
        }
    }
    free(x);
}

/* ---------- the backward's blocking, fusing and latent-major order keep a row loop's bits ---------- */

/* dot8's documented order: lane l sums elements i = l mod 8 of the first n & ~7 in order; the lanes add
 * as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); then the remaining n mod 8 terms in order. */
static float dot8_reference(const float *a, const float *b, int n) {
    float lane[8] = {0};
    const int n8 = n & ~7;
    for (int i = 0; i < n8; i++)
        lane[i % 8] += a[i] * b[i];
    float tail = 0.0f;
    for (int i = n8; i < n; i++)
        tail += a[i] * b[i];
    return (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) + tail;
}

/* TopK's gradients, as the obvious loop computes them row by row in float: residual gradient, then
 * each code (ascending latent) adds into b_enc, W_dec's and W_enc's rows in turn. The backward groups
 * codes by latent within blocks of rows, fuses the code gradients with the decoder rows and makes the
 * encoder rows a second pass; each element must still get the same terms in the same order, so the bits
 * must match exactly (and for any d_model, whatever its vector tails). */
static void test_backward_bitwise_vs_row_loop(void **state) {
    (void)state;
    const int dims[3] = {5, 20, 72}; /* tails only; 16 + 4; the 64-wide tile + 8 */
    for (int c = 0; c < 3; c++) {
        const int d = dims[c], s = 48, k = 7, n = 300; /* 300 rows: several backward blocks */
        husai_sae m;
        husai_sae_batch b;
        assert_int_equal(alloc_topk(&m, d, s, k), HUSAI_OK);
        husai_sae_init(&m, 11 + (uint64_t)c);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, n), HUSAI_OK);
        husai_rng r;
        husai_rng_init(&r, 5, "test-backward-bitwise", (uint64_t)c);
        float *x = xcalloc((size_t)n * d);
        for (size_t i = 0; i < (size_t)n * d; i++)
            x[i] = (float)husai_rng_normal(&r);
        forward_mse(&m, x, n, &b);
        float *grad = xcalloc(m.n_params), *ref = xcalloc(m.n_params), *G = xcalloc((size_t)d);
        husai_sae_backward(&m, x, 0.0, &b, grad);
        const size_t w = (size_t)s * d;
        float *gWe = ref, *gbe = ref + w, *gWd = ref + w + s;
        const float scale = (float)(2.0 / ((double)n * d));
        for (int row = 0; row < n; row++) {
            for (int i = 0; i < d; i++)
                G[i] = scale * (b.x_hat[(size_t)row * d + i] - x[(size_t)row * d + i]);
            for (int64_t a = b.row_ptr[row]; a < b.row_ptr[row + 1]; a++) {
                const int j = b.idx[a];
                const float gz = dot8_reference(G, m.W_dec + (size_t)j * d, d);
                gbe[j] += gz;
                for (int i = 0; i < d; i++)
                    gWd[(size_t)j * d + i] += b.val[a] * G[i];
                for (int i = 0; i < d; i++)
                    gWe[(size_t)j * d + i] += gz * x[(size_t)row * d + i];
            }
        }
        print_message("d_model %d: %lld codes over %d rows\n", d, (long long)b.row_ptr[n], n);
        assert_memory_equal(grad, ref, (2 * w + s) * sizeof(float));
        free(G);
        free(ref);
        free(grad);
        free(x);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
    }
}

/* ---------- forward/backward and Adam vs PyTorch ---------- */

static void test_forward_backward_vs_torch(void **state) {
    (void)state;
    for (size_t c = 0; c < N_CASES; c++) {
        fixture f;
        load_fixture(CASES[c], &f);
        husai_sae m;
        husai_sae_batch b;
        model_from_fixture(&f, &m);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, f.B), HUSAI_OK);
        const size_t D = (size_t)f.d_model, S = (size_t)f.d_sae, w = S * D;

        const double loss = forward_mse(&m, f.x, f.B, &b);
        check_selection(&b, f.B, f.d_sae, f.k);
        /* loss: relative 1e-5 (PyTorch reduces in float32, husai in double; both ~1e-7 apart) */
        const double loss_rel = fabs(loss - f.loss) / fabs(f.loss);
        /* x_hat: absolute 1e-5 (entries are O(1); k-term float sums differ by a few ulps) */
        const double xhat_err = max_abs_diff(b.x_hat, f.x_hat, (size_t)f.B * D);

        float *grad = xcalloc(m.n_params);
        husai_sae_backward(&m, f.x, 0.0, &b, grad);
        float *gdec_t = xcalloc(w); /* husai's decoder gradient in PyTorch layout */
        transpose(grad + w + S, f.d_sae, f.d_model, gdec_t);
        /* gradients: absolute 1e-5 relative to the tensor's max |grad| (summation order differs) */
        const double e_wenc = max_abs_diff(grad, f.gW_enc, w) / max_abs(f.gW_enc, w);
        const double e_benc = max_abs_diff(grad + w, f.gb_enc, S) / max_abs(f.gb_enc, S);
        const double e_wdec = max_abs_diff(gdec_t, f.gW_dec, w) / max_abs(f.gW_dec, w);
        print_message("%s: loss rel %.3g, x_hat abs %.3g, grad rel-to-max W_enc %.3g b_enc %.3g W_dec %.3g\n",
                      CASES[c], loss_rel, xhat_err, e_wenc, e_benc, e_wdec);
        assert_true(loss_rel < 1e-5);
        assert_true(xhat_err < 1e-5);
        assert_true(e_wenc < 1e-5);
        assert_true(e_benc < 1e-5);
        assert_true(e_wdec < 1e-5);

        free(gdec_t);
        free(grad);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
        free_fixture(&f);
    }
}

static void test_adam_two_steps_vs_torch(void **state) {
    (void)state;
    for (size_t c = 0; c < N_CASES; c++) {
        fixture f;
        load_fixture(CASES[c], &f);
        husai_sae m;
        husai_sae_batch b;
        husai_adam adam;
        model_from_fixture(&f, &m);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, f.B), HUSAI_OK);
        assert_int_equal(husai_adam_alloc(&adam, m.n_params, f.lr, 0.9, 0.999, 1e-8), HUSAI_OK);
        float *grad = xcalloc(m.n_params);
        for (int step = 0; step < 2; step++) { /* step, renormalise, step, renormalise */
            const double loss = forward_mse(&m, f.x, f.B, &b);
            assert_true(isfinite(loss));
            memset(grad, 0, m.n_params * sizeof(float));
            husai_sae_backward(&m, f.x, 0.0, &b, grad);
            husai_adam_step(&adam, m.params, grad, 1);
            husai_sae_normalize_decoder(&m);
        }
        assert_int_equal(adam.t, 2);
        const size_t D = (size_t)f.d_model, S = (size_t)f.d_sae, w = S * D;
        float *wdec_t = xcalloc(w);
        transpose(m.W_dec, f.d_sae, f.d_model, wdec_t);
        /* parameters after two steps: absolute 1e-5 (each step moves a parameter by ~lr = 1e-3..5e-3,
         * so this is ~1% of the update; a wrong sign, bias correction or missing renorm is far larger) */
        const double e_wenc = max_abs_diff(m.W_enc, f.W_enc_2, w);
        const double e_benc = max_abs_diff(m.b_enc, f.b_enc_2, S);
        const double e_wdec = max_abs_diff(wdec_t, f.W_dec_2, w);
        /* and the update itself must be visible at that tolerance */
        const double moved = max_abs_diff(f.W_enc, f.W_enc_2, w);
        print_message("%s: after 2 Adam steps abs err W_enc %.3g b_enc %.3g W_dec %.3g (max move %.3g)\n",
                      CASES[c], e_wenc, e_benc, e_wdec, moved);
        assert_true(moved > 1e-3);
        assert_true(e_wenc < 1e-5);
        assert_true(e_benc < 1e-5);
        assert_true(e_wdec < 1e-5);
        for (int j = 0; j < f.d_sae; j++) { /* renormalised: unit decoder columns */
            double ss = 0.0;
            for (size_t i = 0; i < D; i++)
                ss += (double)m.W_dec[j * D + i] * m.W_dec[j * D + i];
            assert_true(fabs(sqrt(ss) - 1.0) < 1e-6);
        }
        free(wdec_t);
        free(grad);
        husai_adam_free(&adam);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
        free_fixture(&f);
    }
}

/* ---------- finite differences ---------- */

/* Central difference of husai_sae_forward's loss w.r.t. params[p]; also checks that neither
 * perturbation changed the selected set (else the loss is not smooth there). */
static double fd_loss(husai_sae *m, const fixture *f, husai_sae_batch *b, const int32_t *idx0, size_t p,
                      double eps) {
    const float orig = m->params[p];
    const float up = (float)((double)orig + eps), dn = (float)((double)orig - eps);
    const size_t nidx = (size_t)f->B * (size_t)f->k * sizeof(int32_t);
    m->params[p] = up;
    const double lu = forward_mse(m, f->x, f->B, b);
    assert_memory_equal(b->idx, idx0, nidx);
    m->params[p] = dn;
    const double ld = forward_mse(m, f->x, f->B, b);
    assert_memory_equal(b->idx, idx0, nidx);
    m->params[p] = orig;
    return (lu - ld) / ((double)up - (double)dn); /* the float step actually taken */
}

static void test_gradient_finite_differences(void **state) {
    (void)state;
    for (size_t c = 0; c < N_CASES; c++) {
        fixture f;
        load_fixture(CASES[c], &f);
        husai_sae m;
        husai_sae_batch b;
        model_from_fixture(&f, &m);
        assert_int_equal(husai_sae_batch_alloc(&b, &m, f.B), HUSAI_OK);
        const size_t D = (size_t)f.d_model, S = (size_t)f.d_sae, w = S * D;
        const size_t nidx = (size_t)f.B * (size_t)f.k;
        forward_mse(&m, f.x, f.B, &b);
        int32_t *idx0 = malloc(nidx * sizeof(int32_t));
        assert_non_null(idx0);
        memcpy(idx0, b.idx, nidx * sizeof(int32_t));
        float *grad = xcalloc(m.n_params);
        husai_sae_backward(&m, f.x, 0.0, &b, grad);

        /* With the top-k set fixed the loss is exactly quadratic in any single parameter, so central
         * differences have no truncation error and eps is limited only by the selection margin:
         * changing W_enc[j][i] by eps moves pre[r][j] by eps*|x[r][i]|, b_enc[j] moves it by eps, and
         * W_dec does not affect the selection at all. A quarter of the fixture's minimum margin keeps
         * the set unchanged (asserted in fd_loss). What remains is float rounding of x_hat inside the
         * double loss sum, ~1e-9 in the loss difference, i.e. ~1e-6 in the quotient, against
         * gradients up to ~1e-2: tolerance |fd - g| <= 1e-2 |g| + 1e-4 max|g|. */
        const double xmax = max_abs(f.x, (size_t)f.B * D);
        const double eps_enc = 0.25 * f.min_margin / (xmax > 1.0 ? xmax : 1.0);
        const double eps_b = 0.25 * f.min_margin;
        const double eps_dec = 1e-2;
        const double gmax = max_abs(grad, m.n_params);

        husai_rng r;
        husai_rng_init(&r, 7 + c, "test-topk-fd", 0);
        double worst = 0.0;
        int n_nonzero = 0;
        for (int s = 0; s < 90; s++) {
            size_t p;
            double eps;
            if (s < 30) {
                p = husai_rng_below(&r, w);
                eps = eps_enc;
            } else if (s < 60) {
                p = w + husai_rng_below(&r, S);
                eps = eps_b;
            } else {
                p = w + S + husai_rng_below(&r, w);
                eps = eps_dec;
            }
            const double fd = fd_loss(&m, &f, &b, idx0, p, eps);
            const double g = grad[p];
            const double err = fabs(fd - g);
            const double tol = 1e-2 * fabs(g) + 1e-4 * gmax;
            if (g != 0.0) n_nonzero++;
            if (err / tol > worst) worst = err / tol;
            if (!(err <= tol))
                fail_msg("%s: param %zu analytic %.8g finite-difference %.8g (err %.3g > tol %.3g)", CASES[c],
                         p, g, fd, err, tol);
        }
        print_message("%s: finite differences: worst err/tol %.3g, %d of 90 sampled grads non-zero, "
                      "eps enc %.3g b %.3g dec %.3g\n",
                      CASES[c], worst, n_nonzero, eps_enc, eps_b, eps_dec);
        assert_true(n_nonzero > 45); /* the sample really exercises the active paths */
        free(grad);
        free(idx0);
        husai_sae_batch_free(&b);
        husai_sae_free(&m);
        free_fixture(&f);
    }
}

/* ---------- init, export, renormalisation ---------- */

static void test_init(void **state) {
    (void)state;
    const int d_model = 20, d_sae = 48, k = 6;
    husai_sae a, b2, c;
    assert_int_equal(alloc_topk(&a, d_model, d_sae, k), HUSAI_OK);
    assert_int_equal(alloc_topk(&b2, d_model, d_sae, k), HUSAI_OK);
    assert_int_equal(alloc_topk(&c, d_model, d_sae, k), HUSAI_OK);
    husai_sae_init(&a, 1234);
    husai_sae_init(&b2, 1234);
    husai_sae_init(&c, 1235);

    const size_t w = (size_t)d_sae * d_model;
    const double bound = sqrt(6.0 / d_model);
    double wmax = 0.0, wsum = 0.0;
    for (size_t i = 0; i < w; i++) {
        assert_true(fabs((double)a.W_enc[i]) <= bound);
        if (fabs((double)a.W_enc[i]) > wmax) wmax = fabs((double)a.W_enc[i]);
        wsum += a.W_enc[i];
    }
    assert_true(wmax > 0.9 * bound);           /* spans the interval, not a narrower one */
    assert_true(fabs(wsum / (double)w) < 0.1); /* centred */
    for (int j = 0; j < d_sae; j++)
        assert_true(a.b_enc[j] == 0.0f);
    for (int j = 0; j < d_sae; j++) {
        double ss = 0.0;
        for (int i = 0; i < d_model; i++)
            ss += (double)a.W_dec[(size_t)j * d_model + i] * a.W_dec[(size_t)j * d_model + i];
        assert_true(fabs(sqrt(ss) - 1.0) < 1e-6);
    }
    assert_memory_equal(a.params, b2.params, a.n_params * sizeof(float)); /* same seed: same bits */
    assert_true(memcmp(a.W_enc, c.W_enc, w * sizeof(float)) != 0);        /* other seed: other params */
    assert_true(memcmp(a.W_dec, c.W_dec, w * sizeof(float)) != 0);
    husai_sae_free(&a);
    husai_sae_free(&b2);
    husai_sae_free(&c);
}

static void test_export_decoder(void **state) {
    (void)state;
    const int d_model = 5, d_sae = 7;
    husai_sae m;
    assert_int_equal(alloc_topk(&m, d_model, d_sae, 2), HUSAI_OK);
    for (int j = 0; j < d_sae; j++)
        for (int i = 0; i < d_model; i++)
            m.W_dec[(size_t)j * d_model + i] = (float)(100 * j + i);
    float out[5 * 7];
    husai_sae_export_decoder(&m, out);
    for (int i = 0; i < d_model; i++)
        for (int j = 0; j < d_sae; j++)
            assert_true(out[i * d_sae + j] == (float)(100 * j + i));
    husai_sae_free(&m);
}

static void test_normalize_decoder(void **state) {
    (void)state;
    husai_sae m;
    assert_int_equal(alloc_topk(&m, 2, 3, 1), HUSAI_OK);
    const float in[6] = {3.0f, 4.0f, 0.0f, 0.0f, -0.5f, 0.0f}; /* features (3,4), (0,0), (-0.5,0) */
    memcpy(m.W_dec, in, sizeof in);
    husai_sae_normalize_decoder(&m);
    assert_float_equal(m.W_dec[0], 0.6f, 1e-7);
    assert_float_equal(m.W_dec[1], 0.8f, 1e-7);
    assert_true(m.W_dec[2] == 0.0f && m.W_dec[3] == 0.0f); /* a zero column stays zero, no NaN */
    assert_true(m.W_dec[4] == -1.0f && m.W_dec[5] == 0.0f);
    husai_sae_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_rejects_bad_k),
        cmocka_unit_test(test_select_negative_values),
        cmocka_unit_test(test_select_ties_lower_index),
        cmocka_unit_test(test_select_random_vs_reference),
        cmocka_unit_test(test_backward_bitwise_vs_row_loop),
        cmocka_unit_test(test_forward_backward_vs_torch),
        cmocka_unit_test(test_adam_two_steps_vs_torch),
        cmocka_unit_test(test_gradient_finite_differences),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_export_decoder),
        cmocka_unit_test(test_normalize_decoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
