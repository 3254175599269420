#include "sae/forward.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const husai_sae *m;
    husai_sae_batch b;
} sae_forward;

static husai_status sae_run(husai_forward *f, const float *x, int n, husai_forward_out *out) {
    sae_forward *s = f->self;
    husai_status st = husai_sae_encode(s->m, x, n, HUSAI_SAE_EVAL, &s->b);
    if (st) return st;
    husai_sae_decode(s->m, &s->b);
    *out = (husai_forward_out){s->b.x_hat, s->b.row_ptr, s->b.idx, s->b.val};
    return HUSAI_OK;
}

static void sae_close(husai_forward *f) {
    sae_forward *s = f->self;
    husai_sae_batch_free(&s->b);
    free(s);
}

husai_status husai_sae_forward_open(husai_forward *f, const husai_sae *m, int batch_rows) {
    memset(f, 0, sizeof *f);
    sae_forward *s = calloc(1, sizeof *s);
    if (!s) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate a forward");
    s->m = m;
    if (batch_rows < 1) batch_rows = 1;
    husai_status st = husai_sae_batch_alloc(&s->b, m, batch_rows);
    if (st) {
        free(s);
        return st;
    }
    *f = (husai_forward){m->d_model, m->d_sae, batch_rows, sae_run, sae_close, s};
    return HUSAI_OK;
}

void husai_forward_close(husai_forward *f) {
    if (f && f->close) f->close(f);
    if (f) memset(f, 0, sizeof *f);
}
