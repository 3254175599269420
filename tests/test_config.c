/* The sweep configuration: every key from the table, defaults, overrides, and each kind
 * of bad input rejected with a message naming the key (and line, for files). */
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

#include "config/config.h"
#include "mpi/plan.h"
#include "sae/model.h"

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
    expect_error(GOOD, "features.tau=0", "features.tau = 0 must be > 0");
    expect_error(GOOD, "features.tau=1.5", "features.tau = 1.5 must be in (0, 1]");
    expect_error(GOOD, "features.min_seeds=1", "features.min_seeds = 1 must be 0");
    expect_error(GOOD, "features.min_seeds=99", "between 2 and the");
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
    char *text_copy = husai_config_text(&c); /* the same text, in memory, as results.c and plan use it */
    assert_non_null(text_copy);
    assert_string_equal(text_copy, printed);
    free(text_copy);
    husai_config_defaults(&back);
    assert_int_equal(husai_config_load_string(&back, printed, "printed"), HUSAI_OK);
    assert_int_equal(back.n_seeds, 60);
    assert_true(husai_config_hash(&back) == husai_config_hash(&c));
    free(printed);
    /* ranges: "1-3, 7, 10-12" is the list 1, 2, 3, 7, 10, 11, 12 and hashes like it */
    husai_config r, l;
    assert_int_equal(load(GOOD, "sweep.seeds=1-3, 7, 10-12", &r), HUSAI_OK);
    assert_int_equal(load(GOOD, "sweep.seeds=1,2,3,7,10,11,12", &l), HUSAI_OK);
    const uint64_t want[] = {1, 2, 3, 7, 10, 11, 12};
    assert_int_equal(r.n_seeds, 7);
    for (int i = 0; i < 7; i++)
        assert_true(r.seeds[i] == want[i]);
    assert_true(husai_config_hash(&r) == husai_config_hash(&l));
    assert_int_equal(load(GOOD, "sweep.seeds=5-5, 6", &r), HUSAI_OK);
    assert_int_equal(r.n_seeds, 2);
    expect_error(GOOD, "sweep.seeds=5-3", "runs backwards");
    expect_error(GOOD, "sweep.seeds=1-3, 2", "seed 2 is listed twice");
    expect_error(GOOD, "sweep.seeds=1-1025", "more than 1024 seeds");
    expect_error(GOOD, "sweep.seeds=1-x", "nor a range A-B");
    expect_error(GOOD, "sweep.seeds=1-2-3", "nor a range A-B");
    /* One line over inih's limit is refused by its number, not cut into a confusing tail; a line of
     * exactly the limit (199 characters, here padded with trailing blanks) still parses whole. */
    char needle[64];
    for (int width = 199; width <= 200; width++) {
        char *line = text + sprintf(text, "[data]\npath = x.h5\n[sweep]\nvalues = 4\n");
        p = line + sprintf(line, "seeds = 1");
        for (int i = 2; p - line + 8 < width; i++)
            p += sprintf(p, ", %d", i);
        while (p - line < width)
            *p++ = ' ';
        sprintf(p, "\n");
        assert_int_equal((int)(strchr(line, '\n') - line), width);
        if (width == 199) {
            assert_int_equal(load(text, NULL, &r), HUSAI_OK);
            int n = 1;
            for (const char *q = line; *q; q++)
                n += *q == ',';
            assert_int_equal(r.n_seeds, n);
        } else {
            snprintf(needle, sizeof needle, ":5: line is %d characters", width);
            expect_error(text, NULL, needle);
        }
    }
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

/* Every new [sae] key and train.lr_width_ref, with an architecture sweep. */
static const char *ARCH_CFG = "[data]\npath = x.h5\n[sae]\nd_sae = 64\nk = 8\narch = jumprelu\nrelu = yes\n"
                              "decoder_bias = true\nprefixes = 3\nbandwidth = 0.01\nsparsity_coeff = 0.5\n"
                              "aux_k = 16\naux_coeff = 0.125\ndead_after = 1000\ngrad_projection = 1\n"
                              "[train]\nlr = 1e-3\nlr_width_ref = 256\n"
                              "[sweep]\nparam = arch\nvalues = topk, jumprelu, matryoshka\nseeds = 1, 2\n";

