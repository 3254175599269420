#define _POSIX_C_SOURCE 200809L
#include "sweep/phase.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "metrics/bootstrap.h"
#include "metrics/features.h"
#include "metrics/groundtruth.h"
#include "metrics/match.h"
#include "metrics/pwmcc.h"
#include "metrics/recon.h"
#include "mpi/datacheck.h"
#include "mpi/gather.h"
#include "mpi/mpicheck.h"
#include "mpi/paramfile.h"
#include "mpi/plan.h"
#include "mpi/stop.h"
#include "sweep/progress.h"
#include "sae/align.h"
#include "sae/checkpoint.h"
#include "sae/forward.h"
#include "sae/train.h"
#include "common/chunks.h"

#define TAG_PROGRESS 101
#define EVAL_BATCH 4096

typedef struct {
    int task;
    int rank;
    double mse, ev, seconds;
} progress_msg;

/* Rank 0's task-done lines (ph, plan, done: NULL for the reference) and this rank's lines while its
 * tasks train (prog). */
typedef struct {
    const husai_phase *ph;
    const husai_plan *plan;
    int done, total;
    double t_start;
    husai_progress prog;
} progress_state;

static void print_progress(progress_state *ps, const progress_msg *m) {
    husai_progress_clear(&ps->prog);
    ps->done++;
    const husai_task *t = &ps->plan->tasks[m->task];
    char el[32], eta[32];
    const double elapsed = MPI_Wtime() - ps->t_start;
    husai_progress_duration(elapsed, el, sizeof el);
    husai_progress_duration(elapsed / ps->done * (ps->total - ps->done), eta, sizeof eta);
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

/* A trained task's payload: decoder (file layout) | W_enc | b_enc | b_dec | thresholds | density, the
 * first five in the order of HUSAI_PARAM_* (they go into results.h5 from the task's own rank, store_task)
 * and the densities (which rank 0 gathers). */
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
    snprintf(id->data_fp, sizeof id->data_fp, "%s", ctx->ds->fingerprint);
    snprintf(id->task, sizeof id->task, "%s%s%.40s seed=%llu", phase, *phase ? "/" : "", c->name,
             (unsigned long long)seed);
}

/* A finished task's progress line: printed by rank 0, sent to it by the others. */
static void report_done(const husai_run_ctx *ctx, progress_state *ps, int task, const husai_seed_metrics *m) {
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    progress_msg msg = {.task = task, .rank = rank, .mse = m->mse, .ev = m->ev, .seconds = m->seconds};
    if (rank == 0)
        print_progress(ps, &msg);
    else
        HUSAI_MPI_CHECK(MPI_Send(&msg, (int)sizeof msg, MPI_BYTE, 0, TAG_PROGRESS, ctx->comm));
}

/* One training task in progress: its trainer and checkpoint identity. */
typedef struct {
    husai_trainer tr;
    char path[4200];
    husai_ckpt_id id;
    double t0, last_save;
} task_state;

/* The trainer options of condition c and seed (rows and epochs set by the caller's data layout). */
static husai_train_opts task_opts(const husai_run_ctx *ctx, const husai_condition *c, uint64_t seed,
                                  const float *ref_rows, int ref_n) {
    const husai_config *cfg = ctx->cfg;
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
    o.precision = ctx->precision;
    return o;
}

/* The first failure this rank met inside a phase's training (a refused or unwritable checkpoint, a
 * trainer that cannot be allocated or diverged), kept for the phase's agreement. */
static husai_status g_failed = HUSAI_OK;
static char g_failed_msg[1024];

