#include "metrics/recon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row i of the evaluated set: X's row rows[i], or row i when rows is NULL. */
static inline const float *row_of(const float *X, const uint32_t *rows, size_t i, int d) {
    return X + (size_t)(rows ? rows[i] : i) * (size_t)d;
}

husai_status husai_recon_eval_density(const husai_sae *m, const float *X, const uint32_t *rows, size_t n_rows,
                                      int batch_rows, husai_recon *out, float *density) {
    const int d = m->d_model;
    if (n_rows < 2) return husai_error(HUSAI_ERR_DATA, "reconstruction metrics need at least 2 rows");
    if (batch_rows < 1) batch_rows = 1;
    if ((size_t)batch_rows > n_rows) batch_rows = (int)n_rows;
    const double N = (double)n_rows * d;

    /* var(X): two passes, since activations can have a mean large next to their spread. */
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
    const double var_x = ssx / (N - 1.0);

    husai_sae_batch b;
    husai_status st = husai_sae_batch_alloc(&b, m, batch_rows);
    if (st) return st;
    int64_t *fired = calloc((size_t)m->d_sae, sizeof(int64_t)); /* rows on which each latent fires */
    float *gathered = rows ? malloc((size_t)batch_rows * d * sizeof(float)) : NULL;
    if (!fired || (rows && !gathered)) {
        free(fired);
        free(gathered);
        husai_sae_batch_free(&b);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate evaluation buffers");
    }
    /* Errors have a mean near zero, so a one-pass sum of e and e^2 in double is accurate. */
    double se = 0.0, sse = 0.0, nnz = 0.0;
    for (size_t r0 = 0; r0 < n_rows; r0 += (size_t)batch_rows) {
        const int n = (int)(n_rows - r0 < (size_t)batch_rows ? n_rows - r0 : (size_t)batch_rows);
        const float *xb = X + r0 * d;
        if (rows) {
            for (int r = 0; r < n; r++)
                memcpy(gathered + (size_t)r * d, row_of(X, rows, r0 + (size_t)r, d),
                       (size_t)d * sizeof(float));
            xb = gathered;
        }
        if ((st = husai_sae_encode(m, xb, n, HUSAI_SAE_EVAL, &b))) break;
        husai_sae_decode(m, &b);
        for (size_t i = 0; i < (size_t)n * d; i++) {
            const double e = (double)b.x_hat[i] - (double)xb[i];
            se += e;
            sse += e * e;
        }
        for (int64_t a = 0; a < b.row_ptr[n]; a++)
            if (b.val[a] != 0.0f) {
                nnz += 1.0;
                fired[b.idx[a]]++;
            }
    }
    if (st) {
        free(fired);
        free(gathered);
        husai_sae_batch_free(&b);
        return st;
    }
    int dead = 0;
    for (int j = 0; j < m->d_sae; j++) {
        dead += !fired[j];
        if (density) density[j] = (float)((double)fired[j] / (double)n_rows);
    }
    const double var_e = (sse - se * se / N) / (N - 1.0);
    out->mse = sse / N;
    out->ev = var_x > 0.0 ? 1.0 - var_e / var_x : NAN;
    out->l0 = nnz / (double)n_rows;
    out->dead_fraction = (double)dead / m->d_sae;
    free(fired);
    free(gathered);
    husai_sae_batch_free(&b);
    return HUSAI_OK;
}

husai_status husai_recon_eval_rows(const husai_sae *m, const float *X, const uint32_t *rows, size_t n_rows,
                                   int batch_rows, husai_recon *out) {
    return husai_recon_eval_density(m, X, rows, n_rows, batch_rows, out, NULL);
}

void husai_density_histogram(const float *density, size_t n, long counts[HUSAI_DENSITY_BINS + 1]) {
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        counts[b] = 0;
    for (size_t i = 0; i < n; i++) {
        const double v = density[i];
        if (!(v > 0.0)) {
            counts[0]++; /* never fires (a NaN density is counted here too, so the sum stays n) */
            continue;
        }
        int b = (int)floor((log10(v) - HUSAI_DENSITY_LOG_MIN) / HUSAI_DENSITY_STEP);
        if (b < 0) b = 0;
        if (b >= HUSAI_DENSITY_BINS) b = HUSAI_DENSITY_BINS - 1;
        counts[1 + b]++;
    }
}

husai_status husai_recon_eval(const husai_sae *m, const float *X, size_t n_rows, int batch_rows,
                              husai_recon *out) {
    return husai_recon_eval_rows(m, X, NULL, n_rows, batch_rows, out);
}
