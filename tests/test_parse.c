/* The one number rule (src/common/parse.c): what is accepted is read exactly (integers against
 * snprintf's digits and exact products, reals against the compiler's own literals), and each kind of
 * refusal (empty, blanks, trailing junk, hex, inf/nan, not whole, negative for unsigned, overflow,
 * underflow and subnormals, range limits) gives an error whose message names the problem. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/parse.h"

/* The parse fails with a message containing needle. */
#define REFUSED(call, needle)                                                                                \
    do {                                                                                                     \
        husai_status st_ = (call);                                                                           \
        if (st_ != HUSAI_ERR_ARG || !strstr(husai_error_message(), (needle))) {                              \
            print_error("%s: status %d, message '%s', expected '%s'\n", #call, st_, husai_error_message(),   \
                        (needle));                                                                           \
            fail();                                                                                          \
        }                                                                                                    \
    } while (0)

static long long int_of(const char *text, long long lo, long long hi) {
    long long v = -12345;
    if (husai_parse_int("x", text, lo, hi, &v) != HUSAI_OK) {
        print_error("'%s' refused: %s\n", text, husai_error_message());
        fail();
    }
    return v;
}

static void test_integers_read_exactly(void **state) {
    (void)state;
    assert_int_equal(int_of("0", -5, 5), 0);
    assert_int_equal(int_of("-0", 0, 5), 0);
    assert_int_equal(int_of("+7", 0, 10), 7);
    assert_int_equal(int_of("-5", -5, 5), -5);
    assert_int_equal(int_of("007", 0, 10), 7);
    assert_true(int_of("9223372036854775807", LLONG_MIN, LLONG_MAX) == LLONG_MAX);
    assert_true(int_of("-9223372036854775808", LLONG_MIN, LLONG_MAX) == LLONG_MIN);
    /* exponent and point forms, only when exactly whole */
    assert_int_equal(int_of("1e3", 0, 1000000000), 1000);
    assert_int_equal(int_of("2.5e3", 0, 1000000000), 2500);
    assert_int_equal(int_of("1E+9", 0, 1000000000), 1000000000);
    assert_int_equal(int_of("1000.000", 0, 1000000000), 1000);
    assert_int_equal(int_of("12500e-2", 0, 1000000000), 125);
    assert_int_equal(int_of("0e99999999999", 0, 1), 0);
    assert_int_equal(int_of(".5e1", 0, 10), 5);
    /* every power-of-two neighbourhood and a spread of values round-trip through their decimal digits */
    char buf[64];
    for (int b = 0; b < 63; b++)
        for (long long d = -1; d <= 1; d++) {
            const long long v = (1LL << b) + d;
            snprintf(buf, sizeof buf, "%lld", v);
            assert_true(int_of(buf, LLONG_MIN, LLONG_MAX) == v);
            snprintf(buf, sizeof buf, "%lld", -v);
            assert_true(int_of(buf, LLONG_MIN, LLONG_MAX) == -v);
        }
    /* m x 10^e written with an exponent equals the product computed by multiplication */
    for (long long m = 1; m < 100000; m = m * 7 + 3)
        for (int e = 0; e < 8; e++) {
            long long want = m;
            for (int i = 0; i < e; i++)
                want *= 10;
            snprintf(buf, sizeof buf, "%llde%d", m, e);
            assert_true(int_of(buf, 0, LLONG_MAX) == want);
        }
}