/* Prefixes the calling thread's error message with a context ("<context>: <message>") and returns st. */
static husai_status in_context(husai_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static husai_status in_context(husai_status st, const char *fmt, ...) {
    char context[512], message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    snprintf(message, sizeof message, "%s", husai_error_message());
    return husai_error(st, "%s: %s", context, message);
}

/* Records a failure (st and the calling thread's message) that only this rank sees mid-phase and stops
 * every rank at its next step: the ranks then agree on it at the end of the phase (one message, exit 1
 * everywhere) instead of this rank dying alone while the others wait for it. Returns 1, for callers that
 * end the task like a stop. */
static int task_failed(husai_status st) {
    if (!g_failed) {
        g_failed = st;
        snprintf(g_failed_msg, sizeof g_failed_msg, "%s", husai_error_message());
    }
    husai_stop_request();
    return 1;
}

/* The error for a task whose trained parameters cannot be held until they are written to results.h5. */
static husai_status no_room(const husai_condition *c, uint64_t seed, int d_model) {
    return husai_error(HUSAI_ERR_NOMEM,
                       "%s seed %llu: out of memory for its parameters (%.2f GB at d_sae %d)", c->name,
                       (unsigned long long)seed, payload_floats(d_model, c->d_sae) * 4e-9, c->d_sae);
}

/* A phase's parameter datasets in results.h5, which every rank writes its own tasks' rows into. */
typedef struct {
    husai_param_file pf;
    uint64_t *offset; /* (n_conds x HUSAI_N_PARAMS) byte offsets of the datasets, from rank 0 */
    int S;
} param_sink;

/* Writes the finished task t's parameters (its payload *pp) into its rows of results.h5 and keeps only its
 * densities in *pp, so a rank holds no finished task's parameters. Returns 1 (a recorded failure, as
 * task_failed) when a write fails. */
static int store_task(param_sink *sink, const husai_task *t, int d_model, int d_sae, float **pp) {
    const size_t dd = (size_t)d_model * d_sae, ds = (size_t)d_sae, dm = (size_t)d_model;
    const size_t n[HUSAI_N_PARAMS] = {dd, dd, ds, dm, ds};
    const uint64_t *off = sink->offset + (size_t)t->condition * HUSAI_N_PARAMS;
    const float *p = *pp;
    husai_status st = HUSAI_OK;
    for (int i = 0; i < HUSAI_N_PARAMS && !st; i++) {
        st = husai_param_file_write(&sink->pf, off[i] + (uint64_t)t->seed_index * n[i] * sizeof(float), p,
                                    n[i]);
        p += n[i];
    }
    if (st) return task_failed(in_context(st, "seed %llu", (unsigned long long)t->seed));
    float *density = malloc(ds * sizeof(float));
    if (!density) return task_failed(husai_error(HUSAI_ERR_NOMEM, "out of memory"));
    memcpy(density, p, ds * sizeof(float));
    free(*pp);
    *pp = density;
    return 0;
}

/* Starts a task on rows row_index[0..n_rows) of X and resumes it from its checkpoint, if any; returns 1
 * (task_failed, nothing to free) if the trainer cannot start or the checkpoint is refused. */
static int task_begin(const husai_run_ctx *ctx, const char *phase, int cond_index, const husai_condition *c,
                      const husai_train_opts *o, const float *X, size_t n_rows, task_state *ts) {
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    ts->t0 = ts->last_save = MPI_Wtime();
    husai_status st = husai_trainer_init(&ts->tr, X, n_rows, ctx->ds->d_model, o);
    if (st) return task_failed(in_context(st, "%s seed %llu", c->name, (unsigned long long)o->seed));
    if (!ctx->ckpt_dir) return 0;
    task_ckpt(ctx, phase, cond_index, c, o->seed, ts->path, sizeof ts->path, &ts->id);
    st = husai_checkpoint_load(&ts->tr, &ts->id, ts->path);
    if (st == HUSAI_OK) {
        printf("[husai] rank %d resumes %s from step %lld (epoch %d)\n", rank, ts->id.task,
               (long long)ts->tr.steps, ts->tr.epoch);
        fflush(stdout);
    } else if (st != HUSAI_ERR_IO) {
        husai_trainer_free(&ts->tr);
        return task_failed(in_context(st, "refusing checkpoint"));
    }
    return 0;
}

/* Saves the task's checkpoint; 1 (task_failed) if it cannot be written. */
static int task_save(const husai_run_ctx *ctx, task_state *ts) {
    husai_status st = ctx->ckpt_dir ? husai_checkpoint_save(&ts->tr, &ts->id, ts->path) : HUSAI_OK;
    return st ? task_failed(st) : 0;
}

/* Trains until the trainer reaches epoch `until` (or is done), checkpointing periodically; on a stop
 * request it checkpoints and returns 1. Rank 0 keeps printing others' progress meanwhile. */
static int task_train(const husai_run_ctx *ctx, const husai_condition *c, task_state *ts, int until,
                      progress_state *ps) {
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    husai_trainer *tr = &ts->tr;
    const int per_epoch = tr->opts.epochs / c->epochs; /* virtual epochs per epoch: chunks when streaming */
    while (!husai_trainer_done(tr) && tr->epoch < until) {
        if (husai_stop_requested()) {
            task_save(ctx, ts);
            return 1;
        }
        const int epoch = tr->epoch;
        const size_t rows =
            tr->n_rows - tr->pos < (size_t)tr->batch.cap ? tr->n_rows - tr->pos : (size_t)tr->batch.cap;
        husai_status st = husai_trainer_step(tr);
        if (st) return task_failed(in_context(st, "%s", c->name));
        husai_stop_count_step();
        const double loss =
            tr->epoch_batches > 0 ? tr->epoch_loss_sum / (double)tr->epoch_batches : tr->last_epoch_loss;
        husai_progress_step(
            &ps->prog, tr->steps,
            (tr->epoch + (husai_trainer_done(tr) ? 0.0 : (double)tr->pos / (double)tr->n_rows)) / per_epoch,
            rows, loss, tr->epoch != epoch && tr->epoch % per_epoch == 0, MPI_Wtime());
        if (rank == 0 && ps->ph) drain_progress(ps, ctx->comm);
        if (ctx->ckpt_dir && ctx->ckpt_every_seconds > 0 &&
            MPI_Wtime() - ts->last_save > ctx->ckpt_every_seconds) {
            if (task_save(ctx, ts)) return 1;
            ts->last_save = MPI_Wtime();
        }
    }
    return 0;
}

/* Fills the seed's metrics from its reconstruction results (rec on training rows, ho on held-out rows)
 * plus alignment and ground-truth recovery, and hands the model to *out. */
static void task_end(const husai_run_ctx *ctx, const husai_condition *c, const float *ref_rows, int ref_n,
                     task_state *ts, const husai_recon *rec, const husai_recon *ho,
                     husai_seed_metrics *metrics, husai_sae *out) {
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    const uint64_t seed = ts->tr.opts.seed;
    const int d_model = ctx->ds->d_model;
    double alignment = NAN;
    if (ref_rows) {
        float *scratch = malloc(husai_align_scratch_floats(ref_n) * sizeof(float));
        int32_t *best = malloc((size_t)c->d_sae * sizeof(int32_t));
        float *cosv = malloc((size_t)c->d_sae * sizeof(float));
        if (!scratch || !best || !cosv) husai_mpi_die("out of memory measuring alignment");
        alignment =
            husai_align_rows(ts->tr.model.W_dec, c->d_sae, ref_rows, ref_n, d_model, best, cosv, scratch);
        free(scratch);
        free(best);
        free(cosv);
    }
    double gt_mean = NAN, gt_rec = NAN;
    if (ctx->gt_dict && husai_gt_recovery(ctx->gt_dict, ctx->gt_atoms, ts->tr.model.W_dec, c->d_sae, d_model,
                                          &gt_mean, &gt_rec))
        husai_mpi_die("ground-truth recovery of %s seed %llu: %s", c->name, (unsigned long long)seed,
                      husai_error_message());
    *metrics = (husai_seed_metrics){.ev = rec->ev,
                                    .mse = rec->mse,
                                    .l0 = rec->l0,
                                    .dead_fraction = rec->dead_fraction,
                                    .seconds = MPI_Wtime() - ts->t0,
                                    .last_epoch_loss = ts->tr.last_epoch_loss,
                                    .steps = (double)ts->tr.steps,
                                    .rank = rank,
                                    .alignment = alignment,
                                    .ho_ev = ho->ev,
                                    .ho_mse = ho->mse,
                                    .ho_l0 = ho->l0,
                                    .ho_dead = ho->dead_fraction,
                                    .gt_mean_max_cos = gt_mean,
                                    .gt_recovered = gt_rec};
    *out = ts->tr.model;
    memset(&ts->tr.model, 0, sizeof ts->tr.model); /* keep the model, free the rest */
    husai_trainer_free(&ts->tr);
}

/* Streaming: the most training rows any chunk holds (what a streamed task's checkpoint is tied to). */
static size_t streamed_max_rows(const husai_dataset *ds, const husai_split *sp) {
    size_t max_rows = 0;
    for (size_t i = 0; i < ds->chunks.n_chunks; i++) {
        size_t a, b, lo, hi;
        husai_chunks_range(&ds->chunks, i, &a, &b);
        husai_chunks_rows_in(sp->train, sp->n_train, a, b, &lo, &hi); /* >= 1: checked by the sweep command */
        if (hi - lo > max_rows) max_rows = hi - lo;
    }
    return max_rows;
}

/* The steps of a whole task of condition c, and the work of one (batch rows x d_sae, in proportion to
 * its time at the run's d_model), as the trainer will batch them (train.c: the batch is capped at the
 * most rows an epoch has; streamed, an epoch is one pass over every chunk). */
static int64_t task_steps(const husai_run_ctx *ctx, const husai_condition *c, double *work_per_step) {
    const husai_dataset *ds = ctx->ds;
    const husai_split *sp = ctx->split;
    const size_t most = ds->streaming ? streamed_max_rows(ds, sp) : sp->n_train;
    const size_t cap = (size_t)c->batch_size < most ? (size_t)c->batch_size : most;
    int64_t per_epoch = 0;
    if (!ds->streaming) per_epoch = (int64_t)((sp->n_train + cap - 1) / cap);
    for (size_t i = 0; ds->streaming && i < ds->chunks.n_chunks; i++) {
        size_t a, b, lo, hi;
        husai_chunks_range(&ds->chunks, i, &a, &b);
        husai_chunks_rows_in(sp->train, sp->n_train, a, b, &lo, &hi);
        per_epoch += (int64_t)((hi - lo + cap - 1) / cap);
    }
    *work_per_step = (double)cap * c->d_sae;
    return per_epoch * c->epochs;
}

/* Progress lines: this rank's tasks of the phase (local[0..n_local) of plan) and their work. */
static void progress_plan(const husai_run_ctx *ctx, const husai_phase *ph, const husai_plan *plan,
                          const int *local, int n_local, husai_progress *p) {
    double work = 0.0, per_step;
    for (int i = 0; i < n_local; i++) {
        const int64_t steps = task_steps(ctx, &ph->conds[plan->tasks[local[i]].condition], &per_step);
        work += (double)steps * per_step;
    }
    husai_progress_plan(p, n_local, work);
}

/* Progress lines: the task of condition c on trainer tr (just begun or resumed) is under way. */
static void progress_begin(const husai_run_ctx *ctx, husai_progress *p, const char *phase,
                           const husai_condition *c, const husai_trainer *tr) {
    double per_step;
    const int64_t steps = task_steps(ctx, c, &per_step);
    husai_progress_task(p, phase, c->name, tr->opts.seed, c->epochs, steps, tr->steps, per_step, MPI_Wtime());
}

/* Trains one SAE on the in-memory dataset to completion and evaluates it; density (d_sae floats, or
 * NULL) receives each latent's firing density on the training rows. With checkpoints, a task resumes
 * from its file and saves on stop, periodically and when done. Returns 1 (and no model) when a stop
 * was requested or a failure recorded (task_failed) before the task finished. */
static int train_one(const husai_run_ctx *ctx, const char *phase, int cond_index, const husai_condition *c,
                     uint64_t seed, const float *ref_rows, int ref_n, husai_seed_metrics *metrics,
                     progress_state *ps, husai_sae *out, float *density) {
    const husai_dataset *ds = ctx->ds;
    const husai_split *sp = ctx->split;
    husai_train_opts o = task_opts(ctx, c, seed, ref_rows, ref_n);
    o.row_index = sp->train;
    task_state ts;
    if (task_begin(ctx, phase, cond_index, c, &o, ds->X, sp->n_train, &ts)) return 1;
    progress_begin(ctx, &ps->prog, phase, c, &ts.tr);
    /* A finished task's checkpoint is its result on resume: it is never retrained. */
    const int stopped = task_train(ctx, c, &ts, INT_MAX, ps);
    if (stopped || task_save(ctx, &ts)) {
        husai_progress_task_end(&ps->prog);
        husai_trainer_free(&ts.tr);
        return 1;
    }
    husai_progress_evaluating(&ps->prog, sp->n_train + sp->n_holdout, MPI_Wtime());
    /* EV, MSE and L0 on the training rows, as HUSAI reported them, and on the held-out rows if any. */
    husai_recon rec, ho = {NAN, NAN, NAN, NAN};
    husai_forward fw;
    if (husai_sae_forward_open(&fw, &ts.tr.model, EVAL_BATCH) ||
        husai_recon_eval_density(&fw, ds->X, sp->train, sp->n_train, &rec, density) ||
        (sp->n_holdout > 0 && husai_recon_eval_rows(&fw, ds->X, sp->holdout, sp->n_holdout, &ho)))
        husai_mpi_die("evaluating %s seed %llu: %s", c->name, (unsigned long long)seed,
                      husai_error_message());
    husai_forward_close(&fw);
    husai_progress_task_end(&ps->prog);
    task_end(ctx, c, ref_rows, ref_n, &ts, &rec, &ho, metrics, out);
    return 0;
}

/* Streaming: fills rows (chunk-local indices, ascending) with the loaded chunk's rows of the ascending
 * global list all[0..n_all) and returns their count. */
static size_t chunk_rows_of(const husai_dataset *ds, const uint32_t *all, size_t n_all, uint32_t *rows) {
    size_t lo, hi;
    husai_chunks_rows_in(all, n_all, ds->chunk_start, ds->chunk_start + ds->chunk_n, &lo, &hi);
    for (size_t i = lo; i < hi; i++)
        rows[i - lo] = all[i] - (uint32_t)ds->chunk_start;
    return hi - lo;
}

/* The virtual epoch a task's checkpoint has reached (0 without one): where it resumes in the chunk
 * schedule. Only the header is read; husai_checkpoint_load validates the rest. */
static int64_t checkpoint_epoch(const husai_run_ctx *ctx, const char *phase, int cond_index,
                                const husai_condition *c, uint64_t seed) {
    if (!ctx->ckpt_dir) return 0;
    char path[4200];
    husai_ckpt_id id;
    task_ckpt(ctx, phase, cond_index, c, seed, path, sizeof path, &id);
    int epoch = 0;
    return husai_checkpoint_peek_epoch(path, &epoch) == HUSAI_OK ? epoch : 0;
}

/* Loads every checkpoint this rank's tasks of the phase will resume into a scratch trainer, exactly as
 * task_begin will, and returns the first refusal: the caller agrees on it before any training, so a
 * damaged, foreign or misplaced checkpoint ends the run in seconds with one message naming the file. */
static husai_status check_resumable(const husai_run_ctx *ctx, const husai_phase *ph, const husai_plan *plan,
                                    const int *local, int n_local) {
    if (!ctx->ckpt_dir) return HUSAI_OK;
    const husai_dataset *ds = ctx->ds;
    const husai_split *sp = ctx->split;
    /* A streamed task's trainer is tied to the largest chunk, not to rows: one zero row stands in. */
    float *zero = ds->streaming ? calloc((size_t)ds->d_model, sizeof(float)) : NULL;
    if (ds->streaming && !zero) return husai_error(HUSAI_ERR_NOMEM, "out of memory checking checkpoints");
    husai_status st = HUSAI_OK;
    for (int i = 0; i < n_local && !st; i++) {
        const husai_task *t = &plan->tasks[local[i]];
        const husai_condition *c = &ph->conds[t->condition];
        char path[4200];
        husai_ckpt_id id;
        task_ckpt(ctx, ph->phase, t->condition, c, t->seed, path, sizeof path, &id);
        struct stat sb;
        if (stat(path, &sb) != 0) continue; /* not begun yet */
        if (!S_ISREG(sb.st_mode)) {
            st = husai_error(HUSAI_ERR_DATA, "refusing checkpoint: '%s' is not a regular file%s", path,
                             S_ISDIR(sb.st_mode) ? " (a directory)" : "");
            break;
        }
        husai_train_opts o = task_opts(ctx, c, t->seed, ph->ref_rows, ph->ref_n);
        o.row_index = ds->streaming ? NULL : sp->train;
        if (ds->streaming) {
            o.epochs = c->epochs * (int)ds->chunks.n_chunks;
            o.max_rows = streamed_max_rows(ds, sp);
        }
        husai_trainer tr;
        st = husai_trainer_init(&tr, ds->streaming ? zero : ds->X, ds->streaming ? 1 : sp->n_train,
                                ds->d_model, &o);
        if (st) {
            st = in_context(st, "%s seed %llu", c->name, (unsigned long long)t->seed);
            break;
        }
        st = husai_checkpoint_load(&tr, &id, path);
        husai_trainer_free(&tr);
        if (st == HUSAI_ERR_IO)
            st = HUSAI_OK; /* unreadable: task_begin starts it afresh, as it always has */
        else if (st)
            st = in_context(st, "refusing checkpoint");
    }
    free(zero);
    return st;
}

/* Trains this rank's tasks on a streamed dataset. All ranks of a node move through the same chunk
 * schedule in lockstep, wave by wave (a rank's i-th task is in wave i), so each chunk is read once per
 * node and epoch and shared: virtual epoch v of a task is one pass over chunk husai_chunks_virtual(v).
 * A task resumed from a checkpoint joins the schedule at its virtual epoch. After training, one more
 * pass over the chunks evaluates the wave's models. A stop request is agreed per chunk across the node.
 * Fills params/metrics like the in-memory loop; returns 1 if stopped, and counts finished tasks. */
static int train_streamed(const husai_run_ctx *ctx, const husai_phase *ph, const husai_plan *plan,
                          const int *local, int n_local, float **params, husai_seed_metrics *metrics,
                          progress_state *ps, int *finished, param_sink *sink) {
    husai_dataset *ds = ctx->ds;
    const husai_chunks *ch = &ds->chunks;
    const husai_split *sp = ctx->split;
    MPI_Comm node = ds->node_comm;
    int rank;
    MPI_Comm_rank(ctx->comm, &rank);
    uint32_t *trows = malloc(ch->chunk_rows * sizeof *trows), *hrows = malloc(ch->chunk_rows * sizeof *hrows);
    uint32_t *order = malloc(ch->n_chunks * sizeof *order);
    int order_epoch = -1;
    if (!trows || !hrows || !order) husai_mpi_die("out of memory for chunk row lists");
    const size_t max_rows = streamed_max_rows(ds, sp);
    progress_plan(ctx, ph, plan, local, n_local, &ps->prog);
    int waves = n_local;
    HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &waves, 1, MPI_INT, MPI_MAX, node));
    int stopped = 0;
    for (int w = 0; w < waves && !stopped; w++) {
        const husai_task *t = w < n_local ? &plan->tasks[local[w]] : NULL;
        const husai_condition *c = t ? &ph->conds[t->condition] : NULL;
        husai_train_opts o;
        int64_t total = 0, start = INT64_MAX;
        if (t) {
            o = task_opts(ctx, c, t->seed, ph->ref_rows, ph->ref_n);
            o.epochs = c->epochs * (int)ch->n_chunks;
            o.max_rows = max_rows;
            total = o.epochs;
            start = checkpoint_epoch(ctx, ph->phase, t->condition, c, t->seed);
        }
        int64_t span[2] = {-start, total}; /* node-wide earliest start and latest end */
        HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, span, 2, MPI_INT64_T, MPI_MAX, node));
        task_state ts;
        int begun = 0;
        for (int64_t v = -span[0]; v < span[1]; v++) {
            husai_dataset_load_chunk(ds, husai_chunks_virtual(ch, v, order, &order_epoch));
            int local_stop = 0;
            if (t && v >= start && v < total) {
                const size_t n = chunk_rows_of(ds, sp->train, sp->n_train, trows);
                if (!begun) {
                    o.row_index = trows;
                    local_stop = task_begin(ctx, ph->phase, t->condition, c, &o, ds->X, n, &ts);
                    begun = !local_stop;
                    if (begun) progress_begin(ctx, &ps->prog, ph->phase, c, &ts.tr);
                } else if (husai_trainer_set_rows(&ts.tr, ds->X, n, trows)) {
                    local_stop = task_failed(in_context(HUSAI_ERR_ARG, "%s", c->name));
                }
                if (!local_stop) local_stop = task_train(ctx, c, &ts, (int)v + 1, ps);
            }
            int any_stop = local_stop || husai_stop_requested();
            HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &any_stop, 1, MPI_INT, MPI_MAX, node));
            if (any_stop) {
                if (begun && !local_stop && !husai_trainer_done(&ts.tr)) task_save(ctx, &ts);
                stopped = 1;
                break;
            }
        }
        if (stopped) {
            husai_progress_task_end(&ps->prog);
            if (begun) husai_trainer_free(&ts.tr);
            break;
        }
        /* The finished task's result, for a resume; a failure stops every rank at the next chunk. */
        if (begun) task_save(ctx, &ts);
        int any_task = t != NULL;
        HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &any_task, 1, MPI_INT, MPI_MAX, node));
        if (!any_task) continue;
        /* Evaluation pass: every chunk once, in file order. */
        if (begun) husai_progress_evaluating(&ps->prog, sp->n_train + sp->n_holdout, MPI_Wtime());
        husai_recon_acc acc, acc_ho = {0}; /* acc_ho's scratch only with a holdout */
        const int has_ho = sp->n_holdout > 0;
        husai_forward fw = {0}; /* one forward serves both accumulators: each consumes a call's outputs */
        for (size_t i = 0; i < ch->n_chunks; i++) {
            husai_dataset_load_chunk(ds, i);
            if (!t) continue;
            const size_t n = chunk_rows_of(ds, sp->train, sp->n_train, trows);
            if (!begun) { /* finished before this run: the checkpoint holds the model */
                o.row_index = trows;
                /* Validated before training (check_resumable), so only memory can fail here. */
                if (task_begin(ctx, ph->phase, t->condition, c, &o, ds->X, n, &ts))
                    husai_mpi_die("%s", g_failed_msg);
                begun = 1;
            }
            if (!fw.run) {
                if (husai_sae_forward_open(&fw, &ts.tr.model, EVAL_BATCH) ||
                    husai_recon_acc_init(&acc, &fw) || (has_ho && husai_recon_acc_init(&acc_ho, &fw)))
                    husai_mpi_die("%s", husai_error_message());
            }
            const size_t nh = has_ho ? chunk_rows_of(ds, sp->holdout, sp->n_holdout, hrows) : 0;
            if (husai_recon_acc_add(&acc, ds->X, trows, n) ||
                (nh && husai_recon_acc_add(&acc_ho, ds->X, hrows, nh)))
                husai_mpi_die("evaluating %s: %s", c->name, husai_error_message());
        }
        if (!t) continue;
        const int dm = ds->d_model, dsae = c->d_sae;
        float *p = params[t->id] = malloc(payload_floats(dm, dsae) * sizeof(float));
        if (!p) { /* every rank stops at the next wave's first chunk and agrees on it */
            task_failed(no_room(c, t->seed, dm));
            husai_recon_acc_free(&acc);
            husai_recon_acc_free(&acc_ho);
            husai_forward_close(&fw);
            husai_trainer_free(&ts.tr);
            continue;
        }
        husai_recon rec, ho = {NAN, NAN, NAN, NAN};
        if (husai_recon_acc_finish(&acc, &rec, p + payload_density(dm, dsae)) ||
            (has_ho && husai_recon_acc_finish(&acc_ho, &ho, NULL)))
            husai_mpi_die("evaluating %s: %s", c->name, husai_error_message());
        husai_recon_acc_free(&acc);
        husai_recon_acc_free(&acc_ho);
        husai_forward_close(&fw);
        husai_progress_task_end(&ps->prog);
        husai_sae model;
        task_end(ctx, c, ph->ref_rows, ph->ref_n, &ts, &rec, &ho, &metrics[t->id], &model);
        pack_model(&model, p);
        husai_sae_free(&model);
        if (store_task(sink, t, dm, dsae, &params[t->id]))
            continue; /* a stop is requested: every rank stops at the next wave's first chunk, agreed */
        (*finished)++;
        report_done(ctx, ps, t->id, &metrics[t->id]);
    }
    free(trows);
    free(hrows);
    free(order);
    return stopped;
}

