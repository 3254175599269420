/* sweep_cmd.c: `husai sweep`, the seed-parallel sweep.
 * Flow: config -> run directory staging (rank 0) -> dataset (parallel HDF5, shared) ->
 * plan -> each rank trains its tasks, rank 0 printing progress as any task finishes ->
 * per-condition gathers to rank 0 -> metrics -> results written and the run directory
 * renamed into place. Deterministic errors are agreed so all ranks exit 1 together; a
 * failure only one rank sees aborts the job (never a hang). */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/config.h"
#include "metrics/bootstrap.h"
#include "metrics/pwmcc.h"
#include "metrics/recon.h"
#include "mpi/dataset.h"
#include "mpi/gather.h"
#include "mpi/mpicheck.h"
#include "mpi/plan.h"
#include "report/results.h"
#include "report/rundir.h"
#include "sae/train.h"

#ifndef HUSAI_VERSION
#define HUSAI_VERSION "0.0.0"
#endif
#ifndef HUSAI_GIT_COMMIT
#define HUSAI_GIT_COMMIT "unknown"
#endif

#define TAG_PROGRESS 101
#define EVAL_BATCH 4096

typedef struct {
    int task;
    int rank;
    double mse, ev, seconds;
} progress_msg;

typedef struct {
    const char *config_path;
    const char *out_dir; /* NULL: from the config */
    int force;
    int reverse_order;
    int n_sets;
    char **sets;
} sweep_args;

static void sweep_usage(FILE *f) {
    fprintf(f, "usage: husai sweep CONFIG.ini [--set section.key=value ...] [--out DIR] [--force]\n"
               "  --set S.K=V   override one config key (repeatable)\n"
               "  --out DIR     write the run directory under DIR (overrides [output] dir)\n"
               "  --force       replace an existing run directory of the same id\n"
               "  --task-order forward|reverse  order in which each rank runs its tasks (results do not change)\n"
               "Run under MPI: mpirun -np N husai sweep CONFIG.ini\n");
}

/* Returns 0 to go on, or an exit status (0 for --help). Every rank parses the same argv. */
static int parse_args(int argc, char **argv, sweep_args *a, int rank) {
    static const struct option longopts[] = {{"set", required_argument, NULL, 's'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"task-order", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc, sizeof(char *));
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "s:o:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 's': a->sets[a->n_sets++] = optarg; break;
        case 'o': a->out_dir = optarg; break;
        case 'f': a->force = 1; break;
        case 't':
            if (!strcmp(optarg, "reverse")) a->reverse_order = 1;
            else if (strcmp(optarg, "forward")) {
                if (rank == 0) fprintf(stderr, "husai sweep: --task-order must be forward or reverse\n");
                return 2;
            }
            break;
        case 'h':
            if (rank == 0) sweep_usage(stdout);
            return -1;
        default:
            if (rank == 0) {
                fprintf(stderr, "husai sweep: unknown or incomplete option '%s'\n", argv[optind - 1]);
                sweep_usage(stderr);
            }
            return 2;
        }
    }
    if (optind != argc - 1) {
        if (rank == 0) {
            fprintf(stderr, "husai sweep: expected exactly one CONFIG file\n");
            sweep_usage(stderr);
        }
        return 2;
    }
    a->config_path = argv[optind];
    return 0;
}

static void fmt_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

typedef struct {
    const husai_config *cfg;
    const husai_plan *plan;
    int done, total;
    double t_start;
} progress_state;

static void print_progress(progress_state *ps, const progress_msg *m) {
    ps->done++;
    const husai_task *t = &ps->plan->tasks[m->task];
    char name[64], el[32], eta[32];
    husai_config_condition_name(ps->cfg, t->condition, name, sizeof name);
    const double elapsed = MPI_Wtime() - ps->t_start;
    fmt_duration(elapsed, el, sizeof el);
    fmt_duration(elapsed / ps->done * (ps->total - ps->done), eta, sizeof eta);
    printf("[husai] task %d/%d done: %s seed=%llu rank=%d mse=%.6g ev=%.4f time=%.1fs elapsed=%s eta=%s\n", ps->done,
           ps->total, name, (unsigned long long)t->seed, m->rank, m->mse, m->ev, m->seconds, el, eta);
    fflush(stdout);
}

