#include "metrics/condition.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/groundtruth.h"
#include "metrics/match.h"
#include "metrics/pwmcc.h"

/* Whether b's random baseline is a's: it depends only on the seed list and the decoder shape. */
static int same_baseline(const husai_condition_result *a, const husai_condition_result *b) {
    if (a->S != b->S || a->d_model != b->d_model || a->d_sae != b->d_sae) return 0;
    for (int s = 0; s < a->S; s++)
        if (a->seeds[s] != b->seeds[s]) return 0;
    return 1;
}

/* Prefixes the current error message with the condition and the step that failed. */
static husai_status failed(const husai_condition_result *c, husai_status st, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", husai_error_message());
    return husai_error(st, "%s of %s: %s", what, c->name, msg);
}

/* features.tau, HUSAI_FEATURES_TAU when the caller left it 0. */
static double tau_of(const husai_condition_opts *o) {
    return o->features_tau > 0.0 ? o->features_tau : HUSAI_FEATURES_TAU;
}

static husai_status no_memory(const husai_condition_result *c, const char *what) {
    return husai_error(HUSAI_ERR_NOMEM, "out of memory for %s of %s", what, c->name);
}

husai_status husai_condition_random_features(const husai_condition_opts *o, husai_condition_result *c) {
    if (!c->random_best) return HUSAI_OK;
    husai_features rb = *c->random_best;
    free(c->random_best);
    c->random_best = NULL;
    husai_status st =
        husai_features_analyse(&rb, NULL, c->seeds, NULL, tau_of(o), o->features_min_seeds, &o->boot);
    c->features_random = rb.stats;
    husai_features_free(&rb);
    return st ? failed(c, st, "per-feature stability of the random baseline") : HUSAI_OK;
}

/* The random-decoder PWMCC matrix and its CI: copied from a done condition with the same seeds and shape
 * (a sweep over k, lr, lambda ... shares one baseline, which at large d_sae costs as much as the trained
 * PWMCC), else computed here unless a spread phase has filled the matrix already. */
static husai_status random_baseline(const husai_condition_opts *o, husai_condition_result *c,
                                    const husai_condition_result *done, int n_done) {
    const husai_boot_opts *bo = &o->boot;
    const int S = c->S;
    const size_t dd = (size_t)c->d_model * c->d_sae;
    for (int i = 0; i < n_done; i++)
        if (same_baseline(&done[i], c)) {
            memcpy(c->random_pwmcc, done[i].random_pwmcc, (size_t)S * S * sizeof(double));
            c->random = done[i].random;
            c->features_random = done[i].features_random;
            return HUSAI_OK;
        }
    husai_status st = HUSAI_OK;
    husai_features rb = {0};
    if (!c->random_done) {
        /* As unit rows, and with S >= 2 through the features pass, whose PWMCC bits are the matrix's. */
        float *rnd = malloc((size_t)S * dd * sizeof(float)), *raw = malloc(dd * sizeof(float));
        if (!rnd || !raw) {
            free(rnd);
            free(raw);
            return no_memory(c, "the random baseline");
        }
        for (int s = 0; s < S; s++) {
            husai_pwmcc_random_decoder(c->seeds[s], c->d_model, c->d_sae, raw);
            husai_normalized_feature_rows(raw, c->d_model, c->d_sae, rnd + (size_t)s * dd);
        }
        free(raw);
        st = S >= 2 ? husai_features_best(&rb, rnd, S, c->d_model, c->d_sae, c->random_pwmcc)
                    : husai_pwmcc_rows_part(rnd, S, c->d_model, c->d_sae, 0, 1, c->random_pwmcc);
        free(rnd);
        if (st) return failed(c, st, "random baseline");
    } else if ((st = husai_condition_random_features(o, c))) {
        return st;
    }
    if (rb.best_cos) {
        st = husai_features_analyse(&rb, NULL, c->seeds, NULL, tau_of(o), o->features_min_seeds, bo);
        c->features_random = rb.stats;
        husai_features_free(&rb);
        if (st) return failed(c, st, "per-feature stability of the random baseline");
    }
    st = husai_ci_pair_matrix(c->random_pwmcc, S, bo, &c->random);
    return st ? failed(c, st, "bootstrap") : HUSAI_OK;
}

/* Mean CIs over seeds of the per-seed metrics: EV, MSE, L0, dead share, alignment (with a reference),
 * the held-out ones (with a holdout) and ground-truth recovery (with a dictionary). */
