#define _POSIX_C_SOURCE 200809L
#include "cli/phase.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/bootstrap.h"
#include "metrics/groundtruth.h"
#include "metrics/match.h"
#include "metrics/pwmcc.h"
#include "metrics/recon.h"
#include "mpi/gather.h"
#include "mpi/mpicheck.h"
#include "mpi/plan.h"
#include "mpi/stop.h"
#include "sae/align.h"
#include "sae/checkpoint.h"
#include "sae/train.h"

#define TAG_PROGRESS 101
#define EVAL_BATCH 4096

typedef struct {
    int task;
    int rank;
    double mse, ev, seconds;
} progress_msg;

typedef struct {
    const husai_phase *ph;
    const husai_plan *plan;
    int done, total;
    double t_start;
} progress_state;

static void fmt_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

static void print_progress(progress_state *ps, const progress_msg *m) {
    ps->done++;
    const husai_task *t = &ps->plan->tasks[m->task];
    char el[32], eta[32];
    const double elapsed = MPI_Wtime() - ps->t_start;
    fmt_duration(elapsed, el, sizeof el);
    fmt_duration(elapsed / ps->done * (ps->total - ps->done), eta, sizeof eta);
    printf("[husai] %s%stask %d/%d done: %s%s%s seed=%llu rank=%d mse=%.6g ev=%.4f time=%.1fs elapsed=%s "
           "eta=%s\n",
           ps->ph->phase, *ps->ph->phase ? " " : "", ps->done, ps->total,
           ps->ph->prefix_names ? ps->ph->phase : "", ps->ph->prefix_names ? "/" : "",
           ps->ph->conds[t->condition].name, (unsigned long long)t->seed, m->rank, m->mse, m->ev, m->seconds,
           el, eta);
    fflush(stdout);
}

/* Rank 0: prints every progress message that has already arrived, without blocking. */
static void drain_progress(progress_state *ps, MPI_Comm comm) {
    for (;;) {
        int flag = 0;
        MPI_Status status;
        HUSAI_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, TAG_PROGRESS, comm, &flag, &status));
        if (!flag) return;
        progress_msg m;
        HUSAI_MPI_CHECK(
            MPI_Recv(&m, (int)sizeof m, MPI_BYTE, status.MPI_SOURCE, TAG_PROGRESS, comm, MPI_STATUS_IGNORE));
        print_progress(ps, &m);
    }
}

/* What a task sends to rank 0: decoder (file layout) | W_enc | b_enc | b_dec | thresholds | density. */
static size_t payload_floats(int d_model, int d_sae) {
    return 2 * (size_t)d_model * d_sae + 3 * (size_t)d_sae + (size_t)d_model;
}

/* Where the per-latent firing densities start in a payload (the last d_sae floats). */
static size_t payload_density(int d_model, int d_sae) {
    return 2 * (size_t)d_model * d_sae + 2 * (size_t)d_sae + (size_t)d_model;
}

/* Packs a trained model into its payload; b_dec is 0 without a decoder bias, and thresholds hold what
 * inference compares pre-activations with (jumprelu theta_j, batchtopk's estimate, else 0). */
static void pack_model(const husai_sae *m, float *p) {
    const size_t dd = (size_t)m->d_model * m->d_sae;
    husai_sae_export_decoder(m, p);
    memcpy(p + dd, m->W_enc, dd * sizeof(float));
    memcpy(p + 2 * dd, m->b_enc, (size_t)m->d_sae * sizeof(float));
    float *b_dec = p + 2 * dd + m->d_sae, *th = b_dec + m->d_model;
    for (int i = 0; i < m->d_model; i++)
        b_dec[i] = m->b_dec ? m->b_dec[i] : 0.0f;
    for (int j = 0; j < m->d_sae; j++)
        th[j] = m->log_theta ? expf(m->log_theta[j]) : (float)m->threshold;
}

