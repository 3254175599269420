/* split.h: the held-out split of a dataset's rows.
 * A fraction of the rows, chosen by stream (split_seed, "holdout"), is never trained on and
 * is used only to measure EV, MSE, L0 and dead latents on unseen data. The split depends on
 * the row count, fraction and split seed alone, so every rank and every seed shares it.
 * defines: husai_split, husai_split_make, husai_split_free */
#ifndef HUSAI_COMMON_SPLIT_H
#define HUSAI_COMMON_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    uint32_t *train;   /* (n_train) ascending row indices */
    uint32_t *holdout; /* (n_holdout) ascending row indices */
    size_t n_train, n_holdout;
} husai_split;

/* Holds out floor(n_rows * fraction) rows; fraction 0 gives every row to training and none held out.
 * Each side must keep at least 2 rows (an error naming the counts otherwise). */
husai_status husai_split_make(husai_split *s, size_t n_rows, double fraction, uint64_t split_seed);

/* Releases the index arrays; safe on a zeroed or freed split. */
void husai_split_free(husai_split *s);

#endif