static husai_status seed_cis(const husai_boot_opts *bo, husai_condition_result *c, int with_ref) {
    const int S = c->S;
    double *v = malloc((size_t)S * sizeof(double));
    if (!v) return no_memory(c, "per-seed intervals");
    /* Held-out metrics and ground truth exist when the first seed has them (all seeds share the split and
     * the dictionary). */
    c->has_holdout = isfinite(c->per_seed[0].ho_ev);
    c->has_gt = isfinite(c->per_seed[0].gt_mean_max_cos);
    husai_ci *outs[11] = {&c->ev,          &c->mse,    &c->l0,    &c->dead,    &c->alignment,
                          &c->ho_ev,       &c->ho_mse, &c->ho_l0, &c->ho_dead, &c->gt_mean_max_cos,
                          &c->gt_recovered};
    husai_status st = HUSAI_OK;
    for (int m = 0; m < 11 && !st; m++) {
        if ((m == 4 && !with_ref) || (m >= 5 && m < 9 && !c->has_holdout) || (m >= 9 && !c->has_gt)) continue;
        for (int s = 0; s < S; s++) {
            const husai_seed_metrics *p = &c->per_seed[s];
            const double vals[11] = {
                p->ev,     p->mse,   p->l0,      p->dead_fraction,   p->alignment,   p->ho_ev,
                p->ho_mse, p->ho_l0, p->ho_dead, p->gt_mean_max_cos, p->gt_recovered};
            v[s] = vals[m];
        }
        st = husai_ci_mean(v, (size_t)S, bo, outs[m]);
    }
    free(v);
    return st ? failed(c, st, "bootstrap") : HUSAI_OK;
}

/* The reference joins as model S, so pairs that involve it are counted too; the others are the S x S
 * matrix already computed. */
static husai_status with_reference(const husai_boot_opts *bo, husai_condition_result *c,
                                   const husai_decoder_source *src, const float *ref) {
    const int S = c->S, S1 = S + 1;
    const size_t dd = (size_t)c->d_model * c->d_sae;
    double *M = c->pwmcc_with_ref = malloc((size_t)S1 * S1 * sizeof(double));
    float *scratch = src->all ? NULL : malloc(dd * sizeof(float));
    if (!M || (!src->all && !scratch)) {
        free(scratch);
        return no_memory(c, "the with-reference PWMCC");
    }
    for (int p = 0; p < S; p++)
        memcpy(M + (size_t)p * S1, c->pwmcc + (size_t)p * S, (size_t)S * sizeof(double));
    M[(size_t)S * S1 + S] = 1.0;
    for (int p = 0; p < S; p++) {
        double *pair = &M[(size_t)p * S1 + S];
        const float *D;
        husai_status st = husai_decoder_get(src, p, dd, scratch, &D);
        if (!st) st = husai_pwmcc_pair(D, c->d_sae, ref, c->d_sae, c->d_model, pair);
        if (st) {
            free(scratch);
            return failed(c, st, "PWMCC with the reference");
        }
        M[(size_t)S * S1 + p] = *pair;
    }
    free(scratch);
    husai_status st = husai_ci_pair_matrix(M, S1, bo, &c->trained_with_ref);
    if (st) return failed(c, st, "bootstrap");
    c->has_ref = 1;
    return HUSAI_OK;
}

/* Consensus features against the true dictionary: atoms recovered by some consensus direction, and
 * consensus directions that are some atom (both at |cos| >= HUSAI_GT_RECOVERED). */
static husai_status consensus_truth(husai_condition_result *c) {
    const husai_features *f = c->features;
    double mean;
    if (f->n_consensus == 0) {
        c->gt_consensus_recovered = 0.0;
        return HUSAI_OK;
    }
    husai_status st = husai_gt_recovery(c->gt_dict, c->gt_atoms, f->consensus, f->n_consensus, c->d_model,
                                        &mean, &c->gt_consensus_recovered);
    if (!st)
        st = husai_gt_recovery(f->consensus, f->n_consensus, c->gt_dict, c->gt_atoms, c->d_model, &mean,
                               &c->gt_consensus_precision);
    return st ? failed(c, st, "ground truth of the consensus features") : HUSAI_OK;
}