/* Collective. Every rank's best matches (its pairs of husai_pwmcc_block_pairs(S, b, -1, rank, size), as
 * husai_pwmcc_pairs_best left them in pc and pi) placed into one husai_features on rank 0 (*out; untouched
 * elsewhere). Rank 0 receives one rank's part at a time, so it holds the S^2 d_sae tensors and one part;
 * the others hold their part. */
static void gather_best(MPI_Comm comm, int S, int b, int d_model, int d_sae, const float *pc,
                        const int32_t *pi, husai_features **out) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const size_t mine = (size_t)husai_pwmcc_part_pairs(S, rank, size) * 2 * d_sae;
    if (mine > INT_MAX) husai_mpi_die("%zu best matches are too many for one message", mine);
    if (rank != 0) {
        HUSAI_MPI_CHECK(MPI_Send(pc, (int)mine, MPI_FLOAT, 0, 1, comm));
        HUSAI_MPI_CHECK(MPI_Send(pi, (int)mine, MPI_INT32_T, 0, 2, comm));
        return;
    }
    husai_features *f = calloc(1, sizeof *f);
    float *rc = malloc((mine + 1) * sizeof(float)); /* part 0 is the largest */
    int32_t *ri = malloc((mine + 1) * sizeof(int32_t));
    int *pq = malloc((mine / d_sae + 2) * sizeof(int)); /* 2 ints a pair, as the 2 d_sae matches */
    if (!f || !rc || !ri || !pq || husai_features_init(f, S, d_model, d_sae))
        husai_mpi_die("out of memory for best matches");
    for (int r = 0; r < size; r++) {
        const long np = husai_pwmcc_block_pairs(S, b, -1, r, size, pq);
        const int n = (int)(np * 2 * d_sae);
        if (r > 0) {
            HUSAI_MPI_CHECK(MPI_Recv(rc, n, MPI_FLOAT, r, 1, comm, MPI_STATUS_IGNORE));
            HUSAI_MPI_CHECK(MPI_Recv(ri, n, MPI_INT32_T, r, 2, comm, MPI_STATUS_IGNORE));
        }
        husai_features_place_pairs(f, pq, np, r > 0 ? rc : pc, r > 0 ? ri : pi);
    }
    free(rc);
    free(ri);
    free(pq);
    *out = f;
}

