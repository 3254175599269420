/* `husai ci`: a command-line front end to the bootstrap, so CIs of any value list (HUSAI's
 * published pair values, a column of a CSV) can be computed and checked against numpy. */
#define _GNU_SOURCE /* getopt_long under -std=c17 */
#include "cli/suggest.h"
#include "cli/commands.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/parse.h"
#include "common/status.h"
#include "metrics/bootstrap.h"

#define CI_EXIT_ERROR 1
#define CI_EXIT_USAGE 2
/* How much of a file name a value's message quotes. */
#define HUSAI_CI_NAME_MAX 1024

static void usage(FILE *f) {
    fprintf(f,
            "usage: husai ci [--seed N] [--resamples B] [--rng numpy|native] [--unit pairs] [--diff] FILE "
            "[FILE_Y]\n"
            "Bootstrap 95%% CI (percentile method, linear interpolation) of the mean of the values in FILE,\n"
            "one number per line; FILE `-` reads stdin; blank lines are skipped.\n"
            "  --seed N         generator seed (default 13, HUSAI's)\n"
            "  --resamples B    number of bootstrap resamples, at least 100 (default 10000)\n"
            "  --rng numpy      numpy's default_rng(seed).choice, reproducing HUSAI's CIs\n"
            "  --rng native     husai's own stream (seed, \"bootstrap\") (default)\n"
            "  --unit pairs     resample the values as independent (the only unit a flat list has;\n"
            "                   the seed-cluster unit needs a pair matrix, which `husai sweep` uses)\n"
            "  --diff           HUSAI's unpaired difference of means, FILE minus FILE_Y\n"
            "  -h, --help       print this help\n"
            "Output: one JSON object, {\"n\",\"mean\",\"std\",\"ci95_low\",\"ci95_high\"}, or with --diff\n"
            "{\"diff\",\"ci95_low\",\"ci95_high\"}; numbers have 17 significant digits.\n");
}

/* Prints the calling thread's error detail as the command's one stderr line. */
static int fail(int code) {
    fprintf(stderr, "husai: error: ci: %s\n", husai_error_message());
    return code;
}

typedef struct {
    double *v;
    size_t n, cap;
} value_list;

static husai_status push_value(value_list *l, double x) {
    if (l->n == l->cap) {
        const size_t cap = l->cap ? 2 * l->cap : 256;
        double *v = realloc(l->v, cap * sizeof *v);
        if (!v) return husai_error(HUSAI_ERR_NOMEM, "cannot hold %zu values", cap);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return HUSAI_OK;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Longest line read, newline excluded: a value needs a few dozen bytes, so anything this long is not a
 * value file (or is /dev/zero), and reading it must not grow without bound. */
#define CI_LINE_MAX (1u << 20)

/* Reads one line of f into buf (capacity CI_LINE_MAX + 1, newline dropped, NUL-terminated) and its length
 * into *len: 1 for a line, 0 at the end of the file, or an error naming name:lineno (too long, NUL byte,
 * read error). */
static int read_line(FILE *f, const char *name, size_t lineno, char *buf, size_t *len, husai_status *st) {
    size_t n = 0;
    int ch;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (ch == '\0') {
            *st =
                husai_error(HUSAI_ERR_DATA, "%s:%zu: line contains a NUL byte (binary file?)", name, lineno);
            return -1;
        }
        if (n == CI_LINE_MAX) {
            *st = husai_error(HUSAI_ERR_DATA, "%s:%zu: line is longer than %u bytes; not a file of values",
                              name, lineno, CI_LINE_MAX);
            return -1;
        }
        buf[n++] = (char)ch;
    }
    if (ch == EOF && ferror(f)) {
        *st = husai_error(HUSAI_ERR_IO, "%s:%zu: read error: %s", name, lineno, strerror(errno));
        return -1;
    }
    buf[n] = '\0';
    *len = n;
    return ch != EOF || n > 0;
}

/* Reads one value per line from path ("-" = stdin) into out, naming the file and line of any problem;
 * a bootstrap needs at least 2 values (one gives a zero-width interval that means nothing). */
static husai_status read_values(const char *path, value_list *out) {
    const int use_stdin = strcmp(path, "-") == 0;
    const char *name = use_stdin ? "stdin" : path;
    FILE *f = use_stdin ? stdin : fopen(path, "r");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    char *line = malloc(CI_LINE_MAX + 1);
    if (!line) {
        if (!use_stdin) fclose(f);
        return husai_error(HUSAI_ERR_NOMEM, "cannot read '%s': out of memory", name);
    }
    husai_status st = HUSAI_OK;
    size_t lineno = 0, len = 0;
    int got;
    while ((got = read_line(f, name, ++lineno, line, &len, &st)) > 0) {
        while (len > 0 && is_space(line[len - 1]))
            len--;
        line[len] = '\0';
        size_t start = 0;
        while (start < len && is_space(line[start]))
            start++;
        if (start == len) continue; /* blank line */
        char what[64 + HUSAI_CI_NAME_MAX];
        snprintf(what, sizeof what, "%.*s:%zu: value", HUSAI_CI_NAME_MAX, name, lineno);
        double x = 0.0;
        st = husai_parse_real(what, line + start, -DBL_MAX, DBL_MAX, DBL_MIN, &x);
        if (st == HUSAI_OK) st = push_value(out, x);
        if (st) break;
    }
    free(line);
    if (!use_stdin) fclose(f);
    if (st == HUSAI_OK && out->n < 2)
        st =
            husai_error(HUSAI_ERR_DATA, "%s: needs at least 2 values for an interval, got %zu", name, out->n);
    return st;
}

/* Adds key: x with 17 significant digits, which round-trips every double. */
static int add_number(cJSON *obj, const char *key, double x) {
    char buf[40];
    if (isfinite(x))
        snprintf(buf, sizeof buf, "%.17g", x);
    else
        snprintf(buf, sizeof buf, "null"); /* JSON has no NaN/Inf; the library should never produce one */
    cJSON *item = cJSON_CreateRaw(buf);
    return item && cJSON_AddItemToObject(obj, key, item);
}

static int add_int(cJSON *obj, const char *key, long long x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", x);
    cJSON *item = cJSON_CreateRaw(buf);
    return item && cJSON_AddItemToObject(obj, key, item);
}

/* Prints obj on one line of stdout and frees it; fails if stdout cannot be written (full disk, closed pipe).
 */
static int emit(cJSON *obj, int built) {
    char *text = built ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) {
        husai_error(HUSAI_ERR_NOMEM, "cannot build the JSON output");
        return fail(CI_EXIT_ERROR);
    }
    const int bad = printf("%s\n", text) < 0 || fflush(stdout) != 0;
    cJSON_free(text);
    if (bad) {
        husai_error(HUSAI_ERR_IO, "cannot write the result to stdout: %s", strerror(errno));
        return fail(CI_EXIT_ERROR);
    }
    return 0;
}