static void check_arch_cfg(const husai_config *c) {
    assert_int_equal(c->arch, HUSAI_ARCH_JUMPRELU);
    assert_int_equal(c->relu, 1);
    assert_int_equal(c->decoder_bias, 1);
    assert_int_equal(c->prefixes, 3);
    assert_true(c->bandwidth == 0.01);
    assert_true(c->sparsity_coeff == 0.5);
    assert_int_equal(c->aux_k, 16);
    assert_true(c->aux_coeff == 0.125);
    assert_true(c->dead_after == 1000.0);
    assert_int_equal(c->grad_projection, 1);
    assert_int_equal(c->lr_width_ref, 256);
    assert_string_equal(c->param, "arch");
    assert_int_equal(c->n_values, 3);
    assert_int_equal(c->values_named, 1);
    const int arch[3] = {HUSAI_ARCH_TOPK, HUSAI_ARCH_JUMPRELU, HUSAI_ARCH_MATRYOSHKA};
    const char *names[3] = {"arch=topk", "arch=jumprelu", "arch=matryoshka"};
    for (int i = 0; i < 3; i++) {
        assert_true(c->values[i] == arch[i]);
        const husai_condition h = husai_config_condition(c, i);
        assert_int_equal(h.arch, arch[i]);
        assert_string_equal(h.name, names[i]);
        assert_int_equal(h.k, 8);
        assert_int_equal(h.d_sae, 64);
        assert_true(fabs(h.lr - 2e-3) <= 1e-15); /* 1e-3 * sqrt(256 / 64) */
    }
}

static void test_arch_keys_parse(void **state) {
    husai_config c;
    assert_int_equal(load(ARCH_CFG, NULL, &c), HUSAI_OK);
    check_arch_cfg(&c);
    /* the defaults: HUSAI's TopK recipe, no extras */
    husai_config_defaults(&c);
    assert_int_equal(c.arch, HUSAI_ARCH_TOPK);
    assert_int_equal(c.relu + c.decoder_bias + c.aux_k + c.grad_projection + c.lr_width_ref, 0);
    assert_int_equal(c.prefixes, 4);
    assert_true(c.bandwidth == 1e-3 && c.sparsity_coeff == 0.0 && c.aux_coeff == 1.0 / 32.0);
    /* other spellings of booleans; numeric architecture values print back as names */
    assert_int_equal(load(ARCH_CFG, "sae.relu=false", &c), HUSAI_OK);
    assert_int_equal(c.relu, 0);
    assert_int_equal(husai_config_set(&c, "sae.decoder_bias=0"), HUSAI_OK);
    assert_int_equal(c.decoder_bias, 0);
    assert_int_equal(husai_config_set(&c, "sae.grad_projection=no"), HUSAI_OK);
    assert_int_equal(c.grad_projection, 0);
    assert_int_equal(husai_config_set(&c, "sae.arch=relu_l1"), HUSAI_OK);
    assert_int_equal(c.arch, HUSAI_ARCH_RELU_L1);
    assert_int_equal(husai_config_set(&c, "sweep.values=0, 3"), HUSAI_OK);
    assert_int_equal(c.values_named, 0);
    assert_int_equal(husai_config_validate(&c), HUSAI_OK);
    assert_string_equal(husai_config_condition(&c, 1).name, "arch=relu_l1");
}

