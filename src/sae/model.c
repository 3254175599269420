/* model.c: a model's lifecycle, for any architecture: spec checks, the one parameter buffer and its views,
 * the init, decoder normalisation and export, and batch scratch. The rules live in arch_*.c, the kernels
 * in select.c, encode.c, decode.c and backward.c. */
#include "sae/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/threads.h"
#include "sae/arch.h"
#include "sae/bf16.h"
#include "sae/kernels.h"

husai_sae_spec husai_sae_spec_topk(int d_model, int d_sae, int k) {
    return (husai_sae_spec){.arch = HUSAI_ARCH_TOPK,
                            .d_model = d_model,
                            .d_sae = d_sae,
                            .k = k,
                            .n_prefixes = 4,
                            .bandwidth = 1e-3};
}

husai_status husai_sae_spec_check(const husai_sae_spec *s) {
    const husai_arch_ops *ops = husai_arch_ops_of(s);
    if (!ops) return husai_error(HUSAI_ERR_ARG, "unknown SAE architecture %d", (int)s->arch);
    if (!ops->codes) return husai_error(HUSAI_ERR_ARG, "SAE architecture '%s' has no code rule", ops->name);
    if (s->d_model < 1 || s->d_sae < 1)
        return husai_error(HUSAI_ERR_ARG, "d_model=%d and d_sae=%d must be >= 1", s->d_model, s->d_sae);
    if (s->k < 1 || s->k > s->d_sae)
        return husai_error(HUSAI_ERR_ARG, "k=%d must be between 1 and d_sae=%d", s->k, s->d_sae);
    if (ops->nested) {
        if (s->n_prefixes < 1 || s->n_prefixes > HUSAI_MAX_PREFIXES)
            return husai_error(HUSAI_ERR_ARG, "matryoshka prefixes=%d must be between 1 and %d",
                               s->n_prefixes, HUSAI_MAX_PREFIXES);
        if ((s->d_sae >> (s->n_prefixes - 1)) < 1)
            return husai_error(HUSAI_ERR_ARG, "d_sae=%d is too small for %d matryoshka prefixes (halving)",
                               s->d_sae, s->n_prefixes);
    }
    return ops->check ? ops->check(s) : HUSAI_OK;
}

husai_status husai_sae_alloc(husai_sae *m, const husai_sae_spec *spec) {
    memset(m, 0, sizeof *m);
    husai_status st = husai_sae_spec_check(spec);
    if (st) return st;
    m->spec = *spec;
    m->ops = husai_arch_ops_of(spec);
    m->nested = m->ops->nested;
    const int d_model = spec->d_model, d_sae = spec->d_sae;
    const size_t w = (size_t)d_sae * (size_t)d_model;
    m->d_model = d_model;
    m->d_sae = d_sae;
    m->k = spec->k;
    m->n_params = 2 * w + (size_t)d_sae;
    if (spec->decoder_bias) m->n_params += (size_t)d_model;
    if (m->ops->thresholds) m->n_params += (size_t)d_sae;
    m->params = calloc(m->n_params, sizeof(float));
    if (!m->params) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate %zu SAE parameters", m->n_params);
    m->W_enc = m->params;
    m->b_enc = m->W_enc + w;
    m->W_dec = m->b_enc + d_sae;
    float *next = m->W_dec + w;
    if (spec->decoder_bias) {
        m->b_dec = next;
        next += d_model;
    }
    if (m->ops->thresholds) m->log_theta = next;
    if (m->ops->nested)
        for (int l = 0; l < spec->n_prefixes; l++)
            m->prefix[l] = d_sae >> (spec->n_prefixes - 1 - l);
    return HUSAI_OK;
}

void husai_sae_free(husai_sae *m) {
    if (!m) return;
    free(m->params);
    memset(m, 0, sizeof *m);
}

void husai_sae_init(husai_sae *m, uint64_t seed) {
    husai_rng r;
    husai_rng_init(&r, seed, HUSAI_RNG_INIT, 0);
    const size_t w = (size_t)m->d_sae * (size_t)m->d_model;
    const double be = sqrt(6.0 / m->d_model), bd = sqrt(6.0 / m->d_sae);
    for (size_t i = 0; i < w; i++)
        m->W_enc[i] = (float)((2.0 * husai_rng_uniform(&r) - 1.0) * be);
    memset(m->b_enc, 0, (size_t)m->d_sae * sizeof(float));
    /* Draw in file order (i over d_model, j over d_sae) so the stream maps to W_dec[i][j] as in the recipe.
     */
    for (int i = 0; i < m->d_model; i++)
        for (int j = 0; j < m->d_sae; j++)
            m->W_dec[(size_t)j * m->d_model + i] = (float)((2.0 * husai_rng_uniform(&r) - 1.0) * bd);
    husai_sae_normalize_decoder(m);
}

