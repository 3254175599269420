/* chunks.h: a dataset streamed in chunks, for data larger than the memory budget.
 * Rows are cut into contiguous chunks of chunk_rows (the last may be shorter). Every epoch visits
 * the chunks in an order drawn from stream (data_seed, "chunk-order", epoch), the same for every
 * seed and rank, so all ranks of a node can train on one shared copy of a chunk at a time; each
 * seed then shuffles the chunk's training rows with its own stream. chunk_rows comes from the
 * configuration alone, never from the rank or node count, so a seed's data order is the same on
 * any layout. No MPI here.
 * defines: husai_chunks, husai_chunks_make, husai_chunks_range, husai_chunks_order,
 *          husai_chunks_virtual, husai_chunks_rows_in, husai_chunks_check_rows */
#ifndef HUSAI_COMMON_CHUNKS_H
#define HUSAI_COMMON_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    size_t n_rows, chunk_rows, n_chunks;
    uint64_t data_seed;
} husai_chunks;

/* Cuts n_rows into chunks of chunk_rows (>= 1); checks the arguments. */
husai_status husai_chunks_make(husai_chunks *c, size_t n_rows, size_t chunk_rows, uint64_t data_seed);

/* Row range [*a, *b) of chunk i. */
void husai_chunks_range(const husai_chunks *c, size_t i, size_t *a, size_t *b);

/* Chunk visiting order of an epoch: order[0..n_chunks) is a permutation of the chunk indices. */
void husai_chunks_order(const husai_chunks *c, int epoch, uint32_t *order);

/* The chunk that "virtual epoch" v (= epoch * n_chunks + position) trains on. order (n_chunks) caches the
 * order of epoch *order_epoch (start with *order_epoch = -1); it is redrawn only when the epoch changes. */
size_t husai_chunks_virtual(const husai_chunks *c, int64_t v, uint32_t *order, int *order_epoch);

/* Within ascending rows[0..n), the index range [*lo, *hi) of values in [a, b) (binary search). */
void husai_chunks_rows_in(const uint32_t *rows, size_t n, size_t a, size_t b, size_t *lo, size_t *hi);

/* HUSAI_OK if every chunk holds at least one of the ascending rows[0..n) (a streamed task trains on
 * every chunk); otherwise an error naming the first chunk without any and its row range. */
husai_status husai_chunks_check_rows(const husai_chunks *c, const uint32_t *rows, size_t n);

#endif
