/* husai_select_by_lcb, the selection rule of the calibrate and consistency protocols
 * (DESIGN.md section 6): the largest conservative delta LCB among conditions whose mean EV
 * reaches the floor; ties by delta, then EV, then the earlier condition; -1 (fail loudly)
 * when none passes; a NaN EV never passes; a passing condition without an LCB (withheld: too few
 * seeds) is an error, not a silent pick. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "common/status.h"
#include "metrics/select.h"

/* The selected index, asserting the rule ran without error. */
static int select_ok(const double *lcb, const double *delta, const double *ev, int n, double floor) {
    int sel = -2;
    assert_int_equal(husai_select_by_lcb(lcb, delta, ev, n, floor, &sel), HUSAI_OK);
    return sel;
}

static void test_picks_max_lcb_among_passing(void **state) {
    (void)state;
    const double lcb[] = {0.01, 0.05, 0.03, -0.02};
    const double delta[] = {0.02, 0.06, 0.04, 0.01};
    const double ev[] = {0.5, 0.6, 0.7, 0.8};
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.2), 1);
    /* the EV floor is inclusive */
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.6), 1);
    /* negative LCBs are still ranked (the largest wins even if all are below zero) */
    const double neg[] = {-0.03, -0.01, -0.02};
    assert_int_equal(select_ok(neg, delta, ev, 3, 0.0), 1);
    /* a single passing condition is selected */
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.75), 3);
}

static void test_ignores_higher_lcb_below_floor(void **state) {
    (void)state;
    /* HUSAI's trap: the smallest k has the best LCB but reconstructs poorly */
    const double lcb[] = {0.09, 0.02, 0.04, 0.01};
    const double delta[] = {0.10, 0.03, 0.05, 0.02};
    const double ev[] = {0.19, 0.25, 0.3, 0.5};
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.20), 2);
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.0), 0);
    assert_int_equal(select_ok(lcb, delta, ev, 4, 0.31), 3);
    /* the best LCB last in the list and below the floor */
    const double lcb2[] = {0.01, 0.02, 0.5};
    const double ev2[] = {0.4, 0.3, 0.1};
    assert_int_equal(select_ok(lcb2, delta, ev2, 3, 0.2), 1);
}

static void test_ties(void **state) {
    (void)state;
    /* equal LCB: the larger delta wins, wherever it sits */
    const double lcb[] = {0.03, 0.03, 0.03};
    const double delta_a[] = {0.04, 0.06, 0.05};
    const double ev_a[] = {0.9, 0.3, 0.8};
    assert_int_equal(select_ok(lcb, delta_a, ev_a, 3, 0.2), 1);
    /* equal LCB and delta: the larger EV wins */
    const double delta_b[] = {0.05, 0.05, 0.05};
    const double ev_b[] = {0.4, 0.3, 0.6};
    assert_int_equal(select_ok(lcb, delta_b, ev_b, 3, 0.2), 2);
    /* delta outranks EV: a larger delta with a smaller EV still wins */
    const double delta_c[] = {0.05, 0.07, 0.05};
    const double ev_c[] = {0.9, 0.25, 0.95};
    assert_int_equal(select_ok(lcb, delta_c, ev_c, 3, 0.2), 1);
    /* LCB outranks delta and EV */
    const double lcb_d[] = {0.03, 0.031, 0.03};
    const double delta_d[] = {0.09, 0.01, 0.09};
    const double ev_d[] = {0.9, 0.21, 0.9};
    assert_int_equal(select_ok(lcb_d, delta_d, ev_d, 3, 0.2), 1);
    /* all three equal: the first index */
    const double ev_e[] = {0.5, 0.5, 0.5};
    assert_int_equal(select_ok(lcb, delta_b, ev_e, 3, 0.2), 0);
    /* all three equal, the first one below the floor: the first passing index */
    const double ev_f[] = {0.1, 0.5, 0.5};
    assert_int_equal(select_ok(lcb, delta_b, ev_f, 3, 0.2), 1);
    /* a tie-winner below the floor does not count */
    const double ev_g[] = {0.5, 0.1, 0.5};
    assert_int_equal(select_ok(lcb, delta_a, ev_g, 3, 0.2), 2);
}

static void test_none_pass(void **state) {
    (void)state;
    const double lcb[] = {0.01, 0.05};
    const double delta[] = {0.02, 0.06};
    const double ev[] = {0.1, 0.19999};
    assert_int_equal(select_ok(lcb, delta, ev, 2, 0.2), -1);
    assert_int_equal(select_ok(lcb, delta, ev, 2, 0.99), -1);
    /* no conditions at all */
    assert_int_equal(select_ok(lcb, delta, ev, 0, 0.0), -1);
}

static void test_nan_ev_never_passes(void **state) {
    (void)state;
    const double lcb[] = {0.5, 0.01, 0.9};
    const double delta[] = {0.6, 0.02, 1.0};
    const double ev[] = {NAN, 0.3, NAN};
    assert_int_equal(select_ok(lcb, delta, ev, 3, 0.2), 1);
    /* not even under the loosest floors */
    assert_int_equal(select_ok(lcb, delta, ev, 3, 0.0), 1);
    assert_int_equal(select_ok(lcb, delta, ev, 3, -INFINITY), 1);
    const double all_nan[] = {NAN, NAN, NAN};
    assert_int_equal(select_ok(lcb, delta, all_nan, 3, -INFINITY), -1);
    /* a NaN EV in the first slot must not become the incumbent a later tie is compared to */
    const double lcb_t[] = {0.2, 0.2};
    const double delta_t[] = {0.3, 0.3};
    const double ev_t[] = {NAN, 0.4};
    assert_int_equal(select_ok(lcb_t, delta_t, ev_t, 2, 0.2), 1);
}

/* A withheld LCB (NaN: too few seeds for an interval) cannot be ranked: an error naming the condition,
 * never a silent pick of the first passing condition. Below the floor it does not matter. */
static void test_missing_lcb_is_an_error(void **state) {
    (void)state;
    const double lcb[] = {0.01, NAN, 0.03};
    const double delta[] = {0.02, 0.06, 0.04};
    const double ev[] = {0.5, 0.6, 0.7};
    int sel = 7;
    husai_error_clear();
    assert_int_not_equal(husai_select_by_lcb(lcb, delta, ev, 3, 0.2, &sel), HUSAI_OK);
    assert_int_equal(sel, -1);
    assert_non_null(strstr(husai_error_message(), "condition 1 has no conservative delta LCB"));
    assert_non_null(strstr(husai_error_message(), "at least 3 seeds"));
    husai_error_clear();
    const double all_nan[] = {NAN, NAN};
    assert_int_not_equal(husai_select_by_lcb(all_nan, delta, ev, 2, 0.2, &sel), HUSAI_OK);
    husai_error_clear();
    /* below the floor a missing LCB is never looked at */
    const double ev_low[] = {0.5, 0.1, 0.7};
    assert_int_equal(select_ok(lcb, delta, ev_low, 3, 0.2), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_picks_max_lcb_among_passing),
        cmocka_unit_test(test_ignores_higher_lcb_below_floor),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_none_pass),
        cmocka_unit_test(test_missing_lcb_is_an_error),
        cmocka_unit_test(test_nan_ev_never_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