/* Rank 0: prints every progress message that has already arrived. */
static void drain_progress(progress_state *ps, MPI_Comm comm) {
    for (;;) {
        int flag = 0;
        MPI_Status status;
        HUSAI_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, TAG_PROGRESS, comm, &flag, &status));
        if (!flag) return;
        progress_msg m;
        HUSAI_MPI_CHECK(MPI_Recv(&m, (int)sizeof m, MPI_BYTE, status.MPI_SOURCE, TAG_PROGRESS, comm, MPI_STATUS_IGNORE));
        print_progress(ps, &m);
    }
}

/* What one finished task leaves on its rank until the gathers. */
typedef struct {
    float *params; /* decoder [d_model, d_sae] | W_enc [d_sae, d_model] | b_enc [d_sae] */
    husai_seed_metrics metrics;
} task_output;

static size_t payload_floats(int d_model, int d_sae) {
    return 2 * (size_t)d_model * d_sae + (size_t)d_sae;
}

static void train_task(const husai_config *cfg, const husai_dataset *ds, const husai_task *t, int rank,
                       task_output *out, progress_state *ps, MPI_Comm comm) {
    husai_train_opts o = husai_train_defaults();
    double lr;
    husai_config_condition(cfg, t->condition, &o.d_sae, &o.k, &o.epochs, &o.batch_size, &lr);
    o.lr = (float)lr;
    o.seed = t->seed;
    const double t0 = MPI_Wtime();
    husai_trainer tr;
    husai_status st = husai_trainer_init(&tr, ds->X, ds->n_rows, ds->d_model, &o);
    if (st) husai_mpi_die("task %d (seed %llu): %s", t->id, (unsigned long long)t->seed, husai_error_message());
    while (!husai_trainer_done(&tr)) {
        if ((st = husai_trainer_step(&tr))) husai_mpi_die("%s", husai_error_message());
        if (rank == 0) drain_progress(ps, comm);
    }
    husai_recon rec;
    if ((st = husai_recon_eval(&tr.model, ds->X, ds->n_rows, EVAL_BATCH, &rec)))
        husai_mpi_die("evaluating task %d: %s", t->id, husai_error_message());
    const int dm = ds->d_model, dsae = o.d_sae;
    out->params = malloc(payload_floats(dm, dsae) * sizeof(float));
    if (!out->params) husai_mpi_die("out of memory storing task %d", t->id);
    husai_topk_export_decoder(&tr.model, out->params);
    memcpy(out->params + (size_t)dm * dsae, tr.model.W_enc, (size_t)dm * dsae * sizeof(float));
    memcpy(out->params + 2 * (size_t)dm * dsae, tr.model.b_enc, (size_t)dsae * sizeof(float));
    const double seconds = MPI_Wtime() - t0;
    out->metrics = (husai_seed_metrics){.ev = rec.ev, .mse = rec.mse, .l0 = rec.l0, .dead_fraction = rec.dead_fraction,
                                        .seconds = seconds, .last_epoch_loss = tr.last_epoch_loss,
                                        .steps = (double)tr.steps, .rank = rank};
    husai_trainer_free(&tr);
    progress_msg m = {.task = t->id, .rank = rank, .mse = rec.mse, .ev = rec.ev, .seconds = seconds};
    if (rank == 0) print_progress(ps, &m);
    else HUSAI_MPI_CHECK(MPI_Send(&m, (int)sizeof m, MPI_BYTE, 0, TAG_PROGRESS, comm));
}