void husai_sae_normalize_decoder(husai_sae *m) {
    const int d = m->d_model;
#pragma omp parallel for schedule(static) if ((size_t)m->d_sae * d >= 65536)
    for (int j = 0; j < m->d_sae; j++) {
        float *row = m->W_dec + (size_t)j * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++)
            ss += (double)row[i] * row[i];
        if (ss <= 0.0) continue;
        const float norm = (float)sqrt(ss);
        for (int i = 0; i < d; i++)
            row[i] /= norm;
    }
}

void husai_sae_export_decoder(const husai_sae *m, float *out) {
    const int d = m->d_model, s = m->d_sae;
    for (int j = 0; j < s; j++)
        for (int i = 0; i < d; i++)
            out[(size_t)i * s + j] = m->W_dec[(size_t)j * d + i];
}

husai_status husai_sae_batch_alloc(husai_sae_batch *b, const husai_sae *m, int cap) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->threads = husai_max_threads();
    b->d_model = m->d_model;
    b->d_sae = m->d_sae;
    const size_t c = (size_t)cap, d = (size_t)m->d_model, s = (size_t)m->d_sae;
    const size_t levels = m->ops->nested ? (size_t)m->spec.n_prefixes : 1;
    /* Selection rules with a fixed count know their codes' size; threshold rules grow on demand. */
    b->nnz_cap = c * (size_t)m->k;
    b->pre = malloc(c * s * sizeof(float));
    b->xc = m->spec.decoder_bias ? malloc(c * d * sizeof(float)) : NULL;
    b->row_ptr = malloc((c + 1) * sizeof(int64_t));
    b->idx = malloc(b->nnz_cap * sizeof(int32_t));
    b->val = malloc(b->nnz_cap * sizeof(float));
    b->g_val = malloc(b->nnz_cap * sizeof(float));
    b->x_hat = malloc(c * d * sizeof(float));
    b->g_xhat = malloc(c * levels * d * sizeof(float));
    const size_t sel = m->ops->batch_select && c > 2 * (size_t)b->threads ? c : 2 * (size_t)b->threads;
    b->select = malloc(sel * s * sizeof(float));
    b->row_sse = malloc(c * sizeof(double));
    b->split = malloc(((size_t)b->threads + 1) * sizeof(int32_t));
    b->row = malloc(2 * d * sizeof(float));
    b->aux_cand = malloc(s * sizeof(float));
    b->aux_id = malloc(s * sizeof(int32_t));
    b->aux_pos = malloc(s * sizeof(int32_t));
    b->aux_val = malloc(s * sizeof(float));
    b->grp_end = malloc(s * sizeof(int32_t));
    b->grp_code = malloc(b->nnz_cap * sizeof(int32_t));
    b->grp_row = malloc(b->nnz_cap * sizeof(int32_t));
    b->grp_val = malloc(2 * b->nnz_cap * sizeof(float));
    if (!b->pre || (m->spec.decoder_bias && !b->xc) || !b->row_ptr || !b->idx || !b->val || !b->g_val ||
        !b->x_hat || !b->g_xhat || !b->select || !b->row_sse || !b->split || !b->row || !b->aux_cand ||
        !b->aux_id || !b->aux_pos || !b->aux_val || !b->grp_end || !b->grp_code || !b->grp_row ||
        !b->grp_val) {
        husai_sae_batch_free(b);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate SAE batch scratch for %d rows", cap);
    }
    return HUSAI_OK;
}

void husai_sae_batch_free(husai_sae_batch *b) {
    if (!b) return;
    free(b->pre);
    free(b->xc);
    free(b->row_ptr);
    free(b->idx);
    free(b->val);
    free(b->g_val);
    free(b->x_hat);
    free(b->g_xhat);
    free(b->select);
    free(b->row_sse);
    free(b->split);
    free(b->row);
    free(b->aux_cand);
    free(b->aux_id);
    free(b->aux_pos);
    free(b->aux_val);
    free(b->grp_end);
    free(b->grp_code);
    free(b->grp_row);
    free(b->grp_val);
    husai_bf16_free(b->bf16);
    memset(b, 0, sizeof *b);
}
