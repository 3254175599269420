/* test_arch_backend.c: architectures as backends (src/sae/arch.h). A sixth architecture is defined here,
 * in this file only, as its own husai_arch_ops table, and run through spec/train options' .ops without any
 * edit in src/:
 * - "toy_capped": each row keeps the latents among its k largest pre-activations that exceed TAU (a
 *   threshold rule capped at k per row), with its own code builder and trainer hooks. After training, its
 *   codes on fresh rows must equal a naive selection on the library's pre-activations; training must cut
 *   the reconstruction error; its train_init hook must run once and train_step once per step.
 * - "toy_topk": topk's shared kernels under another name, given to a spec whose arch says batchtopk:
 *   training must give parameters bitwise equal to the registered topk, so the table, not the enum,
 *   decides every rule.
 * - the registry: every husai_arch has a table whose name parses back to it; a table without a code rule
 *   is refused. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "sae/arch.h"
#include "sae/kernels.h"
#include "sae/train.h"

enum { DM = 16, DS = 32, KK = 4, ROWS = 512, BATCH = 64 };
static const float TAU = 1.0f;

static int g_init_calls, g_step_calls;

/* Row r's codes: the k largest of pre (ties to the lower latent), those above TAU, ascending. Written
 * independently of the library's selection kernels. */
static int capped_row(const float *pre, int s, int k, int32_t *idx, float *val) {
    unsigned char taken[DS] = {0};
    assert_true(s <= DS);
    for (int a = 0; a < k; a++) {
        int best = -1;
        for (int j = 0; j < s; j++)
            if (!taken[j] && (best < 0 || pre[j] > pre[best])) best = j;
        taken[best] = 1;
    }
    int c = 0;
    for (int j = 0; j < s; j++)
        if (taken[j] && pre[j] > TAU) {
            idx[c] = j;
            val[c++] = pre[j];
        }
    return c;
}

/* An ops->codes: at most k codes per row, so they fit the batch's n * k slots. */
static husai_status toy_codes(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    (void)mode;
    int64_t nnz = 0;
    for (int r = 0; r < n; r++) {
        b->row_ptr[r] = nnz;
        nnz += capped_row(b->pre + (size_t)r * m->d_sae, m->d_sae, m->k, b->idx + nnz, b->val + nnz);
    }
    b->row_ptr[n] = nnz;
    return HUSAI_OK;
}

static husai_status toy_train_init(husai_trainer *t) {
    (void)t;
    g_init_calls++;
    return HUSAI_OK;
}

static void toy_train_step(husai_trainer *t, const husai_sae_loss *parts) {
    (void)t;
    assert_true(parts->l0 <= KK);
    g_step_calls++;
}

static const husai_arch_ops toy_capped = {
    .name = "toy_capped",
    .always_relu = 1,
    .codes = toy_codes,
    .train_init = toy_train_init,
    .train_step = toy_train_step,
};

static const husai_arch_ops toy_topk = {
    .name = "toy_topk",
    .select_rows = husai_select_topk_rows,
    .codes = husai_codes_topk,
};

static float *random_rows(int n, uint64_t seed) {
    float *x = malloc((size_t)n * DM * sizeof(float));
    assert_non_null(x);
    husai_rng r;
    husai_rng_init(&r, seed, "test-arch-backend", 0);
    for (size_t i = 0; i < (size_t)n * DM; i++)
        x[i] = (float)husai_rng_normal(&r);
    return x;
}

static husai_train_opts toy_opts(const husai_arch_ops *ops, husai_arch arch) {
    husai_train_opts o = husai_train_defaults();
    o.d_sae = DS;
    o.k = KK;
    o.batch_size = BATCH;
    o.epochs = 3;
    o.lr = 1e-2;
    o.arch = arch;
    o.ops = ops;
    return o;
}

/* Mean squared error of model m over n rows of x (eval mode). */
static double model_mse(const husai_sae *m, const float *x, int n) {
    husai_sae_batch b;
    husai_sae_loss loss;
    assert_int_equal(husai_sae_batch_alloc(&b, m, n), HUSAI_OK);
    assert_int_equal(husai_sae_forward(m, x, n, HUSAI_SAE_EVAL, 0.0, &b, &loss), HUSAI_OK);
    husai_sae_batch_free(&b);
    return loss.mse;
}

