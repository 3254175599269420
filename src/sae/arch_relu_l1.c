/* arch_relu_l1.c: the ReLU SAE with an L1 penalty (Bricken et al. 2023): z = ReLU(pre), loss
 * recon + coeff * mean_r sum_j z_rj. With sparsity_coeff 0 the trainer steers coeff multiplicatively so
 * that the batch L0 tracks k. */
#include <math.h>
#include <string.h>

#include "sae/arch.h"
#include "sae/kernels.h"
#include "sae/train.h"

static husai_status codes(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    (void)mode;
    memset(b->select, 0, (size_t)m->d_sae * sizeof(float));
    return husai_codes_threshold(m, n, b->select, b);
}

/* Mean L1 of the codes per row (they are positive). */
static double sparsity(const husai_sae *m, const husai_sae_batch *b, double l0) {
    (void)m;
    (void)l0;
    double l1 = 0.0;
    for (int64_t a = 0; a < b->row_ptr[b->n]; a++)
        l1 += b->val[a];
    return l1 / b->n;
}

static float code_grad(double coeff, int n) {
    return (float)(coeff / n);
}

static husai_status train_init(husai_trainer *t) {
    size_t n;
    return husai_trainer_scale_encoder(t, &n);
}

static void train_step(husai_trainer *t, const husai_sae_loss *parts) {
    if (t->opts.sparsity_coeff == 0.0) t->coeff *= exp(husai_trainer_sparsity_error(t, parts->l0));
}

const husai_arch_ops husai_arch_relu_l1 = {
    .name = "relu_l1",
    .always_relu = 1,
    .codes = codes,
    .sparsity = sparsity,
    .code_grad = code_grad,
    .train_init = train_init,
    .train_step = train_step,
};
