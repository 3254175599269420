/* sweep_cmd.c: `husai sweep`, the program's MPI edge.
 * Flow: config -> run directory staging (rank 0) -> dataset (parallel HDF5, shared) ->
 * protocol (sweep, calibrate or consistency: phases of training over all ranks, metrics
 * on rank 0) -> results written and the run directory renamed into place. Deterministic errors are agreed so
 * all ranks exit 1 together, failures in training too (phase.c); a failure only one rank sees elsewhere ends
 * that rank and the launcher ends the rest (never a hang). A stop on any rank reaches all (stop.h). */
#define _DEFAULT_SOURCE /* flock */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/version.h"
#include "config/config.h"
#include "sweep/phase.h"
#include "sweep/protocols.h"
#include "cli/threads.h"
#include "common/parse.h"
#include "metrics/groundtruth.h"
#include "mpi/dataset.h"
#include "mpi/mpicheck.h"
#include "mpi/stop.h"
#include "report/results.h"
#include "report/rundir.h"
#include "sae/checkpoint.h"

typedef struct {
    const char *config_path;
    const char *out_dir; /* NULL: from the config */
    int force;
    int reverse_order;
    const char *resume; /* run directory to continue, or NULL */
    const char *run_id; /* explicit run id (e.g. the Slurm job), or NULL */
    long stop_after;    /* test hook: stop after this many steps on each rank */
    int n_sets;
    char **sets;
} sweep_args;

static void sweep_usage(FILE *f) {
    fprintf(
        f,
        "usage: husai sweep CONFIG.ini [--set section.key=value ...] [--out DIR] [--force]\n"
        "                  [--run-id ID] [--resume RUN_DIR]\n"
        "  --set S.K=V      override one config key (repeatable)\n"
        "  --out DIR        write the run directory under DIR (overrides [output] dir)\n"
        "  --force          replace an existing run directory of the same id\n"
        "  --run-id ID      name the run directory ID instead of <UTC time>-<config hash>\n"
        "  --resume RUN_DIR continue an interrupted run (same config; any number of ranks)\n"
        "  --task-order forward|reverse  order in which each rank runs its tasks (results do not change)\n"
        "  --stop-after-steps N  (testing) stop as if signalled after N optimizer steps per rank\n"
        "SIGTERM or SIGUSR1 checkpoints every task in progress and exits with status %d.\n"
        "Run under MPI: mpirun -np N husai sweep CONFIG.ini\n",
        HUSAI_EXIT_STOPPED);
}

