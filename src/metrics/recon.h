/* recon.h: reconstruction quality of a model's outputs (sae/forward.h: reconstruction and codes, which
 * the trained SAE gives in inference mode) on a dataset.
 * EV = 1 - var(X - X_hat) / var(X), each var over the whole flattened tensor (one global
 * mean, n-1 denominator); MSE = mean squared error over all elements; L0 = mean count of
 * non-zero latents per row; dead fraction = share of latents that never fire (non-zero) on
 * any row. Accumulated in double. Optionally also each latent's firing density (share of rows on
 * which its code is non-zero) and a fixed log10 histogram of densities. No MPI here.
 * defines: husai_recon, husai_recon_acc, husai_recon_acc_*, husai_recon_eval, husai_recon_eval_rows,
 *          husai_recon_eval_density, HUSAI_DENSITY_*, husai_density_histogram,
 *          husai_density_slot */
#ifndef HUSAI_METRICS_RECON_H
#define HUSAI_METRICS_RECON_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sae/forward.h"

typedef struct {
    double ev, mse, l0, dead_fraction;
} husai_recon;

/* The same metrics accumulated over parts of a dataset (streamed chunks): init, add each part, finish. */
typedef struct {
    husai_forward *f;
    float *gathered; /* (f->batch_rows, d_model) the rows of one call, when they are not contiguous */
    int64_t *fired;  /* (d_sae) rows on which each latent fired */
    size_t n_rows;
    double n_elems, mean_x, m2_x; /* running mean and sum of squared deviations of X */
    double se, sse, nnz;
} husai_recon_acc;

/* Prepares an accumulator over forward f's outputs (f must outlive it), f->batch_rows rows a call. */
husai_status husai_recon_acc_init(husai_recon_acc *a, husai_forward *f);

/* Adds rows rows[0..n_rows) of X (X's first n_rows rows when rows is NULL). */
husai_status husai_recon_acc_add(husai_recon_acc *a, const float *X, const uint32_t *rows, size_t n_rows);

/* The metrics over every row added (at least 2); density as in husai_recon_eval_density. */
husai_status husai_recon_acc_finish(const husai_recon_acc *a, husai_recon *out, float *density);

/* Releases the accumulator; safe on a zeroed or freed one. */
void husai_recon_acc_free(husai_recon_acc *a);

/* Evaluates forward f on the rows rows[0..n_rows) of X (all of X's first n_rows rows when rows is
 * NULL); a held-out split is evaluated this way without copying it. */
husai_status husai_recon_eval_rows(husai_forward *f, const float *X, const uint32_t *rows, size_t n_rows,
                                   husai_recon *out);

/* As husai_recon_eval_rows; when density is not NULL it also receives, for each of the d_sae latents, the
 * fraction of the evaluated rows on which its code is non-zero (its firing density). */
husai_status husai_recon_eval_density(husai_forward *f, const float *X, const uint32_t *rows, size_t n_rows,
                                      husai_recon *out, float *density);

/* Evaluates forward f on the n_rows rows of X (n_rows, d_model). */
husai_status husai_recon_eval(husai_forward *f, const float *X, size_t n_rows, husai_recon *out);

/* Density histogram: HUSAI_DENSITY_BINS bins of width HUSAI_DENSITY_STEP in log10(density) from
 * HUSAI_DENSITY_LOG_MIN to 0 (bin b is [LOG_MIN + b STEP, LOG_MIN + (b+1) STEP), the last one closed at 0),
 * after a first "never fires" bin for density 0. */
#define HUSAI_DENSITY_LOG_MIN (-6.0)
#define HUSAI_DENSITY_STEP 0.5
#define HUSAI_DENSITY_BINS 12

/* Counts the n densities into counts[0..HUSAI_DENSITY_BINS]: counts[0] is density <= 0 (never fires),
 * counts[1 + b] is bin b; densities below 10^LOG_MIN go to bin 0 and above 1 to the last bin, so the
 * counts always sum to n. */
void husai_density_histogram(const float *density, size_t n, long counts[HUSAI_DENSITY_BINS + 1]);

/* The slot of husai_density_histogram that density v is counted in (0: never fires). */
int husai_density_slot(double v);

#endif
