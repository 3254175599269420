/* groundtruth.h: how well a trained SAE recovers a known (synthetic) dictionary.
 * For each true atom a, the best match among the decoder's features: max_j |cos(atom_a, D_j)|.
 * The |cos| matrix is formed in blocks of atoms with sgemm and reduced to row maxima at once (the
 * search of sae/align.h), so memory is O(block * d_sae) plus normalised copies of both inputs. Reported:
 * the mean of those maxima over atoms and the share of atoms whose maximum is >= HUSAI_GT_RECOVERED.
 * Both inputs are feature rows ([n, d], row i is atom or feature i); norms are floored at 1e-12,
 * as in pwmcc.h. No MPI, no HDF5 here.
 * defines: HUSAI_GT_RECOVERED, husai_gt_check, husai_gt_recovery */
#ifndef HUSAI_METRICS_GROUNDTRUTH_H
#define HUSAI_METRICS_GROUNDTRUTH_H

#include "common/status.h"

/* An atom counts as recovered when some decoder feature has |cos| >= this with it. */
#define HUSAI_GT_RECOVERED 0.9

/* Checks a dictionary dict [n_atoms, d]: at least one atom, every value finite, no all-zero atom.
 * The error names the first offending atom; `what` names the dictionary in messages. */
husai_status husai_gt_check(const float *dict, int n_atoms, int d, const char *what);

/* Fills *mean_max with mean_a max_j |cos(dict_a, feat_j)| and *recovered with the share of atoms whose
 * maximum is >= HUSAI_GT_RECOVERED, for atoms dict [n_atoms, d] and features feat [n_feat, d]
 * (both normalised internally). HUSAI_ERR_ARG on empty shapes, HUSAI_ERR_NOMEM if buffers fail. */
husai_status husai_gt_recovery(const float *dict, int n_atoms, const float *feat, int n_feat, int d,
                               double *mean_max, double *recovered);

#endif
