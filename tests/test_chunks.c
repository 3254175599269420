/* The chunk layout of a streamed dataset (src/common/chunks.c): chunks tile the rows exactly, each
 * epoch's order is a permutation that depends only on (data seed, epoch), virtual epochs map to that
 * order, and the binary search for a chunk's training rows agrees with a linear scan. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/chunks.h"
#include "common/rng.h"

static void test_chunks_tile_rows(void **state) {
    (void)state;
    const size_t cases[][2] = {{10, 3}, {10, 5}, {10, 10}, {10, 25}, {1, 1}, {1000, 7}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        husai_chunks c;
        assert_int_equal(husai_chunks_make(&c, cases[t][0], cases[t][1], 9), HUSAI_OK);
        size_t next = 0;
        for (size_t i = 0; i < c.n_chunks; i++) {
            size_t a, b;
            husai_chunks_range(&c, i, &a, &b);
            assert_int_equal(a, next);
            assert_true(b > a && b - a <= cases[t][1]);
            next = b;
        }
        assert_int_equal(next, cases[t][0]);
    }
    husai_chunks c;
    assert_int_equal(husai_chunks_make(&c, 0, 3, 1), HUSAI_ERR_ARG);
    assert_int_equal(husai_chunks_make(&c, 5, 0, 1), HUSAI_ERR_ARG);
}

static void test_order_is_keyed_permutation(void **state) {
    (void)state;
    husai_chunks c;
    assert_int_equal(husai_chunks_make(&c, 1000, 37, 5), HUSAI_OK); /* 28 chunks */
    uint32_t o1[28], o2[28], o3[28];
    int differs = 0;
    for (int e = 0; e < 4; e++) {
        husai_chunks_order(&c, e, o1);
        husai_chunks_order(&c, e, o2);
        assert_memory_equal(o1, o2, sizeof o1); /* same key, same order */
        unsigned char seen[28] = {0};
        for (int i = 0; i < 28; i++) {
            assert_true(o1[i] < 28 && !seen[o1[i]]);
            seen[o1[i]] = 1;
        }
        uint32_t cache[28];
        int cache_epoch = e == 2 ? 0 : -1; /* a stale cache must be redrawn, a fresh one filled */
        if (e == 2) husai_chunks_order(&c, 0, cache);
        for (int i = 0; i < 28; i++) /* virtual epoch e * n + i is chunk o1[i] */
            assert_int_equal(husai_chunks_virtual(&c, (int64_t)e * 28 + i, cache, &cache_epoch), o1[i]);
        assert_int_equal(cache_epoch, e);
        husai_chunks_order(&c, e + 1, o3);
        differs += memcmp(o1, o3, sizeof o1) != 0;
    }
    assert_true(differs >= 3); /* 28! orders: equal neighbours would mean the epoch is ignored */
    husai_chunks c2;
    assert_int_equal(husai_chunks_make(&c2, 1000, 37, 6), HUSAI_OK);
    husai_chunks_order(&c, 0, o1);
    husai_chunks_order(&c2, 0, o2);
    assert_true(memcmp(o1, o2, sizeof o1) != 0); /* the data seed keys it */
}

static void test_rows_in_matches_scan(void **state) {
    (void)state;
    husai_rng r;
    husai_rng_init(&r, 3, "test-chunks", 0);
    uint32_t rows[400];
    size_t n = 0;
    for (uint32_t v = 0; v < 1000; v++)
        if (husai_rng_uniform(&r) < 0.4 && n < 400) rows[n++] = v; /* ascending, with gaps */
    for (size_t a = 0; a < 1000; a += 37)
        for (size_t w = 0; w < 120; w += 17) {
            size_t lo, hi, slo = n, shi = 0;
            husai_chunks_rows_in(rows, n, a, a + w, &lo, &hi);
            for (size_t i = 0; i < n; i++)
                if (rows[i] >= a && rows[i] < a + w) {
                    if (i < slo) slo = i;
                    shi = i + 1;
                }
            if (shi == 0) { /* none inside: an empty range at the insertion point */
                assert_int_equal(lo, hi);
                continue;
            }
            assert_int_equal(lo, slo);
            assert_int_equal(hi, shi);
        }
}

static void test_check_rows(void **state) {
    (void)state;
    husai_chunks c;
    assert_int_equal(husai_chunks_make(&c, 12, 4, 1), HUSAI_OK); /* chunks [0,4) [4,8) [8,12) */
    const uint32_t ok[] = {1, 5, 11}, gap[] = {0, 1, 2, 3, 8, 9};
    assert_int_equal(husai_chunks_check_rows(&c, ok, 3), HUSAI_OK);
    assert_int_equal(husai_chunks_check_rows(&c, gap, 6), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "chunk 1 (rows 4..8)"));
    assert_int_equal(husai_chunks_check_rows(&c, ok, 2), HUSAI_ERR_ARG); /* the last chunk has none */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunks_tile_rows),
        cmocka_unit_test(test_order_is_keyed_permutation),
        cmocka_unit_test(test_rows_in_matches_scan),
        cmocka_unit_test(test_check_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