/* Returns 0 to go on, or an exit status (0 for --help). Every rank parses the same argv. */
static int parse_args(int argc, char **argv, sweep_args *a, int rank) {
    static const struct option longopts[] = {{"set", required_argument, NULL, 's'},
                                             {"out", required_argument, NULL, 'o'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"task-order", required_argument, NULL, 't'},
                                             {"resume", required_argument, NULL, 'r'},
                                             {"run-id", required_argument, NULL, 'i'},
                                             {"stop-after-steps", required_argument, NULL, 'S'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc, sizeof(char *));
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "s:o:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->sets[a->n_sets++] = optarg;
            break;
        case 'o':
            a->out_dir = optarg;
            break;
        case 'f':
            a->force = 1;
            break;
        case 'r':
            a->resume = optarg;
            break;
        case 'i':
            a->run_id = optarg;
            break;
        case 'S': {
            long long n;
            if (husai_parse_int("--stop-after-steps", optarg, 1, LONG_MAX, &n)) {
                if (rank == 0) fprintf(stderr, "husai sweep: %s\n", husai_error_message());
                return 2;
            }
            a->stop_after = (long)n;
            break;
        }
        case 't':
            if (!strcmp(optarg, "reverse"))
                a->reverse_order = 1;
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

static void print_config(const husai_config *cfg, int size, const char *hosts) {
    printf("[husai] husai %s (%s): mode %s over %s, %d value(s) x %d seed(s) on %d rank(s); hosts: %s\n",
           HUSAI_VERSION, HUSAI_GIT_COMMIT, husai_mode_name(cfg->mode), cfg->param, cfg->n_values,
           cfg->n_seeds, size, hosts);
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
    HUSAI_MPI_CHECK(
        MPI_Gather(mine, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, comm));
    if (rank != 0) return;
    out[0] = '\0';
    *n_hosts = 0;
    for (int q = 0; q < size; q++) {
        const char *h = all + (size_t)q * MPI_MAX_PROCESSOR_NAME;
        int seen = 0;
        for (int p = 0; p < q && !seen; p++)
            seen = !strcmp(h, all + (size_t)p * MPI_MAX_PROCESSOR_NAME);
        if (seen) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", *n_hosts ? "," : "", h);
        (*n_hosts)++;
    }
    free(all);
}

/* Collective: rank 0 reads the true dictionary `name` of the HDF5 file `path` ([atoms, d_model], any float
 * type, converted to float32) and checks it; every rank gets the agreed verdict and, on success, its own copy
 * in *out (n_atoms rows; free it). */
static husai_status load_dictionary(const char *path, const char *name, int d_model, float **out,
                                    int *n_atoms, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    *out = NULL;
    *n_atoms = 0;
    husai_status st = HUSAI_OK;
    float *dict = NULL;
    int A = 0;
    if (rank == 0) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported in one line below */
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t d = file < 0 ? -1 : H5Dopen2(file, name, H5P_DEFAULT);
        hid_t sp = d < 0 ? -1 : H5Dget_space(d), ty = d < 0 ? -1 : H5Dget_type(d);
        hsize_t dims[2] = {0, 0};
        const int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
        if (nd == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
        if (file < 0)
            st = husai_error(HUSAI_ERR_IO, "data.dictionary: cannot open '%s'", path);
        else if (d < 0)
            st = husai_error(HUSAI_ERR_DATA, "data.dictionary: no dataset '%s' in '%s'", name, path);
        else if (ty < 0 || H5Tget_class(ty) != H5T_FLOAT)
            st = husai_error(HUSAI_ERR_DATA, "data.dictionary: '%s' in '%s' is not a floating-point dataset",
                             name, path);
        else if (nd != 2)
            st = husai_error(HUSAI_ERR_DATA,
                             "data.dictionary: '%s' in '%s' has %d dimensions, expected 2 "
                             "([atoms, d_model])",
                             name, path, nd);
        else if (dims[1] != (hsize_t)d_model || dims[0] < 1)
            st = husai_error(
                HUSAI_ERR_DATA,
                "data.dictionary: '%s' in '%s' is [%llu, %llu]; expected [atoms >= 1, d_model = %d]", name,
                path, (unsigned long long)dims[0], (unsigned long long)dims[1], d_model);
        else if (dims[0] * dims[1] > (hsize_t)INT_MAX)
            st = husai_error(HUSAI_ERR_DATA, "data.dictionary: '%s' in '%s' is too large (%llu atoms)", name,
                             path, (unsigned long long)dims[0]);
        else if (!(dict = malloc((size_t)(dims[0] * dims[1]) * sizeof(float))))
            st = husai_error(HUSAI_ERR_NOMEM, "data.dictionary: cannot hold '%s' (%llu atoms)", name,
                             (unsigned long long)dims[0]);
        else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dict) < 0)
            st = husai_error(HUSAI_ERR_DATA, "data.dictionary: reading '%s' in '%s' failed", name, path);
        if (!st) {
            A = (int)dims[0];
            char what[HUSAI_PATH_MAX + 320];
            snprintf(what, sizeof what, "data.dictionary '%s' in '%s'", name, path);
            st = husai_gt_check(dict, A, d_model, what);
        }
        if (ty >= 0) H5Tclose(ty);
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
        if (file >= 0) H5Fclose(file);
    }
    if ((st = husai_mpi_agree(st, comm))) {
        free(dict);
        return st;
    }
    HUSAI_MPI_CHECK(MPI_Bcast(&A, 1, MPI_INT, 0, comm));
    if (rank != 0 && !(dict = malloc((size_t)A * d_model * sizeof(float))))
        husai_mpi_die("out of memory for the dictionary (%d atoms)", A);
    HUSAI_MPI_CHECK(MPI_Bcast(dict, A * d_model, MPI_FLOAT, 0, comm));
    *out = dict;
    *n_atoms = A;
    return HUSAI_OK;
}

