/* protocols.h: the three experiment protocols of `husai sweep` ([sweep] mode).
 *   sweep        one phase over the grid.
 *   calibrate    adaptive L0: search phase over k, selection by conservative LCB under an EV
 *                floor (fails loudly when no k passes), retrain phase of the selected k and
 *                a matched control, direct effect with a paired seed CI.
 *   consistency  reference seed trained once and broadcast, one phase over lambda with the
 *                alignment penalty, selection by LCB under an EV-drop limit.
 * All are collective; results live on rank 0.
 * defines: husai_protocol_output, husai_protocol_run, husai_protocol_output_free */
#ifndef HUSAI_SWEEP_PROTOCOLS_H
#define HUSAI_SWEEP_PROTOCOLS_H

#include "sweep/phase.h"
#include "common/status.h"
#include "report/results.h"

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
