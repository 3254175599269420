/* arch.h: SAE architectures as backends, in the way IOR's ior_aiori_t tables hold its file systems. Each
 * architecture is one file (arch_<name>.c) that fills one husai_arch_ops table with its rule: which
 * pre-activations become codes, what its loss adds beyond the reconstruction, and how the trainer
 * initialises and steers it. The shared kernels (encoder product, top-k selection, sparse decode and
 * backward: kernels.h; Adam: adam.h) do the work and call these hooks where the architectures differ; a
 * NULL hook means the shared path alone. Adding an architecture: one arch_<name>.c (and its line in
 * CMakeLists.txt), one husai_arch value (model.h) and one entry in husai_arch_registry (arch.c). A spec
 * (or train options) may instead carry its own table in .ops, which runs an architecture nobody
 * registered (tests/test_arch_backend.c does). Tables are constant and static-lifetime; nothing here
 * allocates or owns memory. No MPI here.
 * defines: husai_arch_ops, husai_arch_registry, husai_arch_ops_of, husai_arch_topk, husai_arch_batchtopk,
 *          husai_arch_jumprelu, husai_arch_relu_l1, husai_arch_matryoshka, husai_trainer_scale_encoder,
 *          husai_trainer_sparsity_error */
#ifndef HUSAI_SAE_ARCH_H
#define HUSAI_SAE_ARCH_H

#include "common/status.h"
#include "sae/model.h"

struct husai_trainer;

struct husai_arch_ops {
    const char *name; /* the config name ("topk", ...) */
    /* Codes are non-negative whatever spec.relu says (AuxK then ReLUs its candidates too). */
    int always_relu;
    /* The model has learned per-latent thresholds after b_dec (m->log_theta, d_sae floats). */
    int thresholds;
    /* The loss averages the reconstructions of nested prefixes of the latents (spec.n_prefixes of them,
     * m->prefix); the decode keeps each prefix's reconstruction and the backward sums their gradients. */
    int nested;
    /* Selection over the whole batch: b->select holds cap x d_sae floats instead of 2 x d_sae per thread. */
    int batch_select;
    /* Checks of the spec beyond the shared ones (shapes, 1 <= k <= d_sae); NULL: none. */
    husai_status (*check)(const husai_sae_spec *s);
    /* Row-local selection of rows [r0, r1), run right after their encoder product while their
     * pre-activations are in cache (e.g. husai_select_topk_rows); scratch holds 2 d_sae floats of this
     * thread. NULL: none. */
    void (*select_rows)(const husai_sae *m, int r0, int r1, husai_sae_batch *b, float *scratch);
    /* After every row's pre-activations (and select_rows): the batch's codes in b's CSR arrays, idx
     * ascending within a row. Required. */
    husai_status (*codes)(const husai_sae *m, int n, husai_sae_mode mode, husai_sae_batch *b);
    /* The loss's sparsity term, a mean per row, from the batch's codes and their mean count l0; NULL: 0. */
    double (*sparsity)(const husai_sae *m, const husai_sae_batch *b, double l0);
    /* Added to every active code's gradient: d(coeff * sparsity)/dz for n rows; NULL: 0. */
    float (*code_grad)(double coeff, int n);
    /* ADDS the gradient of the architecture's own parameters (the thresholds) into grad (laid out like
     * m->params), after the shared backward filled b->g_xhat with dLoss/d(x_hat); NULL: none. */
    void (*backward)(const husai_sae *m, double coeff, const husai_sae_batch *b, float *grad);
    /* Trainer: the data-dependent init, after b_dec and the sparsity weight's starting value are set;
     * NULL: none. */
    husai_status (*train_init)(struct husai_trainer *t);
    /* Trainer: after each step that succeeded, with that batch's loss parts (threshold estimates, the
     * sparsity weight's controller); NULL: none. */
    void (*train_step)(struct husai_trainer *t, const husai_sae_loss *parts);
};

extern const husai_arch_ops husai_arch_topk, husai_arch_batchtopk, husai_arch_jumprelu, husai_arch_relu_l1,
    husai_arch_matryoshka;

/* The registered architectures, indexed by husai_arch. */
extern const husai_arch_ops *const husai_arch_registry[HUSAI_ARCH_COUNT];

/* The table a spec runs: spec->ops if set, else the registry's entry for spec->arch (NULL if none). */
const husai_arch_ops *husai_arch_ops_of(const husai_sae_spec *spec);

/* Services of the trainer (train.c) for backends' train hooks. */

/* Encodes the first batch of the epoch's order and scales W_enc (and that batch's pre-activations, kept in
 * t->batch.pre) so that its mean reconstruction norm matches the centred data's: rules under which every
 * positive pre-activation fires start with reconstructions several times the size of x. *n gets the
 * batch's rows. */
husai_status husai_trainer_scale_encoder(struct husai_trainer *t, size_t *n);

/* The sparsity controller's step for a batch of mean L0 l0: 5% of L0's relative error from k, clipped to
 * +-5%; 0 when the user fixed the sparsity weight. */
double husai_trainer_sparsity_error(const struct husai_trainer *t, double l0);

#endif