static void test_arch_keys_bad_values(void **state) {
    char buf[2048];
    expect_error(GOOD, "sae.arch=foo", "'foo' is not an architecture");
    expect_error(GOOD, "sae.arch=", "is not an architecture");
    expect_error(GOOD, "sae.relu=maybe", "must be true or false");
    expect_error(GOOD, "sae.decoder_bias=2", "must be true or false");
    expect_error(GOOD, "sae.grad_projection=on", "must be true or false");
    expect_error(GOOD, "sae.prefixes=0", "must be >= 1");
    expect_error(GOOD, "sae.bandwidth=0", "must be > 0");
    expect_error(GOOD, "sae.sparsity_coeff=-0.5", "must be >= 0");
    expect_error(GOOD, "sae.aux_coeff=nan", "not a finite number");
    expect_error(GOOD, "sae.aux_k=-1", "must be >= 0");
    expect_error(GOOD, "train.lr_width_ref=-5", "must be >= 0");
    /* aux_k > d_sae is a validate-time error (d_sae = 64 in GOOD) */
    expect_error(GOOD, "sae.aux_k=65", "sae.aux_k = 65 exceeds d_sae = 64");
    husai_config c;
    assert_int_equal(load(GOOD, "sae.aux_k=64", &c), HUSAI_OK);
    /* and per condition: a d_sae sweep below aux_k */
    snprintf(buf, sizeof buf, "%s[sae]\naux_k = 40\n", GOOD);
    expect_error(buf, "sweep.param=d_sae", "exceeds d_sae");
    /* too many matryoshka prefixes for d_sae: 64 >> 7 = 0 */
    snprintf(buf, sizeof buf, "%s[sae]\narch = matryoshka\nprefixes = 7\n", GOOD);
    assert_int_equal(load(buf, NULL, &c), HUSAI_OK); /* 64 >> 6 = 1 still fits */
    expect_error(buf, "sae.prefixes=8", "too small for 8 matryoshka prefixes");
    expect_error(buf, "sae.prefixes=9", "between 1 and 8");
    /* prefixes only matter for matryoshka */
    snprintf(buf, sizeof buf, "%s[sae]\nprefixes = 8\n", GOOD);
    assert_int_equal(load(buf, NULL, &c), HUSAI_OK);
    /* ... including a matryoshka condition of an architecture sweep */
    snprintf(buf, sizeof buf,
             "[data]\npath = x.h5\n[sae]\nd_sae = 64\nprefixes = 8\n"
             "[sweep]\nparam = arch\nvalues = topk, matryoshka\nseeds = 1, 2\n");
    expect_error(buf, NULL, "condition arch=matryoshka");
    /* architecture names are values of sweep.param = arch only */
    expect_error(GOOD, "sweep.values=topk, jumprelu", "needs sweep.param = arch");
    expect_error(GOOD, "sweep.values=4, relu_l1", "needs sweep.param = arch");
    expect_error(GOOD, "sweep.values=4, foo", "'foo' is neither a number nor an architecture");
    expect_error("[data]\npath = x.h5\n[sweep]\nparam = arch\nvalues = topk, 0\nseeds = 1, 2\n", NULL,
                 "listed twice");
    expect_error("[data]\npath = x.h5\n[sweep]\nparam = arch\nvalues = 7\nseeds = 1, 2\n", NULL,
                 "7 is not an architecture");
    expect_error("[data]\npath = x.h5\n[sweep]\nparam = arch\nvalues = 1.5\nseeds = 1, 2\n", NULL,
                 "1.5 is not an architecture");
    /* an architecture sweep is a plain sweep */
    expect_error("[data]\npath = x.h5\n[sweep]\nmode = calibrate\nparam = arch\nvalues = topk, relu_l1\n"
                 "seeds = 1, 2\n",
                 NULL, "sweep.param = arch goes with sweep.mode = sweep");
    expect_error("[data]\npath = x.h5\n[sweep]\nmode = consistency\nparam = arch\nvalues = topk\n"
                 "seeds = 1, 2\n",
                 NULL, "goes with sweep.mode");
}

/* What husai prints loads back to the same configuration: every new key and named sweep values. */
/* The mode enum keeps the config's names: each parses to itself, prints back as given, and an unknown
 * name is refused by validation with the text the user wrote. */
static void test_mode_names(void **state) {
    (void)state;
    const char *names[] = {"sweep", "calibrate", "consistency"};
    for (int m = 0; m < HUSAI_MODE_COUNT; m++) {
        assert_int_equal(husai_mode_parse(names[m]), m);
        assert_string_equal(husai_mode_name((husai_mode)m), names[m]);
    }
    assert_int_equal(husai_mode_parse("Sweep"), HUSAI_MODE_UNKNOWN);
    assert_string_equal(husai_mode_name(HUSAI_MODE_UNKNOWN), "?");
    husai_config c;
    assert_int_equal(
        load("[data]\npath = x.h5\n[sweep]\nmode = calibrate\nvalues = 4, 8\nseeds = 1-5\n", NULL, &c),
        HUSAI_OK);
    assert_int_equal(c.mode, HUSAI_MODE_CALIBRATE);
    char *printed = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&printed, &len);
    husai_config_print(&c, f);
    fclose(f);
    assert_non_null(strstr(printed, "mode = calibrate\n"));
    free(printed);
    expect_error(GOOD, "sweep.mode=dance", "sweep.mode = 'dance' is not a known mode");
}