/* Collective. Seeds per PWMCC block for S decoders of d_model x d_sae in *b: S when all fit the per-node
 * budget, else the largest b whose two blocks fit. The budget (bytes, in *budget) is metrics.window_mb, or
 * when that is 0 half the smallest room any rank's node has for a shared window now
 * (husai_datacheck_node_room, agreed so every rank splits alike; no limit when no node can tell). A budget
 * below two decoders is refused, with the same message on every rank. */
static husai_status window_block(const husai_run_ctx *ctx, int S, int d_model, int d_sae, int *b,
                                 double *budget) {
    const double set = ctx->cfg->window_mb * 1e6, one = (double)d_model * d_sae * sizeof(float);
    double room = INFINITY;
    if (set <= 0.0) {
        const double here = husai_datacheck_node_room();
        if (here >= 0.0) room = here;
        HUSAI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &room, 1, MPI_DOUBLE, MPI_MIN, ctx->comm));
    }
    *budget = set > 0.0 ? set : room / 2.0;
    *b = S;
    if ((double)S * one <= *budget) return HUSAI_OK;
    const double fit = floor(*budget / (2.0 * one)); /* below S / 2, as S decoders do not fit */
    if (fit >= 1.0) {
        *b = (int)fit;
        return HUSAI_OK;
    }
    if (set > 0.0)
        return husai_error(
            HUSAI_ERR_ARG,
            "metrics.window_mb = %g cannot hold two decoders of %d x %d (%.3f MB each), the "
            "least PWMCC by seed blocks needs per node; set it to at least %.3f (0: automatic)",
            ctx->cfg->window_mb, d_model, d_sae, one / 1e6, 2.0 * one / 1e6);
    return husai_error(
        HUSAI_ERR_NOMEM,
        "metrics.window_mb = 0 (automatic): half the node's free memory, %.1f MB, cannot hold two "
        "decoders of %d x %d (%.1f MB each), the least PWMCC by seed blocks needs per node",
        *budget / 1e6, d_model, d_sae, one / 1e6);
}

/* This rank: reads seed s's decoder of the condition whose decoders dataset starts at byte dec_off
 * (dd floats per seed) from results.h5 into out; a failed read ends the job (only this rank sees it). */
