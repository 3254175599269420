/* forward.h: a model as seen by code that needs only its outputs (reconstruction metrics): rows in,
 * reconstruction and sparse codes out. The layers above the SAE take this interface, not the model, so
 * metrics/recon.c works on matrices and a test can hand it any forward. No MPI here.
 * defines: husai_forward_out, husai_forward, husai_sae_forward_open, husai_forward_close */
#ifndef HUSAI_SAE_FORWARD_H
#define HUSAI_SAE_FORWARD_H

#include <stdint.h>

#include "common/status.h"
#include "sae/model.h"

/* One call's outputs, owned by the forward and valid until its next call. */
typedef struct {
    const float *x_hat;     /* (n, d_model) reconstruction */
    const int64_t *row_ptr; /* (n + 1) row r's codes are [row_ptr[r], row_ptr[r+1]) */
    const int32_t *idx;     /* active latents */
    const float *val;       /* their codes */
} husai_forward_out;

typedef struct husai_forward {
    int d_model, d_sae;
    int batch_rows; /* the most rows one call takes */
    /* Runs rows x[0..n) (n <= batch_rows, each d_model floats) and points *out at the results. */
    husai_status (*run)(struct husai_forward *f, const float *x, int n, husai_forward_out *out);
    void (*close)(struct husai_forward *f);
    void *self; /* the implementation's state */
} husai_forward;

/* A forward over trained model m in inference mode (m must outlive it), up to batch_rows rows a call. */
husai_status husai_sae_forward_open(husai_forward *f, const husai_sae *m, int batch_rows);

/* Releases a forward; safe on a zeroed or closed one. */
void husai_forward_close(husai_forward *f);

#endif
