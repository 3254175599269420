/* features.h: which features are reproducible across seeds. From S decoders as unit feature rows:
 * every feature's best match in every other seed (from PWMCC's blocked pass, see
 * husai_pwmcc_rows_part_best), its stability, mutual matches, clusters of mutually matched features,
 * and the consensus features (clusters present in at least min_seeds seeds), with seed-bootstrap
 * intervals and the same counts for random decoders of the same shape. No MPI here.
 *
 * Clusters (the documented rule): an edge joins feature i of seed s and feature j of seed t when each is
 * the other's best match and their |cos| >= tau. Edges are taken in decreasing |cos|, ties broken by the
 * (seed id, feature index) keys of their ends, and an edge joins two clusters only if they share no seed
 * (a constrained single linkage, Kruskal's order), so a cluster holds at most one feature per seed. The
 * order and the seed identity use the seed ids, never positions or ranks, so the clusters do not depend
 * on seed order, rank count or thread count. Consensus features are numbered by decreasing member count,
 * then by their smallest member key.
 *
 * Memory: the best-match tensors are 8 S^2 d_sae bytes (64 seeds x 16384 latents: 537 MB for cos and
 * index together), held where a condition's results are.
 * defines: husai_features, husai_feature_stats, husai_features_*, husai_decoder_source, husai_decoder_get,
 *          HUSAI_FEATURES_STABLE,
 *          HUSAI_FEATURES_TAU */
#ifndef HUSAI_METRICS_FEATURES_H
#define HUSAI_METRICS_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "metrics/bootstrap.h"
#include "metrics/recon.h"

/* The default match threshold (features.tau). */
#define HUSAI_FEATURES_TAU 0.7

/* A feature counts as stable when it is matched (|cos| >= tau) in at least this share of the other seeds. */
#define HUSAI_FEATURES_STABLE 0.5

/* Counts with seed-bootstrap intervals (withheld below HUSAI_CI_MIN_SEEDS). */
typedef struct {
    husai_ci count;        /* number of consensus features */
    husai_ci share;        /* that number over d_sae */
    husai_ci stable_share; /* share of the S d_sae features with stability >= HUSAI_FEATURES_STABLE */
} husai_feature_stats;

typedef struct {
    int S, d_model, d_sae;
    double tau;    /* match threshold on |cos| */
    int min_seeds; /* seeds a cluster must reach to be a consensus feature */
    /* [S][S][d_sae]: best |cos| of feature i of seed s among seed t's features, and its index; the
     * diagonal s == t is 1 and i by definition (not computed). */
    float *best_cos;
    int32_t *best_index;
    float *stability; /* [S][d_sae] share of the other seeds with best |cos| >= tau */
    float *mean_best; /* [S][d_sae] mean best |cos| over the other seeds */
    int32_t *cluster; /* [S][d_sae] index of the consensus feature holding the feature, -1 for none */
    int n_mutual;     /* mutual matches at |cos| >= tau (edges) */
    int n_consensus;
    float *consensus;   /* [n_consensus][d_model] unit direction: mean of sign-aligned unit columns */
    int32_t *members;   /* [n_consensus][S] the member feature of each seed, -1 for none */
    int32_t *n_members; /* [n_consensus] */
    float *coherence;   /* [n_consensus] mean pairwise |cos| of the members */
    float *density;     /* [n_consensus] mean firing density of the members (NaN without densities) */
    husai_feature_stats stats;
    /* Mean stability of the features in each husai_density_histogram slot (NaN for an empty slot) and how
     * many there are; all NaN and 0 without densities. */
    double stability_by_density[HUSAI_DENSITY_BINS + 1];
    long n_by_density[HUSAI_DENSITY_BINS + 1];
} husai_features;

/* max(2, S - 1): a consensus feature is learned by all seeds but one. */
int husai_features_default_min_seeds(int S);

/* Allocates f's best-match tensors for S decoders of d_model x d_sae (zero, the diagonal set); the other
 * fields are empty. f is freed first only if the caller did so; on failure nothing stays allocated. */
husai_status husai_features_init(husai_features *f, int S, int d_model, int d_sae);

/* Copies the best matches husai_pwmcc_rows_part_best wrote for part `part` of n_parts into f's tensors;
 * fails only when the pair list cannot be allocated. */
husai_status husai_features_place(husai_features *f, int part, int n_parts, const float *pair_cos,
                                  const int32_t *pair_index);

/* Copies the best matches husai_pwmcc_pairs_best wrote for the n listed pairs (pq: p, q for each) into
 * f's tensors. */
void husai_features_place_pairs(husai_features *f, const int *pq, long n, const float *pair_cos,
                                const int32_t *pair_index);

/* The best-match tensors in one process: husai_features_init, then every pair from PWMCC's pass over F
 * (S sets of d_sae unit rows of d_model floats); M (S x S, may be NULL) receives PWMCC. */
husai_status husai_features_best(husai_features *f, const float *F, int S, int d_model, int d_sae, double *M);

/* Where a condition's S decoders ([d_model, d_sae] each, file layout) come from: all in memory, or loaded
 * one at a time (e.g. read back from results.h5 by the engine), so a process need not hold all S. */
typedef struct {
    const float *all; /* the S decoders one after another, or NULL to use load */
    husai_status (*load)(void *ctx, int s, float *out); /* seed s's decoder into out; a status on failure */
    void *ctx;
} husai_decoder_source;

/* Seed s's decoder (dd = d_model d_sae floats) in *out: a pointer into src->all, or scratch (dd floats)
 * as src->load filled it; the load's status. */
husai_status husai_decoder_get(const husai_decoder_source *src, int s, size_t dd, float *scratch,
                               const float **out);

/* husai_features_analyse with the decoders from src (NULL: none, as D = NULL there). The consensus
 * directions are made a bounded number of consensus features at a time (at most d_sae / S, at least 1),
 * so beside f the pass holds one decoder and about one decoder's worth of member columns, whatever S. */
husai_status husai_features_analyse_src(husai_features *f, const husai_decoder_source *src,
                                        const uint64_t *seed_ids, const float *density, double tau,
                                        int min_seeds, const husai_boot_opts *bo);

/* From f's best-match tensors and the decoders D (S of [d_model, d_sae], file layout; the consensus
 * directions are read from the members' columns only): stability, mutual matches, clusters, consensus
 * features and the
 * statistics, as the header describes. seed_ids (S distinct values; NULL: positions) identify seeds for
 * the order-independent rules; density ([S][d_sae] firing shares, may be NULL) gives the consensus
 * density; tau in (0, 1]; min_seeds in [2, S] (0: the default); S >= 2. D may be NULL when only the
 * statistics are wanted (the random baseline): directions and coherence are then NaN. */
husai_status husai_features_analyse(husai_features *f, const float *D, const uint64_t *seed_ids,
                                    const float *density, double tau, int min_seeds,
                                    const husai_boot_opts *bo);

/* The same statistics for the random decoders husai_pwmcc_random_decoder draws for these seeds and shape
 * (what chance gives), computed in one process. */
husai_status husai_features_random_stats(const uint64_t *seeds, int S, int d_model, int d_sae, double tau,
                                         int min_seeds, const husai_boot_opts *bo, husai_feature_stats *out);

/* Frees f's arrays of size S^2 d_sae and the consensus features, keeping the counts, the statistics and
 * the stability by density (what the reports need once the arrays are written). */
void husai_features_release(husai_features *f);

/* Frees every array of f and empties it; harmless on an emptied or zeroed f. */
void husai_features_free(husai_features *f);

#endif