static void test_arch_print_round_trip(void **state) {
    husai_config c, back;
    assert_int_equal(load(ARCH_CFG, NULL, &c), HUSAI_OK);
    char *printed = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&printed, &len);
    husai_config_print(&c, f);
    fclose(f);
    assert_non_null(strstr(printed, "values = topk, jumprelu, matryoshka\n"));
    assert_non_null(strstr(printed, "arch = jumprelu\n"));
    assert_non_null(strstr(printed, "lr_width_ref = 256\n"));
    husai_config_defaults(&back);
    assert_int_equal(husai_config_load_string(&back, printed, "printed"), HUSAI_OK);
    assert_int_equal(husai_config_validate(&back), HUSAI_OK);
    check_arch_cfg(&back);
    assert_true(husai_config_hash(&back) == husai_config_hash(&c));
    free(printed);
    /* every new key enters the hash */
    const char *changes[] = {"sae.arch=batchtopk",
                             "sae.relu=false",
                             "sae.decoder_bias=false",
                             "sae.prefixes=2",
                             "sae.bandwidth=0.02",
                             "sae.sparsity_coeff=0",
                             "sae.aux_k=8",
                             "sae.aux_coeff=0.25",
                             "sae.dead_after=10",
                             "sae.grad_projection=false",
                             "train.lr_width_ref=128",
                             "sweep.values=topk, relu_l1"};
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        assert_int_equal(load(ARCH_CFG, changes[i], &back), HUSAI_OK);
        if (husai_config_hash(&back) == husai_config_hash(&c))
            fail_msg("%s does not change the hash", changes[i]);
    }
}

