/* The sweep configuration: every key from the table, defaults, overrides, and each kind
 * of bad input rejected with a message naming the key (and line, for files). */
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

#include "cli/config.h"
#include "mpi/plan.h"

static const char *GOOD = "[data]\npath = x.h5\n[sae]\nd_sae = 64\n[train]\nepochs = 3\nlr = 1e-3\n"
                          "[sweep]\nparam = k\nvalues = 4, 8 16\nseeds = 42,123\n";

static char tmpl[64];

static const char *write_file(const char *text) {
    snprintf(tmpl, sizeof tmpl, "/tmp/husai_cfg_XXXXXX");
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return tmpl;
}

/* Loads text (optionally with one --set) and validates; returns the status, message in husai_error_message.
 */
static husai_status load(const char *text, const char *set, husai_config *c) {
    husai_config_defaults(c);
    const char *path = write_file(text);
    husai_status st = husai_config_load(c, path);
    if (!st && set) st = husai_config_set(c, set);
    if (!st) st = husai_config_validate(c);
    unlink(path);
    return st;
}

static void expect_error(const char *text, const char *set, const char *needle) {
    husai_config c;
    husai_status st = load(text, set, &c);
    if (st == HUSAI_OK || !strstr(husai_error_message(), needle)) {
        print_error("expected an error containing '%s', got status %d: '%s'\n", needle, st,
                    husai_error_message());
        fail();
    }
}

static void test_good_file_and_defaults(void **state) {
    husai_config c;
    assert_int_equal(load(GOOD, NULL, &c), HUSAI_OK);
    assert_string_equal(c.data_path, "x.h5");
    assert_string_equal(c.dataset, "/activations");
    assert_int_equal(c.d_sae, 64);
    assert_int_equal(c.epochs, 3);
    assert_int_equal(c.batch_size, 2048);
    assert_true(c.lr == 1e-3);
    assert_int_equal(c.n_values, 3);
    assert_true(c.values[2] == 16.0);
    assert_int_equal(c.n_seeds, 2);
    assert_true(c.seeds[1] == 123);
    assert_int_equal(c.resamples, 10000);
    assert_int_equal(c.bootstrap_unit, HUSAI_BOOT_SEEDS);
    assert_string_equal(husai_config_condition(&c, 1).name, "k=8");
    const husai_condition h = husai_config_condition(&c, 2);
    assert_int_equal(h.k, 16);
    assert_int_equal(h.d_sae, 64);
    assert_int_equal(h.epochs, 3);
}

static void test_set_overrides_and_hash(void **state) {
    husai_config a, b;
    assert_int_equal(load(GOOD, NULL, &a), HUSAI_OK);
    assert_int_equal(load(GOOD, "train.lr=0.01", &b), HUSAI_OK);
    assert_true(b.lr == 0.01);
    assert_true(husai_config_hash(&a) != husai_config_hash(&b));
    assert_int_equal(load(GOOD, NULL, &b), HUSAI_OK);
    assert_true(husai_config_hash(&a) == husai_config_hash(&b));
    expect_error(GOOD, "train.nope=1", "unknown key 'nope'");
    expect_error(GOOD, "lr=1", "section.key=value");
}

static void test_bad_inputs(void **state) {
    char buf[2048];
    expect_error("[data]\npath = x.h5\n[bogus]\nx = 1\n", NULL, "unknown section [bogus]");
    expect_error("[data]\npath = x.h5\nfoo = 1\n", NULL, "unknown key 'foo'");
    expect_error("[data]\npath = x.h5\n[sweep]\nseeds = 1,2\n", NULL, "sweep.values");
    expect_error("[data]\npath = x.h5\n[sweep]\nvalues = 4\n", NULL, "sweep.seeds");
    snprintf(buf, sizeof buf, "%s[train]\nbatch_size = 0\n", GOOD);
    expect_error(buf, NULL, "batch_size");
    expect_error(GOOD, "train.lr=abc", "not a finite number");
    expect_error(GOOD, "train.lr=-1", "must be > 0");
    expect_error(GOOD, "train.epochs=0", "epochs = 0 must be >= 1");
    expect_error(GOOD, "metrics.resamples=99", "resamples = 99");
    expect_error(GOOD, "sweep.values=4, 128", "exceeds d_sae");
    expect_error(GOOD, "sweep.values=0", "positive integer");
    expect_error(GOOD, "sweep.values=2.5", "positive integer");
    expect_error(GOOD, "sweep.values=4,4", "listed twice");
    expect_error(GOOD, "sweep.seeds=7,7", "listed twice");
    expect_error(GOOD, "sweep.seeds=7", "at least 2 seeds");
    expect_error(GOOD, "sweep.seeds=", "is empty");
    expect_error(GOOD, "sweep.seeds=-3,4", "non-negative integer");
    expect_error(GOOD, "sweep.values=2,,4", "empty item");
    expect_error("[data]\npath = x.h5\n[sweep]\nparam = lr\nvalues = 1e-4, 1.00000000001e-4\nseeds = 1, 2\n",
                 NULL, "both name condition 'lr=0.0001'");
    expect_error(GOOD, "sweep.seeds=1,2,", "empty item");
    expect_error("path = x.h5\n", NULL, "outside any [section]");
    expect_error(GOOD, "sweep.param=banana", "not sweepable");
    expect_error(GOOD, "sweep.mode=dance", "not a known mode");
    expect_error(GOOD, "sweep.mode=consistency", "goes with sweep.mode = consistency");
    expect_error(GOOD, "sweep.param=lambda", "goes with sweep.mode = consistency");
    expect_error(GOOD, "calibrate.ev_floor=-0.1", "must be >= 0");
    expect_error(GOOD, "calibrate.retrain_seeds=5", "at least 2 seeds");
    expect_error(GOOD, "metrics.bootstrap_unit=rows", "'seeds' or 'pairs'");
    expect_error("[data]\npath = x.h5\nthis line has no equals sign\n", NULL, ":3: not a valid INI line");
    expect_error("\x01\x02\x03\xff\xfe binary junk\n", NULL, "not a valid INI line");
    snprintf(buf, sizeof buf, "%s[sae]\nd_sae = 32\n", GOOD);
    expect_error(buf, NULL, "given twice");
    husai_config c;
    husai_config_defaults(&c);
    assert_int_equal(husai_config_load(&c, "/nonexistent/husai.ini"), HUSAI_ERR_IO);
    assert_non_null(strstr(husai_error_message(), "cannot open config file"));
}