/* Checkpoint file and identity of one task; the identity names the phase, condition and seed. */
static void task_ckpt(const husai_run_ctx *ctx, const char *phase, int cond_index, const husai_condition *c,
                      uint64_t seed, char *path, size_t n, husai_ckpt_id *id) {
    snprintf(path, n, "%s/%s-c%d-seed%llu.ckpt", ctx->ckpt_dir, *phase ? phase : "main", cond_index,
             (unsigned long long)seed);
    id->config_hash = ctx->config_hash;
    snprintf(id->task, sizeof id->task, "%s%s%.40s seed=%llu", phase, *phase ? "/" : "", c->name,
             (unsigned long long)seed);
}

/* Trains one SAE to completion (rank 0 keeps printing others' progress meanwhile) and evaluates it;
 * density (d_sae floats, or NULL) receives each latent's firing density on the training rows.
 * With checkpoints, a task resumes from its file and saves on stop, periodically and when done.
 * Returns 1 (and no model) when a stop was requested before the task finished. */
static int train_one(const husai_run_ctx *ctx, const char *phase, int cond_index, const husai_condition *c,
                     uint64_t seed, const float *ref_rows, int ref_n, husai_seed_metrics *metrics,
                     progress_state *ps, husai_sae *out, float *density) {
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    const husai_dataset *ds = ctx->ds;
    husai_train_opts o = husai_train_defaults();
    o.d_sae = c->d_sae;
    o.k = c->k;
    o.epochs = c->epochs;
    o.batch_size = c->batch_size;
    o.lr = c->lr;
    o.seed = seed;
    o.lambda = c->lambda;
    o.ref_rows = c->lambda > 0.0 ? ref_rows : NULL;
    o.ref_n = ref_n;
    const husai_config *cfg = ctx->cfg;
    o.arch = (husai_arch)c->arch;
    o.relu = cfg->relu;
    o.decoder_bias = cfg->decoder_bias;
    o.n_prefixes = cfg->prefixes;
    o.bandwidth = cfg->bandwidth;
    o.sparsity_coeff = cfg->sparsity_coeff;
    o.aux_k = cfg->aux_k;
    o.aux_coeff = cfg->aux_coeff;
    o.dead_after = cfg->dead_after;
    o.grad_projection = cfg->grad_projection;
    const husai_split *sp = ctx->split;
    o.row_index = sp->train;
    const double t0 = MPI_Wtime();
    husai_trainer tr;
    if (husai_trainer_init(&tr, ds->X, sp->n_train, ds->d_model, &o))
        husai_mpi_die("%s seed %llu: %s", c->name, (unsigned long long)seed, husai_error_message());
    char path[4200];
    husai_ckpt_id id;
    if (ctx->ckpt_dir) {
        task_ckpt(ctx, phase, cond_index, c, seed, path, sizeof path, &id);
        husai_status st = husai_checkpoint_load(&tr, &id, path);
        if (st == HUSAI_OK) {
            printf("[husai] rank %d resumes %s from step %lld (epoch %d)\n", rank, id.task,
                   (long long)tr.steps, tr.epoch);
            fflush(stdout);
        } else if (st != HUSAI_ERR_IO) {
            husai_mpi_die("refusing checkpoint: %s", husai_error_message());
        }
    }
    double last_save = MPI_Wtime();
    while (!husai_trainer_done(&tr)) {
        if (husai_stop_requested()) {
            if (ctx->ckpt_dir && husai_checkpoint_save(&tr, &id, path))
                husai_mpi_die("%s", husai_error_message());
            husai_trainer_free(&tr);
            return 1;
        }
        if (husai_trainer_step(&tr)) husai_mpi_die("%s: %s", c->name, husai_error_message());
        husai_stop_count_step();
        if (rank == 0 && ps) drain_progress(ps, ctx->comm);
        if (ctx->ckpt_dir && ctx->ckpt_every_seconds > 0 &&
            MPI_Wtime() - last_save > ctx->ckpt_every_seconds) {
            if (husai_checkpoint_save(&tr, &id, path)) husai_mpi_die("%s", husai_error_message());
            last_save = MPI_Wtime();
        }
    }
    /* A finished task's checkpoint is its result on resume: it is never retrained. */
    if (ctx->ckpt_dir && husai_checkpoint_save(&tr, &id, path)) husai_mpi_die("%s", husai_error_message());
    /* EV, MSE and L0 on the training rows, as HUSAI reported them, and on the held-out rows if any. */
    husai_recon rec, ho = {NAN, NAN, NAN, NAN};
    if (husai_recon_eval_density(&tr.model, ds->X, sp->train, sp->n_train, EVAL_BATCH, &rec, density) ||
        (sp->n_holdout > 0 &&
         husai_recon_eval_rows(&tr.model, ds->X, sp->holdout, sp->n_holdout, EVAL_BATCH, &ho)))
        husai_mpi_die("evaluating %s seed %llu: %s", c->name, (unsigned long long)seed,
                      husai_error_message());
    double alignment = NAN;
    if (ref_rows) {
        float *scratch = malloc(husai_align_scratch_floats(ref_n) * sizeof(float));
        int32_t *best = malloc((size_t)c->d_sae * sizeof(int32_t));
        float *cosv = malloc((size_t)c->d_sae * sizeof(float));
        if (!scratch || !best || !cosv) husai_mpi_die("out of memory measuring alignment");
        alignment =
            husai_align_rows(tr.model.W_dec, c->d_sae, ref_rows, ref_n, ds->d_model, best, cosv, scratch);
        free(scratch);
        free(best);
        free(cosv);
    }
    double gt_mean = NAN, gt_rec = NAN;
    if (ctx->gt_dict && husai_gt_recovery(ctx->gt_dict, ctx->gt_atoms, tr.model.W_dec, c->d_sae, ds->d_model,
                                          &gt_mean, &gt_rec))
        husai_mpi_die("ground-truth recovery of %s seed %llu: %s", c->name, (unsigned long long)seed,
                      husai_error_message());
    *metrics = (husai_seed_metrics){.ev = rec.ev,
                                    .mse = rec.mse,
                                    .l0 = rec.l0,
                                    .dead_fraction = rec.dead_fraction,
                                    .seconds = MPI_Wtime() - t0,
                                    .last_epoch_loss = tr.last_epoch_loss,
                                    .steps = (double)tr.steps,
                                    .rank = rank,
                                    .alignment = alignment,
                                    .ho_ev = ho.ev,
                                    .ho_mse = ho.mse,
                                    .ho_l0 = ho.l0,
                                    .ho_dead = ho.dead_fraction,
                                    .gt_mean_max_cos = gt_mean,
                                    .gt_recovered = gt_rec};
    *out = tr.model;
    memset(&tr.model, 0, sizeof tr.model); /* keep the model, free the rest */
    husai_trainer_free(&tr);
    return 0;
}

