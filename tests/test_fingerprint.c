/* The data fingerprint (src/common/fingerprint.c): equal to an independent computation with python3-xxhash
 * (the expected strings below), the same for every split of the rows into reads in any order, and changed
 * by one flipped bit, two swapped rows, another shape or another dtype. A checkpoint records it and its
 * load refuses other data, naming both fingerprints (src/sae/checkpoint.c). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fingerprint.h"
#include "common/status.h"
#include "sae/checkpoint.h"

enum { ROWS = 7, COLS = 5 };

/* X[r][c] = (r * COLS + c) * 0.25 - 3, exactly representable, as in the python below. */
static void fill(float *X) {
    for (int i = 0; i < ROWS * COLS; i++)
        X[i] = (float)i * 0.25f - 3.0f;
}

static void fp_of(const float *X, size_t rows, size_t cols, const char *dtype, char out[HUSAI_FP_LEN]) {
    husai_fp_format(husai_fp_rows(X, cols * sizeof(float), 0, rows), rows, cols, dtype, out);
}

/* Expected values from python3-xxhash 3.2 (Debian), an implementation independent of this file:
 *   X = np.arange(35, dtype=np.float32).reshape(7, 5) * np.float32(0.25) - np.float32(3)
 *   s = sum(xxhash.xxh3_64_intdigest(X[r].tobytes(), seed=r) for r in range(7)) % 2**64
 *   "xxh3:%016x" % xxhash.xxh3_64_intdigest(f"husai-data-1 rows=7 cols=5 dtype=float32
 * rowsum={s:016x}".encode())
 */
static void test_matches_python_xxhash(void **state) {
    (void)state;
    float X[ROWS * COLS];
    fill(X);
    assert_int_equal(husai_fp_rows(X, COLS * sizeof(float), 0, ROWS), 0x30fd55baf1b14cdeULL);
    char fp[HUSAI_FP_LEN];
    fp_of(X, ROWS, COLS, "float32", fp);
    assert_string_equal(fp, "xxh3:8518f812c4defb58");
}

static void test_split_independent(void **state) {
    (void)state;
    float X[ROWS * COLS];
    fill(X);
    const size_t rb = COLS * sizeof(float);
    const uint64_t whole = husai_fp_rows(X, rb, 0, ROWS);
    /* every cut into two reads, summed in either order, and every row read on its own, last first */
    for (size_t cut = 0; cut <= ROWS; cut++) {
        const uint64_t a = husai_fp_rows(X, rb, 0, cut),
                       b = husai_fp_rows(X + cut * COLS, rb, cut, ROWS - cut);
        assert_true(a + b == whole);
        assert_true(b + a == whole);
    }
    uint64_t one_by_one = 0;
    for (size_t r = ROWS; r-- > 0;)
        one_by_one += husai_fp_rows(X + r * COLS, rb, r, 1);
    assert_true(one_by_one == whole);
    assert_true(husai_fp_rows(X, rb, 3, 0) == 0); /* an empty share adds nothing */
}

static void test_changes_are_seen(void **state) {
    (void)state;
    float X[ROWS * COLS];
    fill(X);
    char base[HUSAI_FP_LEN], fp[HUSAI_FP_LEN];
    fp_of(X, ROWS, COLS, "float32", base);
    /* one flipped bit anywhere */
    for (size_t byte = 0; byte < sizeof X; byte += 7)
        for (int bit = 0; bit < 8; bit += 3) {
            ((unsigned char *)X)[byte] ^= (unsigned char)(1u << bit);
            fp_of(X, ROWS, COLS, "float32", fp);
            assert_string_not_equal(fp, base);
            ((unsigned char *)X)[byte] ^= (unsigned char)(1u << bit);
        }
    fp_of(X, ROWS, COLS, "float32", fp);
    assert_string_equal(fp, base);
    /* two rows swapped: same multiset of rows, other order */
    float row[COLS];
    memcpy(row, X + 1 * COLS, sizeof row);
    memcpy(X + 1 * COLS, X + 4 * COLS, sizeof row);
    memcpy(X + 4 * COLS, row, sizeof row);
    fp_of(X, ROWS, COLS, "float32", fp);
    assert_string_not_equal(fp, base);
    fill(X);
    /* the same bytes read as another shape or from another dtype */
    fp_of(X, 5, 7, "float32", fp);
    assert_string_not_equal(fp, base);
    fp_of(X, ROWS, COLS, "float64", fp);
    assert_string_not_equal(fp, base);
    fp_of(X, ROWS - 1, COLS, "float32", fp);
    assert_string_not_equal(fp, base);
}

static void test_checkpoint_records_data(void **state) {
    (void)state;
    enum { N = 64, D = 8 };
    float X[N * D];
    for (int i = 0; i < N * D; i++)
        X[i] = (float)((i * 37) % 11) - 5.0f;
    husai_train_opts o = husai_train_defaults();
    o.d_sae = 16;
    o.k = 2;
    o.epochs = 2;
    o.batch_size = 16;
    o.seed = 3;
    husai_trainer t;
    assert_int_equal(husai_trainer_init(&t, X, N, D, &o), HUSAI_OK);
    assert_int_equal(husai_trainer_step(&t), HUSAI_OK);
    char path[64];
    snprintf(path, sizeof path, "/tmp/husai_fp_ckpt_XXXXXX");
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    husai_ckpt_id id = {.config_hash = 7, .task = "fp", .data_fp = "xxh3:00000000000000aa"};
    assert_int_equal(husai_checkpoint_save(&t, &id, path), HUSAI_OK);
    char fp[HUSAI_FP_LEN];
    assert_int_equal(husai_checkpoint_peek_data(path, fp), HUSAI_OK);
    assert_string_equal(fp, "xxh3:00000000000000aa");
    snprintf(id.data_fp, sizeof id.data_fp, "xxh3:00000000000000bb");
    assert_int_equal(husai_checkpoint_load(&t, &id, path), HUSAI_ERR_DATA);
    assert_non_null(strstr(husai_error_message(), "xxh3:00000000000000aa"));
    assert_non_null(strstr(husai_error_message(), "xxh3:00000000000000bb"));
    snprintf(id.data_fp, sizeof id.data_fp, "xxh3:00000000000000aa");
    assert_int_equal(husai_checkpoint_load(&t, &id, path), HUSAI_OK);
    unlink(path);
    husai_trainer_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_python_xxhash),
        cmocka_unit_test(test_split_independent),
        cmocka_unit_test(test_changes_are_seen),
        cmocka_unit_test(test_checkpoint_records_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
