#include "common/chunks.h"

#include "common/rng.h"

husai_status husai_chunks_make(husai_chunks *c, size_t n_rows, size_t chunk_rows, uint64_t data_seed) {
    if (n_rows < 1) return husai_error(HUSAI_ERR_ARG, "cannot stream a dataset without rows");
    if (chunk_rows < 1) return husai_error(HUSAI_ERR_ARG, "chunk_rows must be >= 1");
    if (chunk_rows > n_rows) chunk_rows = n_rows;
    c->n_rows = n_rows;
    c->chunk_rows = chunk_rows;
    c->n_chunks = (n_rows + chunk_rows - 1) / chunk_rows;
    c->data_seed = data_seed;
    if (c->n_chunks > UINT32_MAX) return husai_error(HUSAI_ERR_ARG, "%zu chunks are too many", c->n_chunks);
    return HUSAI_OK;
}

void husai_chunks_range(const husai_chunks *c, size_t i, size_t *a, size_t *b) {
    *a = i * c->chunk_rows;
    *b = *a + c->chunk_rows < c->n_rows ? *a + c->chunk_rows : c->n_rows;
}

void husai_chunks_order(const husai_chunks *c, int epoch, uint32_t *order) {
    husai_rng r;
    husai_rng_init(&r, c->data_seed, HUSAI_RNG_CHUNK_ORDER, (uint64_t)epoch);
    husai_rng_permutation(&r, order, c->n_chunks);
}

size_t husai_chunks_virtual(const husai_chunks *c, int64_t v, uint32_t *order, int *order_epoch) {
    const int epoch = (int)(v / (int64_t)c->n_chunks);
    if (*order_epoch != epoch) { /* drawn once per epoch, not once per chunk */
        husai_chunks_order(c, epoch, order);
        *order_epoch = epoch;
    }
    return order[v % (int64_t)c->n_chunks];
}

/* The first index i in [l, n) with rows[i] >= v (n if none); rows is ascending. */
static size_t first_at_least(const uint32_t *rows, size_t l, size_t n, size_t v) {
    size_t h = n;
    while (l < h) {
        const size_t m = l + (h - l) / 2;
        if (rows[m] < v)
            l = m + 1;
        else
            h = m;
    }
    return l;
}

void husai_chunks_rows_in(const uint32_t *rows, size_t n, size_t a, size_t b, size_t *lo, size_t *hi) {
    *lo = first_at_least(rows, 0, n, a);
    *hi = first_at_least(rows, *lo, n, b); /* b >= a, so the search can start at lo */
}

husai_status husai_chunks_check_rows(const husai_chunks *c, const uint32_t *rows, size_t n) {
    for (size_t i = 0; i < c->n_chunks; i++) {
        size_t a, b, lo, hi;
        husai_chunks_range(c, i, &a, &b);
        husai_chunks_rows_in(rows, n, a, b, &lo, &hi);
        if (hi == lo)
            return husai_error(
                HUSAI_ERR_ARG,
                "chunk %zu (rows %zu..%zu) has no training rows; raise data.chunk_rows or lower "
                "data.holdout",
                i, a, b);
    }
    return HUSAI_OK;
}