static void test_long_lists_continue_and_round_trip(void **state) {
    /* 60 seeds: one line would pass inih's 200-byte limit, so they continue on indented lines. */
    char text[4096], *p = text;
    p += sprintf(p, "[data]\npath = x.h5\n[sweep]\nvalues = 4\nseeds = 1000000");
    for (int i = 1; i < 60; i++)
        p += sprintf(p, "%s%d", i % 10 == 0 ? "\n    " : ", ", 1000000 + i);
    sprintf(p, "\n");
    husai_config c, back;
    assert_int_equal(load(text, NULL, &c), HUSAI_OK);
    assert_int_equal(c.n_seeds, 60);
    assert_true(c.seeds[59] == 1000059);
    /* what husai prints (and stores in results.h5) loads back to the same configuration */
    char *printed = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&printed, &len);
    husai_config_print(&c, f);
    fclose(f);
    husai_config_defaults(&back);
    assert_int_equal(husai_config_load_string(&back, printed, "printed"), HUSAI_OK);
    assert_int_equal(back.n_seeds, 60);
    assert_true(husai_config_hash(&back) == husai_config_hash(&c));
    free(printed);
    /* a repeated scalar key is still an error; a repeated seed across continuation lines too */
    expect_error("[data]\npath = x.h5\n[sweep]\nvalues = 4\nseeds = 1, 2\n    3, 2\n", NULL, "listed twice");
}

static void test_lr_sweep_names(void **state) {
    husai_config c;
    assert_int_equal(load(GOOD, "sweep.param=lr", &c), HUSAI_OK);
    assert_int_equal(husai_config_set(&c, "sweep.values=0.0003, 0.001"), HUSAI_OK);
    assert_int_equal(husai_config_validate(&c), HUSAI_OK);
    assert_string_equal(husai_config_condition(&c, 0).name, "lr=0.0003");
    assert_true(husai_config_condition(&c, 0).lr == 0.0003);
}

static void test_plan_round_robin(void **state) {
    const uint64_t seeds[3] = {5, 6, 7};
    husai_plan p;
    assert_int_equal(husai_plan_build(&p, 2, seeds, 3, 4), HUSAI_OK);
    assert_int_equal(p.n_tasks, 6);
    for (int t = 0; t < 6; t++) {
        assert_int_equal(p.tasks[t].rank, t % 4);
        assert_int_equal(p.tasks[t].condition, t / 3);
        assert_true(p.tasks[t].seed == seeds[t % 3]);
    }
    int ids[6];
    assert_int_equal(husai_plan_local(&p, 1, 0, ids), 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 5);
    assert_int_equal(husai_plan_local(&p, 1, 1, ids), 2);
    assert_int_equal(ids[0], 5);
    husai_plan_free(&p);
    /* more ranks than tasks: the extra ranks get nothing */
    assert_int_equal(husai_plan_build(&p, 1, seeds, 2, 5), HUSAI_OK);
    assert_int_equal(husai_plan_local(&p, 4, 0, ids), 0);
    husai_plan_free(&p);
    husai_plan_free(&p); /* freeing twice is harmless */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file_and_defaults),
        cmocka_unit_test(test_set_overrides_and_hash),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_lr_sweep_names),
        cmocka_unit_test(test_long_lists_continue_and_round_trip),
        cmocka_unit_test(test_plan_round_robin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