static void test_integer_refusals(void **state) {
    (void)state;
    long long v;
    uint64_t u;
    REFUSED(husai_parse_int("sae.d_sae", "2147483647", 1, 1000000000, &v),
            "sae.d_sae = 2147483647 is out of range: it exceeds the limit 1000000000");
    REFUSED(husai_parse_int("k", "9223372036854775808", LLONG_MIN, LLONG_MAX, &v), "exceeds the limit");
    REFUSED(husai_parse_int("k", "99999999999999999999999", 0, 10, &v), "exceeds the limit 10");
    REFUSED(husai_parse_int("k", "1e20", 0, LLONG_MAX, &v), "exceeds the limit");
    REFUSED(husai_parse_int("k", "1e99999999999", 0, LLONG_MAX, &v), "exceeds the limit");
    REFUSED(husai_parse_int("k", "-9223372036854775809", LLONG_MIN, LLONG_MAX, &v), "must be >=");
    REFUSED(husai_parse_int("epochs", "0", 1, 10, &v), "epochs = 0 must be >= 1");
    REFUSED(husai_parse_int("k", "-1", 0, 10, &v), "must be >= 0");
    REFUSED(husai_parse_int("k", "1.5", 0, 10, &v), "not a whole number");
    REFUSED(husai_parse_int("k", "1e-1", 0, 10, &v), "not a whole number");
    REFUSED(husai_parse_int("k", "0x10", 0, 100, &v), "hexadecimal");
    REFUSED(husai_parse_int("k", "-0X1", -100, 100, &v), "hexadecimal");
    REFUSED(husai_parse_int("k", "", 0, 100, &v), "is empty");
    REFUSED(husai_parse_int("k", " 5", 0, 100, &v), "is not an integer");
    REFUSED(husai_parse_int("k", "5 ", 0, 100, &v), "' ' follows the number");
    REFUSED(husai_parse_int("k", "12x", 0, 100, &v), "'x' follows the number");
    REFUSED(husai_parse_int("k", "1e", 0, 100, &v), "'e' follows the number");
    REFUSED(husai_parse_int("k", "1e+", 0, 100, &v), "follows the number");
    REFUSED(husai_parse_int("k", ".", 0, 100, &v), "is not an integer");
    REFUSED(husai_parse_int("k", "-", 0, 100, &v), "is not an integer");
    REFUSED(husai_parse_int("k", "inf", 0, 100, &v), "inf and nan are refused");
    REFUSED(husai_parse_u64("seed", "-3", UINT64_MAX, &u), "is negative");
    REFUSED(husai_parse_u64("seed", "1x", UINT64_MAX, &u), "non-negative integer");
    REFUSED(husai_parse_u64("seed", "18446744073709551616", UINT64_MAX, &u), "exceeds the limit");
    REFUSED(husai_parse_u64("seed", "0x5", UINT64_MAX, &u), "hexadecimal");
    assert_int_equal(husai_parse_u64("seed", "18446744073709551615", UINT64_MAX, &u), HUSAI_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(husai_parse_u64("seed", "1.8e19", UINT64_MAX, &u), HUSAI_OK);
    assert_true(u == 18000000000000000000ULL);
    assert_int_equal(husai_parse_u64("seed", "-0", UINT64_MAX, &u), HUSAI_OK);
    assert_true(u == 0);
    /* a refused parse leaves the output alone */
    v = 77;
    assert_int_equal(husai_parse_int("k", "abc", 0, 100, &v), HUSAI_ERR_ARG);
    assert_int_equal(v, 77);
}

static double real_of(const char *text) {
    double v = -12345.0;
    if (husai_parse_real("x", text, -DBL_MAX, DBL_MAX, DBL_MIN, &v) != HUSAI_OK) {
        print_error("'%s' refused: %s\n", text, husai_error_message());
        fail();
    }
    return v;
}

static void test_reals(void **state) {
    (void)state;
    assert_true(real_of("0") == 0.0);
    assert_true(real_of("-0.0") == 0.0);
    assert_true(real_of("3e-4") == 3e-4);
    assert_true(real_of("2.5E-4") == 2.5e-4);
    assert_true(real_of(".25") == 0.25);
    assert_true(real_of("-1.") == -1.0);
    assert_true(real_of("+0.1") == 0.1);
    assert_true(real_of("0.29615735478699207") == 0.29615735478699207);
    assert_true(real_of("1.7976931348623157e308") == DBL_MAX);
    assert_true(real_of("2.2250738585072014e-308") == DBL_MIN);
    double v;
    REFUSED(husai_parse_real("v", "1e309", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "exceeds the limit");
    REFUSED(husai_parse_real("v", "-1e309", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "must be >=");
    REFUSED(husai_parse_real("v", "1e-310", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "underflow");
    REFUSED(husai_parse_real("v", "-4.9e-324", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "underflow");
    REFUSED(husai_parse_real("v", "1e-99999", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "underflow");
    assert_int_equal(husai_parse_real("v", "0e-99999", -DBL_MAX, DBL_MAX, DBL_MIN, &v), HUSAI_OK);
    assert_true(v == 0.0);
    /* float32's range, as the config's real keys use it */
    REFUSED(husai_parse_real("train.lr", "1e300", -FLT_MAX, FLT_MAX, FLT_MIN, &v),
            "train.lr = 1e300 is out of range: it exceeds the limit 3.4028235e+38");
    REFUSED(husai_parse_real("train.lr", "1e-40", -FLT_MAX, FLT_MAX, FLT_MIN, &v), "underflow");
    assert_int_equal(husai_parse_real("train.lr", "3e38", -FLT_MAX, FLT_MAX, FLT_MIN, &v), HUSAI_OK);
    REFUSED(husai_parse_real("v", "0x1p3", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "hexadecimal");
    REFUSED(husai_parse_real("v", "nan", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "not a finite number");
    REFUSED(husai_parse_real("v", "-Infinity", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "not a finite number");
    REFUSED(husai_parse_real("v", "", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "is empty");
    REFUSED(husai_parse_real("v", "1.5.2", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "'.2' follows the number");
    REFUSED(husai_parse_real("v", "1,5", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "',5' follows the number");
    REFUSED(husai_parse_real("v", "\t1", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "is not a finite number");
    REFUSED(husai_parse_real("v", "1\n", -DBL_MAX, DBL_MAX, DBL_MIN, &v), "follows the number");
    REFUSED(husai_parse_real("noise", "-0.1", 0.0, 1e30, DBL_MIN, &v), "must be >= 0");
    REFUSED(husai_parse_real("noise", "2e30", 0.0, 1e30, DBL_MIN, &v), "exceeds the limit 1e+30");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers_read_exactly),
        cmocka_unit_test(test_integer_refusals),
        cmocka_unit_test(test_reals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