/* Whether b's random baseline is a's: it depends only on the seed list and the decoder shape. */
static int same_baseline(const husai_condition_result *a, const husai_condition_result *b) {
    if (a->S != b->S || a->d_model != b->d_model || a->d_sae != b->d_sae) return 0;
    for (int s = 0; s < a->S; s++)
        if (a->seeds[s] != b->seeds[s]) return 0;
    return 1;
}

void husai_condition_metrics(const husai_config *cfg, husai_condition_result *c, const float *ref_decoder,
                             const husai_condition_result *done, int n_done) {
    const int S = c->S;
    const size_t dd = (size_t)c->d_model * c->d_sae;
    if (husai_pwmcc_matrix(c->decoders, S, c->d_model, c->d_sae, c->pwmcc))
        husai_mpi_die("%s", husai_error_message());
    husai_boot_opts bo = {.resamples = cfg->resamples,
                          .seed = cfg->bootstrap_seed,
                          .rng = cfg->bootstrap_rng,
                          .unit = cfg->bootstrap_unit};
    /* A sweep over k (or lr, lambda, ...) shares one baseline: compute it once, not once per
     * condition; at large d_sae it costs as much as the trained PWMCC. */
    const husai_condition_result *twin = NULL;
    for (int i = 0; i < n_done && !twin; i++)
        if (same_baseline(&done[i], c)) twin = &done[i];
    if (twin) {
        memcpy(c->random_pwmcc, twin->random_pwmcc, (size_t)S * S * sizeof(double));
        c->random = twin->random;
    } else {
        float *rnd = malloc((size_t)S * dd * sizeof(float));
        if (!rnd) husai_mpi_die("out of memory for the random baseline");
        for (int s = 0; s < S; s++)
            husai_pwmcc_random_decoder(c->seeds[s], c->d_model, c->d_sae, rnd + (size_t)s * dd);
        if (husai_pwmcc_matrix(rnd, S, c->d_model, c->d_sae, c->random_pwmcc))
            husai_mpi_die("%s", husai_error_message());
        free(rnd);
        if (husai_ci_pair_matrix(c->random_pwmcc, S, &bo, &c->random))
            husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    }
    if (husai_ci_pair_matrix(c->pwmcc, S, &bo, &c->trained))
        husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    double *v = malloc((size_t)S * sizeof(double));
    if (!v) husai_mpi_die("out of memory");
    /* Held-out metrics exist when the first seed has them (all seeds share the split). */
    c->has_holdout = isfinite(c->per_seed[0].ho_ev);
    husai_ci *outs[9] = {&c->ev,    &c->mse,    &c->l0,    &c->dead,   &c->alignment,
                         &c->ho_ev, &c->ho_mse, &c->ho_l0, &c->ho_dead};
    for (int m = 0; m < 9; m++) {
        if (m == 4 && !ref_decoder) continue;
        if (m >= 5 && !c->has_holdout) break;
        for (int s = 0; s < S; s++) {
            const husai_seed_metrics *p = &c->per_seed[s];
            const double vals[9] = {p->ev,    p->mse,    p->l0,    p->dead_fraction, p->alignment,
                                    p->ho_ev, p->ho_mse, p->ho_l0, p->ho_dead};
            v[s] = vals[m];
        }
        if (husai_ci_mean(v, (size_t)S, &bo, outs[m]))
            husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    }
    /* Ground-truth recovery exists when the first seed has it (all seeds share the dictionary). */
    c->has_gt = isfinite(c->per_seed[0].gt_mean_max_cos);
    for (int m = 0; m < 2 && c->has_gt; m++) {
        for (int s = 0; s < S; s++)
            v[s] = m == 0 ? c->per_seed[s].gt_mean_max_cos : c->per_seed[s].gt_recovered;
        if (husai_ci_mean(v, (size_t)S, &bo, m == 0 ? &c->gt_mean_max_cos : &c->gt_recovered))
            husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    }
    free(v);
    if (c->d_sae <= cfg->matching_max_d_sae) {
        c->match_cos = malloc((size_t)S * S * sizeof(double));
        c->match_frac = malloc((size_t)S * S * sizeof(double));
        if (!c->match_cos || !c->match_frac) husai_mpi_die("out of memory for matched agreement");
        if (husai_match_matrix(c->decoders, S, c->d_model, c->d_sae, c->match_cos, c->match_frac) ||
            husai_ci_pair_matrix(c->match_cos, S, &bo, &c->matched_cos) ||
            husai_ci_pair_matrix(c->match_frac, S, &bo, &c->matched_frac))
            husai_mpi_die("matched agreement of %s: %s", c->name, husai_error_message());
        c->has_match = 1;
    }
    c->delta = c->trained.mean - c->random.mean;
    c->delta_lcb = c->trained.lo - c->random.hi;
    c->ratio = c->trained.mean / c->random.mean;
    if (ref_decoder) {
        /* The reference joins as model S, so pairs that involve it are counted too. */
        const int S1 = S + 1;
        float *all = malloc((size_t)S1 * dd * sizeof(float));
        c->pwmcc_with_ref = malloc((size_t)S1 * S1 * sizeof(double));
        if (!all || !c->pwmcc_with_ref) husai_mpi_die("out of memory");
        memcpy(all, c->decoders, (size_t)S * dd * sizeof(float));
        memcpy(all + (size_t)S * dd, ref_decoder, dd * sizeof(float));
        if (husai_pwmcc_matrix(all, S1, c->d_model, c->d_sae, c->pwmcc_with_ref))
            husai_mpi_die("%s", husai_error_message());
        if (husai_ci_pair_matrix(c->pwmcc_with_ref, S1, &bo, &c->trained_with_ref))
            husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
        free(all);
        c->has_ref = 1;
    }
}