static void read_decoder(husai_param_file *pf, uint64_t dec_off, size_t dd, int s, float *out) {
    if (husai_param_file_read(pf, dec_off + (uint64_t)s * dd * sizeof(float), out, dd))
        husai_mpi_die("%s", husai_error_message());
}

/* Collective over the node: writes seeds [s0, s1)'s unit feature rows into dst (d_model x d_sae floats
 * each, in seed order) in the node's window. Seed s is written by node rank s mod node_size, from its
 * decoder read back from results.h5 where its owner wrote it (pass 0; pf, dec_off), or drawn from the
 * seed (pass 1): each node reads the file itself, nothing passes through rank 0. raw holds one decoder. */
static void load_seeds(const husai_run_ctx *ctx, const husai_phase *ph, int pass, husai_param_file *pf,
                       uint64_t dec_off, int d_sae, int s0, int s1, float *dst, float *raw) {
    MPI_Comm node = ctx->ds->node_comm;
    int node_rank, node_size;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    const int d_model = ctx->ds->d_model;
    const size_t dd = (size_t)d_model * d_sae;
    for (int s = s0; s < s1; s++) {
        if (node_rank != s % node_size) continue;
        if (pass == 0)
            read_decoder(pf, dec_off, dd, s, raw);
        else
            husai_pwmcc_random_decoder(ph->seeds[s], d_model, d_sae, raw);
        husai_normalized_feature_rows(raw, d_model, d_sae, dst + (size_t)(s - s0) * dd);
    }
}

/* Collective. Spreads condition c's PWMCC pairs over every rank (its S(S-1)/2 pairs cost 2 d_model d_sae^2
 * flops each, far more than training at many seeds and wide SAEs), and a sum reduction assembles the
 * matrix on rank 0 in *pw. The random baseline is spread the same way for the first condition of the
 * phase with this d_sae, into *pw_rand; later ones reuse it on rank 0. The decoders (in results.h5, where
 * their owners wrote them: pf, dec_off), in normalised feature-row form, live once per node in a shared
 * window that the node's ranks fill together (each normalises, or draws for the baseline, its share of the
 * seeds), so a node's window does not grow with its rank count.
 *
 * With b = S (window_block: the S decoders fit metrics.window_mb) the window holds all S, 4 S d_model
 * d_sae bytes per node (64 seeds at 768 x 16384: 3.2 GB), loaded once. Otherwise the seeds go in blocks
 * of b (nb = ceil(S / b) blocks) and the block pairs I <= J, nb (nb + 1) / 2 of them, are taken one after
 * another (I outer): the window holds block I and block J only, 8 b d_model d_sae bytes per node, and
 * block I stays while J moves on. Each block is read again for every block pair that loads it: nb + nb
 * (nb - 1) / 2 block loads, about (nb + 1) / 2 times the S decoders' bytes read from results.h5 per node (and
 * as many draws of the random baseline), and two node fences per block pair; the flops stay S(S-1)/2
 * pairs. A block pair's pairs are split over all ranks (husai_pwmcc_block_pairs: numbered across the
 * block pairs, rank r takes every size-th), so each rank waits at most one pair per block pair, and a
 * block pair of fewer pairs than ranks leaves ranks idle (blocks of 1 seed compute one pair at a time;
 * README "Node model" has measured times).
 *
 * Matched agreement (when d_sae is at most metrics.matching_max_d_sae) is spread the same way into
 * *match_cos and *match_frac. A pair's value depends only on its two decoders, whichever rank computes
 * it and whichever block holds them, so the matrices equal the one-process result for any rank count and
 * block size. The same pass keeps every feature's best match (metrics/features.h), gathered into *best and
 * *best_rand on rank 0. Returns the agreed error (the same on every rank) if the shared window cannot be
 * had or matched agreement fails. */
static husai_status spread_pwmcc(const husai_run_ctx *ctx, const husai_phase *ph, int c, int b,
                                 husai_condition_result *r0, husai_param_file *pf, uint64_t dec_off,
                                 double **pw, double **pw_rand, double **match_cos, double **match_frac,
                                 husai_features **best, husai_features **best_rand) {
    MPI_Comm comm = ctx->comm, node = ctx->ds->node_comm;
    int rank, size, node_rank;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(node, &node_rank);
    const int S = ph->n_seeds, d_model = ctx->ds->d_model, d_sae = ph->conds[c].d_sae;
    const int nb = (S + b - 1) / b, held = nb > 1 ? 2 * b : S;
    const size_t dd = (size_t)d_model * d_sae, slot = (size_t)b * dd;
    MPI_Win win;
    float *base = NULL, *F = NULL;
    MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN);
    const int rc = MPI_Win_allocate_shared(node_rank == 0 ? (MPI_Aint)((size_t)held * dd * sizeof(float)) : 0,
                                           sizeof(float), MPI_INFO_NULL, node, &base, &win);
    /* Agreed, and returned rather than died on: every rank would print the same line. */
    husai_status st = husai_mpi_agree(rc == MPI_SUCCESS ? HUSAI_OK
                                                        : husai_error(HUSAI_ERR_NOMEM,
                                                                      "cannot hold %d decoders of %d x %d in "
                                                                      "shared memory for PWMCC",
                                                                      held, d_model, d_sae),
                                      comm);
    if (st) return st;
    MPI_Aint qsize;
    int disp;
    HUSAI_MPI_CHECK(MPI_Win_shared_query(win, 0, &qsize, &disp, &F));
    const int with_match = d_sae <= ctx->cfg->matching_max_d_sae;
    const long n_mine = husai_pwmcc_part_pairs(S, rank, size);
    const size_t n_best = (size_t)n_mine * 2 * d_sae + 1;
    float *raw = malloc(dd * sizeof(float)), *pc = malloc(n_best * sizeof(float));
    double *M = malloc((size_t)S * S * sizeof(double));
    double *Mc = with_match ? malloc((size_t)S * S * sizeof(double)) : NULL;
    double *Mf = with_match ? malloc((size_t)S * S * sizeof(double)) : NULL;
    int32_t *pi = malloc(n_best * sizeof(int32_t));
    int *pq = malloc(((size_t)n_mine + 1) * 2 * sizeof(int));
    const float **rows = malloc((size_t)S * sizeof *rows);
    if (!raw || !M || !pc || !pi || !pq || !rows || (with_match && (!Mc || !Mf)))
        husai_mpi_die("out of memory spreading PWMCC over ranks");
    /* The random baseline first (only for the phase's first condition of this width), its best matches
     * reduced to their statistics on rank 0 before the trained pass, so rank 0 never holds both S^2 d_sae
     * tensors at once. Each pass's values do not depend on the order. */
    int first = 1;
    for (int i = 0; i < c; i++)
        first &= ph->conds[i].d_sae != d_sae;
    const int passes[2] = {first ? 1 : 0, 0};
    for (int step = 0; step < 1 + first && !st; step++) {
        const int pass = passes[step];
        const int match_now = pass == 0 && with_match;
        double *const zeroed[] = {M, match_now ? Mc : NULL, match_now ? Mf : NULL};
        for (int z = 0; z < 3; z++) {
            if (!zeroed[z]) continue;
            memset(zeroed[z], 0, (size_t)S * S * sizeof(double));
            for (int p = 0; p < S && rank == 0; p++) /* the diagonal once, as part 0 of the pairs */
                zeroed[z][(size_t)p * S + p] = 1.0;
        }
        long done = 0;
        for (int bi = 0, k = 0; bi < nb && !st; bi++)
            for (int bj = bi; bj < nb && !st; bj++, k++) {
                const int i0 = bi * b, j0 = bj * b, i1 = i0 + b < S ? i0 + b : S,
                          j1 = j0 + b < S ? j0 + b : S;
                float *at = bj == bi ? F : F + slot;
                load_seeds(ctx, ph, pass, pf, dec_off, d_sae, bj == bi ? i0 : j0, bj == bi ? i1 : j1, at,
                           raw);
                for (int s = j0; s < j1; s++)
                    rows[s] = at + (size_t)(s - j0) * dd;
                HUSAI_MPI_CHECK(MPI_Win_fence(0, win)); /* the block pair's rows are in place before reads */
                const long n = husai_pwmcc_block_pairs(S, b, k, rank, size, pq);
                const size_t off = (size_t)done * 2 * d_sae;
                if (husai_pwmcc_pairs_best(rows, S, d_model, d_sae, pq, n, M, pc + off, pi + off))
                    husai_mpi_die("%s", husai_error_message());
                /* Matched agreement's pairs (a cubic assignment each) go the same way. */
                if (match_now)
                    st = husai_mpi_agree(husai_match_pairs(rows, S, d_model, d_sae, pq, n, Mc, Mf), comm);
                done += n;
                HUSAI_MPI_CHECK(MPI_Win_fence(0, win)); /* reads done before the next load overwrites */
            }
        if (st) break;
        gather_best(comm, S, b, d_model, d_sae, pc, pi, pass == 0 ? best : best_rand);
        if (pass == 1) {
            husai_status mine = HUSAI_OK;
            if (rank == 0) {
                const husai_condition_opts o = husai_config_condition_opts(ctx->cfg);
                r0->random_best = *best_rand;
                *best_rand = NULL;
                mine = husai_condition_random_features(&o, r0);
            }
            if ((st = husai_mpi_agree(mine, comm))) break;
        }
        double *const sums[] = {M, match_now ? Mc : NULL, match_now ? Mf : NULL};
        double **const into[] = {pass == 0 ? pw : pw_rand, match_cos, match_frac};
        for (int z = 0; z < 3; z++) {
            if (!sums[z]) continue;
            double *out = NULL;
            if (rank == 0 && !(out = malloc((size_t)S * S * sizeof(double)))) husai_mpi_die("out of memory");
            HUSAI_MPI_CHECK(MPI_Reduce(sums[z], out, S * S, MPI_DOUBLE, MPI_SUM, 0, comm));
            if (rank == 0) *into[z] = out;
        }
    }
    free(raw);
    free(M);
    free(Mc);
    free(Mf);
    free(pc);
    free(pi);
    free(pq);
    free(rows);
    MPI_Win_free(&win);
    return st ? in_context(st, "matched agreement of %s", ph->conds[c].name) : HUSAI_OK;
}

