#include "metrics/recon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row i of the evaluated set: X's row rows[i], or row i when rows is NULL. */
static inline const float *row_of(const float *X, const uint32_t *rows, size_t i, int d) {
    return X + (size_t)(rows ? rows[i] : i) * (size_t)d;
}

husai_status husai_recon_acc_init(husai_recon_acc *a, husai_forward *f) {
    memset(a, 0, sizeof *a);
    a->f = f;
    a->fired = calloc((size_t)f->d_sae, sizeof(int64_t));
    a->gathered = malloc((size_t)f->batch_rows * f->d_model * sizeof(float));
    if (!a->fired || !a->gathered) {
        husai_recon_acc_free(a);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate evaluation buffers");
    }
    return HUSAI_OK;
}

husai_status husai_recon_acc_add(husai_recon_acc *a, const float *X, const uint32_t *rows, size_t n_rows) {
    if (n_rows == 0) return HUSAI_OK;
    const int d = a->f->d_model;
    const double N = (double)n_rows * d;
    /* var(X): two passes over this part (activations can have a mean large next to their spread),
     * merged into the running total with Chan et al.'s pairwise update. */
    double sx = 0.0;
    for (size_t r = 0; r < n_rows; r++) {
        const float *x = row_of(X, rows, r, d);
        for (int i = 0; i < d; i++)
            sx += x[i];
    }
    const double mx = sx / N;
    double ssx = 0.0;
    for (size_t r = 0; r < n_rows; r++) {
        const float *x = row_of(X, rows, r, d);
        for (int i = 0; i < d; i++) {
            const double c = x[i] - mx;
            ssx += c * c;
        }
    }
    const double n0 = a->n_elems, n1 = n0 + N, delta = mx - a->mean_x;
    a->mean_x += delta * N / n1;
    a->m2_x += ssx + delta * delta * n0 * N / n1;
    a->n_elems = n1;
    /* Errors have a mean near zero, so a one-pass sum of e and e^2 in double is accurate. */
    const size_t br = (size_t)a->f->batch_rows;
    for (size_t r0 = 0; r0 < n_rows; r0 += br) {
        const int n = (int)(n_rows - r0 < br ? n_rows - r0 : br);
        const float *xb = X + r0 * d;
        if (rows) {
            for (int r = 0; r < n; r++)
                memcpy(a->gathered + (size_t)r * d, row_of(X, rows, r0 + (size_t)r, d),
                       (size_t)d * sizeof(float));
            xb = a->gathered;
        }
        husai_forward_out o;
        husai_status st = a->f->run(a->f, xb, n, &o);
        if (st) return st;
        for (size_t i = 0; i < (size_t)n * d; i++) {
            const double e = (double)o.x_hat[i] - (double)xb[i];
            a->se += e;
            a->sse += e * e;
        }
        for (int64_t k = 0; k < o.row_ptr[n]; k++)
            if (o.val[k] != 0.0f) {
                a->nnz += 1.0;
                a->fired[o.idx[k]]++;
            }
    }
    a->n_rows += n_rows;
    return HUSAI_OK;
}

husai_status husai_recon_acc_finish(const husai_recon_acc *a, husai_recon *out, float *density) {
    if (a->n_rows < 2) return husai_error(HUSAI_ERR_DATA, "reconstruction metrics need at least 2 rows");
    const int d_sae = a->f->d_sae;
    const double N = a->n_elems;
    int dead = 0;
    for (int j = 0; j < d_sae; j++) {
        dead += !a->fired[j];
        if (density) density[j] = (float)((double)a->fired[j] / (double)a->n_rows);
    }
    const double var_x = a->m2_x / (N - 1.0), var_e = (a->sse - a->se * a->se / N) / (N - 1.0);
    out->mse = a->sse / N;
    out->ev = var_x > 0.0 ? 1.0 - var_e / var_x : NAN;
    out->l0 = a->nnz / (double)a->n_rows;
    out->dead_fraction = (double)dead / d_sae;
    return HUSAI_OK;
}

void husai_recon_acc_free(husai_recon_acc *a) {
    if (!a) return;
    free(a->fired);
    free(a->gathered);
    memset(a, 0, sizeof *a);
}

husai_status husai_recon_eval_density(husai_forward *f, const float *X, const uint32_t *rows, size_t n_rows,
                                      husai_recon *out, float *density) {
    if (n_rows < 2) return husai_error(HUSAI_ERR_DATA, "reconstruction metrics need at least 2 rows");
    husai_recon_acc a;
    husai_status st = husai_recon_acc_init(&a, f);
    if (st) return st;
    st = husai_recon_acc_add(&a, X, rows, n_rows);
    if (!st) st = husai_recon_acc_finish(&a, out, density);
    husai_recon_acc_free(&a);
    return st;
}

husai_status husai_recon_eval_rows(husai_forward *f, const float *X, const uint32_t *rows, size_t n_rows,
                                   husai_recon *out) {
    return husai_recon_eval_density(f, X, rows, n_rows, out, NULL);
}

int husai_density_slot(double v) {
    if (!(v > 0.0)) return 0; /* never fires (a NaN density too, so the counts still sum to n) */
    int b = (int)floor((log10(v) - HUSAI_DENSITY_LOG_MIN) / HUSAI_DENSITY_STEP);
    if (b < 0) b = 0;
    if (b >= HUSAI_DENSITY_BINS) b = HUSAI_DENSITY_BINS - 1;
    return 1 + b;
}

void husai_density_histogram(const float *density, size_t n, long counts[HUSAI_DENSITY_BINS + 1]) {
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        counts[b] = 0;
    for (size_t i = 0; i < n; i++)
        counts[husai_density_slot(density[i])]++;
}

husai_status husai_recon_eval(husai_forward *f, const float *X, size_t n_rows, husai_recon *out) {
    return husai_recon_eval_rows(f, X, NULL, n_rows, out);
}