static void test_toy_architecture_trains_by_its_rule(void **state) {
    (void)state;
    float *x = random_rows(ROWS, 1), *fresh = random_rows(BATCH, 2);
    /* no husai_arch value names it: the table alone describes the architecture */
    const husai_train_opts o = toy_opts(&toy_capped, HUSAI_ARCH_COUNT);
    g_init_calls = g_step_calls = 0;
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, x, ROWS, DM, &o), HUSAI_OK);
    assert_int_equal(g_init_calls, 1);
    assert_ptr_equal(t.model.ops, &toy_capped);
    const double before = model_mse(&t.model, x, ROWS);
    while (!husai_trainer_done(&t))
        assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
    assert_int_equal(g_step_calls, t.steps);
    assert_int_equal(t.steps, 3 * (ROWS / BATCH));
    const double after = model_mse(&t.model, x, ROWS);
    if (!(after < 0.9 * before)) fail_msg("training did not cut the MSE: %g -> %g", before, after);

    /* codes on unseen rows follow the rule, computed here on the library's pre-activations */
    husai_sae_batch b;
    husai_sae_loss loss;
    assert_int_equal(husai_sae_batch_alloc(&b, &t.model, BATCH), HUSAI_OK);
    assert_int_equal(husai_sae_forward(&t.model, fresh, BATCH, HUSAI_SAE_EVAL, 0.0, &b, &loss), HUSAI_OK);
    int32_t idx[KK];
    float val[KK];
    int64_t total = 0, capped = 0;
    for (int r = 0; r < BATCH; r++) {
        const int c = capped_row(b.pre + (size_t)r * DS, DS, KK, idx, val);
        assert_int_equal(b.row_ptr[r + 1] - b.row_ptr[r], c);
        for (int a = 0; a < c; a++) {
            assert_int_equal(b.idx[b.row_ptr[r] + a], idx[a]);
            assert_true(b.val[b.row_ptr[r] + a] == val[a]);
            assert_true(val[a] > TAU);
        }
        total += c;
        capped += c < KK;
    }
    /* the rule is neither empty nor plain top-k on these rows */
    assert_true(total > 0);
    assert_true(capped > 0);
    assert_true(loss.l0 == (double)total / BATCH);
    husai_sae_batch_free(&b);
    husai_trainer_free(&t);
    free(x);
    free(fresh);
}

static void test_table_decides_not_enum(void **state) {
    (void)state;
    float *x = random_rows(ROWS, 3);
    const husai_train_opts ref = toy_opts(NULL, HUSAI_ARCH_TOPK);
    const husai_train_opts toy = toy_opts(&toy_topk, HUSAI_ARCH_BATCHTOPK);
    const husai_train_opts other = toy_opts(NULL, HUSAI_ARCH_BATCHTOPK);
    husai_sae a, c, d;
    assert_int_equal(husai_train_sae(x, ROWS, DM, &ref, &a, NULL), HUSAI_OK);
    assert_int_equal(husai_train_sae(x, ROWS, DM, &toy, &c, NULL), HUSAI_OK);
    assert_int_equal(husai_train_sae(x, ROWS, DM, &other, &d, NULL), HUSAI_OK);
    assert_int_equal(a.n_params, c.n_params);
    assert_memory_equal(a.params, c.params, a.n_params * sizeof(float));
    /* and the enum's own architecture would have trained differently */
    assert_int_equal(a.n_params, d.n_params);
    assert_memory_not_equal(a.params, d.params, a.n_params * sizeof(float));
    husai_sae_free(&a);
    husai_sae_free(&c);
    husai_sae_free(&d);
    free(x);
}

static void test_registry(void **state) {
    (void)state;
    for (int a = 0; a < HUSAI_ARCH_COUNT; a++) {
        const husai_arch_ops *ops = husai_arch_registry[a];
        assert_non_null(ops);
        assert_non_null(ops->codes);
        assert_int_equal(husai_arch_parse(ops->name), a);
        assert_string_equal(husai_arch_name(a), ops->name);
        const husai_sae_spec spec = {.arch = (husai_arch)a};
        assert_ptr_equal(husai_arch_ops_of(&spec), ops);
    }
    const husai_sae_spec unknown = {.arch = HUSAI_ARCH_COUNT};
    assert_null(husai_arch_ops_of(&unknown));
    const husai_sae_spec own = {.arch = HUSAI_ARCH_COUNT, .ops = &toy_capped};
    assert_ptr_equal(husai_arch_ops_of(&own), &toy_capped);
    assert_int_equal(husai_arch_parse("toy_capped"), -1);
    /* a table without a code rule is refused by the spec check, not followed into a NULL call */
    static const husai_arch_ops no_rule = {.name = "no_rule"};
    const husai_sae_spec broken = {.d_model = DM, .d_sae = DS, .k = KK, .ops = &no_rule};
    assert_int_equal(husai_sae_spec_check(&broken), HUSAI_ERR_ARG);
    husai_sae m;
    assert_int_equal(husai_sae_alloc(&m, &broken), HUSAI_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_toy_architecture_trains_by_its_rule),
        cmocka_unit_test(test_table_decides_not_enum),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
