/* protocols.h: the three experiment protocols of `husai sweep` ([sweep] mode).
 *   sweep        one phase over the grid.
 *   calibrate    adaptive L0: search phase over k, selection by conservative LCB under an EV
 *                floor (fails loudly when no k passes), retrain phase of the selected k and
 *                a matched control, direct effect with a paired seed CI.
 *   consistency  reference seed trained once and broadcast, one phase over lambda with the
 *                alignment penalty, selection by LCB under an EV-drop limit.
 * All are collective; results live on rank 0. The phases each protocol goes through are planned from
 * the configuration alone (husai_protocol_plan_build), so `husai plan` shows exactly what runs.
 * defines: husai_plan_phase, husai_protocol_plan, husai_protocol_plan_build, husai_protocol_output,
 *          husai_protocol_run, husai_protocol_output_free */
#ifndef HUSAI_SWEEP_PROTOCOLS_H
#define HUSAI_SWEEP_PROTOCOLS_H

#include "sweep/phase.h"
#include "common/status.h"
#include "report/results.h"

/* One phase of a protocol as planned before anything runs: conditions x seeds. */
typedef struct {
    const char
        *name; /* the results' phase label: "" (plain sweep), "reference", "search", "retrain", "lambda" */
    const char *after; /* the phase whose results choose this one's conditions, or NULL */
    int prefix_names;  /* result names are "<name>/<condition name>" */
    husai_condition
        conds[HUSAI_MAX_VALUES]; /* retrain: conds[0], the search's pick, has value NaN until then */
    int n_conds;
    const uint64_t *seeds; /* into the configuration */
    int n_seeds;
} husai_plan_phase;

typedef struct {
    husai_plan_phase phases[3];
    int n_phases, n_tasks;
} husai_protocol_plan;

/* The phases husai_protocol_run goes through for cfg, in order (the protocols below run these). */
void husai_protocol_plan_build(const husai_config *cfg, husai_protocol_plan *p);

typedef struct {
    husai_condition_result *res; /* rank 0: n conditions in report order */
    int n;
    int has_proto;
    husai_protocol_result proto;
    float *reference_decoder; /* consistency: owned */
    uint64_t *retrain_seeds;  /* calibrate: owned copy for the results */
} husai_protocol_output;

/* Runs the configured protocol; a status other than OK is agreed by every rank (e.g. no k passes the floor).
 */
husai_status husai_protocol_run(const husai_run_ctx *ctx, husai_protocol_output *out);

/* Releases everything in out; safe on a zeroed struct. */
void husai_protocol_output_free(husai_protocol_output *out);

#endif
