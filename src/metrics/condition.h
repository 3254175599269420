/* condition.h: one condition's results across its S seeds (parameters, per-seed metrics, the PWMCC and
 * random-baseline matrices, matched agreement) and the per-condition statistics computed from them:
 * bootstrap CIs, delta, the conservative LCB, the ratio. Takes matrices, never models; no MPI here.
 * The engine (sweep/) fills a result, this module completes its statistics, report/ writes it.
 * defines: husai_seed_metrics, husai_condition_result, husai_condition_opts, husai_condition_metrics,
 *          husai_condition_random_features, husai_condition_release_params, husai_condition_result_free */
#ifndef HUSAI_METRICS_CONDITION_H
#define HUSAI_METRICS_CONDITION_H

#include <stdint.h>

#include "common/status.h"
#include "metrics/bootstrap.h"
#include "metrics/features.h"

/* Per-seed results; all doubles so one MPI type carries them. */
typedef struct {
    double ev, mse, l0, dead_fraction;
    double seconds, last_epoch_loss, steps, rank;
    double alignment;                     /* mean_i max_j |cos| to the reference decoder; NaN without one */
    double ho_ev, ho_mse, ho_l0, ho_dead; /* on the held-out rows; NaN without a holdout */
    /* ground truth (data.dictionary): mean over true atoms of max_j |cos(atom, feature j)|, and the share of
     * atoms with that max >= 0.9; NaN without a dictionary */
    double gt_mean_max_cos, gt_recovered;
} husai_seed_metrics;

typedef struct {
    char name[96];
    const char *phase; /* "" in a plain sweep; "search", "retrain", "lambda" in protocols */
    char param[32];    /* a copy: the conditions it came from are gone when results are written */
    double value;
    int S, d_model, d_sae, k, epochs, batch_size;
    double lr;
    const uint64_t *seeds;        /* (S) */
    float *decoders;              /* (S, d_model, d_sae) file layout, columns are features; or NULL: */
    husai_decoder_source stored;  /* where they are read from one at a time (sweeps keep them on disk) */
    float *encoders;              /* (S, d_sae, d_model) */
    float *b_enc;                 /* (S, d_sae) */
    float *b_dec;                 /* (S, d_model): zeros without a decoder bias */
    float *thresholds;            /* (S, d_sae): jumprelu theta, batchtopk's inference threshold, else 0 */
    int arch;                     /* husai_arch */
    double *pwmcc, *random_pwmcc; /* (S, S) each */
    int pwmcc_done, random_done;  /* set when a phase already filled the matrix (spread over ranks) */
    husai_seed_metrics *per_seed; /* (S) */
    husai_ci trained, random, ev, mse, l0, dead;
    double delta, delta_lcb, ratio;
    int has_holdout;
    husai_ci ho_ev, ho_mse, ho_l0, ho_dead;
    /* matched agreement: one-to-one matching of features, mean matched |cos| and share >= 0.7 */
    int has_match;
    double *match_cos, *match_frac; /* (S, S) each */
    int match_done;                 /* set when a phase already filled both (spread over ranks) */
    husai_ci matched_cos, matched_frac;
    /* consistency protocol only (has_ref): the reference joins the PWMCC as an (S+1)-th model */
    int has_ref;
    double lambda;
    double *pwmcc_with_ref; /* (S+1, S+1), the reference last */
    husai_ci trained_with_ref, alignment;
    /* ground-truth recovery CIs over seeds, when a dictionary was given (has_gt) */
    int has_gt;
    husai_ci gt_mean_max_cos, gt_recovered;
    float *density; /* (S, d_sae): share of training rows on which each latent fires, or NULL */
    /* per-feature stability and consensus features (metrics/features.h), S >= 2: NULL until computed; a
     * spread phase fills the best-match tensors (features_done) and the random decoders' (random_best,
     * consumed here); features_random holds what random decoders of this shape give */
    husai_features *features, *random_best;
    int features_done;
    husai_feature_stats features_random;
    /* the true dictionary (gt_atoms, d_model), when known (not owned): the share of its atoms some consensus
     * direction recovers (|cos| >= HUSAI_GT_RECOVERED), and the share of consensus features that are a true
     * atom (the precision of "consensus" as a predictor of "real"); NaN otherwise */
    const float *gt_dict;
    int gt_atoms;
    double gt_consensus_recovered, gt_consensus_precision;
    int written;        /* in results.h5 already; decoders .. thresholds are then released (NULL) */
    int params_written; /* decoders .. thresholds went ahead into results.h5, written by their owners */
} husai_condition_result;

/* What the statistics need from the configuration. */
typedef struct {
    husai_boot_opts boot;   /* resamples, seed, generator and unit of every bootstrap */
    int matching_max_d_sae; /* matched agreement for d_sae up to this; 0: none */
    double features_tau;    /* per-feature match threshold (features.tau); 0: HUSAI_FEATURES_TAU */
    int features_min_seeds; /* seeds a consensus feature needs (features.min_seeds); 0: S - 1, at least 2 */
} husai_condition_opts;

/* Completes c's statistics from its decoders (c->decoders, else c->stored) and per-seed metrics: PWMCC
 * (unless pwmcc_done) and the random matrix (copied from any of done[0..n_done) with the same seeds and
 * shape, else computed unless random_done), bootstrap CIs, delta, LCB, ratio, matched agreement up to
 * o->matching_max_d_sae; with ref_decoder ([d_model, d_sae]) also the with-reference PWMCC and alignment CIs;
 * with S >= 2 the per-feature stability and consensus features (in the same pass as PWMCC) and their random
 * baseline. Below HUSAI_CI_MIN_SEEDS seeds every interval and the LCB are NaN (withheld). Returns
 * HUSAI_ERR_NOMEM or a metric's error with the message naming the condition; c's arrays are then c's to free
 * as always. */
husai_status husai_condition_metrics(const husai_condition_opts *o, husai_condition_result *c,
                                     const float *ref_decoder, const husai_condition_result *done,
                                     int n_done);

/* Reduces c->random_best (the random decoders' best matches, if a spread pass left them) to
 * c->features_random and frees it, as husai_condition_metrics would; lets the engine drop those S^2 d_sae
 * tensors before it gathers the trained ones. */
husai_status husai_condition_random_features(const husai_condition_opts *o, husai_condition_result *c);

/* Releases c's parameters (decoders, encoders, b_enc, b_dec, thresholds) once they are written. */
void husai_condition_release_params(husai_condition_result *c);

/* Releases the arrays of a condition result (rank 0 owns them after a phase); safe twice. */
void husai_condition_result_free(husai_condition_result *r);

#endif
