#include "common/fingerprint.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

uint64_t husai_fp_rows(const void *rows, size_t row_bytes, uint64_t first_row, size_t n_rows) {
    const unsigned char *p = rows;
    uint64_t sum = 0; /* unsigned: wraps mod 2^64, so the order of the terms does not matter */
    for (size_t r = 0; r < n_rows; r++)
        sum += XXH3_64bits_withSeed(p + r * row_bytes, row_bytes, first_row + r);
    return sum;
}

void husai_fp_format(uint64_t row_sum, uint64_t n_rows, uint64_t n_cols, const char *dtype,
                     char out[HUSAI_FP_LEN]) {
    /* A text, not a struct: no padding or byte order in the identity, and easy to recompute elsewhere. */
    char text[160];
    const int n =
        snprintf(text, sizeof text, "husai-data-1 rows=%llu cols=%llu dtype=%.32s rowsum=%016llx",
                 (unsigned long long)n_rows, (unsigned long long)n_cols, dtype, (unsigned long long)row_sum);
    const XXH64_hash_t h = XXH3_64bits(text, (size_t)n);
    snprintf(out, HUSAI_FP_LEN, "xxh3:%016llx", (unsigned long long)h);
}