/* Gathers floats [off, off + count) of condition c's S task payloads (params, on their owners) into
 * rank 0's `into` (S x count, seed order); `from` is S pointers of scratch. */
static void gather_piece(float *const *params, int c, int S, const int *owner, size_t off, size_t count,
                         float *into, const void **from, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    for (int s = 0; s < S; s++)
        from[s] = owner[s] == rank ? params[c * S + s] + off : NULL;
    husai_gather_tasks(from, count, MPI_FLOAT, sizeof(float), owner, S, into, 0, comm);
}

/* Waits for the non-blocking collective req while rank 0 keeps printing progress (ps, if any) and every
 * rank keeps passing stops on: a rank idle here may be the one that was signalled. */
static void wait_polling(MPI_Request *req, progress_state *ps, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    for (int flag = 0;;) {
        HUSAI_MPI_CHECK(MPI_Test(req, &flag, MPI_STATUS_IGNORE));
        if (flag) return;
        if (rank == 0 && ps) drain_progress(ps, comm);
        husai_stop_requested();
        const struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
    }
}

/* Collective, after training: the agreed outcome of a phase's (or the reference's) training from this
 * rank's view (stopped: a task was interrupted here). A failure recorded on any rank wins, with the
 * message of the lowest such rank; else HUSAI_STOPPED if any rank stopped; else HUSAI_OK. */
static husai_status training_outcome(long stopped, long failed) {
    if (failed) {
        husai_status mine = g_failed ? husai_error(g_failed, "%s", g_failed_msg) : HUSAI_OK;
        g_failed = HUSAI_OK;
        return mine;
    }
    return stopped ? husai_error(HUSAI_STOPPED, "stopped on request; checkpoints written") : HUSAI_OK;
}

/* After an agreed failure st: the checkpoints are worth keeping when the same configuration can go on
 * once the cause is fixed (a full disk, memory taken by something else), not after a divergence or a
 * refused input, which need another configuration. */
static void note_resumable(const husai_run_ctx *ctx, husai_status st) {
    if (ctx->keep_checkpoints && (st == HUSAI_ERR_IO || st == HUSAI_ERR_NOMEM)) *ctx->keep_checkpoints = 1;
}

/* What one husai_phase_run holds between its steps; phase_free releases all of it. */
typedef struct {
    const husai_run_ctx *ctx;
    const husai_phase *ph;
    husai_condition_result *res; /* rank 0's results, or NULL */
    int rank, size;
    husai_plan plan;
    int *local; /* this rank's task ids, in the order it runs them */
    int n_local;
    float **params; /* per task: its payload on the rank that trained it; after store_task its densities */
    husai_seed_metrics *metrics;
    progress_state ps;
    int stopped, finished; /* this rank's view of its training */
    long finished_all;     /* tasks finished on every rank (agreed) */
    int *owner;            /* per seed of the condition being gathered: the rank that trained it */
    const void **from;
    float *ref_decoder; /* reference decoder in file layout, for the with-reference PWMCC (rank 0) */
    param_sink sink;    /* results.h5's parameter datasets, written by every rank */
    struct stored_decoders {
        husai_param_file *pf;
        uint64_t dec_off;
        size_t dd;
    } stored; /* rank 0: the condition being measured, for its decoder source */
} phase_run;

/* Plans the phase's tasks over the ranks and holds room for their payloads. */
static void phase_setup(phase_run *pr) {
    MPI_Comm_rank(pr->ctx->comm, &pr->rank);
    MPI_Comm_size(pr->ctx->comm, &pr->size);
    const husai_phase *ph = pr->ph;
    husai_plan *plan = &pr->plan;
    if (husai_plan_build(plan, ph->n_conds, ph->seeds, ph->n_seeds, pr->size))
        husai_mpi_die("%s", husai_error_message());
    if (pr->rank == 0 && pr->size > plan->n_tasks)
        printf("[husai] note: %d ranks for %d tasks; ranks %d..%d stay idle%s%s\n", pr->size, plan->n_tasks,
               plan->n_tasks, pr->size - 1, *ph->phase ? " in phase " : "", ph->phase);
    pr->local = malloc((size_t)plan->n_tasks * sizeof(int));
    pr->params = calloc((size_t)plan->n_tasks, sizeof(float *));
    pr->metrics = calloc((size_t)plan->n_tasks, sizeof(husai_seed_metrics));
    if (!pr->local || !pr->params || !pr->metrics) husai_mpi_die("out of memory");
    pr->n_local = husai_plan_local(plan, pr->rank, pr->ctx->reverse_order, pr->local);
}

/* Releases everything phase_setup and the later steps acquired. */
static void phase_free(phase_run *pr) {
    for (int t = 0; t < pr->plan.n_tasks; t++)
        free(pr->params[t]); /* payloads not gathered: after a stop, a failure or a failed write */
    free(pr->ref_decoder);
    free(pr->sink.offset);
    free(pr->owner);
    free(pr->from);
    free(pr->local);
    free(pr->params);
    free(pr->metrics);
    husai_plan_free(&pr->plan);
}

/* Trains this rank's tasks from the data in memory, each into its payload, until one stops or fails. */
static void train_in_memory(phase_run *pr) {
    const husai_run_ctx *ctx = pr->ctx;
    const husai_phase *ph = pr->ph;
    progress_plan(ctx, ph, &pr->plan, pr->local, pr->n_local, &pr->ps.prog);
    for (int i = 0; i < pr->n_local && !pr->stopped; i++) {
        const husai_task *t = &pr->plan.tasks[pr->local[i]];
        const husai_condition *c = &ph->conds[t->condition];
        husai_sae m;
        const int dm = ctx->ds->d_model, dsae = c->d_sae;
        float *p = pr->params[t->id] = malloc(payload_floats(dm, dsae) * sizeof(float));
        if (!p) {
            pr->stopped = task_failed(no_room(c, t->seed, dm));
            break;
        }
        if ((pr->stopped = train_one(ctx, ph->phase, t->condition, c, t->seed, ph->ref_rows, ph->ref_n,
                                     &pr->metrics[t->id], &pr->ps, &m, p + payload_density(dm, dsae)))) {
            free(p);
            pr->params[t->id] = NULL;
            break;
        }
        pack_model(&m, p);
        husai_sae_free(&m);
        if ((pr->stopped = store_task(&pr->sink, t, dm, dsae, &pr->params[t->id]))) break;
        pr->finished++;
        report_done(ctx, &pr->ps, t->id, &pr->metrics[t->id]);
    }
}

