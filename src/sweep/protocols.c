#include "sweep/protocols.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/bootstrap.h"
#include "metrics/select.h"
#include "mpi/mpicheck.h"

static husai_condition_result *alloc_results(int n, int rank) {
    if (rank != 0) return NULL;
    husai_condition_result *r = calloc((size_t)n, sizeof *r);
    if (!r) husai_mpi_die("out of memory");
    return r;
}

static husai_boot_opts boot_opts(const husai_config *cfg) {
    return (husai_boot_opts){.resamples = cfg->resamples,
                             .seed = cfg->bootstrap_seed,
                             .rng = cfg->bootstrap_rng,
                             .unit = cfg->bootstrap_unit};
}

static husai_status run_sweep(const husai_run_ctx *ctx, husai_protocol_output *out, int rank) {
    const husai_config *cfg = ctx->cfg;
    husai_condition conds[HUSAI_MAX_VALUES];
    for (int i = 0; i < cfg->n_values; i++)
        conds[i] = husai_config_condition(cfg, i);
    husai_phase ph = {
        .phase = "", .conds = conds, .n_conds = cfg->n_values, .seeds = cfg->seeds, .n_seeds = cfg->n_seeds};
    out->n = cfg->n_values;
    out->res = alloc_results(out->n, rank);
    return husai_phase_run(ctx, &ph, out->res);
}

/* Rank 0 prints a compact table of a phase so a log shows what the selection saw. */
static void print_table(const husai_condition_result *r, int n, const char *title) {
    printf("[husai] %s\n", title);
    for (int i = 0; i < n; i++)
        printf("[husai]   %-22s trained %.5f [%.5f, %.5f]  random %.5f  LCB %+.5f  EV %.4f\n", r[i].name,
               r[i].trained.mean, r[i].trained.lo, r[i].trained.hi, r[i].random.mean, r[i].delta_lcb,
               r[i].ev.mean);
    fflush(stdout);
}