/* Rank 0: all metrics of one condition from its gathered decoders and per-seed metrics. */
static void condition_metrics(const husai_config *cfg, husai_condition_result *c) {
    const int S = c->S;
    husai_status st = husai_pwmcc_matrix(c->decoders, S, c->d_model, c->d_sae, c->pwmcc);
    if (st) husai_mpi_die("%s", husai_error_message());
    float *rnd = malloc((size_t)S * c->d_model * c->d_sae * sizeof(float));
    if (!rnd) husai_mpi_die("out of memory for the random baseline");
    for (int s = 0; s < S; s++)
        husai_pwmcc_random_decoder(c->seeds[s], c->d_model, c->d_sae, rnd + (size_t)s * c->d_model * c->d_sae);
    if ((st = husai_pwmcc_matrix(rnd, S, c->d_model, c->d_sae, c->random_pwmcc))) husai_mpi_die("%s", husai_error_message());
    free(rnd);
    husai_boot_opts bo = husai_boot_defaults();
    bo.resamples = cfg->resamples;
    bo.seed = cfg->bootstrap_seed;
    bo.rng = cfg->bootstrap_rng;
    bo.unit = cfg->bootstrap_unit;
    if ((st = husai_ci_pair_matrix(c->pwmcc, S, &bo, &c->trained)) ||
        (st = husai_ci_pair_matrix(c->random_pwmcc, S, &bo, &c->random)))
        husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    double *v = malloc((size_t)S * sizeof(double));
    if (!v) husai_mpi_die("out of memory");
    husai_ci *outs[4] = {&c->ev, &c->mse, &c->l0, &c->dead};
    for (int m = 0; m < 4; m++) {
        for (int s = 0; s < S; s++) {
            const husai_seed_metrics *p = &c->per_seed[s];
            v[s] = m == 0 ? p->ev : m == 1 ? p->mse : m == 2 ? p->l0 : p->dead_fraction;
        }
        if ((st = husai_ci_mean(v, (size_t)S, &bo, outs[m]))) husai_mpi_die("bootstrap of %s: %s", c->name, husai_error_message());
    }
    free(v);
    c->delta = c->trained.mean - c->random.mean;
    c->delta_lcb = c->trained.lo - c->random.hi;
    c->ratio = c->trained.mean / c->random.mean;
}

static void print_config(const husai_config *cfg, int size, const char *hosts) {
    printf("[husai] husai %s (%s): sweep over %s with %d condition(s) x %d seed(s) = %d task(s) on %d rank(s); hosts: %s\n",
           HUSAI_VERSION, HUSAI_GIT_COMMIT, cfg->param, cfg->n_values, cfg->n_seeds, cfg->n_values * cfg->n_seeds,
           size, hosts);
    printf("[husai] resolved configuration:\n");
    husai_config_print(cfg, stdout);
    printf("\n");
    fflush(stdout);
}

/* Comma-separated distinct processor names of all ranks (collective; result valid on root). */
static void gather_hosts(char *out, size_t n, int *n_hosts, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char mine[MPI_MAX_PROCESSOR_NAME] = {0};
    int len;
    MPI_Get_processor_name(mine, &len);
    char *all = rank == 0 ? calloc((size_t)size, MPI_MAX_PROCESSOR_NAME) : NULL;
    if (rank == 0 && !all) husai_mpi_die("out of memory");
    HUSAI_MPI_CHECK(MPI_Gather(mine, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, comm));
    if (rank != 0) return;
    out[0] = '\0';
    *n_hosts = 0;
    for (int q = 0; q < size; q++) {
        const char *h = all + (size_t)q * MPI_MAX_PROCESSOR_NAME;
        int seen = 0;
        for (int p = 0; p < q && !seen; p++) seen = !strcmp(h, all + (size_t)p * MPI_MAX_PROCESSOR_NAME);
        if (seen) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", *n_hosts ? "," : "", h);
        (*n_hosts)++;
    }
    free(all);
}

/* Prints an agreed error once (rank 0) and returns the exit status every rank uses. */
static int fail(int rank, husai_rundir *rd) {
    if (rank == 0) {
        fprintf(stderr, "husai: error: %s\n", husai_error_message());
        husai_rundir_abort(rd);
    }
    return 1;
}