/* Collective. Agrees on stop and failure and counts finished tasks without blocking rank 0's progress
 * printing: a non-blocking reduction that rank 0 polls while it drains progress messages. */
static husai_status agree_training(phase_run *pr) {
    MPI_Comm comm = pr->ctx->comm;
    long local_state[3] = {pr->stopped, pr->finished, g_failed != HUSAI_OK}, global_state[3];
    MPI_Request req;
    HUSAI_MPI_CHECK(MPI_Iallreduce(local_state, global_state, 3, MPI_LONG, MPI_SUM, comm, &req));
    wait_polling(&req, &pr->ps, comm);
    if (pr->rank == 0)
        while (pr->ps.done < global_state[1]) {
            progress_msg m;
            HUSAI_MPI_CHECK(
                MPI_Recv(&m, (int)sizeof m, MPI_BYTE, MPI_ANY_SOURCE, TAG_PROGRESS, comm, MPI_STATUS_IGNORE));
            print_progress(&pr->ps, &m);
        }
    pr->finished_all = global_state[1];
    husai_status st = training_outcome(global_state[0], global_state[2]);
    if (global_state[2] > 0) {
        st = husai_mpi_agree(st, comm);
        note_resumable(pr->ctx, st);
    }
    if (pr->rank == 0 && st == HUSAI_STOPPED) {
        printf("[husai] stop requested: %ld of %d tasks of this phase finished; the others are "
               "checkpointed\n",
               pr->finished_all, pr->plan.n_tasks);
        fflush(stdout);
    }
    return st;
}

/* Condition c's pieces on rank 0 between the gather and the result: the PWMCC and matching matrices the
 * ranks computed together (or NULL). */
typedef struct {
    double *pw, *pw_rand, *mc, *mf;
    husai_features *fb, *fb_rand; /* best matches of the trained and random decoders, or NULL */
} gathered;

/* Rank 0: names condition c's result (before training: its parameter datasets are made from it). */
static void result_begin(phase_run *pr, int c) {
    const husai_phase *ph = pr->ph;
    const husai_condition *cond = &ph->conds[c];
    const int S = ph->n_seeds;
    husai_condition_result *r = &pr->res[c];
    *r = (husai_condition_result){.phase = ph->phase,
                                  .value = cond->value,
                                  .S = S,
                                  .d_model = pr->ctx->ds->d_model,
                                  .d_sae = cond->d_sae,
                                  .k = cond->k,
                                  .epochs = cond->epochs,
                                  .batch_size = cond->batch_size,
                                  .lr = cond->lr,
                                  .lambda = cond->lambda,
                                  .arch = cond->arch,
                                  .seeds = ph->seeds,
                                  .gt_dict = pr->ctx->gt_dict,
                                  .gt_atoms = pr->ctx->gt_atoms};
    snprintf(r->param, sizeof r->param, "%s", cond->param);
    if (snprintf(r->name, sizeof r->name, "%s%s%s", ph->prefix_names ? ph->phase : "",
                 ph->prefix_names ? "/" : "", cond->name) >= (int)sizeof r->name)
        husai_mpi_die("condition name '%s/%s' is too long", ph->phase, cond->name);
}

/* Collective, before training: rank 0 creates every condition's parameter datasets in results.h5 (their
 * disk space reserved, so a full disk fails now) and every rank opens the file to write its tasks' rows
 * into them (mpi/paramfile.h). Returns the agreed status. */
static husai_status phase_params(phase_run *pr) {
    const husai_run_ctx *ctx = pr->ctx;
    const int n = pr->ph->n_conds;
    pr->sink.S = pr->ph->n_seeds;
    pr->sink.offset = calloc((size_t)n * HUSAI_N_PARAMS, sizeof(uint64_t));
    if (!pr->sink.offset) husai_mpi_die("out of memory");
    char path[sizeof pr->sink.pf.path] = "";
    husai_status st = HUSAI_OK;
    if (pr->rank == 0) {
        if (!ctx->sink) st = husai_error(HUSAI_ERR_ARG, "a phase needs results.h5 open to write into");
        for (int c = 0; c < n && !st; c++) {
            result_begin(pr, c);
            st =
                husai_results_h5_params(ctx->sink, &pr->res[c], pr->sink.offset + (size_t)c * HUSAI_N_PARAMS);
        }
        if (!st) snprintf(path, sizeof path, "%s", husai_results_h5_partial_path(ctx->sink));
    }
    if ((st = husai_mpi_agree(st, ctx->comm))) return st;
    HUSAI_MPI_CHECK(MPI_Bcast(pr->sink.offset, n * HUSAI_N_PARAMS, MPI_UINT64_T, 0, ctx->comm));
    HUSAI_MPI_CHECK(MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, ctx->comm));
    return husai_param_file_open(&pr->sink.pf, ctx->comm, path);
}

/* Rank 0's husai_decoder_source: seed s's decoder of the condition being measured, read from results.h5. */
static husai_status load_stored(void *arg, int s, float *out) {
    const struct stored_decoders *sd = arg;
    return husai_param_file_read(sd->pf, sd->dec_off + (uint64_t)s * sd->dd * sizeof(float), out, sd->dd);
}

/* Collective. Gathers condition c's per-seed metrics and densities into rank 0 and computes its PWMCC
 * across the ranks; returns the agreed status (a failed read, a failed spread). The parameters stay in
 * results.h5, where their owners wrote them: the PWMCC window reads the decoders from there on every node,
 * and rank 0's later passes (consensus features, the with-reference PWMCC) read one decoder at a time
 * (r->stored), so rank 0 holds none of the S seeds' parameters, only the window's share. */
static husai_status gather_condition(phase_run *pr, int c, gathered *g) {
    const husai_run_ctx *ctx = pr->ctx;
    const husai_condition *cond = &pr->ph->conds[c];
    MPI_Comm comm = ctx->comm;
    const int S = pr->ph->n_seeds, rank = pr->rank;
    const size_t dd = (size_t)ctx->ds->d_model * cond->d_sae;
    const uint64_t dec_off = pr->sink.offset[(size_t)c * HUSAI_N_PARAMS + HUSAI_PARAM_DECODERS];
    for (int s = 0; s < S; s++)
        pr->owner[s] = pr->plan.tasks[c * S + s].rank;
    husai_condition_result *r = rank == 0 ? &pr->res[c] : NULL;
    *g = (gathered){0};
    if (rank == 0) {
        r->per_seed = malloc((size_t)S * sizeof(husai_seed_metrics));
        r->density = malloc((size_t)S * cond->d_sae * sizeof(float));
        if (!r->per_seed || !r->density) husai_mpi_die("out of memory gathering %s", cond->name);
    }
    gather_piece(pr->params, c, S, pr->owner, 0, (size_t)cond->d_sae, rank == 0 ? r->density : NULL, pr->from,
                 comm);
    for (int s = 0; s < S; s++)
        pr->from[s] = pr->owner[s] == rank ? &pr->metrics[c * S + s] : NULL;
    husai_gather_tasks(pr->from, sizeof(husai_seed_metrics) / sizeof(double), MPI_DOUBLE, sizeof(double),
                       pr->owner, S, rank == 0 ? r->per_seed : NULL, 0, comm);
    for (int s = 0; s < S; s++) {
        free(pr->params[c * S + s]);
        pr->params[c * S + s] = NULL;
    }
    husai_status st = HUSAI_OK;
    if (rank == 0) {
        pr->stored = (struct stored_decoders){.pf = &pr->sink.pf, .dec_off = dec_off, .dd = dd};
        r->stored = (husai_decoder_source){.load = load_stored, .ctx = &pr->stored};
        /* Two seeds or fewer: one process computes the one pair itself (metrics/condition.c). */
        if (S <= 2 && !(r->decoders = malloc((size_t)S * dd * sizeof(float))))
            husai_mpi_die("out of memory reading the decoders of %s", cond->name);
        for (int s = 0; s < S && S <= 2 && !st; s++)
            st = load_stored(&pr->stored, s, r->decoders + (size_t)s * dd);
    }
    if ((st = husai_mpi_agree(st, comm)) || S <= 2) return st;
    int b = S;
    double budget = 0.0;
    if ((st = window_block(ctx, S, ctx->ds->d_model, cond->d_sae, &b, &budget))) return st;
    if (rank == 0 && b < S) {
        const int nb = (S + b - 1) / b;
        printf(
            "[husai] PWMCC of %s by seed blocks: %d decoders of %d x %d (%.3f MB) exceed the window budget "
            "of %.3f MB per node (metrics.window_mb = %g); block size %d (%d blocks, %d block pairs)\n",
            r->name, S, ctx->ds->d_model, cond->d_sae, (double)S * dd * sizeof(float) / 1e6, budget / 1e6,
            ctx->cfg->window_mb, b, nb, nb * (nb + 1) / 2);
        fflush(stdout);
    }
    /* Spread over the ranks even on one: the window is the one place the S decoders are held. */
    if ((st = spread_pwmcc(ctx, pr->ph, c, b, r, &pr->sink.pf, dec_off, &g->pw, &g->pw_rand, &g->mc, &g->mf,
                           &g->fb, &g->fb_rand))) {
        free(g->pw);
        if (g->fb) husai_features_free(g->fb);
        free(g->fb);
        return st;
    }
    return HUSAI_OK;
}