int husai_phase_run(const husai_run_ctx *ctx, const husai_phase *ph, husai_condition_result *res) {
    MPI_Comm comm = ctx->comm;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const husai_dataset *ds = ctx->ds;
    husai_plan plan;
    if (husai_plan_build(&plan, ph->n_conds, ph->seeds, ph->n_seeds, size))
        husai_mpi_die("%s", husai_error_message());
    if (rank == 0 && size > plan.n_tasks)
        printf("[husai] note: %d ranks for %d tasks; ranks %d..%d stay idle%s%s\n", size, plan.n_tasks,
               plan.n_tasks, size - 1, *ph->phase ? " in phase " : "", ph->phase);
    int *local = malloc((size_t)plan.n_tasks * sizeof(int));
    float **params = calloc((size_t)plan.n_tasks, sizeof(float *));
    husai_seed_metrics *metrics = calloc((size_t)plan.n_tasks, sizeof(husai_seed_metrics));
    if (!local || !params || !metrics) husai_mpi_die("out of memory");
    const int n_local = husai_plan_local(&plan, rank, ctx->reverse_order, local);

    progress_state ps = {.ph = ph, .plan = &plan, .total = plan.n_tasks, .t_start = MPI_Wtime()};
    int stopped = 0, finished = 0;
    for (int i = 0; i < n_local && !stopped; i++) {
        const husai_task *t = &plan.tasks[local[i]];
        const husai_condition *c = &ph->conds[t->condition];
        husai_sae m;
        const int dm = ds->d_model, dsae = c->d_sae;
        float *p = params[t->id] = malloc(payload_floats(dm, dsae) * sizeof(float));
        if (!p) husai_mpi_die("out of memory storing task %d", t->id);
        if ((stopped = train_one(ctx, ph->phase, t->condition, c, t->seed, ph->ref_rows, ph->ref_n,
                                 &metrics[t->id], &ps, &m, p + payload_density(dm, dsae)))) {
            free(p);
            params[t->id] = NULL;
            break;
        }
        finished++;
        pack_model(&m, p);
        husai_sae_free(&m);
        progress_msg msg = {.task = t->id,
                            .rank = rank,
                            .mse = metrics[t->id].mse,
                            .ev = metrics[t->id].ev,
                            .seconds = metrics[t->id].seconds};
        if (rank == 0)
            print_progress(&ps, &msg);
        else
            HUSAI_MPI_CHECK(MPI_Send(&msg, (int)sizeof msg, MPI_BYTE, 0, TAG_PROGRESS, comm));
    }
    /* Agree on stop and count finished tasks without blocking rank 0's progress printing: a
     * non-blocking reduction that rank 0 polls while it drains progress messages. */
    long local_state[2] = {stopped, finished}, global_state[2];
    MPI_Request req;
    HUSAI_MPI_CHECK(MPI_Iallreduce(local_state, global_state, 2, MPI_LONG, MPI_SUM, comm, &req));
    for (int flag = 0; !flag;) {
        HUSAI_MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
        if (!flag && rank == 0) drain_progress(&ps, comm);
        if (!flag) {
            const struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
        }
    }
    if (rank == 0)
        while (ps.done < global_state[1]) {
            progress_msg m;
            HUSAI_MPI_CHECK(
                MPI_Recv(&m, (int)sizeof m, MPI_BYTE, MPI_ANY_SOURCE, TAG_PROGRESS, comm, MPI_STATUS_IGNORE));
            print_progress(&ps, &m);
        }
    if (global_state[0] > 0) {
        if (rank == 0) {
            printf("[husai] stop requested: %ld of %d tasks of this phase finished; the others are "
                   "checkpointed\n",
                   global_state[1], plan.n_tasks);
            fflush(stdout);
        }
        for (int t = 0; t < plan.n_tasks; t++)
            free(params[t]);
        free(local);
        free(params);
        free(metrics);
        husai_plan_free(&plan);
        return 1;
    }

    /* Reference decoder in file layout, for the with-reference PWMCC (rank 0). */
    float *ref_decoder = NULL;
    const int S = ph->n_seeds;
    int *owner = malloc((size_t)S * sizeof(int));
    if (!owner) husai_mpi_die("out of memory");
    for (int c = 0; c < ph->n_conds; c++) {
        const husai_condition *cond = &ph->conds[c];
        const size_t per = payload_floats(ds->d_model, cond->d_sae), dd = (size_t)ds->d_model * cond->d_sae;
        int mine = 0;
        for (int s = 0; s < S; s++)
            mine += (owner[s] = plan.tasks[c * S + s].rank) == rank;
        float *sendp = malloc(per * (size_t)(mine ? mine : 1) * sizeof(float));
        husai_seed_metrics *sendm = malloc((size_t)(mine ? mine : 1) * sizeof *sendm);
        if (!sendp || !sendm) husai_mpi_die("out of memory packing %s", cond->name);
        for (int s = 0, j = 0; s < S; s++)
            if (owner[s] == rank) {
                const int id = c * S + s;
                memcpy(sendp + (size_t)j * per, params[id], per * sizeof(float));
                sendm[j++] = metrics[id];
                free(params[id]);
                params[id] = NULL;
            }
        float *all = NULL;
        husai_condition_result *r = rank == 0 ? &res[c] : NULL;
        husai_seed_metrics *per_seed = NULL;
        if (rank == 0) {
            all = malloc(per * (size_t)S * sizeof(float));
            per_seed = malloc((size_t)S * sizeof(husai_seed_metrics));
            if (!all || !per_seed) husai_mpi_die("out of memory gathering %s", cond->name);
        }
        husai_gather_tasks(sendp, per, MPI_FLOAT, sizeof(float), owner, S, all, 0, comm);
        husai_gather_tasks(sendm, sizeof(husai_seed_metrics) / sizeof(double), MPI_DOUBLE, sizeof(double),
                           owner, S, per_seed, 0, comm);
        free(sendp);
        free(sendm);
        if (rank != 0) continue;
        *r = (husai_condition_result){.phase = ph->phase,
                                      .value = cond->value,
                                      .S = S,
                                      .d_model = ds->d_model,
                                      .d_sae = cond->d_sae,
                                      .k = cond->k,
                                      .epochs = cond->epochs,
                                      .batch_size = cond->batch_size,
                                      .lr = cond->lr,
                                      .lambda = cond->lambda,
                                      .arch = cond->arch,
                                      .seeds = ph->seeds,
                                      .per_seed = per_seed};
        snprintf(r->param, sizeof r->param, "%s", cond->param);
        if (snprintf(r->name, sizeof r->name, "%s%s%s", ph->prefix_names ? ph->phase : "",
                     ph->prefix_names ? "/" : "", cond->name) >= (int)sizeof r->name)
            husai_mpi_die("condition name '%s/%s' is too long", ph->phase, cond->name);
        r->decoders = malloc((size_t)S * dd * sizeof(float));
        r->encoders = malloc((size_t)S * dd * sizeof(float));
        r->b_enc = malloc((size_t)S * cond->d_sae * sizeof(float));
        r->b_dec = malloc((size_t)S * ds->d_model * sizeof(float));
        r->thresholds = malloc((size_t)S * cond->d_sae * sizeof(float));
        r->pwmcc = malloc((size_t)S * S * sizeof(double));
        r->random_pwmcc = malloc((size_t)S * S * sizeof(double));
        r->density = malloc((size_t)S * cond->d_sae * sizeof(float));
        if (!r->decoders || !r->encoders || !r->b_enc || !r->b_dec || !r->thresholds || !r->pwmcc ||
            !r->random_pwmcc || !r->density)
            husai_mpi_die("out of memory");
        for (int s = 0; s < S; s++) {
            const float *p = all + (size_t)s * per;
            const size_t ns = (size_t)cond->d_sae, nm = (size_t)ds->d_model;
            memcpy(r->decoders + (size_t)s * dd, p, dd * sizeof(float));
            memcpy(r->encoders + (size_t)s * dd, p + dd, dd * sizeof(float));
            memcpy(r->b_enc + s * ns, p + 2 * dd, ns * sizeof(float));
            memcpy(r->b_dec + s * nm, p + 2 * dd + ns, nm * sizeof(float));
            memcpy(r->thresholds + s * ns, p + 2 * dd + ns + nm, ns * sizeof(float));
            memcpy(r->density + s * ns, p + payload_density(ds->d_model, cond->d_sae), ns * sizeof(float));
        }
        free(all);
        if (ph->ref_rows && !ref_decoder) {
            /* ref rows are feature-major [d_sae, d_model]; transpose to the file layout once */
            ref_decoder = malloc(dd * sizeof(float));
            if (!ref_decoder) husai_mpi_die("out of memory");
            for (int j = 0; j < cond->d_sae; j++)
                for (int i = 0; i < ds->d_model; i++)
                    ref_decoder[(size_t)i * cond->d_sae + j] = ph->ref_rows[(size_t)j * ds->d_model + i];
        }
        husai_condition_metrics(ctx->cfg, r, ph->ref_rows ? ref_decoder : NULL, res, c);
    }
    free(ref_decoder);
    free(owner);
    free(local);
    free(params);
    free(metrics);
    husai_plan_free(&plan);
    return 0;
}