/* Rank 0, on --resume: refuses data whose fingerprint differs from the one any checkpoint of the run was
 * trained on, before any training (a checkpoint with an unreadable header is left to its load to refuse). */
static husai_status check_resume_data(const char *ckpt_dir, const husai_dataset *ds,
                                      const husai_config *cfg) {
    DIR *dir = opendir(ckpt_dir);
    if (!dir) return HUSAI_OK; /* no checkpoints: nothing was trained on any data yet */
    husai_status st = HUSAI_OK;
    const struct dirent *e;
    while (!st && (e = readdir(dir))) {
        const size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".ckpt")) continue;
        char path[8400], fp[HUSAI_FP_LEN];
        snprintf(path, sizeof path, "%s/%s", ckpt_dir, e->d_name);
        if (husai_checkpoint_peek_data(path, fp) == HUSAI_OK && strcmp(fp, ds->fingerprint))
            st = husai_error(
                HUSAI_ERR_DATA,
                "data changed since the run began: '%s' (dataset '%s') has fingerprint %s, but the "
                "run being resumed was trained on data with fingerprint %s (checkpoint '%s')",
                cfg->data_path, cfg->dataset, ds->fingerprint, fp, path);
    }
    closedir(dir);
    return st;
}

/* A staging directory's lock file: rank 0 holds an flock on it while its run lives, so a second run into
 * the same directory, or a --resume of a run that is not interrupted, is refused instead of writing over
 * the live one's files. It holds "<pid> <host>" for the message. */
#define LOCK_FILE ".lock"
static int g_lock_fd = -1;

/* Rank 0: an error if a live run holds the lock of staging directory `staging` (a lock left by a run
 * that ended, however it ended, is free: the kernel drops an flock with its process). */
static husai_status check_not_live(const char *staging) {
    char path[HUSAI_PATH_MAX + 400];
    snprintf(path, sizeof path, "%s/" LOCK_FILE, staging);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return HUSAI_OK;
    husai_status st = HUSAI_OK;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        char holder[300] = "";
        const ssize_t n = read(fd, holder, sizeof holder - 1);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        st = husai_error(
            HUSAI_ERR_IO,
            "another husai run (pid and host: %s) is using '%s' right now; it is not interrupted: "
            "wait for it, or stop it (SIGTERM checkpoints it) and then --resume",
            *holder ? holder : "unknown", staging);
    }
    close(fd);
    return st;
}

/* Rank 0: takes the lock of the run's staging directory for the life of this process (*fd, or -1 where
 * the file system has no flock: the run then goes on unguarded); an error if another run took it first. */
static husai_status lock_run(const char *staging, int *fd) {
    char path[HUSAI_PATH_MAX + 400];
    snprintf(path, sizeof path, "%s/" LOCK_FILE, staging);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) return HUSAI_OK;
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        const int taken = errno == EWOULDBLOCK;
        close(*fd);
        *fd = -1;
        return taken ? check_not_live(staging) : HUSAI_OK;
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    if (ftruncate(*fd, 0) == 0) dprintf(*fd, "%ld %s\n", (long)getpid(), host);
    return HUSAI_OK;
}

/* Rank 0, --resume: what is wrong with the run directory `arg` names (final and staging: the complete
 * and the interrupted form of that run), said before anything is touched. */
