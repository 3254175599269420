/* test_nprng: husai_nprng reproduces numpy's default_rng(seed) bit for bit.
 * Besides DESIGN.md appendix A's check values, the constants below were produced with numpy 1.24.2
 * (/usr/bin/python3), e.g.
 *   np.random.default_rng(42).bit_generator.random_raw(3)
 *   np.random.default_rng(7).choice(1000003, 8, replace=True)
 *   g = np.random.default_rng(2024); g.choice(45, (2, 3)); g.choice(7, 5)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/nprng.h"

static void check_raw(uint64_t seed, const uint64_t *want, int n) {
    husai_nprng g;
    husai_nprng_seed(&g, seed);
    for (int i = 0; i < n; i++)
        assert_int_equal(husai_nprng_next64(&g), want[i]);
}

static void check_indices(uint64_t seed, uint32_t n, const uint32_t *want, int count) {
    husai_nprng g;
    husai_nprng_seed(&g, seed);
    for (int i = 0; i < count; i++)
        assert_int_equal(husai_nprng_index(&g, n), want[i]);
}

static void test_appendix_raw(void **state) {
    (void)state;
    const uint64_t want[] = {0xa30febcfd9c2825fULL, 0x4510bdf882d9d721ULL};
    check_raw(0, want, 2);
}

static void test_appendix_choice(void **state) {
    (void)state;
    const uint32_t want[] = {8, 8, 8, 8, 0, 8, 9, 2, 1, 0, 7, 9};
    check_indices(13, 10, want, 12);
}

/* Seeds of one and two 32-bit entropy words, and the largest seed. */
static void test_numpy_raw(void **state) {
    (void)state;
    const uint64_t s42[] = {0xc621fbcd16d92688ULL, 0x705a5661a791ffc1ULL, 0xdbcd12c26eda1624ULL};
    const uint64_t s2w[] = {0xc6323ec321deb8d1ULL, 0x78814821c73a0583ULL, 0xb22536d8e0ec17c0ULL};
    const uint64_t smax[] = {0xae163a7a8c47568fULL, 0xd86659f5f3382359ULL, 0x01e52b195bc2d24aULL};
    check_raw(42, s42, 3);
    check_raw(((uint64_t)1 << 32) + 5, s2w, 3);
    check_raw(UINT64_MAX, smax, 3);
}

/* next32 hands out the low half of a 64-bit draw, then its buffered high half. */
static void test_next32_buffering(void **state) {
    (void)state;
    husai_nprng g;
    husai_nprng_seed(&g, 0);
    assert_int_equal(husai_nprng_next32(&g), 0xd9c2825fu);
    assert_int_equal(husai_nprng_next32(&g), 0xa30febcfu);
    assert_int_equal(husai_nprng_next32(&g), 0x82d9d721u);
    assert_int_equal(husai_nprng_next32(&g), 0x4510bdf8u);
}

/* n not a power of two, a large n, a tiny n, and n just above 2^31 where half the draws are rejected. */
static void test_numpy_choice(void **state) {
    (void)state;
    const uint32_t big[] = {944907, 625097, 684181, 897216, 578294, 775688, 833653, 225207};
    const uint32_t three[] = {2, 0, 2, 0, 0, 2, 1, 2, 2, 1, 2, 0, 1, 1, 0, 0};
    const uint32_t half[] = {1016164996u, 2041105255u, 74845286u,  309580412u,
                             1866217517u, 1777477794u, 551886183u, 878748458u};
    check_indices(7, 1000003, big, 8);
    check_indices(12345, 3, three, 16);
    check_indices(1, 2147483659u, half, 8);
}

/* Two choice calls on one generator share the 32-bit buffer, as HUSAI's x-then-y draws do. */
static void test_numpy_consecutive_calls(void **state) {
    (void)state;
    const uint32_t first[] = {10, 30, 4, 9, 14, 13}, second[] = {6, 5, 6, 6, 0};
    husai_nprng g;
    husai_nprng_seed(&g, 2024);
    for (int i = 0; i < 6; i++)
        assert_int_equal(husai_nprng_index(&g, 45), first[i]);
    for (int i = 0; i < 5; i++)
        assert_int_equal(husai_nprng_index(&g, 7), second[i]);
}

/* numpy's choice(1) returns 0 without touching the stream. */
static void test_index_of_one_draws_nothing(void **state) {
    (void)state;
    const uint32_t want[] = {8, 8, 8, 8, 0, 8};
    husai_nprng g;
    husai_nprng_seed(&g, 13);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(husai_nprng_index(&g, 1), 0);
        assert_int_equal(husai_nprng_index(&g, 10), want[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appendix_raw),
        cmocka_unit_test(test_appendix_choice),
        cmocka_unit_test(test_numpy_raw),
        cmocka_unit_test(test_next32_buffering),
        cmocka_unit_test(test_numpy_choice),
        cmocka_unit_test(test_numpy_consecutive_calls),
        cmocka_unit_test(test_index_of_one_draws_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
