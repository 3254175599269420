#include "metrics/groundtruth.h"

#include <math.h>
#include <stdlib.h>

#include "metrics/pwmcc.h"
#include "sae/align.h"

husai_status husai_gt_check(const float *dict, int n_atoms, int d, const char *what) {
    if (n_atoms < 1 || d < 1)
        return husai_error(HUSAI_ERR_DATA, "%s has shape [%d, %d]; it needs at least one atom", what, n_atoms,
                           d);
    for (int a = 0; a < n_atoms; a++) {
        const float *row = dict + (size_t)a * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++) {
            if (!isfinite(row[i]))
                return husai_error(HUSAI_ERR_DATA, "%s: atom %d holds a non-finite value (NaN or Inf)", what,
                                   a);
            ss += (double)row[i] * row[i];
        }
        if (!(ss > 0.0)) return husai_error(HUSAI_ERR_DATA, "%s: atom %d is all zeros", what, a);
    }
    return HUSAI_OK;
}

husai_status husai_gt_recovery(const float *dict, int n_atoms, const float *feat, int n_feat, int d,
                               double *mean_max, double *recovered) {
    if (n_atoms < 1 || n_feat < 1 || d < 1)
        return husai_error(HUSAI_ERR_ARG,
                           "ground-truth recovery needs atoms and features (got %d and %d of dim %d)",
                           n_atoms, n_feat, d);
    float *A = malloc((size_t)n_atoms * d * sizeof(float));
    float *F = malloc((size_t)n_feat * d * sizeof(float));
    float *scratch = malloc(husai_align_scratch_floats(n_feat) * sizeof(float));
    float *cosv = malloc((size_t)n_atoms * sizeof(float));
    int32_t *best = malloc((size_t)n_atoms * sizeof(int32_t));
    if (!A || !F || !scratch || !cosv || !best) {
        free(A);
        free(F);
        free(scratch);
        free(cosv);
        free(best);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate ground-truth recovery buffers");
    }
    husai_unit_rows(dict, n_atoms, d, (size_t)d, 1, A);
    husai_unit_rows(feat, n_feat, d, (size_t)d, 1, F);
    /* The consistency penalty's blocked max-|cos| search, with the atoms as the rows to match. */
    *mean_max = husai_align_rows(A, n_atoms, F, n_feat, d, best, cosv, scratch);
    long hits = 0;
    for (int a = 0; a < n_atoms; a++)
        hits += fabsf(cosv[a]) >= HUSAI_GT_RECOVERED;
    *recovered = (double)hits / n_atoms;
    free(A);
    free(F);
    free(scratch);
    free(cosv);
    free(best);
    return HUSAI_OK;
}
