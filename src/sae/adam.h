/* adam.h: Adam over one flat parameter buffer, bit-for-bit the update PyTorch's
 * torch.optim.Adam makes in float32 (bias-corrected, no weight decay, eps added
 * after the square root of the corrected second moment). Hyperparameters are doubles
 * because PyTorch forms 1 - beta and lr / bias_correction in double before rounding.
 * defines: husai_adam, husai_adam_alloc, husai_adam_step, husai_adam_free */
#ifndef HUSAI_SAE_ADAM_H
#define HUSAI_SAE_ADAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    size_t n;
    double lr, beta1, beta2, eps;
    int64_t t; /* steps taken so far */
    float *m;  /* (n) first moment */
    float *v;  /* (n) second moment */
} husai_adam;

/* Allocates zeroed moments for n parameters. */
husai_status husai_adam_alloc(husai_adam *a, size_t n, double lr, double beta1, double beta2, double eps);

/* Applies one update to params given grad (both length n) and advances t, on up to `threads` OpenMP
 * threads; the result is the same for any count. */
void husai_adam_step(husai_adam *a, float *params, const float *grad, int threads);

/* Releases the moments; safe on a zeroed or freed struct. */
void husai_adam_free(husai_adam *a);

#endif