husai_status husai_condition_metrics(const husai_condition_opts *o, husai_condition_result *c,
                                     const float *ref_decoder, const husai_condition_result *done,
                                     int n_done) {
    const int S = c->S;
    const size_t dd = (size_t)c->d_model * c->d_sae;
    const husai_boot_opts *bo = &o->boot;
    const int with_match = c->d_sae <= o->matching_max_d_sae;
    const int match_here = with_match && !c->match_done;
    husai_status st = HUSAI_OK;
    /* The decoders as unit feature rows, once, for PWMCC and matched agreement when this process
     * computes them (a spread phase has already filled both). */
    const husai_decoder_source src = c->decoders ? (husai_decoder_source){.all = c->decoders} : c->stored;
    if (!src.all && !src.load) return husai_error(HUSAI_ERR_ARG, "%s has no decoders", c->name);
    float *F = NULL;
    if (!c->pwmcc_done || match_here) {
        if (!c->decoders)
            return husai_error(HUSAI_ERR_ARG, "%s: PWMCC in one process needs its decoders in memory",
                               c->name);
        if (!(F = malloc((size_t)S * dd * sizeof(float)))) return no_memory(c, "the decoders");
        for (int s = 0; s < S; s++)
            husai_normalized_feature_rows(c->decoders + s * dd, c->d_model, c->d_sae, F + s * dd);
    }
    if (S >= 2 && !c->features && !(c->features = calloc(1, sizeof *c->features))) {
        st = no_memory(c, "per-feature stability");
        goto out;
    }
    /* Best matches come from PWMCC's own pass (one pass over the decoders, PWMCC's bits unchanged). */
    if (!c->pwmcc_done)
        st = S >= 2 ? husai_features_best(c->features, F, S, c->d_model, c->d_sae, c->pwmcc)
                    : husai_pwmcc_rows_part(F, S, c->d_model, c->d_sae, 0, 1, c->pwmcc);
    if (st) {
        st = failed(c, st, "PWMCC");
        goto out;
    }
    if (S >= 2 && (!c->pwmcc_done || c->features_done) &&
        (st = husai_features_analyse_src(c->features, &src, c->seeds, c->density, tau_of(o),
                                         o->features_min_seeds, bo))) {
        st = failed(c, st, "per-feature stability");
        goto out;
    }
    c->gt_consensus_recovered = c->gt_consensus_precision = NAN;
    if (c->features && c->features->stability && c->gt_dict && (st = consensus_truth(c))) goto out;
    if (c->features && !c->features->stability) { /* PWMCC came from elsewhere without best matches */
        husai_features_free(c->features);
        free(c->features);
        c->features = NULL;
    }
    if ((st = random_baseline(o, c, done, n_done))) goto out;
    if ((st = husai_ci_pair_matrix(c->pwmcc, S, bo, &c->trained))) {
        st = failed(c, st, "bootstrap");
        goto out;
    }
    if ((st = seed_cis(bo, c, ref_decoder != NULL))) goto out;
    if (with_match) {
        if (match_here) {
            c->match_cos = malloc((size_t)S * S * sizeof(double));
            c->match_frac = malloc((size_t)S * S * sizeof(double));
            if (!c->match_cos || !c->match_frac) {
                st = no_memory(c, "matched agreement");
                goto out;
            }
            st = husai_match_rows_part(F, S, c->d_model, c->d_sae, 0, 1, c->match_cos, c->match_frac);
        }
        if (!st) st = husai_ci_pair_matrix(c->match_cos, S, bo, &c->matched_cos);
        if (!st) st = husai_ci_pair_matrix(c->match_frac, S, bo, &c->matched_frac);
        if (st) {
            st = failed(c, st, "matched agreement");
            goto out;
        }
        c->has_match = 1;
    }
    if (ref_decoder && (st = with_reference(bo, c, &src, ref_decoder))) goto out;
    /* Every interval here resamples the S seeds (the reference is not exchangeable with seeds trained
     * towards it), so below HUSAI_CI_MIN_SEEDS none is reported, and nor is the LCB built from them. */
    husai_ci *cis[] = {&c->trained,
                       &c->random,
                       &c->ev,
                       &c->mse,
                       &c->l0,
                       &c->dead,
                       &c->alignment,
                       &c->ho_ev,
                       &c->ho_mse,
                       &c->ho_l0,
                       &c->ho_dead,
                       &c->matched_cos,
                       &c->matched_frac,
                       &c->trained_with_ref,
                       &c->gt_mean_max_cos,
                       &c->gt_recovered};
    for (size_t i = 0; i < sizeof cis / sizeof *cis; i++)
        husai_ci_withhold(cis[i], S);
    c->delta = c->trained.mean - c->random.mean;
    c->delta_lcb = c->trained.lo - c->random.hi;
    c->ratio = c->trained.mean / c->random.mean;
out:
    free(F);
    return st;
}

void husai_condition_release_params(husai_condition_result *c) {
    free(c->decoders);
    free(c->encoders);
    free(c->b_enc);
    free(c->b_dec);
    free(c->thresholds);
    c->decoders = c->encoders = c->b_enc = c->b_dec = c->thresholds = NULL;
    c->stored = (husai_decoder_source){0}; /* points into the engine's state, which goes first */
}

void husai_condition_result_free(husai_condition_result *r) {
    if (!r) return;
    husai_condition_release_params(r);
    free(r->pwmcc);
    free(r->random_pwmcc);
    free(r->per_seed);
    free(r->pwmcc_with_ref);
    free(r->match_cos);
    free(r->match_frac);
    free(r->density);
    r->density = NULL;
    if (r->features) husai_features_free(r->features);
    if (r->random_best) husai_features_free(r->random_best);
    free(r->features);
    free(r->random_best);
    r->features = r->random_best = NULL;
    r->match_cos = r->match_frac = NULL;
    r->pwmcc = r->random_pwmcc = r->pwmcc_with_ref = NULL;
    r->per_seed = NULL;
}
