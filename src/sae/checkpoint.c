#define _POSIX_C_SOURCE 200809L
#include "sae/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char MAGIC[8] = {'H', 'U', 'S', 'A', 'I', 'C', 'K', 'P'};
static const char END[8] = {'H', 'U', 'S', 'A', 'I', 'E', 'N', 'D'};

/* Fixed-size header; every field is explicit-width so the layout is stable. */
typedef struct {
    char magic[8];
    uint32_t version, header_size;
    uint64_t config_hash;
    char task[96];
    char data_fp[HUSAI_FP_LEN];
    uint64_t seed;
    int32_t d_model, d_sae, k, epochs, batch_size, epoch;
    uint64_t n_rows, n_params, pos, n_state;
    int32_t arch, pad;
    int64_t steps, adam_t, epoch_batches;
    double epoch_loss_sum, last_epoch_loss, lr, lambda;
} ckpt_header;

/* The row count a checkpoint is tied to: the dataset's training rows, or for a streamed run (whose
 * current chunk changes) the largest chunk's, fixed for the run. */
static uint64_t rows_id(const husai_trainer *t) {
    return t->opts.max_rows > 0 ? t->opts.max_rows : t->n_rows;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int write_all(FILE *f, const void *p, size_t n, uint64_t *h) {
    *h = fnv1a(*h, p, n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

husai_status husai_checkpoint_save(const husai_trainer *t, const husai_ckpt_id *id, const char *path) {
    ckpt_header hd;
    memset(&hd, 0, sizeof hd);
    memcpy(hd.magic, MAGIC, 8);
    hd.version = HUSAI_CKPT_VERSION;
    hd.header_size = (uint32_t)sizeof hd;
    hd.config_hash = id->config_hash;
    snprintf(hd.task, sizeof hd.task, "%s", id->task);
    snprintf(hd.data_fp, sizeof hd.data_fp, "%s", id->data_fp);
    hd.seed = t->opts.seed;
    hd.d_model = t->d_model;
    hd.d_sae = t->opts.d_sae;
    hd.k = t->opts.k;
    hd.epochs = t->opts.epochs;
    hd.batch_size = t->opts.batch_size;
    hd.epoch = t->epoch;
    hd.n_rows = rows_id(t);
    hd.n_params = t->model.n_params;
    hd.pos = t->pos;
    hd.n_state = husai_trainer_state_len(t);
    hd.arch = (int32_t)t->opts.arch;
    hd.steps = t->steps;
    hd.adam_t = t->adam.t;
    hd.epoch_batches = t->epoch_batches;
    hd.epoch_loss_sum = t->epoch_loss_sum;
    hd.last_epoch_loss = t->last_epoch_loss;
    hd.lr = t->opts.lr;
    hd.lambda = t->opts.lambda;

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot write checkpoint '%s': %s", tmp, strerror(errno));
    uint64_t h = 0xcbf29ce484222325ULL;
    const size_t bytes = t->model.n_params * sizeof(float);
    double *state = malloc(hd.n_state * sizeof(double));
    if (!state) {
        fclose(f);
        unlink(tmp);
        return husai_error(HUSAI_ERR_NOMEM, "cannot allocate checkpoint state");
    }
    husai_trainer_state_get(t, state);
    int bad = write_all(f, &hd, sizeof hd, &h);
    bad |= write_all(f, t->model.params, bytes, &h);
    bad |= write_all(f, t->adam.m, bytes, &h);
    bad |= write_all(f, t->adam.v, bytes, &h);
    bad |= write_all(f, state, hd.n_state * sizeof(double), &h);
    free(state);
    bad |= fwrite(&h, sizeof h, 1, f) != 1;
    bad |= fwrite(END, 1, 8, f) != 8;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return husai_error(HUSAI_ERR_IO, "writing checkpoint '%s' failed (disk full?)", path);
    }
    return HUSAI_OK;
}

static int read_all(FILE *f, void *p, size_t n, uint64_t *h) {
    if (fread(p, 1, n, f) != n) return -1;
    *h = fnv1a(*h, p, n);
    return 0;
}

husai_status husai_checkpoint_load(husai_trainer *t, const husai_ckpt_id *id, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    ckpt_header hd;
    uint64_t h = 0xcbf29ce484222325ULL;
    husai_status st = HUSAI_OK;
    if (read_all(f, &hd, sizeof hd, &h) || memcmp(hd.magic, MAGIC, 8)) {
        st = husai_error(HUSAI_ERR_DATA, "checkpoint '%s' is not a husai checkpoint (or is truncated)", path);
        goto out;
    }
    if (hd.version != HUSAI_CKPT_VERSION || hd.header_size != sizeof hd) {
        st = husai_error(HUSAI_ERR_DATA, "checkpoint '%s' has format version %u; this husai reads version %d",
                         path, hd.version, HUSAI_CKPT_VERSION);
        goto out;
    }
    if (hd.config_hash != id->config_hash) {
        st = husai_error(HUSAI_ERR_DATA,
                         "checkpoint '%s' belongs to another configuration (hash %016llx, expected %016llx)",
                         path, (unsigned long long)hd.config_hash, (unsigned long long)id->config_hash);
        goto out;
    }
    hd.data_fp[sizeof hd.data_fp - 1] = '\0';
    if (strcmp(hd.data_fp, id->data_fp)) {
        st = husai_error(HUSAI_ERR_DATA,
                         "checkpoint '%s' was trained on data with fingerprint %s, but the data now has %s",
                         path, hd.data_fp, id->data_fp);
        goto out;
    }
    hd.task[sizeof hd.task - 1] = '\0';
    if (strcmp(hd.task, id->task) || hd.seed != t->opts.seed) {
        st = husai_error(HUSAI_ERR_DATA, "checkpoint '%s' is for task '%s', expected '%s'", path, hd.task,
                         id->task);
        goto out;
    }
    if (hd.d_model != t->d_model || hd.d_sae != t->opts.d_sae || hd.k != t->opts.k ||
        hd.epochs != t->opts.epochs || hd.batch_size != t->opts.batch_size || hd.n_rows != rows_id(t) ||
        hd.n_params != t->model.n_params || hd.n_state != husai_trainer_state_len(t) ||
        hd.arch != (int32_t)t->opts.arch || hd.lr != t->opts.lr || hd.lambda != t->opts.lambda ||
        hd.epoch < 0 || hd.epoch > hd.epochs || hd.pos > hd.n_rows) {
        st = husai_error(HUSAI_ERR_DATA,
                         "checkpoint '%s' does not match this task's shapes, data or settings", path);
        goto out;
    }
    const size_t bytes = t->model.n_params * sizeof(float);
    uint64_t stored;
    char end[8];
    double *state = malloc(hd.n_state * sizeof(double));
    if (!state) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate checkpoint state");
        goto out;
    }
    if (read_all(f, t->model.params, bytes, &h) || read_all(f, t->adam.m, bytes, &h) ||
        read_all(f, t->adam.v, bytes, &h) || read_all(f, state, hd.n_state * sizeof(double), &h) ||
        fread(&stored, sizeof stored, 1, f) != 1 || fread(end, 1, 8, f) != 8 || memcmp(end, END, 8)) {
        free(state);
        st = husai_error(HUSAI_ERR_DATA, "checkpoint '%s' is truncated", path);
        goto out;
    }
    if (stored != h) {
        free(state);
        st = husai_error(HUSAI_ERR_DATA, "checkpoint '%s' is corrupt (checksum mismatch)", path);
        goto out;
    }
    husai_trainer_state_set(t, state);
    free(state);
    t->epoch = hd.epoch;
    t->steps = hd.steps;
    t->adam.t = hd.adam_t;
    t->last_epoch_loss = hd.last_epoch_loss;
    if (t->epoch < t->opts.epochs) {
        /* Re-derive the epoch's order, then restore where in it we were. */
        husai_trainer_restart_epoch(t);
        t->pos = hd.pos;
        t->epoch_loss_sum = hd.epoch_loss_sum;
        t->epoch_batches = hd.epoch_batches;
    }
out:
    fclose(f);
    return st;
}

/* Reads a checkpoint's header alone, refusing another magic, version or header size. */
static husai_status peek_header(const char *path, ckpt_header *hd) {
    FILE *f = fopen(path, "rb");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    const int ok = fread(hd, sizeof *hd, 1, f) == 1 && !memcmp(hd->magic, MAGIC, 8) &&
                   hd->version == HUSAI_CKPT_VERSION && hd->header_size == sizeof *hd;
    fclose(f);
    if (!ok) return husai_error(HUSAI_ERR_DATA, "checkpoint '%s' has no readable header", path);
    return HUSAI_OK;
}

husai_status husai_checkpoint_peek_epoch(const char *path, int *epoch) {
    ckpt_header hd;
    const husai_status st = peek_header(path, &hd);
    if (!st) *epoch = hd.epoch;
    return st;
}

husai_status husai_checkpoint_peek_data(const char *path, char fp[HUSAI_FP_LEN]) {
    ckpt_header hd;
    const husai_status st = peek_header(path, &hd);
    if (!st) snprintf(fp, HUSAI_FP_LEN, "%.*s", HUSAI_FP_LEN - 1, hd.data_fp);
    return st;
}