static husai_status run_calibrate(const husai_run_ctx *ctx, husai_protocol_output *out, int rank) {
    const husai_config *cfg = ctx->cfg;
    const int n_search = cfg->n_values;
    husai_condition conds[HUSAI_MAX_VALUES];
    for (int i = 0; i < n_search; i++)
        conds[i] = husai_config_condition(cfg, i);
    husai_phase search = {.phase = "search",
                          .prefix_names = 1,
                          .conds = conds,
                          .n_conds = n_search,
                          .seeds = cfg->seeds,
                          .n_seeds = cfg->n_seeds};
    out->n = n_search + 2;
    out->res = alloc_results(out->n, rank);
    husai_status st = husai_phase_run(ctx, &search, out->res);
    if (st) return st;

    /* Rank 0 selects; everyone learns the choice (or that there is none). */
    int selected = -1;
    if (rank == 0) {
        double lcb[HUSAI_MAX_VALUES], delta[HUSAI_MAX_VALUES], ev[HUSAI_MAX_VALUES];
        for (int i = 0; i < n_search; i++) {
            lcb[i] = out->res[i].delta_lcb;
            delta[i] = out->res[i].delta;
            ev[i] = out->res[i].ev.mean;
        }
        print_table(out->res, n_search, "search results:");
        st = husai_select_by_lcb(lcb, delta, ev, n_search, cfg->ev_floor, &selected);
        if (st == HUSAI_OK && selected < 0) {
            double best = -INFINITY;
            for (int i = 0; i < n_search; i++)
                best = fmax(best, ev[i]);
            st = husai_error(
                HUSAI_ERR_DATA,
                "calibrate: no k reaches the EV floor %.3f (best mean EV %.4f); lower calibrate.ev_floor or "
                "train longer -- refusing to fall back to all k",
                cfg->ev_floor, best);
        } else if (st == HUSAI_OK) {
            printf("[husai] selected %s: conservative LCB %+.5f, EV %.4f (floor %.2f); retraining it and the "
                   "control "
                   "k=%d\n",
                   out->res[selected].name, lcb[selected], ev[selected], cfg->ev_floor, cfg->control_k);
            fflush(stdout);
        }
    }
    if ((st = husai_mpi_agree(st, ctx->comm))) return st;
    HUSAI_MPI_CHECK(MPI_Bcast(&selected, 1, MPI_INT, 0, ctx->comm));

    /* Retrain the pick and the matched control on the same seeds, epochs, batch and lr. */
    husai_config rc = *cfg;
    rc.epochs = cfg->retrain_epochs;
    const int n_rs = cfg->n_retrain_seeds > 0 ? cfg->n_retrain_seeds : cfg->n_seeds;
    out->retrain_seeds = malloc((size_t)n_rs * sizeof(uint64_t));
    if (!out->retrain_seeds) husai_mpi_die("out of memory");
    memcpy(out->retrain_seeds, cfg->n_retrain_seeds > 0 ? cfg->retrain_seeds : cfg->seeds,
           (size_t)n_rs * sizeof(uint64_t));
    husai_condition retrain[2] = {husai_config_make_condition(&rc, "k", conds[selected].value),
                                  husai_config_make_condition(&rc, "k", (double)cfg->control_k)};
    /* One phase for both, so their tasks share the waves; distinct names even if the pick is the control's k.
     */
    snprintf(retrain[0].name, sizeof retrain[0].name, "retrain/k=%d", retrain[0].k);
    snprintf(retrain[1].name, sizeof retrain[1].name, "control/k=%d", retrain[1].k);
    husai_phase ph = {
        .phase = "retrain", .conds = retrain, .n_conds = 2, .seeds = out->retrain_seeds, .n_seeds = n_rs};
    if ((st = husai_phase_run(ctx, &ph, rank == 0 ? out->res + n_search : NULL))) return st;

    if (rank == 0) {
        husai_protocol_result *p = &out->proto;
        out->has_proto = 1;
        *p = (husai_protocol_result){.mode = HUSAI_MODE_CALIBRATE,
                                     .n_first = n_search,
                                     .selected = selected,
                                     .floor = cfg->ev_floor,
                                     .control_k = cfg->control_k,
                                     .baseline = -1};
        const husai_condition_result *a = &out->res[n_search], *b = &out->res[n_search + 1];
        husai_boot_opts bo = boot_opts(cfg);
        if (husai_ci_diff_paired_matrix(a->pwmcc, b->pwmcc, n_rs, &bo, &p->effect_paired))
            husai_mpi_die("direct effect: %s", husai_error_message());
        /* HUSAI's comparison: the pair values of each condition resampled as if independent. */
        const int np = n_rs * (n_rs - 1) / 2;
        double *xa = malloc((size_t)np * sizeof(double)), *xb = malloc((size_t)np * sizeof(double));
        if (!xa || !xb) husai_mpi_die("out of memory");
        for (int i = 0, t = 0; i < n_rs; i++)
            for (int j = i + 1; j < n_rs; j++, t++) {
                xa[t] = a->pwmcc[i * n_rs + j];
                xb[t] = b->pwmcc[i * n_rs + j];
            }
        if (husai_ci_diff_unpaired(xa, (size_t)np, xb, (size_t)np, &bo, &p->effect_unpaired))
            husai_mpi_die("direct effect: %s", husai_error_message());
        /* With 2 retrain seeds each side is one pair value: every resample is the same difference. */
        husai_diff_ci_withhold(&p->effect_unpaired, n_rs);
        free(xa);
        free(xb);
        if (n_rs < HUSAI_CI_MIN_SEEDS)
            printf("[husai] direct effect %s vs control k=%d: %+.5f (no interval: %d retrain seeds, needs >= "
                   "%d)\n",
                   a->name, cfg->control_k, p->effect_paired.diff, n_rs, HUSAI_CI_MIN_SEEDS);
        else
            printf("[husai] direct effect %s vs control k=%d: %+.5f, paired seed CI [%+.5f, %+.5f], "
                   "HUSAI's pair CI [%+.5f, %+.5f]\n",
                   a->name, cfg->control_k, p->effect_paired.diff, p->effect_paired.lo, p->effect_paired.hi,
                   p->effect_unpaired.lo, p->effect_unpaired.hi);
        fflush(stdout);
    }
    return HUSAI_OK;
}

