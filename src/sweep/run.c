/* run.c: the steps of one `husai sweep` run (run.h). Deterministic errors are agreed so all ranks exit
 * together, failures in training too (phase.c); a failure only one rank sees elsewhere ends that rank and
 * the launcher ends the rest (never a hang). */
#define _DEFAULT_SOURCE /* flock */
#include "sweep/run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/parse.h"
#include "metrics/groundtruth.h"
#include "metrics/pwmcc.h"
#include "mpi/mpicheck.h"
#include "report/results.h"
#include "sae/bf16.h"
#include "sae/checkpoint.h"

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
static int g_lock_fd = -1; /* held until husai_sweep_unlock */

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

/* Rank 0, after a failure that leaves work worth resuming: keeps the staging directory (discard would
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

/* Collective. Stages the run directory before training, so an unwritable output fails in seconds, not
 * hours; every rank learns the run id and the checkpoint directory. */
static husai_status stage_rundir(husai_sweep *s) {
    husai_status st = HUSAI_OK;
    if (s->resume) {
        snprintf(s->run_id, sizeof s->run_id, "%s", s->resume_id);
    } else if (s->run_id_arg) {
        if (!*s->run_id_arg || strchr(s->run_id_arg, '/') || s->run_id_arg[0] == '.')
            return husai_error(HUSAI_ERR_ARG, "--run-id '%s' must be a plain, non-hidden directory name",
                               s->run_id_arg);
        snprintf(s->run_id, sizeof s->run_id, "%s", s->run_id_arg);
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
        if (!st && s->resume) st = check_resume_target(s->resume, final, staging);
        if (!st) st = husai_rundir_begin(&s->rd, s->cfg.out_dir, s->run_id, s->force, s->resume != NULL);
        if (!st) st = lock_run(s->rd.staging_path, &g_lock_fd);
    }
    if ((st = husai_mpi_agree(st, s->comm))) return st;
    if (s->rank == 0) husai_mpi_on_die(abort_rundir, &s->rd);
    /* Every rank needs the staging path for its checkpoints; rank 0 made it. */
    if (s->rank == 0) snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s/checkpoints", s->rd.staging_path);
    HUSAI_MPI_CHECK(MPI_Bcast(s->ckpt_dir, (int)sizeof s->ckpt_dir, MPI_CHAR, 0, s->comm));
    /* Every rank writes its checkpoints and its parameters (results.h5) there: a rank on a node that does
     * not see rank 0's directory would fail later, alone, in a collective MPI-IO open; said now instead. */
    char staging[sizeof s->ckpt_dir];
    snprintf(staging, sizeof staging, "%s", s->ckpt_dir);
    char *slash = strrchr(staging, '/');
    if (slash) *slash = '\0';
    struct stat sb;
    husai_status seen = HUSAI_OK;
    if (stat(staging, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        seen = husai_error(HUSAI_ERR_IO,
                           "rank %d on %s cannot see the run directory '%s' that rank 0 made: [output] dir "
                           "must be on a file system every node sees",
                           s->rank, host, staging);
    }
    return husai_mpi_agree(seen, s->comm);
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
static husai_status make_split(husai_sweep *s) {
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
static husai_status open_data(husai_sweep *s) {
    const husai_config *cfg = &s->cfg;
    husai_status st = husai_dataset_open(&s->ds, cfg->data_path, cfg->dataset, cfg->memory_budget_mb * 1e6,
                                         (size_t)cfg->chunk_rows, cfg->split_seed, s->comm);
    if (st) return st;
    s->have_ds = 1;
    if (s->rank == 0) print_data(&s->ds, cfg);
    if (s->resume && (st = husai_mpi_agree(
                          s->rank == 0 ? check_resume_data(s->ckpt_dir, &s->ds, cfg) : HUSAI_OK, s->comm)))
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

/* bf16 must beat fp32's encode by this factor in the calibration: the rest of a step does not speed up,
 * and a near tie is not worth a path that differs from sgemm's rounding. */
#define BF16_MIN_GAIN 0.8

/* What oneDNN offers for bf16 here, for the log and results.json. A fp32 run never loads oneDNN's kernels
 * (nothing of it runs, e.g. under valgrind). */
static const char *bf16_isa_text(const husai_sweep *s) {
    if (s->cfg.precision == HUSAI_PRECISION_FP32) return "not probed (train.precision = fp32)";
    if (husai_bf16_dnnl_available()) return husai_bf16_isa(NULL);
    return s->precision == HUSAI_PRECISION_BF16 ? "emulated (no oneDNN bf16 matmul here)"
                                                : husai_bf16_isa(NULL);
}

/* Collective. Resolves train.precision: auto times fp32 against bf16 encodes on every rank at the sweep's
 * widest top-k shape and picks bf16 only if every rank found it faster (MPI_MIN of the verdicts), so every
 * seed trains on the same path wherever it runs. Logged on rank 0. */
static husai_status choose_precision(husai_sweep *s) {
    const husai_config *cfg = &s->cfg;
    s->precision = cfg->precision == HUSAI_PRECISION_BF16 ? HUSAI_PRECISION_BF16 : HUSAI_PRECISION_FP32;
    const char *why = cfg->precision == HUSAI_PRECISION_BF16 ? "as configured" : "train.precision = fp32";
    char reason[256];
    if (cfg->precision == HUSAI_PRECISION_AUTO) {
        husai_condition widest = {.d_sae = 0};
        for (int i = 0; i < cfg->n_values; i++) {
            const husai_condition c = husai_config_condition(cfg, i);
            if (cfg->aux_k == 0 && c.d_sae > widest.d_sae)
                widest = c; /* timed as topk: the product dominates */
        }
        int faster = 0;
        husai_status st = HUSAI_OK;
        if (widest.d_sae > 0) {
            const int rows = widest.batch_size < 1024 ? widest.batch_size : 1024;
            st = husai_bf16_calibrate(s->ds.d_model, widest.d_sae, widest.k, rows, &s->calib_fp32,
                                      &s->calib_bf16);
            faster = !st && s->calib_bf16 < BF16_MIN_GAIN * s->calib_fp32;
        }
        if ((st = husai_mpi_agree(st, s->comm))) return st;
        int all = faster;
        HUSAI_MPI_CHECK(MPI_Allreduce(&faster, &all, 1, MPI_INT, MPI_MIN, s->comm));
        s->precision = all ? HUSAI_PRECISION_BF16 : HUSAI_PRECISION_FP32;
        if (widest.d_sae == 0)
            snprintf(reason, sizeof reason, "auto: AuxK keeps every condition on fp32");
        else
            snprintf(reason, sizeof reason,
                     "auto: encode of %d x %d x %d on rank 0 takes %.4f s fp32, %.4f s bf16; %s",
                     widest.batch_size < 1024 ? widest.batch_size : 1024, s->ds.d_model, widest.d_sae,
                     s->calib_fp32, s->calib_bf16,
                     all ? "bf16 faster on every rank" : "bf16 not faster on every rank");
        why = reason;
    }
    husai_pwmcc_set_bf16(s->precision == HUSAI_PRECISION_BF16);
    husai_bf16_totals(&s->bf16_base[0], &s->bf16_base[1], &s->bf16_base[2]);
    if (s->rank == 0) {
        printf("[husai] precision: %s (%s; oneDNN: %s)\n", husai_precision_name(s->precision), why,
               bf16_isa_text(s));
        if (s->precision == HUSAI_PRECISION_BF16)
            printf(
                "[husai] bf16: every rule without AuxK trains on the fp32 rule's exact decisions from bf16 "
                "scores (top-k candidates, thresholds' boundaries rescored), and PWMCC takes certified exact "
                "maxima of bf16 |cos| blocks; the other metrics stay fp32\n");
        fflush(stdout);
    }
    return HUSAI_OK;
}

/* Collective. results.h5 takes each condition as it completes (rank 0); creating it first also finds an
 * unwritable or full disk before any training. */
static husai_status open_results(husai_sweep *s) {
    s->ctx = (husai_run_ctx){.cfg = &s->cfg,
                             .ds = &s->ds,
                             .reverse_order = s->reverse_order,
                             .comm = s->comm,
                             .ckpt_dir = s->ckpt_dir,
                             .split = &s->split,
                             .config_hash = s->config_hash,
                             .ckpt_every_seconds = s->cfg.checkpoint_seconds,
                             .gt_dict = s->gt_dict,
                             .gt_atoms = s->gt_atoms,
                             .keep_checkpoints = &s->keep_checkpoints,
                             .precision = s->precision};
    husai_status st = HUSAI_OK;
    if (s->rank == 0) {
        char path[4200];
        husai_rundir_path(&s->rd, "results.h5", path, sizeof path);
        const husai_run_info head = {.id = s->run_id,
                                     .version = s->version,
                                     .commit = s->commit,
                                     .cfg = &s->cfg,
                                     .fingerprint = s->ds.fingerprint,
                                     .model_name = s->ds.model_name,
                                     .hook_name = s->ds.hook_name};
        st = husai_results_h5_open(&s->ctx.sink, path, &head);
    }
    if ((st = husai_mpi_agree(st, s->comm))) husai_results_h5_abort(s->ctx.sink);
    return st;
}

/* Collective. Runs the protocol; a stop says how to continue. */
static husai_status run_protocol(husai_sweep *s) {
    /* From here on checkpoints accumulate: a dying rank leaves the staging directory for --resume. */
    husai_mpi_on_die(NULL, NULL);
    const husai_status st = husai_protocol_run(&s->ctx, &s->out);
    if (st) husai_results_h5_abort(s->ctx.sink);
    if (st == HUSAI_STOPPED && s->rank == 0) {
        printf("[husai] stopped on request; continue with: husai sweep %s --resume %s\n", s->config_path,
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
static husai_status write_results(husai_sweep *s) {
    const husai_dataset *ds = &s->ds;
    if (ds->streaming) husai_dataset_stream_totals(&s->ds, s->comm);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
    double *by_rank = s->rank == 0 ? malloc((size_t)s->size * sizeof(double)) : NULL;
    if (s->rank == 0 && !by_rank) husai_mpi_die("out of memory");
    HUSAI_MPI_CHECK(MPI_Gather(&rss_mb, 1, MPI_DOUBLE, by_rank, 1, MPI_DOUBLE, 0, s->comm));
    for (int r = 0; s->rank == 0 && r < s->size; r++)
        rss_mb = by_rank[r] > rss_mb ? by_rank[r] : rss_mb;
    if (s->rank == 0 && ds->streaming) {
        printf("[husai] streamed %.1f MB from the file (%.2f GB/s over %.2f s of chunk reads); peak RSS %.1f "
               "MB per "
               "rank\n",
               ds->bytes_read / 1e6, ds->read_seconds > 0 ? ds->bytes_read / ds->read_seconds / 1e9 : 0.0,
               ds->read_seconds, rss_mb);
        fflush(stdout);
    }
    int64_t now[3];
    husai_bf16_totals(&now[0], &now[1], &now[2]);
    double bf16[3] = {(double)(now[0] - s->bf16_base[0]), (double)(now[1] - s->bf16_base[1]),
                      (double)(now[2] - s->bf16_base[2])};
    HUSAI_MPI_CHECK(MPI_Reduce(s->rank == 0 ? MPI_IN_PLACE : bf16, bf16, 3, MPI_DOUBLE, MPI_SUM, 0, s->comm));
    if (s->rank == 0 && s->precision == HUSAI_PRECISION_BF16) {
        printf(
            "[husai] bf16: %.0f rows encoded, %.0f needed the second candidate set, %.0f (%.4f%%) were not "
            "certified and were rescored in full\n",
            bf16[0], bf16[1], bf16[2], bf16[0] > 0 ? 100.0 * bf16[2] / bf16[0] : 0.0);
        fflush(stdout);
    }
    husai_status st = HUSAI_OK;
    if (s->rank == 0) {
        husai_run_info info = {.id = s->run_id,
                               .version = s->version,
                               .commit = s->commit,
                               .command = s->command,
                               .hosts = s->hosts,
                               .n_hosts = s->n_hosts,
                               .ranks = s->size,
                               .threads = s->threads,
                               .seconds = MPI_Wtime() - s->t_begin,
                               .cfg = &s->cfg,
                               .dtype = ds->dtype,
                               .fingerprint = ds->fingerprint,
                               .model_name = ds->model_name,
                               .hook_name = ds->hook_name,
                               .n_rows = ds->n_rows,
                               .d_model = ds->d_model,
                               .holdout_rows = s->split.holdout,
                               .n_holdout = s->split.n_holdout,
                               .n_nodes = ds->n_nodes,
                               .nodes = ds->nodes,
                               .peak_rss_mb = rss_mb,
                               .peak_rss_by_rank = by_rank,
                               .chunk_rows = ds->streaming ? ds->chunks.chunk_rows : 0,
                               .n_chunks = ds->streaming ? ds->chunks.n_chunks : 0,
                               .bytes_read = ds->bytes_read,
                               .read_seconds = ds->read_seconds,
                               .precision = husai_precision_name(s->precision),
                               .bf16_isa = bf16_isa_text(s),
                               .calib_fp32 = s->calib_fp32,
                               .calib_bf16 = s->calib_bf16,
                               .bf16_rows = bf16[0],
                               .bf16_second = bf16[1],
                               .bf16_full = bf16[2]};
        const husai_protocol_output *out = &s->out;
        st = husai_results_write(&s->rd, &info, s->ctx.sink, out->res, out->n,
                                 out->has_proto ? &out->proto : NULL);
        free(by_rank);
        /* results.h5 holds every parameter; the checkpoints (with Adam moments) are not kept. */
        if (!st) husai_rundir_remove(&s->rd, "checkpoints");
        if (!st) husai_rundir_remove(&s->rd, LOCK_FILE);
        if (!st) st = husai_rundir_commit(&s->rd, s->force);
        if (!st) print_summary(&s->rd, s->t_begin);
    }
    s->keep_on_fail = 1; /* training is done: its checkpoints let --resume write again */
    return husai_mpi_agree(st, s->comm);
}

husai_status husai_sweep_run(husai_sweep *s) {
    husai_status st;
    if ((st = stage_rundir(s))) return st;
    if ((st = open_data(s))) return st;
    if ((st = choose_precision(s))) return st;
    if ((st = open_results(s))) return st;
    if ((st = run_protocol(s))) return st;
    return write_results(s);
}

void husai_sweep_release(husai_sweep *s) {
    husai_protocol_output_free(&s->out);
    free(s->gt_dict);
    s->gt_dict = NULL;
    husai_split_free(&s->split);
    if (s->have_ds) husai_dataset_free(&s->ds);
    s->have_ds = 0;
    husai_mpi_on_die(NULL, NULL); /* the staging directory is no longer this run's to remove on a death */
}

void husai_sweep_discard(husai_sweep *s) {
    if (s->keep_on_fail) keep_staging(&s->rd, s->ckpt_dir);
    if (s->rank == 0) husai_rundir_abort(&s->rd);
}

void husai_sweep_unlock(void) {
    if (g_lock_fd >= 0) close(g_lock_fd);
    g_lock_fd = -1;
}
