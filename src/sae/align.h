/* align.h: alignment of a model's decoder to a fixed reference decoder, and the gradient
 * of the consistency penalty lambda * (1 - mean_i max_j |cos(D_i, R_j)|) used by the
 * consistency-regularization protocol. The max is taken per feature row i over the
 * reference rows j in sgemm blocks (never an n x m matrix); the subgradient flows through
 * each row's argmax, the reference is a constant. No MPI here.
 * defines: husai_align_scratch_floats, husai_align_rows, husai_align_add_grad, HUSAI_ALIGN_BLOCK */
#ifndef HUSAI_SAE_ALIGN_H
#define HUSAI_SAE_ALIGN_H

#include <stddef.h>
#include <stdint.h>

#define HUSAI_ALIGN_BLOCK 256

/* Floats of scratch husai_align_rows needs for m reference rows. */
size_t husai_align_scratch_floats(int m);

/* For each unit feature row D_i (n x d) finds the reference row (R: m x d, unit rows) of largest
 * |cos|; writes its index to best[i] and the signed cosine to cosv[i]. Returns mean_i |cosv[i]|. */
double husai_align_rows(const float *D, int n, const float *R, int m, int d, int32_t *best, float *cosv,
                        float *scratch);

/* Adds the gradient of lambda * (1 - mean_i |cos(D_i, R_best[i])|) with respect to the rows D
 * (unit norm, so d cos / d D_i = R_j - cos * D_i) into gD (n x d). */
void husai_align_add_grad(const float *D, int n, const float *R, int d, const int32_t *best,
                          const float *cosv, double lambda, float *gD);

#endif