/* Rank 0: unpacks the gathered pieces into condition c's result (taking g's buffers). */
static void result_unpack(phase_run *pr, int c, gathered *g) {
    husai_condition_result *r = &pr->res[c];
    const int S = pr->ph->n_seeds;
    r->pwmcc = malloc((size_t)S * S * sizeof(double));
    r->random_pwmcc = malloc((size_t)S * S * sizeof(double));
    if (!r->pwmcc || !r->random_pwmcc) husai_mpi_die("out of memory");
    if (g->pw) {
        memcpy(r->pwmcc, g->pw, (size_t)S * S * sizeof(double));
        r->pwmcc_done = 1;
        free(g->pw);
    }
    if (g->pw_rand) {
        memcpy(r->random_pwmcc, g->pw_rand, (size_t)S * S * sizeof(double));
        r->random_done = 1;
        free(g->pw_rand);
    }
    if (g->mc) {
        r->match_cos = g->mc;
        r->match_frac = g->mf;
        r->match_done = 1;
    }
    if (g->fb) {
        r->features = g->fb;
        r->features_done = 1;
    }
    r->random_best = g->fb_rand;
}

/* Rank 0: the reference decoder in file layout, transposed once from the feature-major reference rows
 * [d_sae, d_model] of condition c's width. */
static void reference_decoder(phase_run *pr, int c) {
    const husai_phase *ph = pr->ph;
    const int d_sae = ph->conds[c].d_sae, d_model = pr->ctx->ds->d_model;
    pr->ref_decoder = malloc((size_t)d_model * d_sae * sizeof(float));
    if (!pr->ref_decoder) husai_mpi_die("out of memory");
    for (int j = 0; j < d_sae; j++)
        for (int i = 0; i < d_model; i++)
            pr->ref_decoder[(size_t)i * d_sae + j] = ph->ref_rows[(size_t)j * d_model + i];
}

/* Rank 0: condition c's metrics, then its write to results.h5; returns the first failure. On disk now, so
 * rank 0 holds one condition's parameters at a time. A failure ends the run here, not after the remaining
 * conditions' training; the checkpoints stay for --resume. */
static husai_status result_finish(phase_run *pr, int c, gathered *g) {
    const husai_phase *ph = pr->ph;
    husai_condition_result *r = &pr->res[c];
    result_unpack(pr, c, g);
    if (ph->ref_rows && !pr->ref_decoder) reference_decoder(pr, c);
    const husai_condition_opts o = husai_config_condition_opts(pr->ctx->cfg);
    husai_status st = husai_condition_metrics(&o, r, ph->ref_rows ? pr->ref_decoder : NULL, pr->res, c);
    if (st) return st;
    return pr->ctx->sink ? husai_results_h5_condition(pr->ctx->sink, r) : HUSAI_OK;
}

/* Collective. Gathers, measures and writes the conditions one at a time; rank 0's write of each is agreed
 * before the next collective. */
static husai_status collect(phase_run *pr) {
    const int S = pr->ph->n_seeds;
    pr->owner = malloc((size_t)S * sizeof(int));
    pr->from = malloc((size_t)S * sizeof *pr->from);
    if (!pr->owner || !pr->from) husai_mpi_die("out of memory");
    husai_status st = HUSAI_OK;
    int c = 0;
    for (; c < pr->ph->n_conds; c++) {
        if (c > 0 && (st = husai_mpi_agree(st, pr->ctx->comm))) break;
        gathered g;
        if ((st = gather_condition(pr, c, &g))) break;
        if (pr->rank == 0) st = result_finish(pr, c, &g);
    }
    if (c == pr->ph->n_conds) st = husai_mpi_agree(st, pr->ctx->comm);
    note_resumable(pr->ctx, st);
    return st;
}

husai_status husai_phase_run(const husai_run_ctx *ctx, const husai_phase *ph, husai_condition_result *res) {
    phase_run pr = {.ctx = ctx, .ph = ph, .res = res};
    phase_setup(&pr);
    husai_status st = husai_mpi_agree(check_resumable(ctx, ph, &pr.plan, pr.local, pr.n_local), ctx->comm);
    if (st) goto out;
    /* A window budget below two decoders is refused before any training, not after it. */
    for (int c = 0; c < ph->n_conds && ph->n_seeds > 2; c++) {
        int b;
        double budget;
        if ((st = window_block(ctx, ph->n_seeds, ctx->ds->d_model, ph->conds[c].d_sae, &b, &budget)))
            goto out;
    }
    if ((st = phase_params(&pr))) goto out;
    pr.ps = (progress_state){.ph = ph, .plan = &pr.plan, .total = pr.plan.n_tasks, .t_start = MPI_Wtime()};
    husai_progress_init(&pr.ps.prog, ctx->cfg->progress_seconds, pr.rank);
    if (ctx->ds->streaming)
        pr.stopped = train_streamed(ctx, ph, &pr.plan, pr.local, pr.n_local, pr.params, pr.metrics, &pr.ps,
                                    &pr.finished, &pr.sink);
    else
        train_in_memory(&pr);
    if ((st = agree_training(&pr))) goto out;
    husai_param_file_sync(&pr.sink.pf);
    st = collect(&pr);
out:;
    const husai_status closed = husai_param_file_close(&pr.sink.pf);
    if (!st) st = closed;
    phase_free(&pr);
    return st;
}

husai_status husai_train_reference(const husai_run_ctx *ctx, const husai_condition *cond, uint64_t seed,
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
        progress_state ps = {0}; /* progress lines only: no other rank trains meanwhile */
        husai_progress_init(&ps.prog, ctx->cfg->progress_seconds, rank);
        double per_step;
        husai_progress_plan(&ps.prog, 1, (double)task_steps(ctx, &plain, &per_step) * per_step);
        stopped = train_one(ctx, "reference", 0, &plain, seed, NULL, 0, m, &ps, &model, NULL);
        if (!stopped) {
            memcpy(ref_rows, model.W_dec, dd * sizeof(float));
            husai_sae_export_decoder(&model, ref_decoder);
            husai_sae_free(&model);
            printf("[husai] reference: seed %llu done, mse=%.6g ev=%.4f (%.1fs)\n", (unsigned long long)seed,
                   m->mse, m->ev, m->seconds);
            fflush(stdout);
        }
    }
    /* Ranks other than 0 may be signalled while they wait here: polling passes that on to rank 0, whose
     * training then stops at its next step. */
    long state[2] = {stopped || husai_stop_requested(), g_failed != HUSAI_OK};
    MPI_Request req;
    HUSAI_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, state, 2, MPI_LONG, MPI_MAX, ctx->comm, &req));
    wait_polling(&req, NULL, ctx->comm);
    husai_status st = training_outcome(state[0], state[1]);
    if (state[1]) st = husai_mpi_agree(st, ctx->comm);
    if (st) return st;
    if (dd > (size_t)INT32_MAX) husai_mpi_die("reference decoder too large to broadcast in one call");
    HUSAI_MPI_CHECK(MPI_Bcast(ref_rows, (int)dd, MPI_FLOAT, 0, ctx->comm));
    /* Exact unit rows, so the penalty's cosine is a plain dot product. */
    const int d = ctx->ds->d_model;
    husai_unit_rows(ref_rows, cond->d_sae, d, (size_t)d, 1, ref_rows);
    return HUSAI_OK;
}