int husai_cmd_sweep(int argc, char **argv) {
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const double t_begin = MPI_Wtime();

    /* The command line as given, for provenance (getopt may permute argv). */
    char command[4096] = "husai";
    for (int i = 0; i < argc; i++) {
        size_t used = strlen(command);
        snprintf(command + used, sizeof command - used, " %s", argv[i]);
    }
    sweep_args args;
    int rc = parse_args(argc, argv, &args, rank);
    if (rc) {
        free(args.sets);
        return rc < 0 ? 0 : rc;
    }

    /* Every rank parses the same inputs, so every rank reaches the same verdict without talking. */
    husai_rundir rd = {0};
    husai_config cfg;
    husai_config_defaults(&cfg);
    husai_status st = husai_config_load(&cfg, args.config_path);
    for (int i = 0; !st && i < args.n_sets; i++) st = husai_config_set(&cfg, args.sets[i]);
    if (!st && args.out_dir) {
        char kv[HUSAI_PATH_MAX + 16];
        snprintf(kv, sizeof kv, "output.dir=%s", args.out_dir);
        st = husai_config_set(&cfg, kv);
    }
    if (!st) st = husai_config_validate(&cfg);
    free(args.sets);
    if (st) return fail(rank, &rd);

    /* One BLAS thread per rank: seed-parallel ranks share the cores, and one thread keeps sgemm's
     * summation order, hence every seed's bits, independent of the rank count. */
    const char *bt = getenv("HUSAI_BLAS_THREADS");
    openblas_set_num_threads(bt ? atoi(bt) : 1);

    char hosts[8192];
    int n_hosts = 1;
    gather_hosts(hosts, sizeof hosts, &n_hosts, comm);
    if (rank == 0) print_config(&cfg, size, hosts);

    /* Stage the run directory before training, so an unwritable output fails in seconds, not hours. */
    char run_id[64];
    {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char stamp[32];
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(run_id, sizeof run_id, "%s-%08llx", stamp, (unsigned long long)(husai_config_hash(&cfg) & 0xffffffffULL));
        HUSAI_MPI_CHECK(MPI_Bcast(run_id, (int)sizeof run_id, MPI_CHAR, 0, comm));
    }
    st = rank == 0 ? husai_rundir_begin(&rd, cfg.out_dir, run_id, args.force) : HUSAI_OK;
    if ((st = husai_mpi_agree(st, comm))) return fail(rank, &rd);

    husai_dataset ds;
    if ((st = husai_dataset_read(&ds, cfg.data_path, cfg.dataset, comm))) return fail(rank, &rd);
    if (rank == 0)
        printf("[husai] data: %s:%s %zu x %d %s (%.1f MB read once, %.2f s)\n", cfg.data_path, cfg.dataset, ds.n_rows,
               ds.d_model, ds.dtype, ds.bytes_read / 1e6, ds.read_seconds);
    for (int i = 0; i < cfg.n_values; i++) {
        int d_sae, k, epochs, batch;
        double lr;
        husai_config_condition(&cfg, i, &d_sae, &k, &epochs, &batch, &lr);
        if ((size_t)batch > ds.n_rows) {
            husai_error(HUSAI_ERR_DATA, "the dataset has %zu rows, fewer than one batch (batch_size %d)", ds.n_rows, batch);
            husai_dataset_free(&ds);
            return fail(rank, &rd);
        }
    }

    husai_plan plan;
    if ((st = husai_plan_build(&plan, cfg.n_values, cfg.seeds, cfg.n_seeds, size))) husai_mpi_die("%s", husai_error_message());
    if (rank == 0 && size > plan.n_tasks)
        printf("[husai] note: %d ranks for %d tasks; ranks %d..%d stay idle\n", size, plan.n_tasks, plan.n_tasks, size - 1);
    int *local = malloc((size_t)plan.n_tasks * sizeof(int));
    task_output *outs = calloc((size_t)plan.n_tasks, sizeof(task_output));
    if (!local || !outs) husai_mpi_die("out of memory");
    const int n_local = husai_plan_local(&plan, rank, args.reverse_order, local);

    progress_state ps = {.cfg = &cfg, .plan = &plan, .done = 0, .total = plan.n_tasks, .t_start = MPI_Wtime()};
    for (int i = 0; i < n_local; i++) train_task(&cfg, &ds, &plan.tasks[local[i]], rank, &outs[local[i]], &ps, comm);
    if (rank == 0)
        while (ps.done < ps.total) {
            progress_msg m;
            HUSAI_MPI_CHECK(MPI_Recv(&m, (int)sizeof m, MPI_BYTE, MPI_ANY_SOURCE, TAG_PROGRESS, comm, MPI_STATUS_IGNORE));
            print_progress(&ps, &m);
        }

    /* One gather per condition: its seeds' parameters and metrics, reordered into seed order on rank 0. */
    const int S = cfg.n_seeds;
    husai_condition_result *res = rank == 0 ? calloc((size_t)cfg.n_values, sizeof *res) : NULL;
    int *owner = malloc((size_t)S * sizeof(int));
    if ((rank == 0 && !res) || !owner) husai_mpi_die("out of memory");
    for (int c = 0; c < cfg.n_values; c++) {
        int d_sae, k, epochs, batch;
        double lr;
        husai_config_condition(&cfg, c, &d_sae, &k, &epochs, &batch, &lr);
        const size_t per = payload_floats(ds.d_model, d_sae);
        int mine = 0;
        for (int s = 0; s < S; s++) {
            owner[s] = plan.tasks[c * S + s].rank;
            mine += owner[s] == rank;
        }
        float *sendp = malloc(per * (size_t)(mine ? mine : 1) * sizeof(float));
        husai_seed_metrics *sendm = malloc((size_t)(mine ? mine : 1) * sizeof *sendm);
        if (!sendp || !sendm) husai_mpi_die("out of memory packing condition %d", c);
        for (int s = 0, j = 0; s < S; s++)
            if (owner[s] == rank) {
                task_output *o = &outs[c * S + s];
                memcpy(sendp + (size_t)j * per, o->params, per * sizeof(float));
                sendm[j++] = o->metrics;
                free(o->params);
                o->params = NULL;
            }
        float *all = NULL;
        husai_condition_result *r = rank == 0 ? &res[c] : NULL;
        if (rank == 0) {
            all = malloc(per * (size_t)S * sizeof(float));
            r->per_seed = malloc((size_t)S * sizeof(husai_seed_metrics));
            if (!all || !r->per_seed) husai_mpi_die("out of memory gathering condition %d", c);
        }
        husai_gather_tasks(sendp, per, MPI_FLOAT, sizeof(float), owner, S, all, 0, comm);
        husai_gather_tasks(sendm, sizeof(husai_seed_metrics) / sizeof(double), MPI_DOUBLE, sizeof(double), owner, S,
                           rank == 0 ? r->per_seed : NULL, 0, comm);
        free(sendp);
        free(sendm);
        if (rank != 0) continue;
        *r = (husai_condition_result){.param = cfg.param, .value = cfg.values[c], .S = S, .d_model = ds.d_model,
                                      .d_sae = d_sae, .k = k, .epochs = epochs, .batch_size = batch, .lr = lr,
                                      .seeds = cfg.seeds, .per_seed = r->per_seed};
        husai_config_condition_name(&cfg, c, r->name, sizeof r->name);
        const size_t dd = (size_t)ds.d_model * d_sae;
        r->decoders = malloc((size_t)S * dd * sizeof(float));
        r->encoders = malloc((size_t)S * dd * sizeof(float));
        r->b_enc = malloc((size_t)S * d_sae * sizeof(float));
        r->pwmcc = malloc((size_t)S * S * sizeof(double));
        r->random_pwmcc = malloc((size_t)S * S * sizeof(double));
        if (!r->decoders || !r->encoders || !r->b_enc || !r->pwmcc || !r->random_pwmcc) husai_mpi_die("out of memory");
        for (int s = 0; s < S; s++) {
            const float *p = all + (size_t)s * per;
            memcpy(r->decoders + (size_t)s * dd, p, dd * sizeof(float));
            memcpy(r->encoders + (size_t)s * dd, p + dd, dd * sizeof(float));
            memcpy(r->b_enc + (size_t)s * d_sae, p + 2 * dd, (size_t)d_sae * sizeof(float));
        }
        free(all);
        condition_metrics(&cfg, r);
    }
    free(owner);

    /* Rank 0 writes; everyone learns the outcome so the exit status agrees. */
    st = HUSAI_OK;
    if (rank == 0) {
        husai_run_info info = {.id = run_id, .version = HUSAI_VERSION, .commit = HUSAI_GIT_COMMIT, .command = command,
                               .hosts = hosts, .n_hosts = n_hosts, .ranks = size, .seconds = MPI_Wtime() - t_begin,
                               .cfg = &cfg, .dtype = ds.dtype, .n_rows = ds.n_rows, .d_model = ds.d_model};
        st = husai_results_write(&rd, &info, res, cfg.n_values);
        if (!st) st = husai_rundir_commit(&rd, args.force);
        if (!st) {
            char path[4200];
            snprintf(path, sizeof path, "%s/summary.md", rd.final_path);
            FILE *f = fopen(path, "r");
            if (f) {
                char line[1024];
                printf("\n");
                while (fgets(line, sizeof line, f)) fputs(line, stdout);
                fclose(f);
            }
            printf("\n[husai] run directory: %s (%.1f s)\n", rd.final_path, MPI_Wtime() - t_begin);
            fflush(stdout);
        }
        for (int c = 0; c < cfg.n_values; c++) {
            free(res[c].decoders);
            free(res[c].encoders);
            free(res[c].b_enc);
            free(res[c].pwmcc);
            free(res[c].random_pwmcc);
            free(res[c].per_seed);
        }
        free(res);
    }
    st = husai_mpi_agree(st, comm);
    free(local);
    free(outs);
    husai_plan_free(&plan);
    husai_dataset_free(&ds);
    if (st) return fail(rank, &rd);
    return 0;
}
