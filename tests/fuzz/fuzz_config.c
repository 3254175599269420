/* fuzz_config.c: libFuzzer target for the configuration parser (src/config/config.c).
 *
 * Input: INI text, optionally followed by a NUL byte and `--set` assignments, one per line:
 *     <ini text> [ '\0' <section.key=value> { '\n' <section.key=value> } ]
 * Each input is
 *   1. parsed over the defaults with husai_config_load_string and, from a temporary file, with
 *      husai_config_load: both must reach the same verdict;
 *   2. overridden with every assignment through husai_config_set;
 *   3. validated, printed (to /dev/null) and hashed.
 * Nothing may crash, leak or trip UBSan, and every error must come with a non-empty message.
 *
 * Round trip (HUSAI_FUZZ_ROUNDTRIP=1 in the environment): a configuration whose file and overrides
 * are all accepted and that validates must print to INI text that loads back (husai_config_load_string, as
 * `husai merge` does with the text stored in results.h5), validates, and prints and hashes identically. Off
 * by default because the parser has known round-trip gaps (see tests/fuzz/README.md); replay.sh and run.sh
 * turn it on for the seed corpus and regressions/config/, which must all round-trip.
 *
 * Built with clang -fsanitize=fuzzer (make fuzz) or with tests/fuzz/driver.c (replay.sh, ctest). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "common/status.h"

static FILE *g_null;
static char g_ini_path[256];
static int g_roundtrip;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_null = fopen("/dev/null", "w");
    const char *tmp = getenv("TMPDIR");
    snprintf(g_ini_path, sizeof g_ini_path, "%s/husai_fuzz_config_%ld.ini", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    const char *rt = getenv("HUSAI_FUZZ_ROUNDTRIP");
    g_roundtrip = rt && *rt == '1';
    return 0;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_config: property violated: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    abort();
}

/* A failing call must leave a message naming the problem. */
static void check_message(husai_status st, const char *where) {
    if (st == HUSAI_OK) return;
    const char *m = husai_error_message();
    if (!m[0]) die("error without a message", where);
    if (strlen(m) >= 1024) die("message not terminated within its buffer", where);
}

static char *print_to_string(const husai_config *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) abort();
    husai_config_print(c, f);
    fclose(f);
    return text;
}

static void roundtrip(const husai_config *c) {
    char *text = print_to_string(c);
    static husai_config back;
    husai_config_defaults(&back);
    husai_status st = husai_config_load_string(&back, text, "printed");
    if (st) {
        fprintf(stderr, "printed config:\n%s\n", text);
        die("printed configuration does not load back", husai_error_message());
    }
    if (husai_config_validate(&back)) {
        fprintf(stderr, "printed config:\n%s\n", text);
        die("printed configuration does not validate", husai_error_message());
    }
    char *again = print_to_string(&back);
    if (strcmp(text, again)) {
        fprintf(stderr, "printed:\n%s\nreloaded and printed:\n%s\n", text, again);
        die("printed configuration changes when reloaded", NULL);
    }
    if (husai_config_hash(&back) != husai_config_hash(c)) die("hash changes when reloaded", NULL);
    free(again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 64 * 1024) return 0; /* configs are small; keep iterations fast */
    if (!g_null) LLVMFuzzerInitialize(NULL, NULL);
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const size_t ini_len = strlen(buf);
    const char *sets = ini_len < size ? buf + ini_len + 1 : NULL;

    static husai_config c, from_file;

    /* 1. String and file parsers reach the same verdict. */
    husai_config_defaults(&c);
    husai_error_clear();
    const husai_status st = husai_config_load_string(&c, buf, "fuzz.ini");
    check_message(st, "husai_config_load_string");

    FILE *f = fopen(g_ini_path, "wb");
    if (f) {
        fwrite(buf, 1, ini_len, f);
        fclose(f);
        husai_config_defaults(&from_file);
        husai_error_clear();
        const husai_status st_file = husai_config_load(&from_file, g_ini_path);
        check_message(st_file, "husai_config_load");
        unlink(g_ini_path);
        if ((st == HUSAI_OK) != (st_file == HUSAI_OK)) {
            char detail[2200];
            snprintf(detail, sizeof detail, "string parser says %s, file parser says %s (%s)",
                     husai_status_name(st), husai_status_name(st_file), husai_error_message());
            die("husai_config_load and husai_config_load_string disagree", detail);
        }
    }

    /* 2. --set overrides, applied whatever the file's verdict (the CLI stops at the first error,
     *    but every assignment must be safe on any configuration state). */
    int sets_ok = 1;
    if (sets) {
        char *rest = (char *)sets;
        for (char *line = strsep(&rest, "\n"); line; line = strsep(&rest, "\n")) {
            husai_error_clear();
            const husai_status sst = husai_config_set(&c, line);
            check_message(sst, "husai_config_set");
            sets_ok &= sst == HUSAI_OK;
        }
    }

    /* 3. Validate, print, hash: safe whatever the state. */
    husai_error_clear();
    const husai_status vst = husai_config_validate(&c);
    check_message(vst, "husai_config_validate");
    husai_config_print(&c, g_null);
    const uint64_t h1 = husai_config_hash(&c), h2 = husai_config_hash(&c);
    if (h1 != h2) die("husai_config_hash is not deterministic", NULL);

    if (g_roundtrip && st == HUSAI_OK && sets_ok && vst == HUSAI_OK) roundtrip(&c);

    free(buf);
    return 0;
}