int husai_train_reference(const husai_run_ctx *ctx, const husai_condition *cond, uint64_t seed,
                          float *ref_rows, float *ref_decoder, husai_seed_metrics *m) {
    int rank, stopped = 0;
    MPI_Comm_rank(ctx->comm, &rank);
    const size_t dd = (size_t)ctx->ds->d_model * cond->d_sae;
    if (rank == 0) {
        printf("[husai] reference: training seed %llu (%s) on rank 0\n", (unsigned long long)seed,
               cond->name);
        fflush(stdout);
        husai_condition plain = *cond;
        plain.lambda = 0.0;
        husai_sae model;
        stopped = train_one(ctx, "reference", 0, &plain, seed, NULL, 0, m, NULL, &model, NULL);
        if (!stopped) {
            memcpy(ref_rows, model.W_dec, dd * sizeof(float));
            husai_sae_export_decoder(&model, ref_decoder);
            husai_sae_free(&model);
            printf("[husai] reference: seed %llu done, mse=%.6g ev=%.4f (%.1fs)\n", (unsigned long long)seed,
                   m->mse, m->ev, m->seconds);
            fflush(stdout);
        }
    }
    /* Ranks other than 0 may also have been asked to stop while they waited here. */
    int any_stop = stopped || husai_stop_requested();
    HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &any_stop, 1, MPI_INT, MPI_MAX, ctx->comm));
    if (any_stop) return 1;
    if (dd > (size_t)INT32_MAX) husai_mpi_die("reference decoder too large to broadcast in one call");
    HUSAI_MPI_CHECK(MPI_Bcast(ref_rows, (int)dd, MPI_FLOAT, 0, ctx->comm));
    /* Exact unit rows, so the penalty's cosine is a plain dot product. */
    const int d = ctx->ds->d_model;
    for (int j = 0; j < cond->d_sae; j++) {
        float *r = ref_rows + (size_t)j * d;
        double ss = 0;
        for (int i = 0; i < d; i++)
            ss += (double)r[i] * r[i];
        const double norm = ss > 1e-24 ? sqrt(ss) : 1e-12;
        for (int i = 0; i < d; i++)
            r[i] = (float)(r[i] / norm);
    }
    return 0;
}
