/* config.h: a sweep's configuration: INI file (parsed by inih) plus --set overrides.
 * Every key is declared once in a table (section, key, type, default, help); unknown
 * sections or keys, bad values and missing required keys are errors naming the key.
 * No MPI here: every rank parses the same file and reaches the same verdict.
 * defines: husai_config, husai_config_defaults, husai_config_load, husai_config_load_string,
 *          husai_config_set, husai_config_validate, husai_config_resolve, husai_config_print,
 *          husai_config_text, husai_config_hash, husai_config_condition_opts, husai_condition,
 *          husai_config_make_condition, husai_config_condition, husai_mode, husai_mode_parse,
 *          husai_mode_name, HUSAI_MAX_VALUES, HUSAI_MAX_SEEDS, HUSAI_PATH_MAX */
#ifndef HUSAI_CONFIG_CONFIG_H
#define HUSAI_CONFIG_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "metrics/bootstrap.h"
#include "metrics/condition.h"

#define HUSAI_MAX_VALUES 64
#define HUSAI_MAX_SEEDS 1024
#define HUSAI_PATH_MAX 4096

/* The experiment protocol of a sweep ([sweep] mode); the config file and results name it by
 * husai_mode_name. */
typedef enum {
    HUSAI_MODE_UNKNOWN = -1, /* a name no protocol has (sweep.mode's text is kept for the error) */
    HUSAI_MODE_SWEEP,
    HUSAI_MODE_CALIBRATE,
    HUSAI_MODE_CONSISTENCY,
    HUSAI_MODE_COUNT
} husai_mode;

/* The mode a config name stands for, or HUSAI_MODE_UNKNOWN. */
husai_mode husai_mode_parse(const char *name);

/* The config name of a mode ("?" for none). */
const char *husai_mode_name(husai_mode mode);

typedef struct {
    /* [data] */
    char data_path[HUSAI_PATH_MAX];
    char dataset[256];
    int d_model;             /* expected width of the dataset; 0 accepts any */
    double holdout;          /* fraction of rows never trained on, for held-out metrics */
    uint64_t split_seed;     /* seed of the held-out split */
    char dictionary[256];    /* dataset [atoms, d_model] of true atoms in the same file ("": none) */
    double memory_budget_mb; /* activations held per node; larger datasets are streamed (0: no limit) */
    int chunk_rows;          /* rows per streamed chunk (0: as many as the budget holds) */
    /* [sae] */
    int d_sae, k;
    int arch; /* husai_arch */
    int relu, decoder_bias, prefixes;
    double bandwidth, sparsity_coeff;
    int aux_k;
    double aux_coeff, dead_after;
    int grad_projection;
    /* [train] */
    int epochs, batch_size;
    double lr;
    int lr_width_ref; /* lr scales by sqrt(lr_width_ref / d_sae) when > 0 */
    int precision;    /* husai_precision (sae/bf16.h): fp32, bf16 or auto (resolved by the sweep) */
    /* [sweep] */
    husai_mode mode;
    char mode_text[32]; /* sweep.mode as given, which names an unknown mode in validation's error */
    char param[32];     /* k | d_sae | lr | epochs | batch_size | lambda | arch */
    int n_values;
    int values_named; /* some value was an architecture name (only valid with param = arch) */
    double values[HUSAI_MAX_VALUES];
    int n_seeds;
    uint64_t seeds[HUSAI_MAX_SEEDS];
    /* [metrics] */
    husai_boot_unit bootstrap_unit;
    int resamples;
    uint64_t bootstrap_seed;
    husai_boot_rng bootstrap_rng;
    int matching_max_d_sae; /* matched agreement (Hungarian) for d_sae up to this; 0 turns it off */
    double window_mb; /* PWMCC decoders held per node; more go by seed blocks (0: half the free memory) */
    /* [features] per-feature stability and consensus features (metrics/features.h) */
    double features_tau;    /* |cos| of a match */
    int features_min_seeds; /* seeds of a consensus feature; 0: all but one, at least 2 */
    /* [calibrate] adaptive L0: search on sweep.seeds x train.epochs, retrain the pick and a control */
    int n_retrain_seeds;
    uint64_t retrain_seeds[HUSAI_MAX_SEEDS];
    int retrain_epochs;
    double ev_floor;
    int control_k;
    /* [consistency] alignment penalty to a reference seed's decoder */
    uint64_t reference_seed;
    double max_ev_drop;
    /* [checkpoint] */
    double checkpoint_seconds; /* periodic checkpoint interval while a task trains; 0: only on stop and at
                                  task end */
    /* [progress] */
    double progress_seconds; /* progress line interval while a task trains; 0: no progress lines */
    /* [output] */
    char out_dir[HUSAI_PATH_MAX];
    /* bookkeeping: which keys were given, by index into the option table */
    unsigned char given[64];
    char source[HUSAI_PATH_MAX]; /* the config file path */
} husai_config;

/* Fills c with every default (HUSAI's recipe); required keys are left unset. */
void husai_config_defaults(husai_config *c);

/* Parses an INI file over the defaults in c. Errors name the file, line and key. */
husai_status husai_config_load(husai_config *c, const char *path);

/* Parses INI text (e.g. the config stored in a results.h5) over the defaults in c; `origin` names it in
 * errors. */
husai_status husai_config_load_string(husai_config *c, const char *text, const char *origin);

/* Applies one override "section.key=value" (the --set flag) with the same checks as the file. */
husai_status husai_config_set(husai_config *c, const char *assignment);

/* Checks required keys and cross-key rules (k <= d_sae for every condition, >= 2 distinct seeds, ...). */
husai_status husai_config_validate(const husai_config *c);

/* The configuration of a command line: defaults, the file at path, each of sets[0..n_sets) ("key=value")
 * in order, then out_dir (when not NULL) as output.dir, validated: what `husai sweep` runs and
 * `husai plan` shows. */
husai_status husai_config_resolve(husai_config *c, const char *path, const char *const *sets, int n_sets,
                                  const char *out_dir);

/* The options of the per-condition statistics (bootstrap, matched agreement) that c sets. */
husai_condition_opts husai_config_condition_opts(const husai_config *c);

/* Prints the resolved configuration as INI (every key, given or default) to f. */
void husai_config_print(const husai_config *c, FILE *f);

/* husai_config_print's text in a malloc'd string (the caller frees it); NULL when memory runs out. */
char *husai_config_text(const husai_config *c);

/* A stable 64-bit hash of what the configuration computes (husai_config_print's text without the
 * output directory and checkpoint interval). */
uint64_t husai_config_hash(const husai_config *c);

/* One point of a sweep: the base settings with one parameter set to one value. */
typedef struct {
    char name[64]; /* "<param>=<value>", prefixed "<phase>/" inside multi-phase protocols */
    char param[32];
    double value;
    int d_sae, k, epochs, batch_size;
    double lr, lambda; /* lr after width scaling */
    int arch;          /* husai_arch */
} husai_condition;

/* Builds the condition that sets param to value over the base settings of c (no validation). */
husai_condition husai_config_make_condition(const husai_config *c, const char *param, double value);

/* Condition i of the sweep grid (sweep.param = sweep.values[i]). */
husai_condition husai_config_condition(const husai_config *c, int i);

#endif