static void test_lr_width_ref(void **state) {
    husai_config c;
    /* GOOD: d_sae 64, lr 1e-3 */
    assert_int_equal(load(GOOD, NULL, &c), HUSAI_OK);
    assert_true(husai_config_condition(&c, 0).lr == 1e-3); /* off by default */
    assert_int_equal(load(GOOD, "train.lr_width_ref=64", &c), HUSAI_OK);
    assert_true(fabs(husai_config_condition(&c, 0).lr - 1e-3) <= 1e-18);
    assert_int_equal(load(GOOD, "train.lr_width_ref=16", &c), HUSAI_OK);
    assert_true(fabs(husai_config_condition(&c, 2).lr - 5e-4) <= 1e-18); /* sqrt(16 / 64) = 1/2 */
    assert_true(c.lr == 1e-3);                                           /* the base lr is untouched */
    /* a width sweep: each condition scales by its own d_sae */
    assert_int_equal(load(GOOD, "train.lr_width_ref=256", &c), HUSAI_OK);
    assert_int_equal(husai_config_set(&c, "sweep.param=d_sae"), HUSAI_OK);
    assert_int_equal(husai_config_set(&c, "sweep.values=64, 256, 1024, 100"), HUSAI_OK);
    assert_int_equal(husai_config_validate(&c), HUSAI_OK);
    const double d[4] = {64, 256, 1024, 100};
    for (int i = 0; i < 4; i++) {
        const husai_condition h = husai_config_condition(&c, i);
        assert_int_equal(h.d_sae, (int)d[i]);
        const double expect = 1e-3 * sqrt(256.0 / d[i]);
        assert_true(fabs(h.lr - expect) <= 1e-15 * expect);
    }
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

/* A key given twice is an error whether it is a list or not, naming both lines; a list's indented
 * continuation lines (also after a blank line) still extend it, exactly as inih joins them. */
static void test_repeated_keys_and_continuations(void **state) {
    (void)state;
    husai_config c;
    const char *head = "[data]\npath = x.h5\n[sweep]\n";
    char buf[1024];
    static const char *const cases[][2] = {
        {"values = 4\nseeds = 1, 2\nseeds = 3, 4\n", ":6: key sweep.seeds is given twice (first on line 5)"},
        {"values = 4, 8\nvalues = 16\nseeds = 1, 2\n",
         ":5: key sweep.values is given twice (first on line 4)"},
        /* the same list again in a second [sweep] block, indented or not */
        {"values = 4\nseeds = 1, 2\n[sae]\nk = 4\n[sweep]\nseeds = 3\n",
         ":9: key sweep.seeds is given twice (first on line 5)"},
        {"values = 4\nseeds = 1, 2\n[sweep]\n  seeds = 3\n",
         ":7: key sweep.seeds is given twice (first on line 5)"},
        /* a scalar cannot continue, nor be given twice */
        {"values = 4\nseeds = 1, 2\n[train]\nlr = 0.001\n    0.002\n",
         ":8: train.lr continues on an indented line"},
        {"values = 4\nseeds = 1, 2\n[train]\nepochs = 3\nepochs = 3\n",
         "key train.epochs is given twice (first on line 7)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(buf, sizeof buf, "%s%s", head, cases[i][0]);
        expect_error(buf, NULL, cases[i][1]);
    }
    /* continuation lines: values over three lines (one after a blank line and a comment), seeds over two */
    snprintf(buf, sizeof buf, "%svalues = 4, 8\n    16\n\n; more\n\t32\nseeds = 1\n  2, 3\n", head);
    assert_int_equal(load(buf, NULL, &c), HUSAI_OK);
    assert_int_equal(c.n_values, 4);
    const double want[] = {4, 8, 16, 32};
    for (int i = 0; i < 4; i++)
        assert_true(c.values[i] == want[i]);
    assert_int_equal(c.n_seeds, 3);
    assert_true(c.seeds[2] == 3);
    /* the same text through husai_config_load_string reaches the same verdict */
    husai_config_defaults(&c);
    assert_int_equal(husai_config_load_string(&c, buf, "text"), HUSAI_OK);
    assert_int_equal(c.n_values, 4);
    snprintf(buf, sizeof buf, "%svalues = 4\nseeds = 1, 2\nseeds = 3, 4\n", head);
    husai_config_defaults(&c);
    assert_int_equal(husai_config_load_string(&c, buf, "text"), HUSAI_ERR_ARG);
    assert_non_null(
        strstr(husai_error_message(), "text:6: key sweep.seeds is given twice (first on line 5)"));
}

/* Numbers follow the one rule of src/common/parse.c, with messages that say what is wrong. */
static void test_number_rule(void **state) {
    (void)state;
    husai_config c;
    expect_error(GOOD, "sae.d_sae=2147483647",
                 "sae.d_sae = 2147483647 is out of range: it exceeds the limit 1000000000");
    expect_error(GOOD, "train.lr=1e300",
                 "train.lr = 1e300 is out of range: it exceeds the limit 3.4028235e+38");
    expect_error(GOOD, "train.lr=1e-50", "underflow");
    expect_error(GOOD, "sae.d_sae=0x40", "hexadecimal");
    expect_error(GOOD, "sweep.values=4, 0x8", "sweep.values = '0x8' is hexadecimal");
    expect_error(GOOD, "sweep.seeds=0x1, 2", "hexadecimal");
    expect_error(GOOD, "metrics.bootstrap_seed=0x1", "hexadecimal");
    expect_error(GOOD, "sae.d_sae=64.5", "not a whole number");
    expect_error(GOOD, "train.epochs=3x", "'x' follows the number");
    expect_error(GOOD, "metrics.bootstrap_seed=-1", "is negative");
    expect_error(GOOD, "sweep.values=1e300", "out of range");
    expect_error("[data]\npath = x.h5\n[sweep]\nparam = d_sae\nvalues = 2147483647\nseeds = 1, 2\n", NULL,
                 "d_sae = 2147483647 is out of range: it exceeds the limit 1000000000");
    char buf[512];
    snprintf(buf, sizeof buf, "%s[train]\nlr_width_ref = 1000000000\n", GOOD);
    expect_error(buf, "train.lr=3e38",
                 "after width scaling (train.lr_width_ref = 1000000000) is out of range");
    /* exact exponent forms are integers wherever integers are read */
    assert_int_equal(load(GOOD, "sae.d_sae=1e3", &c), HUSAI_OK);
    assert_int_equal(c.d_sae, 1000);
    assert_int_equal(load(GOOD, "sweep.seeds=1e3, 2e3", &c), HUSAI_OK);
    assert_true(c.seeds[0] == 1000 && c.seeds[1] == 2000);
    /* a file that is not a configuration is refused by size, not read until memory runs out */
    husai_config_defaults(&c);
    assert_int_equal(husai_config_load(&c, "/dev/zero"), HUSAI_ERR_ARG);
    assert_non_null(strstr(husai_error_message(), "larger than"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file_and_defaults),
        cmocka_unit_test(test_set_overrides_and_hash),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_lr_sweep_names),
        cmocka_unit_test(test_long_lists_continue_and_round_trip),
        cmocka_unit_test(test_arch_keys_parse),
        cmocka_unit_test(test_arch_keys_bad_values),
        cmocka_unit_test(test_arch_print_round_trip),
        cmocka_unit_test(test_mode_names),
        cmocka_unit_test(test_lr_width_ref),
        cmocka_unit_test(test_plan_round_robin),
        cmocka_unit_test(test_repeated_keys_and_continuations),
        cmocka_unit_test(test_number_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
