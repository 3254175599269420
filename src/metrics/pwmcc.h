/* pwmcc.h: pairwise mean max cosine similarity between two decoders, and the random baseline.
 * Decoders are in file layout [d_model, d_sae] (row-major), columns are features; the
 * orientation is never guessed from the shape. The |A^T B| product is formed in row blocks
 * with sgemm and folded into running row/column maxima, so memory is O(block * d_sae) per
 * OpenMP thread, never d_sae^2. The blocks are spread over omp_get_max_threads() threads, and
 * every value is bitwise the same for any thread count. No MPI here.
 * defines: husai_normalized_feature_rows, husai_pwmcc_pair, husai_pwmcc_matrix, husai_pwmcc_matrix_part,
 *          husai_pwmcc_rows_part, husai_pwmcc_rows_part_best, husai_pwmcc_part_pairs,
 *          husai_pwmcc_block_pairs, husai_pwmcc_pairs_best, husai_unit_rows,
 *          husai_pwmcc_random_decoder, husai_pwmcc_pair_mean, husai_pwmcc_set_bf16, HUSAI_PWMCC_BLOCK */
#ifndef HUSAI_METRICS_PWMCC_H
#define HUSAI_METRICS_PWMCC_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Process-wide: on (1), the |cos| blocks are bf16 products (sae/bf16.h, oneDNN where available) and every
 * row and column maximum is certified and taken over exact dot8 fp32 values (pwmcc.c), so PWMCC is the
 * dot8 rule's whatever the backend or thread count; off (0, the default), sgemm. The sweep sets it with
 * train.precision. */
void husai_pwmcc_set_bf16(int on);

/* Rows of the |cos| matrix computed per sgemm block. */
#define HUSAI_PWMCC_BLOCK 256

/* PWMCC(A, B) = (mean_i max_j C[i,j] + mean_j max_i C[i,j]) / 2 with C = |Ahat^T Bhat|, columns
 * normalised by max(norm, 1e-12). A is [d_model, na], B is [d_model, nb]. Returns the value in *out. */
husai_status husai_pwmcc_pair(const float *A, int na, const float *B, int nb, int d_model, double *out);

/* Fills M (S x S, row-major) with PWMCC of every pair of the S decoders (each [d_model, d_sae],
 * stored one after the other); the diagonal is exactly 1. Each column set is normalised once. */
husai_status husai_pwmcc_matrix(const float *decoders, int S, int d_model, int d_sae, double *M);

/* Part `part` of n_parts of that matrix: the pairs p < q whose index in row-major pair order is part mod
 * n_parts, and the diagonal in part 0; every other entry is 0, so the parts of all n_parts sum to the whole
 * matrix exactly. Each pair's value does not depend on the split. */
husai_status husai_pwmcc_matrix_part(const float *decoders, int S, int d_model, int d_sae, int part,
                                     int n_parts, double *M);

/* husai_pwmcc_matrix_part on decoders already in feature-row form: F holds S sets of d_sae unit rows of
 * d_model floats (husai_normalized_feature_rows of each decoder), so callers can share one copy. */
husai_status husai_pwmcc_rows_part(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                   double *M);

/* husai_pwmcc_rows_part that also keeps every feature's best match, from the same blocked pass. For the
 * k-th pair p < q of the part (in row-major pair order), best_cos + 2 k d_sae holds the best |cos| of each
 * of p's features among q's, then of each of q's among p's; best_index the same offsets holds the index
 * attaining it (the smallest among ties). Both arrays hold 2 d_sae husai_pwmcc_part_pairs(S, part,
 * n_parts) values; NULL best_cos (and best_index) gives husai_pwmcc_rows_part. M is bitwise the same. */
husai_status husai_pwmcc_rows_part_best(const float *F, int S, int d_model, int d_sae, int part, int n_parts,
                                        double *M, float *best_cos, int32_t *best_index);

/* Number of pairs p < q of S seeds in part `part` of n_parts (pair index mod n_parts == part). */
long husai_pwmcc_part_pairs(int S, int part, int n_parts);

/* The pairs p < q of S seeds in blocks of b seeds (block I: seeds [I b, min(S, (I + 1) b))), numbered
 * block pair by block pair (I <= J, I outer, J inner; block_pair k is the k-th of them) and row-major
 * within one: block pair (I, J) has the pairs p in I, q in J, p < q. Writes into pq (2 ints each; NULL
 * counts only) the pairs numbered part mod n_parts, in that order, of block pair block_pair (-1: of all),
 * and returns their count. Over all block pairs that count is husai_pwmcc_part_pairs(S, part, n_parts)
 * whatever b, and with b >= S the pairs and their order are husai_pwmcc_rows_part's. */
long husai_pwmcc_block_pairs(int S, int b, int block_pair, int part, int n_parts, int *pq);

/* PWMCC of the n listed pairs (pq: p, q for each) on seed p's rows[p] and q's rows[q] (each d_sae unit
 * rows of d_model floats, as husai_normalized_feature_rows writes them; only listed seeds are read): sets
 * M[p][q] and M[q][p] of M (S x S) and leaves every other entry alone; the k-th pair's best matches go to
 * best_cos and best_index + 2 k d_sae as husai_pwmcc_rows_part_best keeps them (NULL: none). A pair's
 * value and best matches are the same bits whatever else is listed or where its rows are. */
husai_status husai_pwmcc_pairs_best(const float *const *rows, int S, int d_model, int d_sae, const int *pq,
                                    long n, double *M, float *best_cos, int32_t *best_index);

/* Writes n unit rows of d floats into out [n, d]: row j is src's elements j * row_step + i * elem_step
 * (i < d), scaled by 1 / max(norm, 1e-12) with the norm summed in double. out may be src when the rows are
 * contiguous (row_step d, elem_step 1): each row is read whole before it is written. */
void husai_unit_rows(const float *src, int n, int d, size_t row_step, size_t elem_step, float *out);

/* Copies the n columns of D [d, n] (file layout) into feature rows out [n, d], each scaled to unit norm;
 * norms are floored at 1e-12 so an all-zero column stays zero instead of dividing by zero. */
void husai_normalized_feature_rows(const float *D, int d, int n, float *out);

/* Mean of the S(S-1)/2 off-diagonal entries p < q of an S x S matrix (NaN if S < 2). */
double husai_pwmcc_pair_mean(const double *M, int S);

/* Writes the random-baseline decoder of one seed: i.i.d. standard normals from stream (seed, "random"),
 * shape [d_model, d_sae]. It depends only on the shape and the seed. */
void husai_pwmcc_random_decoder(uint64_t seed, int d_model, int d_sae, float *out);

#endif
