/* results.h: the files of a sweep's run directory, written by rank 0 into staging.
 * results.h5 (decoders, encoders, PWMCC matrices, per-seed metrics per condition),
 * results.json (provenance and per-condition summaries with CIs), summary.md (HUSAI's
 * table), conditions.csv and the plots (svg.h). Every write is checked, so a full disk is an error, not a
 * silently short file.
 * defines: husai_protocol_result, husai_run_info,
 *          husai_results_h5, husai_results_h5_open, husai_results_h5_params, husai_results_h5_partial_path,
 *          husai_results_h5_condition, HUSAI_PARAM_*,
 *          husai_results_h5_abort, husai_results_write, husai_results_reports */
#ifndef HUSAI_REPORT_RESULTS_H
#define HUSAI_REPORT_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "common/nodeinfo.h"
#include "common/status.h"
#include "metrics/bootstrap.h"
#include "metrics/condition.h"
#include "report/rundir.h"

/* What a protocol decided, beyond its conditions (NULL for a plain sweep). */
typedef struct {
    husai_mode mode; /* calibrate or consistency */
    int n_first;     /* conditions [0, n_first) are the search (calibrate) or the lambda grid (consistency) */
    int selected;    /* index of the selected condition, -1 if none */
    double floor;    /* EV floor the selection used */
    /* calibrate: retrain conditions are [n_first] (selected k) and [n_first + 1] (control) */
    int control_k;
    husai_diff_ci effect_paired;   /* seed-level paired bootstrap, selected - control */
    husai_diff_ci effect_unpaired; /* HUSAI's: pair values resampled as independent */
    /* consistency: the reference SAE */
    int baseline; /* index of lambda = 0 (or the smallest lambda) */
    uint64_t reference_seed;
    const float *reference_decoder; /* [d_model, d_sae] */
    husai_seed_metrics reference_metrics;
} husai_protocol_result;

typedef struct {
    const char *id, *version, *commit, *command;
    const char *hosts; /* comma-separated distinct host names */
    int n_hosts, ranks;
    int threads; /* OpenMP threads per rank (0: unknown, a merge) */
    double seconds;
    const husai_config *cfg;
    const char *dtype;
    const char *fingerprint; /* the data's, "xxh3:..." (common/fingerprint.h); NULL: unknown */
    /* the data's model_name / hook_name attributes (husai import); NULL or "": unknown */
    const char *model_name, *hook_name;
    size_t n_rows;
    int d_model;
    const uint32_t *holdout_rows; /* (n_holdout) rows never trained on, or NULL */
    size_t n_holdout;
    double peak_rss_mb; /* largest peak resident set of any rank, results writing included (0: unknown) */
    const double *peak_rss_by_rank; /* (ranks) each rank's peak resident set in MB, or NULL (a merge) */
    size_t chunk_rows, n_chunks;    /* streamed data (0: held in memory) */
    double bytes_read, read_seconds;
    int n_nodes;                  /* 0 when unknown (a merge) */
    const husai_node_info *nodes; /* (n_nodes) */
    /* train.precision: the resolved choice ("fp32", "bf16"; NULL: unknown, a merge), oneDNN's implementation,
     * the start-up calibration (seconds per batch, 0: none) and the bf16 path's rows over every rank: all,
     * not certified by the first candidate set, rescored in full */
    const char *precision;
    const char *bf16_isa;
    double calib_fp32, calib_bf16;
    double bf16_rows, bf16_second, bf16_full;
} husai_run_info;

/* results.h5 being written while the run goes on (rank 0): each condition lands as it completes, so
 * only one condition's parameters are ever held. The disk space each write needs is reserved first,
 * so a full disk is a one-line error, not a crash. */
typedef struct husai_results_h5 husai_results_h5;

/* Creates the file at path with the run's attributes (run id, version, commit, config); on failure
 * *h is still set (or NULL) and must be given to husai_results_h5_abort. */
husai_status husai_results_h5_open(husai_results_h5 **h, const char *path, const husai_run_info *run);

/* The parameter datasets of a condition, in the order a task's payload holds them (sweep/phase.c). */
enum {
    HUSAI_PARAM_DECODERS,   /* (S, d_model, d_sae) */
    HUSAI_PARAM_ENCODERS,   /* (S, d_sae, d_model) */
    HUSAI_PARAM_B_ENC,      /* (S, d_sae) */
    HUSAI_PARAM_B_DEC,      /* (S, d_model) */
    HUSAI_PARAM_THRESHOLDS, /* (S, d_sae) */
    HUSAI_N_PARAMS
};

/* Creates condition c's group (c->name, S, d_model, d_sae and seeds set) with its parameter datasets
 * ahead of its results, their disk space reserved and allocated but not written: each seed's ranks write
 * their own rows later, straight into the file at the byte offsets returned in offset[] (float32 rows in
 * seed order; contiguous datasets, so seed s of a dataset of per-seed size n floats starts at
 * offset + 4 n s). Marks c params_written. A full disk fails here, before anything is trained. */
husai_status husai_results_h5_params(husai_results_h5 *h, husai_condition_result *c,
                                     uint64_t offset[HUSAI_N_PARAMS]);

/* The file's name while it is written (the owners' writes go there). */
const char *husai_results_h5_partial_path(const husai_results_h5 *h);

/* Writes condition c's group (what husai_results_h5_params has not) and then releases its parameters
 * (decoders, encoders, b_enc, b_dec, thresholds), marking it written. After a failure every later call
 * returns the same error. */
husai_status husai_results_h5_condition(husai_results_h5 *h, husai_condition_result *c);

/* Closes and deletes an unfinished file (after a stop or an error); NULL is a no-op. */
void husai_results_h5_abort(husai_results_h5 *h);

/* Writes the files made from the run's results alone (conditions.csv, summary.md, the plots, report.html)
 * into the existing directory dir; `husai report` calls it on a run read back (report/reader.h). */
husai_status husai_results_reports(const char *dir, const husai_run_info *run,
                                   const husai_condition_result *c, int n,
                                   const husai_protocol_result *proto);

/* Completes results.h5 (h5: opened by husai_results_h5_open on rd's staging results.h5, or NULL to
 * write it all here), consuming h5 either way, then writes results.json, summary.md, conditions.csv
 * and the plots into rd's staging directory. */
husai_status husai_results_write(const husai_rundir *rd, const husai_run_info *run, husai_results_h5 *h5,
                                 husai_condition_result *c, int n, const husai_protocol_result *proto);

#endif
