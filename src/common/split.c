#include "common/split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

husai_status husai_split_make(husai_split *s, size_t n_rows, double fraction, uint64_t split_seed) {
    memset(s, 0, sizeof *s);
    if (!(fraction >= 0.0 && fraction < 1.0))
        return husai_error(HUSAI_ERR_ARG, "data.holdout = %g must be in [0, 1)", fraction);
    const size_t n_hold = (size_t)floor((double)n_rows * fraction);
    const size_t n_train = n_rows - n_hold;
    if (n_train < 2 || (fraction > 0.0 && n_hold < 2))
        return husai_error(HUSAI_ERR_DATA,
                           "data.holdout = %g of %zu rows leaves %zu training and %zu held-out rows; "
                           "each needs at least 2",
                           fraction, n_rows, n_train, n_hold);
    uint32_t *perm = malloc(n_rows * sizeof(uint32_t));
    unsigned char *held = calloc(n_rows, 1);
    s->train = malloc(n_train * sizeof(uint32_t));
    s->holdout = malloc((n_hold ? n_hold : 1) * sizeof(uint32_t));
    if (!perm || !held || !s->train || !s->holdout) {
        free(perm);
        free(held);
        husai_split_free(s);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the row split");
    }
    husai_rng r;
    husai_rng_init(&r, split_seed, "holdout", 0);
    husai_rng_permutation(&r, perm, n_rows);
    for (size_t i = 0; i < n_hold; i++)
        held[perm[i]] = 1;
    /* Ascending order on both sides keeps reads of X sequential. */
    for (size_t i = 0; i < n_rows; i++) {
        if (held[i])
            s->holdout[s->n_holdout++] = (uint32_t)i;
        else
            s->train[s->n_train++] = (uint32_t)i;
    }
    free(perm);
    free(held);
    return HUSAI_OK;
}

void husai_split_free(husai_split *s) {
    if (!s) return;
    free(s->train);
    free(s->holdout);
    memset(s, 0, sizeof *s);
}