enum { OPT_SEED = 256, OPT_RESAMPLES, OPT_RNG, OPT_UNIT, OPT_DIFF };

int husai_cmd_ci(int argc, char **argv) {
    static const struct option longopts[] = {{"seed", required_argument, NULL, OPT_SEED},
                                             {"resamples", required_argument, NULL, OPT_RESAMPLES},
                                             {"rng", required_argument, NULL, OPT_RNG},
                                             {"unit", required_argument, NULL, OPT_UNIT},
                                             {"diff", no_argument, NULL, OPT_DIFF},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    husai_boot_opts o = husai_boot_defaults();
    o.unit = HUSAI_BOOT_PAIRS; /* a flat list has no seed structure */
    int diff = 0, c;

    optind = 1;
    opterr = 0; /* report problems ourselves, as one "husai: error: ci: " line */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SEED:
            if (husai_parse_u64("--seed", optarg, UINT64_MAX, &o.seed)) return fail(CI_EXIT_ERROR);
            break;
        case OPT_RESAMPLES: {
            long long b;
            if (husai_parse_int("--resamples", optarg, 100, INT_MAX, &b)) return fail(CI_EXIT_ERROR);
            o.resamples = (int)b;
            break;
        }
        case OPT_RNG: {
            const int r = husai_boot_rng_parse(optarg);
            if (r < 0) {
                fprintf(stderr, "husai: error: ci: --rng must be 'numpy' or 'native', got '%s'\n", optarg);
                return CI_EXIT_ERROR;
            }
            o.rng = (husai_boot_rng)r;
            break;
        }
        case OPT_UNIT:
            if (!strcmp(optarg, "seeds")) {
                fprintf(
                    stderr,
                    "husai: error: ci: --unit seeds needs a seed x seed pair matrix; a plain value list has "
                    "no seed structure, so only --unit pairs applies\n");
                return CI_EXIT_ERROR;
            }
            if (strcmp(optarg, "pairs")) {
                fprintf(stderr, "husai: error: ci: --unit must be 'pairs' for a value list, got '%s'\n",
                        optarg);
                return CI_EXIT_ERROR;
            }
            o.unit = HUSAI_BOOT_PAIRS;
            break;
        case OPT_DIFF:
            diff = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: /* ':' (a value missing) or '?' */
            husai_cli_option_error("ci", argv, ":h", longopts);
            return CI_EXIT_USAGE;
        }
    }

    const int want = diff ? 2 : 1, got = argc - optind;
    if (got != want) {
        fprintf(stderr, "husai: error: ci: expected %s, got %d file argument%s (see husai ci --help)\n",
                diff ? "two files (X and Y) with --diff" : "one FILE (two only with --diff)", got,
                got == 1 ? "" : "s");
        return CI_EXIT_USAGE;
    }
    if (diff && !strcmp(argv[optind], "-") && !strcmp(argv[optind + 1], "-")) {
        fprintf(stderr, "husai: error: ci: stdin ('-') can be only one of the two files\n");
        return CI_EXIT_USAGE;
    }

    value_list x = {0}, y = {0};
    int rc = CI_EXIT_ERROR;
    husai_status st = read_values(argv[optind], &x);
    if (st == HUSAI_OK && diff) st = read_values(argv[optind + 1], &y);
    if (st != HUSAI_OK) {
        rc = fail(CI_EXIT_ERROR);
        goto done;
    }

    cJSON *obj = cJSON_CreateObject();
    int built = obj != NULL;
    if (diff) {
        husai_diff_ci d;
        st = husai_ci_diff_unpaired(x.v, x.n, y.v, y.n, &o, &d);
        if (st == HUSAI_OK)
            built = built && add_number(obj, "diff", d.diff) && add_number(obj, "ci95_low", d.lo) &&
                    add_number(obj, "ci95_high", d.hi);
    } else {
        husai_ci ci;
        st = husai_ci_mean(x.v, x.n, &o, &ci);
        if (st == HUSAI_OK)
            built = built && add_int(obj, "n", ci.n) && add_number(obj, "mean", ci.mean) &&
                    add_number(obj, "std", ci.std) && add_number(obj, "ci95_low", ci.lo) &&
                    add_number(obj, "ci95_high", ci.hi);
    }
    if (st != HUSAI_OK) {
        cJSON_Delete(obj);
        rc = fail(CI_EXIT_ERROR);
        goto done;
    }
    rc = emit(obj, built);
done:
    free(x.v);
    free(y.v);
    return rc;
}
