/* export.h: `husai export`: one trained SAE of a run directory written in the Python SAE ecosystem's
 * format: OUT_DIR/sae.safetensors with SAELens' tensor names and shapes (W_enc [d_in, d_sae], b_enc [d_sae],
 * W_dec [d_sae, d_in], b_dec [d_in], and threshold [d_sae] for "jumprelu"; float32) and OUT_DIR/cfg.json
 * (SAELens-style fields plus husai's provenance). Each husai architecture is written as the SAELens
 * architecture whose inference computes husai's code from pre = (x - b_dec) W_enc + b_enc:
 *   topk, matryoshka  "topk": the k largest pre (husai's are signed unless sae.relu; SAELens' are ReLU'd)
 *   jumprelu          "jumprelu", threshold = theta_j: pre where pre > theta_j
 *   batchtopk         "jumprelu", threshold = the trained inference threshold for every latent (the rule
 *                     husai's batchtopk uses at inference: pre where pre > that threshold)
 *   relu_l1           "standard": ReLU(pre)
 * SAELens' JumpReLU is ReLU(pre) * (pre > threshold), which is pre * (pre > threshold) because export
 * refuses negative thresholds. apply_b_dec_to_input is true iff b_dec is non-zero. SAELens'
 * SAE.load_from_disk looks for sae_weights.safetensors, so that name is written as a relative symbolic
 * link to sae.safetensors. With per-feature stability in the run (results.h5 features/), the seed's
 * stability goes beside them as feature_stability [d_sae]; --consensus OUT writes the condition's
 * consensus dictionary instead (consensus.safetensors and cfg.json). Every file is written under a
 * temporary name and renamed.
 * One process, no MPI: HDF5 is opened with the default (serial) driver.
 * defines: husai_export_opts, husai_export_info, husai_export_sae, husai_export_consensus */
#ifndef HUSAI_REPORT_EXPORT_H
#define HUSAI_REPORT_EXPORT_H

#include <stdint.h>

#include "common/status.h"

typedef struct {
    const char *run_dir, *condition;
    uint64_t seed;                      /* husai_export_sae: the seed to export */
    int allow_signed_topk;              /* export a TopK trained without sae.relu (marked in cfg.json) */
    const char *model_name, *hook_name; /* cfg.json's names instead of the run's data attributes, or NULL */
    const char *exported_by;            /* "husai VERSION (COMMIT)", cfg.json's provenance */
} husai_export_opts;

/* What was written, for the caller's message. */
typedef struct {
    const char *arch, *saelens_arch; /* static names */
    int d_model, d_sae;
    int n_consensus, n_seeds; /* husai_export_consensus */
} husai_export_info;

/* Writes out_dir/sae.safetensors (+ the sae_weights.safetensors link) and out_dir/cfg.json for seed
 * o->seed of condition o->condition; refuses a signed TopK unless o->allow_signed_topk. */
husai_status husai_export_sae(const husai_export_opts *o, const char *out_dir, husai_export_info *info);

/* Writes out_dir/consensus.safetensors and out_dir/cfg.json: the condition's consensus features. */
husai_status husai_export_consensus(const husai_export_opts *o, const char *out_dir, husai_export_info *info);

#endif
