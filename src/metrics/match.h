/* match.h: matched agreement between two decoders (after Paulo & Belrose 2025; Song et al. 2025).
 * PWMCC lets many features of one seed claim the same feature of the other; matched agreement pairs
 * the features one-to-one so as to maximise the total |cos|, then reports the mean matched |cos| and
 * the fraction of features whose match reaches a threshold (0.7 by default).
 *
 * Promises:
 * - Decoders are in file layout [d_model, n] (row-major), columns are features; columns are
 *   normalised by max(norm, 1e-12), exactly as PWMCC does; orientation is never guessed from shape.
 * - The assignment is optimal (a maximum-weight matching), found by our own shortest augmenting path
 *   solver with dual potentials (Jonker-Volgenant / Crouse style), O(n^2 m) time for n <= m,
 *   O(n + m) memory beyond the weights. When na != nb, min(na, nb) pairs are matched and the
 *   means and fractions are over those pairs (the smaller side).
 * - Deterministic: the same input gives the same assignment. Ties go, at every step of the search,
 *   to an unassigned column first, then to the lowest column index (a constant matrix gives the
 *   identity).
 * - Memory: unlike PWMCC, the whole na x nb |cos| matrix is held as float (formed with one sgemm), one
 *   per thread: 1 GiB at 16384 x 16384, which is the limit (HUSAI_MATCH_MAX_CELLS); larger pairs are refused
 *   with HUSAI_ERR_ARG, never attempted. Time grows roughly as n^3 in the worst case; measured on one
 *   core for random decoders (d_model 128): n = 1024 0.1 s, 4096 3 s, 8192 10 s, 16384 46 s.
 * - Non-finite weights (NaN/Inf in a decoder) are HUSAI_ERR_DATA, never a wrong matching.
 * No MPI here.
 * defines: HUSAI_MATCH_THRESHOLD, HUSAI_MATCH_MAX_CELLS, husai_assign_max, husai_match_pair,
 *          husai_match_matrix, husai_match_rows_part, husai_match_pairs */
#ifndef HUSAI_METRICS_MATCH_H
#define HUSAI_METRICS_MATCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Default matched-|cos| threshold for "the feature is reproduced" (Paulo & Belrose 2025). */
#define HUSAI_MATCH_THRESHOLD 0.7

/* Largest |cos| matrix (na * nb cells, float) matching will form: 16384 x 16384, 1 GiB. */
#define HUSAI_MATCH_MAX_CELLS ((size_t)16384 * 16384)

/* Maximum-total-weight one-to-one assignment on W [rows, cols] (row-major, finite): min(rows, cols)
 * pairs; row_to_col[i] is row i's column, or -1 when rows > cols leaves row i unmatched. *total (may be
 * NULL) receives the sum of the matched weights, added in row order in double. */
husai_status husai_assign_max(const float *W, int rows, int cols, int32_t *row_to_col, double *total);

/* Matched agreement of A [d_model, na] and B [d_model, nb]: *mean_matched_cos is the mean matched |cos|
 * and *frac_above the fraction of the min(na, nb) matched pairs with |cos| >= threshold; assignment
 * (na entries, optional) receives A's column i -> B's column, or -1 when unmatched. Outputs may be NULL. */
husai_status husai_match_pair(const float *A, int na, const float *B, int nb, int d_model,
                              double *mean_matched_cos, double *frac_above, double threshold,
                              int32_t *assignment);

/* Fills M_mean and M_frac (S x S, row-major, either may be NULL) with the matched agreement of every pair
 * of the S decoders (each [d_model, d_sae], stored one after the other) at HUSAI_MATCH_THRESHOLD; the
 * diagonals are exactly 1. Each column set is normalised once; one |cos| matrix is reused. */
husai_status husai_match_matrix(const float *decoders, int S, int d_model, int d_sae, double *M_mean,
                                double *M_frac);

/* Part `part` of n_parts of that matrix, on decoders already in feature-row form (F: S sets of d_sae unit
 * rows of d_model floats, husai_normalized_feature_rows of each): the pairs p < q whose index in
 * row-major pair order is part mod n_parts, and the diagonal in part 0; every other entry is 0, so the
 * parts of all n_parts sum to the whole matrix. The part's pairs are spread over omp_get_max_threads()
 * threads, each holding its own d_sae x d_sae |cos| matrix; every value is the same for any split. */
husai_status husai_match_rows_part(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                   double *M_mean, double *M_frac);

/* Matched agreement of the n listed pairs (pq: p, q for each) on seed p's rows[p] and q's rows[q] (d_sae
 * unit rows of d_model floats each; only listed seeds are read): sets those entries (both orders) of M_mean
 * and M_frac (S x S, either may be NULL) and leaves every other entry alone. The pairs are spread over
 * omp_get_max_threads() threads, whole; a pair's values are the same bits whatever else is listed. */
husai_status husai_match_pairs(const float *const *rows, int S, int d_model, int d_sae, const int *pq, long n,
                               double *M_mean, double *M_frac);

#endif
