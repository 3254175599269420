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

/* A retrain condition: k = value at the retrain epochs, named "<label>/k=<k>" (the pick and the control
 * keep distinct names even when their k is the same). */
static husai_condition retrain_condition(const husai_config *cfg, double value, const char *label) {
    husai_config rc = *cfg;
    rc.epochs = cfg->retrain_epochs;
    husai_condition c = husai_config_make_condition(&rc, "k", value);
    snprintf(c.name, sizeof c.name, "%s/k=%d", label, c.k);
    return c;
}

void husai_protocol_plan_build(const husai_config *cfg, husai_protocol_plan *p) {
    memset(p, 0, sizeof *p);
    const int calibrate = cfg->mode == HUSAI_MODE_CALIBRATE,
              consistency = cfg->mode == HUSAI_MODE_CONSISTENCY;
    if (consistency) {
        husai_plan_phase *ref = &p->phases[p->n_phases++];
        ref->name = "reference";
        ref->conds[0] = husai_config_make_condition(cfg, "lambda", 0.0);
        ref->n_conds = 1;
        ref->seeds = &cfg->reference_seed;
        ref->n_seeds = 1;
    }
    husai_plan_phase *grid = &p->phases[p->n_phases++];
    grid->name = calibrate ? "search" : consistency ? "lambda" : "";
    grid->prefix_names = calibrate;
    grid->n_conds = cfg->n_values;
    for (int i = 0; i < cfg->n_values; i++)
        grid->conds[i] = husai_config_condition(cfg, i);
    grid->seeds = cfg->seeds;
    grid->n_seeds = cfg->n_seeds;
    if (calibrate) {
        /* One phase for the pick and the matched control, so their tasks share the waves. */
        husai_plan_phase *re = &p->phases[p->n_phases++];
        re->name = "retrain";
        re->after = "search";
        re->conds[1] = retrain_condition(cfg, (double)cfg->control_k, "control");
        re->conds[0] = re->conds[1];
        re->conds[0].value = NAN;
        snprintf(re->conds[0].name, sizeof re->conds[0].name, "retrain/k=<selected>");
        re->n_conds = 2;
        re->seeds = cfg->n_retrain_seeds > 0 ? cfg->retrain_seeds : cfg->seeds;
        re->n_seeds = cfg->n_retrain_seeds > 0 ? cfg->n_retrain_seeds : cfg->n_seeds;
    }
    for (int q = 0; q < p->n_phases; q++)
        p->n_tasks += p->phases[q].n_conds * p->phases[q].n_seeds;
}

/* The engine's view of a planned phase. */
static husai_phase phase_of(const husai_plan_phase *pp) {
    return (husai_phase){.phase = pp->name,
                         .prefix_names = pp->prefix_names,
                         .conds = pp->conds,
                         .n_conds = pp->n_conds,
                         .seeds = pp->seeds,
                         .n_seeds = pp->n_seeds};
}

static husai_status run_sweep(const husai_run_ctx *ctx, const husai_protocol_plan *plan,
                              husai_protocol_output *out, int rank) {
    husai_phase ph = phase_of(&plan->phases[0]);
    out->n = ph.n_conds;
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

/* The retrained pick's PWMCC minus the control's, with the seed-level paired CI and HUSAI's CI over pair
 * values resampled as if independent. */
static husai_status direct_effect(const husai_config *cfg, const husai_condition_result *a,
                                  const husai_condition_result *b, int n_rs, husai_protocol_result *p) {
    const husai_boot_opts bo = husai_config_condition_opts(cfg).boot;
    husai_status st = husai_ci_diff_paired_matrix(a->pwmcc, b->pwmcc, n_rs, &bo, &p->effect_paired);
    const int np = n_rs * (n_rs - 1) / 2;
    double *xa = malloc((size_t)np * sizeof(double)), *xb = malloc((size_t)np * sizeof(double));
    if (!st && (!xa || !xb)) st = husai_error(HUSAI_ERR_NOMEM, "out of memory for the direct effect");
    for (int i = 0, t = 0; !st && i < n_rs; i++)
        for (int j = i + 1; j < n_rs; j++, t++) {
            xa[t] = a->pwmcc[i * n_rs + j];
            xb[t] = b->pwmcc[i * n_rs + j];
        }
    if (!st) st = husai_ci_diff_unpaired(xa, (size_t)np, xb, (size_t)np, &bo, &p->effect_unpaired);
    free(xa);
    free(xb);
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", husai_error_message());
        return husai_error(st, "direct effect: %s", msg);
    }
    /* With 2 retrain seeds each side is one pair value: every resample is the same difference. */
    husai_diff_ci_withhold(&p->effect_unpaired, n_rs);
    return HUSAI_OK;
}

static husai_status run_calibrate(const husai_run_ctx *ctx, husai_protocol_plan *plan,
                                  husai_protocol_output *out, int rank) {
    const husai_config *cfg = ctx->cfg;
    const husai_phase search = phase_of(&plan->phases[0]);
    const int n_search = search.n_conds;
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
    husai_plan_phase *re = &plan->phases[1];
    re->conds[0] = retrain_condition(cfg, search.conds[selected].value, "retrain");
    const int n_rs = re->n_seeds;
    out->retrain_seeds = malloc((size_t)n_rs * sizeof(uint64_t));
    if (!out->retrain_seeds) husai_mpi_die("out of memory");
    memcpy(out->retrain_seeds, re->seeds, (size_t)n_rs * sizeof(uint64_t));
    re->seeds = out->retrain_seeds; /* the results point at the seeds, and outlive the configuration */
    husai_phase ph = phase_of(re);
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
        if ((st = direct_effect(cfg, a, b, n_rs, p))) return st;
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

static husai_status run_consistency(const husai_run_ctx *ctx, const husai_protocol_plan *plan,
                                    husai_protocol_output *out, int rank) {
    const husai_config *cfg = ctx->cfg;
    const husai_plan_phase *reference = &plan->phases[0];
    husai_phase ph = phase_of(&plan->phases[1]);
    const int n = ph.n_conds, d = ctx->ds->d_model;
    const husai_condition *conds = ph.conds;
    float *ref_rows = malloc((size_t)cfg->d_sae * d * sizeof(float));
    out->reference_decoder = malloc((size_t)cfg->d_sae * d * sizeof(float));
    if (!ref_rows || !out->reference_decoder) husai_mpi_die("out of memory for the reference decoder");
    husai_seed_metrics ref_metrics = {0};
    husai_status st = husai_train_reference(ctx, &reference->conds[0], reference->seeds[0], ref_rows,
                                            out->reference_decoder, &ref_metrics);
    if (st) {
        free(ref_rows);
        return st;
    }

    ph.ref_rows = ref_rows;
    ph.ref_n = cfg->d_sae;
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
    husai_protocol_plan *plan = malloc(sizeof *plan);
    if (!plan) husai_mpi_die("out of memory");
    husai_protocol_plan_build(ctx->cfg, plan);
    const husai_status st = mode == HUSAI_MODE_CALIBRATE     ? run_calibrate(ctx, plan, out, rank)
                            : mode == HUSAI_MODE_CONSISTENCY ? run_consistency(ctx, plan, out, rank)
                                                             : run_sweep(ctx, plan, out, rank);
    free(plan);
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
