/* recon.h: reconstruction quality of a trained SAE (inference-mode codes) on a dataset.
 * EV = 1 - var(X - X_hat) / var(X), each var over the whole flattened tensor (one global
 * mean, n-1 denominator); MSE = mean squared error over all elements; L0 = mean count of
 * non-zero latents per row; dead fraction = share of latents that never fire (non-zero) on
 * any row. Accumulated in double. No MPI here.
 * defines: husai_recon, husai_recon_eval */
#ifndef HUSAI_METRICS_RECON_H
#define HUSAI_METRICS_RECON_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sae/model.h"

typedef struct {
    double ev, mse, l0, dead_fraction;
} husai_recon;

/* Evaluates model m on the rows rows[0..n_rows) of X (all of X's first n_rows rows when rows is
 * NULL), in batches of batch_rows; a held-out split is evaluated this way without copying it. */
husai_status husai_recon_eval_rows(const husai_sae *m, const float *X, const uint32_t *rows, size_t n_rows,
                                   int batch_rows, husai_recon *out);

/* Evaluates model m on the n_rows rows of X (n_rows, d_model) in batches of batch_rows. */
husai_status husai_recon_eval(const husai_sae *m, const float *X, size_t n_rows, int batch_rows,
                              husai_recon *out);

#endif
