/* arch_jumprelu.c: JumpReLU (Rajamanoharan et al. 2024): z_j = pre_j where pre_j > theta_j, a threshold
 * learned per latent (stored as log theta after b_dec) through a straight-through estimator with a
 * rectangle kernel of width spec.bandwidth; loss recon + coeff * L0. With sparsity_coeff 0 the trainer
 * steers coeff as a Lagrange multiplier so that the batch L0 tracks k. */
#include <math.h>
#include <stdlib.h>

#include "sae/arch.h"
#include "sae/kernels.h"
#include "sae/train.h"

static husai_status check(const husai_sae_spec *s) {
    if (!(s->bandwidth > 0.0 && isfinite(s->bandwidth)))
        return husai_error(HUSAI_ERR_ARG, "jumprelu bandwidth=%g must be > 0", s->bandwidth);
    return HUSAI_OK;
}

static husai_status codes(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b) {
    (void)mode;
    for (int j = 0; j < m->d_sae; j++)
        b->select[j] = expf(m->log_theta[j]);
    return husai_codes_threshold(m, n, b->select, b);
}

static double sparsity(const husai_sae *m, const husai_sae_batch *b, double l0) {
    (void)m;
    (void)b;
    return l0;
}

/* Straight-through estimate (Rajamanoharan et al. 2024), rectangle kernel of width eps:
 * d z / d theta = -(theta / eps) and d L0 / d theta = -1 / eps inside the window. */
static void backward(const husai_sae *m, double coeff, const husai_sae_batch *b, float *grad) {
    const int d = m->d_model, s = m->d_sae, n = b->n;
    const int P = m->nested ? m->spec.n_prefixes : 1;
    float *glog_theta = grad + (m->log_theta - m->params);
    const float eps = (float)m->spec.bandwidth, half = 0.5f * eps;
    for (int r = 0; r < n; r++) {
        const float *G = b->g_xhat + (size_t)r * P * d;
        const float *p = b->pre + (size_t)r * s;
        for (int j = 0; j < s; j++) {
            const float th = expf(m->log_theta[j]);
            if (!(fabsf(p[j] - th) < half)) continue;
            const float dz = husai_dot8(G, m->W_dec + (size_t)j * d, d);
            const float dtheta = dz * (-th / eps) + (float)(coeff / n) * (-1.0f / eps);
            glog_theta[j] += dtheta * th;
        }
    }
}

/* theta_j starts at the (k / d_sae) upper quantile of latent j's pre-activations on the first batch, so
 * the model starts near L0 = k; the sparsity weight's unit scales with the mean threshold, because L0's
 * gradient acts through theta. */
static husai_status train_init(husai_trainer *t) {
    size_t n;
    husai_status st = husai_trainer_scale_encoder(t, &n);
    if (st) return st;
    const int s = t->opts.d_sae;
    float *col = malloc(n * sizeof(float));
    if (!col) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate the threshold init buffer");
    int rank = (int)ceil((double)t->opts.k / s * (double)n);
    if (rank < 1) rank = 1;
    double theta_sum = 0.0;
    for (int j = 0; j < s; j++) {
        for (size_t r = 0; r < n; r++)
            col[r] = t->batch.pre[r * s + j];
        float th = husai_kth_largest(col, (int)n, rank);
        if (!(th > (float)t->opts.bandwidth)) th = (float)t->opts.bandwidth; /* theta must stay positive */
        t->model.log_theta[j] = logf(th);
        theta_sum += th;
    }
    free(col);
    if (t->opts.sparsity_coeff == 0.0) t->coeff *= theta_sum / s;
    t->coeff_unit = t->coeff;
    return HUSAI_OK;
}

/* A Lagrange multiplier for E[L0] = k, free in sign: the reconstruction term alone pushes thresholds up
 * early in training, and only a negative weight can pull L0 back to k. */
static void train_step(husai_trainer *t, const husai_sae_loss *parts) {
    if (t->opts.sparsity_coeff == 0.0) t->coeff += t->coeff_unit * husai_trainer_sparsity_error(t, parts->l0);
}

const husai_arch_ops husai_arch_jumprelu = {
    .name = "jumprelu",
    .always_relu = 1,
    .thresholds = 1,
    .check = check,
    .codes = codes,
    .sparsity = sparsity,
    .backward = backward,
    .train_init = train_init,
    .train_step = train_step,
};