static husai_status run_consistency(const husai_run_ctx *ctx, husai_protocol_output *out, int rank) {
    const husai_config *cfg = ctx->cfg;
    const int n = cfg->n_values, d = ctx->ds->d_model;
    husai_condition conds[HUSAI_MAX_VALUES];
    for (int i = 0; i < n; i++)
        conds[i] = husai_config_condition(cfg, i);
    const husai_condition base = husai_config_make_condition(cfg, "lambda", 0.0);
    float *ref_rows = malloc((size_t)cfg->d_sae * d * sizeof(float));
    out->reference_decoder = malloc((size_t)cfg->d_sae * d * sizeof(float));
    if (!ref_rows || !out->reference_decoder) husai_mpi_die("out of memory for the reference decoder");
    husai_seed_metrics ref_metrics = {0};
    husai_status st = husai_train_reference(ctx, &base, cfg->reference_seed, ref_rows, out->reference_decoder,
                                            &ref_metrics);
    if (st) {
        free(ref_rows);
        return st;
    }

    husai_phase ph = {.phase = "lambda",
                      .conds = conds,
                      .n_conds = n,
                      .seeds = cfg->seeds,
                      .n_seeds = cfg->n_seeds,
                      .ref_rows = ref_rows,
                      .ref_n = cfg->d_sae};
    out->n = n;
    out->res = alloc_results(n, rank);
    st = husai_phase_run(ctx, &ph, out->res);
    free(ref_rows);
    if (st) return st;
    if (rank != 0) return HUSAI_OK;

    /* Baseline: lambda = 0 if swept, else the smallest lambda (said in the report). */
    int baseline = 0;
    for (int i = 1; i < n; i++)
        if (conds[i].lambda < conds[baseline].lambda) baseline = i;
    const double floor = out->res[baseline].ev.mean - cfg->max_ev_drop;
    double lcb[HUSAI_MAX_VALUES], delta[HUSAI_MAX_VALUES], ev[HUSAI_MAX_VALUES];
    for (int i = 0; i < n; i++) {
        lcb[i] = out->res[i].delta_lcb;
        delta[i] = out->res[i].delta;
        ev[i] = out->res[i].ev.mean;
    }
    int selected = -1;
    st = husai_select_by_lcb(lcb, delta, ev, n, floor, &selected);
    if (st) return st;
    out->has_proto = 1;
    out->proto = (husai_protocol_result){.mode = HUSAI_MODE_CONSISTENCY,
                                         .n_first = n,
                                         .selected = selected,
                                         .floor = floor,
                                         .baseline = baseline,
                                         .reference_seed = cfg->reference_seed,
                                         .reference_decoder = out->reference_decoder,
                                         .reference_metrics = ref_metrics};
    print_table(out->res, n, "lambda sweep:");
    return HUSAI_OK;
}

/* Both protocols select by the conservative delta LCB, which needs an interval over the search seeds:
 * refuse before any training rather than select on nothing. Every rank sees the same configuration, so
 * every rank returns the same error without communicating. */
static husai_status check_selection_seeds(const husai_config *cfg) {
    if (cfg->n_seeds >= HUSAI_CI_MIN_SEEDS) return HUSAI_OK;
    return husai_error(
        HUSAI_ERR_ARG,
        "%s: sweep.seeds has %d seeds, but selecting by the conservative delta LCB needs a confidence "
        "interval, which needs at least %d seeds",
        husai_mode_name(cfg->mode), cfg->n_seeds, HUSAI_CI_MIN_SEEDS);
}

husai_status husai_protocol_run(const husai_run_ctx *ctx, husai_protocol_output *out) {
    memset(out, 0, sizeof *out);
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    const husai_mode mode = ctx->cfg->mode;
    if (mode == HUSAI_MODE_CALIBRATE || mode == HUSAI_MODE_CONSISTENCY) {
        const husai_status st = check_selection_seeds(ctx->cfg);
        if (st) return st;
    }
    const husai_status st = mode == HUSAI_MODE_CALIBRATE     ? run_calibrate(ctx, out, rank)
                            : mode == HUSAI_MODE_CONSISTENCY ? run_consistency(ctx, out, rank)
                                                             : run_sweep(ctx, out, rank);
    /* Selection runs on rank 0 alone: its verdict must reach every rank before the next collective. */
    return husai_mpi_agree(st, ctx->comm);
}

void husai_protocol_output_free(husai_protocol_output *out) {
    if (!out) return;
    if (out->res)
        for (int i = 0; i < out->n; i++)
            husai_condition_result_free(&out->res[i]);
    free(out->res);
    free(out->reference_decoder);
    free(out->retrain_seeds);
    memset(out, 0, sizeof *out);
}
