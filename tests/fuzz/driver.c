/* driver.c: runs a libFuzzer target without libFuzzer, so the corpora and regression inputs replay
 * with any C compiler in the normal build (tests/fuzz/replay.sh, ctest fuzz_regressions).
 * usage: DRIVER FILE_OR_DIR...   every regular file (directories: their entries, sorted) is one input.
 * Prints one line per directory and a summary; a failing input aborts (the harness's verdict). */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
void husai_fuzz_finish(void) __attribute__((weak));

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "driver: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return -1;
    /* An exact-size copy, so ASan sees reads past the end of the input as libFuzzer would. */
    unsigned char *exact = malloc(n ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    fprintf(stderr, "driver: %s\n", path); /* names the input if the harness aborts on it */
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    long total = 0, errors = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "driver: no such file or directory: %s\n", argv[i]);
            errors++;
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            errors += run_file(argv[i]) != 0;
            total++;
            continue;
        }
        struct dirent **list;
        const int n = scandir(argv[i], &list, NULL, by_name);
        if (n < 0) {
            errors++;
            continue;
        }
        long here = 0;
        for (int j = 0; j < n; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], list[j]->d_name);
            if (list[j]->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                errors += run_file(path) != 0;
                here++;
            }
            free(list[j]);
        }
        free(list);
        printf("driver: %ld inputs from %s\n", here, argv[i]);
        total += here;
    }
    if (husai_fuzz_finish) husai_fuzz_finish();
    printf("driver: %ld inputs replayed, %ld unreadable\n", total, errors);
    return errors ? 1 : 0;
}
