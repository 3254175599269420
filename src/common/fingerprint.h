/* fingerprint.h: the identity of a dataset's content, the same however its rows were split to be read.
 * Each row's bytes are hashed with xxHash's XXH3-64 (libxxhash), seeded by the row's global index, and
 * the row hashes are summed mod 2^64: any split of the rows among readers (ranks, nodes, streamed
 * chunks), in any order, gives the same sum, while changing any bit or moving a row to another index
 * changes it. The sum is finalised together with the shape and dtype into "xxh3:<16 hex digits>".
 * It detects accidental change (another file, regenerated data), not deliberate forgery. No MPI.
 * defines: HUSAI_FP_LEN, husai_fp_rows, husai_fp_format */
#ifndef HUSAI_COMMON_FINGERPRINT_H
#define HUSAI_COMMON_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#define HUSAI_FP_LEN 24 /* "xxh3:" + 16 hex digits + NUL, rounded up */

/* Sum mod 2^64 over rows r in [0, n_rows) of XXH3_64bits_withSeed(row r, row_bytes, first_row + r), where
 * row r starts at rows + r * row_bytes: the share of the fingerprint of rows [first_row, first_row + n_rows).
 */
uint64_t husai_fp_rows(const void *rows, size_t row_bytes, uint64_t first_row, size_t n_rows);

/* Writes "xxh3:<16 hex>" into out: XXH3-64 of the text "husai-data-1 rows=R cols=C dtype=T rowsum=<16 hex>"
 * (row_sum the total of husai_fp_rows over every row), so the shape and dtype are part of the identity. */
void husai_fp_format(uint64_t row_sum, uint64_t n_rows, uint64_t n_cols, const char *dtype,
                     char out[HUSAI_FP_LEN]);

#endif