static husai_status check_resume_target(const char *arg, const char *final, const char *staging) {
    struct stat sb;
    char path[HUSAI_PATH_MAX + 400];
    if (stat(arg, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return husai_error(HUSAI_ERR_ARG,
                           "--resume '%s' is a file, not a run directory (give the directory a stopped run "
                           "printed after 'continue with')",
                           arg);
    const int has_staging = stat(staging, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (stat(final, &sb) == 0) {
        snprintf(path, sizeof path, "%s/results.json", final);
        if (access(path, F_OK) == 0)
            return husai_error(HUSAI_ERR_ARG, "run '%s' is already complete; nothing to resume", final);
        if (has_staging)
            return husai_error(
                HUSAI_ERR_ARG,
                "'%s' exists but is not a complete run (no results.json); move it away to resume "
                "the interrupted run '%s'",
                final, staging);
        return husai_error(
            HUSAI_ERR_ARG,
            "--resume '%s': not a husai run directory (no results.json) and no interrupted run "
            "'%s' beside it",
            arg, staging);
    }
    if (!has_staging)
        return husai_error(HUSAI_ERR_IO, "nothing to resume: no interrupted run at '%s'", staging);
    snprintf(path, sizeof path, "%s/checkpoints", staging);
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return husai_error(HUSAI_ERR_IO,
                           "nothing to resume in '%s': it has no checkpoints directory (not a run husai "
                           "staged, or emptied); remove it and start a new run",
                           staging);
    return HUSAI_OK;
}

/* Rank 0, after a failure that leaves work worth resuming: keeps the staging directory (fail() would
 * remove it) if any task's checkpoint is in it. */
static void keep_staging(husai_rundir *rd, const char *ckpt_dir) {
    DIR *d = rd->active ? opendir(ckpt_dir) : NULL;
    if (!d) return;
    for (const struct dirent *e; (e = readdir(d));) {
        const size_t n = strlen(e->d_name);
        if (n > 5 && !strcmp(e->d_name + n - 5, ".ckpt")) {
            rd->active = 0;
            break;
        }
    }
    closedir(d);
}

static void abort_rundir(void *rd) {
    husai_rundir_abort(rd);
}

/* Prints an agreed error once (rank 0) and returns the exit status every rank uses. */
static int fail(int rank, husai_rundir *rd) {
    husai_mpi_on_die(NULL, NULL);
    if (rank == 0) {
        fprintf(stderr, "husai: error: %s\n", husai_error_message());
        husai_rundir_abort(rd);
    }
    return 1;
}

/* Everything one `husai sweep` acquires, so each step below takes one argument and the command has one
 * exit that releases what was acquired. */
typedef struct {
    MPI_Comm comm;
    int rank, size;
    double t_begin;
    char command[4096]; /* the command line as given, for provenance (getopt may permute argv) */
    sweep_args args;
    husai_config cfg;
    uint64_t config_hash;
    char resume_out[HUSAI_PATH_MAX], resume_id[256];
    int threads, n_hosts;
    char hosts[8192];
    char run_id[256];
    husai_rundir rd;
    char ckpt_dir[4200];
    int have_ds;
    husai_dataset ds;
    husai_split split;
    float *gt_dict;
    int gt_atoms;
    int keep_checkpoints;
    int keep_on_fail; /* a failure from here on keeps a staging directory that holds checkpoints */
    int stopped;      /* the protocol stopped on request: exit HUSAI_EXIT_STOPPED, staging kept */
    husai_run_ctx ctx;
    husai_protocol_output out;
} sweep_run;

/* --resume RUN_DIR names both the output directory and the run id (".ID.partial" or "ID"). */
static husai_status resume_target(sweep_run *s) {
    char tmp[HUSAI_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", s->args.resume);
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/')
        tmp[--len] = '\0';
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp;
    if (slash) {
        *slash = '\0';
        snprintf(s->resume_out, sizeof s->resume_out, "%s", slash == tmp ? "/" : tmp);
    } else {
        snprintf(s->resume_out, sizeof s->resume_out, ".");
    }
    snprintf(s->resume_id, sizeof s->resume_id, "%s", base[0] == '.' ? base + 1 : base);
    len = strlen(s->resume_id);
    if (len > 8 && !strcmp(s->resume_id + len - 8, ".partial")) s->resume_id[len - 8] = '\0';
    if (!*s->resume_id)
        return husai_error(HUSAI_ERR_ARG, "--resume '%s' does not name a run directory", s->args.resume);
    s->args.out_dir = s->resume_out;
    return HUSAI_OK;
}

/* Every rank parses the same inputs, so every rank reaches the same verdict without talking. */
static husai_status load_config(sweep_run *s) {
    husai_config_defaults(&s->cfg);
    husai_status st = husai_config_load(&s->cfg, s->args.config_path);
    for (int i = 0; !st && i < s->args.n_sets; i++)
        st = husai_config_set(&s->cfg, s->args.sets[i]);
    if (!st && s->args.resume) st = resume_target(s);
    if (!st && s->args.out_dir) {
        char kv[HUSAI_PATH_MAX + 16];
        snprintf(kv, sizeof kv, "output.dir=%s", s->args.out_dir);
        st = husai_config_set(&s->cfg, kv);
    }
    if (!st) st = husai_config_validate(&s->cfg);
    free(s->args.sets);
    s->args.sets = NULL;
    if (st) return st;
    s->config_hash = husai_config_hash(&s->cfg);
    if (s->args.resume && s->args.run_id)
        return husai_error(HUSAI_ERR_ARG,
                           "--resume and --run-id exclude each other (the run id comes from RUN_DIR)");
    return HUSAI_OK;
}

/* Collective. Stages the run directory before training, so an unwritable output fails in seconds, not
 * hours; every rank learns the run id and the checkpoint directory. */
static husai_status stage_rundir(sweep_run *s) {
    const sweep_args *a = &s->args;
    husai_status st = HUSAI_OK;
    if (a->resume) {
        snprintf(s->run_id, sizeof s->run_id, "%s", s->resume_id);
    } else if (a->run_id) {
        if (!*a->run_id || strchr(a->run_id, '/') || a->run_id[0] == '.')
            return husai_error(HUSAI_ERR_ARG, "--run-id '%s' must be a plain, non-hidden directory name",
                               a->run_id);
        snprintf(s->run_id, sizeof s->run_id, "%s", a->run_id);
    } else {
        husai_rundir_default_id(s->config_hash, s->run_id, sizeof s->run_id);
    }
    HUSAI_MPI_CHECK(MPI_Bcast(s->run_id, (int)sizeof s->run_id, MPI_CHAR, 0, s->comm));
    if (s->rank == 0) {
        /* What is wrong with the target is said first, in its own words: a live run using it, or a
         * --resume argument that names no interrupted run. */
        char final[HUSAI_PATH_MAX + 300], staging[HUSAI_PATH_MAX + 320];
        snprintf(final, sizeof final, "%s/%s", s->cfg.out_dir, s->run_id);
        snprintf(staging, sizeof staging, "%s/.%s.partial", s->cfg.out_dir, s->run_id);
        st = check_not_live(staging);
        if (!st && a->resume) st = check_resume_target(a->resume, final, staging);
        if (!st) st = husai_rundir_begin(&s->rd, s->cfg.out_dir, s->run_id, a->force, a->resume != NULL);
        if (!st) st = lock_run(s->rd.staging_path, &g_lock_fd);
    }
    if ((st = husai_mpi_agree(st, s->comm))) return st;
    if (s->rank == 0) husai_mpi_on_die(abort_rundir, &s->rd);
    /* Every rank needs the staging path for its checkpoints; rank 0 made it. */
    if (s->rank == 0) snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s/checkpoints", s->rd.staging_path);
    HUSAI_MPI_CHECK(MPI_Bcast(s->ckpt_dir, (int)sizeof s->ckpt_dir, MPI_CHAR, 0, s->comm));
    return HUSAI_OK;
}

/* Rank 0: how the dataset was read (or is streamed) and where it is held. */
static void print_data(const husai_dataset *ds, const husai_config *cfg) {
    if (ds->streaming) {
        printf(
            "[husai] data: %s:%s %zu x %d %s, streamed: %zu chunks of %zu rows (%.1f MB per node, budget %g "
            "MB); each node reads each chunk once per epoch\n"
            "[husai] data fingerprint %s (one pass over the chunks, %.2f s)\n",
            cfg->data_path, cfg->dataset, ds->n_rows, ds->d_model, ds->dtype, ds->chunks.n_chunks,
            ds->chunks.chunk_rows, ds->nodes[0].bytes_held / 1e6, cfg->memory_budget_mb, ds->fingerprint,
            ds->fp_seconds);
        /* Batches do not cross chunks, so each chunk's training rows end in a batch of the remainder; a
         * few rows there are a step on almost no data (and a noisy gradient) once per chunk per epoch. */
        const double train_rows = (double)ds->chunks.chunk_rows * (1.0 - cfg->holdout);
        const double tail = fmod(train_rows, (double)cfg->batch_size);
        if (ds->chunks.n_chunks > 1 && tail >= 1.0 && tail < cfg->batch_size / 8.0)
            fprintf(stderr,
                    "husai: warning: each streamed chunk's ~%.0f training rows end in a batch of ~%.0f rows "
                    "(train.batch_size %d); data.chunk_rows = %.0f would end them on whole batches\n",
                    train_rows, tail, cfg->batch_size,
                    floor(train_rows / cfg->batch_size) * cfg->batch_size / (1.0 - cfg->holdout));
        fflush(stdout);
        return;
    }
    printf("[husai] data: %s:%s %zu x %d %s (%.1f MB read once, %.2f s), fingerprint %s (hashed in %.4f "
           "s)\n",
           cfg->data_path, cfg->dataset, ds->n_rows, ds->d_model, ds->dtype, ds->bytes_read / 1e6,
           ds->read_seconds, ds->fingerprint, ds->fp_seconds);
    for (int q = 0; q < ds->n_nodes; q++)
        printf("[husai] node %d/%d %s: %d rank(s), read %.2f MB, holds one %.2f MB copy in shared memory\n",
               q + 1, ds->n_nodes, ds->nodes[q].host, ds->nodes[q].ranks, ds->nodes[q].bytes_read / 1e6,
               ds->nodes[q].bytes_held / 1e6);
    fflush(stdout);
}

/* Every rank derives the same split from (rows, fraction, seed) and so the same verdict on it. */
static husai_status make_split(sweep_run *s) {
    const husai_config *cfg = &s->cfg;
    const husai_dataset *ds = &s->ds;
    husai_status st =
        cfg->d_model > 0 && cfg->d_model != ds->d_model
            ? husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' has d_model %d but data.d_model = %d",
                          cfg->dataset, cfg->data_path, ds->d_model, cfg->d_model)
            : husai_split_make(&s->split, ds->n_rows, cfg->holdout, cfg->split_seed);
    if (st) memset(&s->split, 0, sizeof s->split);
    if (!st && ds->streaming) st = husai_chunks_check_rows(&ds->chunks, s->split.train, s->split.n_train);
    for (int i = 0; !st && i < cfg->n_values; i++) {
        const int batch = husai_config_condition(cfg, i).batch_size;
        if ((size_t)batch > s->split.n_train)
            st = husai_error(HUSAI_ERR_DATA,
                             "the dataset has %zu training rows, fewer than one batch (batch_size %d)",
                             s->split.n_train, batch);
    }
    return st;
}

/* Collective. Opens the dataset, refuses changed data on --resume, splits it and loads the true
 * dictionary, if any: all before training, so a bad input fails in seconds. */
static husai_status open_data(sweep_run *s) {
    const husai_config *cfg = &s->cfg;
    husai_status st = husai_dataset_open(&s->ds, cfg->data_path, cfg->dataset, cfg->memory_budget_mb * 1e6,
                                         (size_t)cfg->chunk_rows, cfg->split_seed, s->comm);
    if (st) return st;
    s->have_ds = 1;
    if (s->rank == 0) print_data(&s->ds, cfg);
    if (s->args.resume &&
        (st =
             husai_mpi_agree(s->rank == 0 ? check_resume_data(s->ckpt_dir, &s->ds, cfg) : HUSAI_OK, s->comm)))
        return st;
    st = make_split(s);
    if (!st && *cfg->dictionary)
        st = load_dictionary(cfg->data_path, cfg->dictionary, s->ds.d_model, &s->gt_dict, &s->gt_atoms,
                             s->comm);
    if (st) return st;
    if (s->rank == 0 && s->gt_dict) {
        printf("[husai] ground truth: %s:%s, %d atoms; reporting their recovery by every SAE\n",
               cfg->data_path, cfg->dictionary, s->gt_atoms);
        fflush(stdout);
    }
    if (s->rank == 0 && s->split.n_holdout > 0) {
        printf("[husai] held out %zu of %zu rows (split seed %llu) for held-out EV/MSE/L0\n",
               s->split.n_holdout, s->ds.n_rows, (unsigned long long)cfg->split_seed);
        fflush(stdout);
    }
    return HUSAI_OK;
}

/* Collective. results.h5 takes each condition as it completes (rank 0); creating it first also finds an
 * unwritable or full disk before any training. */
static husai_status open_results(sweep_run *s) {
    s->ctx = (husai_run_ctx){.cfg = &s->cfg,
                             .ds = &s->ds,
                             .reverse_order = s->args.reverse_order,
                             .comm = s->comm,
                             .ckpt_dir = s->ckpt_dir,
                             .split = &s->split,
                             .config_hash = s->config_hash,
                             .ckpt_every_seconds = s->cfg.checkpoint_seconds,
                             .gt_dict = s->gt_dict,
                             .gt_atoms = s->gt_atoms,
                             .keep_checkpoints = &s->keep_checkpoints};
    husai_status st = HUSAI_OK;
    if (s->rank == 0) {
        char path[4200];
        husai_rundir_path(&s->rd, "results.h5", path, sizeof path);
        const husai_run_info head = {.id = s->run_id,
                                     .version = HUSAI_VERSION,
                                     .commit = HUSAI_GIT_COMMIT,
                                     .cfg = &s->cfg,
                                     .fingerprint = s->ds.fingerprint};
        st = husai_results_h5_open(&s->ctx.sink, path, &head);
    }
    if ((st = husai_mpi_agree(st, s->comm))) husai_results_h5_abort(s->ctx.sink);
    return st;
}

/* Collective. Runs the protocol; a stop says how to continue. */
static husai_status run_protocol(sweep_run *s) {
    /* From here on checkpoints accumulate: a dying rank leaves the staging directory for --resume. */
    husai_mpi_on_die(NULL, NULL);
    const husai_status st = husai_protocol_run(&s->ctx, &s->out);
    if (st) husai_results_h5_abort(s->ctx.sink);
    if (st == HUSAI_STOPPED && s->rank == 0) {
        printf("[husai] stopped on request; continue with: husai sweep %s --resume %s\n", s->args.config_path,
               s->rd.final_path);
        fflush(stdout);
    }
    s->keep_on_fail = s->keep_checkpoints;
    s->stopped = st == HUSAI_STOPPED;
    return st;
}

/* Rank 0: echoes summary.md and where the run went. */
static void print_summary(const husai_rundir *rd, double t_begin) {
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.md", rd->final_path);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[1024];
        printf("\n");
        while (fgets(line, sizeof line, f))
            fputs(line, stdout);
        fclose(f);
    }
    printf("\n[husai] run directory: %s (%.1f s)\n", rd->final_path, MPI_Wtime() - t_begin);
    fflush(stdout);
}

/* Collective. Rank 0 writes the results and moves the run directory into place; everyone learns the
 * outcome so the exit status agrees. */
static husai_status write_results(sweep_run *s) {
    const husai_dataset *ds = &s->ds;
    if (ds->streaming) husai_dataset_stream_totals(&s->ds, s->comm);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
    HUSAI_MPI_CHECK(
        MPI_Reduce(s->rank == 0 ? MPI_IN_PLACE : &rss_mb, &rss_mb, 1, MPI_DOUBLE, MPI_MAX, 0, s->comm));
    if (s->rank == 0 && ds->streaming) {
        printf("[husai] streamed %.1f MB from the file (%.2f GB/s over %.2f s of chunk reads); peak RSS %.1f "
               "MB per "
               "rank\n",
               ds->bytes_read / 1e6, ds->read_seconds > 0 ? ds->bytes_read / ds->read_seconds / 1e9 : 0.0,
               ds->read_seconds, rss_mb);
        fflush(stdout);
    }
    husai_status st = HUSAI_OK;
    if (s->rank == 0) {
        husai_run_info info = {.id = s->run_id,
                               .version = HUSAI_VERSION,
                               .commit = HUSAI_GIT_COMMIT,
                               .command = s->command,
                               .hosts = s->hosts,
                               .n_hosts = s->n_hosts,
                               .ranks = s->size,
                               .threads = s->threads,
                               .seconds = MPI_Wtime() - s->t_begin,
                               .cfg = &s->cfg,
                               .dtype = ds->dtype,
                               .fingerprint = ds->fingerprint,
                               .n_rows = ds->n_rows,
                               .d_model = ds->d_model,
                               .holdout_rows = s->split.holdout,
                               .n_holdout = s->split.n_holdout,
                               .n_nodes = ds->n_nodes,
                               .nodes = ds->nodes,
                               .peak_rss_mb = rss_mb,
                               .chunk_rows = ds->streaming ? ds->chunks.chunk_rows : 0,
                               .n_chunks = ds->streaming ? ds->chunks.n_chunks : 0,
                               .bytes_read = ds->bytes_read,
                               .read_seconds = ds->read_seconds};
        const husai_protocol_output *out = &s->out;
        st = husai_results_write(&s->rd, &info, s->ctx.sink, out->res, out->n,
                                 out->has_proto ? &out->proto : NULL);
        /* results.h5 holds every parameter; the checkpoints (with Adam moments) are not kept. */
        if (!st) husai_rundir_remove(&s->rd, "checkpoints");
        if (!st) husai_rundir_remove(&s->rd, LOCK_FILE);
        if (!st) st = husai_rundir_commit(&s->rd, s->args.force);
        if (!st) print_summary(&s->rd, s->t_begin);
    }
    s->keep_on_fail = 1; /* training is done: its checkpoints let --resume write again */
    return husai_mpi_agree(st, s->comm);
}

/* The command, as a list of steps; each failure is agreed by every rank before it gets here, so all
 * ranks leave by the same path. */
static int sweep(int argc, char **argv, sweep_run *s) {
    s->comm = MPI_COMM_WORLD;
    MPI_Comm_rank(s->comm, &s->rank);
    MPI_Comm_size(s->comm, &s->size);
    s->t_begin = MPI_Wtime();
    husai_rundir_command_line(argc, argv, s->command, sizeof s->command);
    const int rc = parse_args(argc, argv, &s->args, s->rank);
    if (rc) {
        free(s->args.sets);
        return rc < 0 ? 0 : rc;
    }
    husai_status st;
    if ((st = load_config(s))) goto out;
    husai_stop_install();
    husai_stop_after_steps(s->args.stop_after);
    /* Threads per rank (HUSAI_THREADS, default 1) split each SAE's step, the encoder's sgemm included,
     * in ways that leave every seed's bits unchanged; OpenBLAS runs one thread inside each. */
    s->threads = 1;
    if ((st = husai_threads_setup(s->comm, &s->threads))) goto out;
    s->n_hosts = 1;
    gather_hosts(s->hosts, sizeof s->hosts, &s->n_hosts, s->comm);
    if (s->rank == 0) print_config(&s->cfg, s->size, s->hosts);
    if ((st = stage_rundir(s))) goto out;
    if ((st = open_data(s))) goto out;
    if ((st = open_results(s))) goto out;
    if ((st = run_protocol(s))) goto out;
    st = write_results(s);
out:
    husai_protocol_output_free(&s->out);
    free(s->gt_dict);
    husai_split_free(&s->split);
    if (s->have_ds) husai_dataset_free(&s->ds);
    if (s->stopped) return HUSAI_EXIT_STOPPED;
    husai_mpi_on_die(NULL, NULL);
    if (!st) return 0;
    if (s->keep_on_fail) keep_staging(&s->rd, s->ckpt_dir);
    return fail(s->rank, &s->rd);
}

int husai_cmd_sweep(int argc, char **argv) {
    /* Open before anything can stop, closed on every way out: a stop on any rank reaches all. */
    husai_stop_connect(MPI_COMM_WORLD);
    sweep_run *s = calloc(1, sizeof *s);
    if (!s) husai_mpi_die("out of memory");
    const int rc = sweep(argc, argv, s);
    free(s);
    if (g_lock_fd >= 0) close(g_lock_fd);
    husai_stop_disconnect();
    return rc;
}
