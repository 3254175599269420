#define _POSIX_C_SOURCE 200809L
#include "report/results.h"
#include "report/h5attr.h"
#include "report/html.h"
#include "report/svg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics/groundtruth.h"
#include "metrics/recon.h"
#include "sae/bf16.h"
#include "sae/model.h"

/* Writes n bytes to path, checking every step, so a full disk is an error and not a short file. */
static husai_status write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    int bad = fwrite(data, 1, n, f) != n;
    bad |= fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad) return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", path);
    return HUSAI_OK;
}

/* ---------- results.h5 ---------- */

/* results.h5 explains itself to h5py, h5dump or netCDF tools: every axis of every dataset is labelled
 * and (but holdout_row) has an HDF5 dimension scale, a dataset in the same group whose values name the
 * axis's positions; every dataset has a description and, where it has one, its units. */
typedef struct {
    const char *axis, *scale; /* the label, and the scale dataset's name */
} axis_scale;
static const axis_scale AXES[] = {
    {"seed", "seeds"}, {"d_model", "d_model"}, {"d_sae", "d_sae"}, {"model", "model"}};

typedef struct {
    const char *name;
    const char *axes[3]; /* one label per dimension */
    const char *units;   /* NULL: none */
    const char *description;
} ds_doc;

static const ds_doc DOCS[] = {
    {"decoders",
     {"seed", "d_model", "d_sae"},
     NULL,
     "decoder weights; decoders[s][:, j] is seed s's feature j"},
    {"encoders", {"seed", "d_sae", "d_model"}, NULL, "encoder weights; encoders[s][j] reads feature j"},
    {"b_enc", {"seed", "d_sae"}, NULL, "encoder bias"},
    {"b_dec", {"seed", "d_model"}, NULL, "decoder bias (zeros without a decoder bias)"},
    {"thresholds", {"seed", "d_sae"}, NULL, "jumprelu theta, batchtopk's inference threshold, else 0"},
    {"density", {"seed", "d_sae"}, "1", "share of training rows on which the latent's code is non-zero"},
    {"seeds", {"seed"}, NULL, "the seed of each model (dimension scale of the seed axis)"},
    {"d_model", {"d_model"}, NULL, "position along the input (residual) dimension (dimension scale)"},
    {"d_sae", {"d_sae"}, NULL, "latent (feature) index (dimension scale)"},
    {"model", {"model"}, NULL, "0..S-1: the seeds in the order of seeds; S: the reference (dimension scale)"},
    {"pwmcc", {"seed", "seed"}, "1", "PWMCC of the decoders of seeds a and b (1 on the diagonal)"},
    {"random_pwmcc", {"seed", "seed"}, "1", "PWMCC of Gaussian decoders of the same shape and seeds"},
    {"matched_cosine", {"seed", "seed"}, "1", "mean |cos| of features matched one-to-one (Hungarian)"},
    {"matched_fraction", {"seed", "seed"}, "1", "share of features whose one-to-one match has |cos| >= 0.7"},
    {"pwmcc_with_reference", {"model", "model"}, "1", "PWMCC over the seeds and the reference (last)"},
    {"explained_variance", {"seed"}, "1", "1 - var(X - X_hat) / var(X) on the training rows"},
    {"mse", {"seed"}, "activation^2", "mean squared reconstruction error on the training rows"},
    {"l0", {"seed"}, "latents per row", "mean number of non-zero latents per training row"},
    {"dead_fraction", {"seed"}, "1", "share of latents that never fire on the training rows"},
    {"steps", {"seed"}, "optimizer steps", "optimizer steps taken"},
    {"seconds", {"seed"}, "s", "wall-clock training time"},
    {"rank", {"seed"}, NULL, "MPI rank that trained the seed"},
    {"last_epoch_loss", {"seed"}, NULL, "mean training loss of the last epoch"},
    {"alignment_to_reference", {"seed"}, "1", "mean over features of the best |cos| with the reference's"},
    {"heldout_explained_variance", {"seed"}, "1", "explained variance on the held-out rows"},
    {"heldout_mse", {"seed"}, "activation^2", "mean squared reconstruction error on the held-out rows"},
    {"heldout_l0", {"seed"}, "latents per row", "mean number of non-zero latents per held-out row"},
    {"heldout_dead_fraction", {"seed"}, "1", "share of latents that never fire on the held-out rows"},
    {"gt_mean_max_cos", {"seed"}, "1", "mean over true atoms of the best |cos| with a decoder feature"},
    {"gt_recovered", {"seed"}, "1", "share of true atoms whose best |cos| is >= 0.9"},
    {"holdout_rows", {"holdout_row"}, NULL, "data rows never trained on (0-based)"},
    {"decoder", {"d_model", "d_sae"}, NULL, "the reference SAE's decoder; column j is its feature j"},
    {"features/best_cos",
     {"seed", "seed", "d_sae"},
     "1",
     "[s][t][i]: best |cos| of feature i of seed s among seed t's features (1 on the diagonal s = t)"},
    {"features/best_index",
     {"seed", "seed", "d_sae"},
     NULL,
     "[s][t][i]: the feature of seed t attaining best_cos (the smallest index among ties; i when s = t)"},
    {"features/stability",
     {"seed", "d_sae"},
     "1",
     "share of the other seeds whose best match has |cos| >= tau"},
    {"features/mean_best_cos", {"seed", "d_sae"}, "1", "mean over the other seeds of the best |cos|"},
    {"features/cluster", {"seed", "d_sae"}, NULL, "row of consensus holding the feature, -1 for none"},
    {"features/consensus",
     {"consensus", "d_model"},
     NULL,
     "consensus feature directions: unit mean of the members' sign-aligned unit decoder columns"},
    {"features/consensus_members",
     {"consensus", "seed"},
     NULL,
     "the member feature of each seed, -1 for none"},
    {"features/coherence", {"consensus"}, "1", "mean pairwise |cos| of the members"},
    {"features/density", {"consensus"}, "1", "mean firing density of the members"},
};

static const ds_doc *doc_of(const char *name) {
    for (size_t i = 0; i < sizeof DOCS / sizeof *DOCS; i++)
        if (!strcmp(DOCS[i].name, name)) return &DOCS[i];
    return NULL;
}

/* Labels dataset ds (named name, in loc) and its axes from DOCS, and attaches the scales loc holds; a
 * scale dataset becomes the scale of its axis instead. Negative for a dataset DOCS does not describe. */
static herr_t describe(hid_t loc, hid_t ds, const char *name, int rank) {
    const ds_doc *d = doc_of(name);
    if (!d) return -1;
    herr_t rc = husai_h5_attr_write_str(ds, "description", d->description);
    if (d->units) rc |= husai_h5_attr_write_str(ds, "units", d->units);
    for (int i = 0; i < rank && rc >= 0; i++) {
        const char *axis = d->axes[i], *scale = NULL;
        for (size_t a = 0; a < sizeof AXES / sizeof *AXES; a++)
            if (!strcmp(AXES[a].axis, axis)) scale = AXES[a].scale;
        if (scale && !strcmp(scale, name)) {
            rc |= H5DSset_scale(ds, axis);
        } else if (scale && H5Lexists(loc, scale, H5P_DEFAULT) > 0) {
            hid_t s = H5Dopen2(loc, scale, H5P_DEFAULT);
            rc |= s < 0 ? -1 : H5DSattach_scale(ds, s, (unsigned)i);
            if (s >= 0) H5Dclose(s);
        }
        rc |= H5DSset_label(ds, (unsigned)i, axis);
    }
    return rc;
}

/* Writes dataset name into loc, described by DOCS entry doc with the axis scales held in group scales:
 * stored as file type ftype, from data of memory type mtype (HDF5 converts, e.g. per-seed step counts
 * held as doubles to integers). */
static herr_t write_ds_in(hid_t loc, hid_t scales, const char *name, const char *doc, hid_t ftype,
                          hid_t mtype, int rank, const hsize_t *dims, const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (rc >= 0) rc = describe(scales, ds, doc, rank);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc;
}

/* Writes and describes dataset name of loc (its DOCS entry and scales are loc's own). */
static herr_t write_ds_as(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                          const hsize_t *dims, const void *data) {
    return write_ds_in(loc, loc, name, name, ftype, mtype, rank, dims, data);
}

static herr_t write_ds(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data) {
    return write_ds_as(loc, name, type, type, rank, dims, data);
}

/* The scale of an axis of n positions named by their index: 0 .. n-1. */
static herr_t write_index_scale(hid_t loc, const char *name, int n) {
    int *idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return -1;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    const hsize_t dims[1] = {(hsize_t)n};
    herr_t rc = write_ds_as(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, 1, dims, idx);
    free(idx);
    return rc;
}

/* A one-dimensional attribute of variable-length UTF-8 strings (h5py reads a list of str). */
static herr_t write_str_list_attr(hid_t loc, const char *name, const char *const *values, size_t n) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    const hsize_t dims[1] = {(hsize_t)n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, values);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return rc;
}

/* results.h5 is written on disk as the run goes, one condition at a time, so rank 0 holds one
 * condition's parameters, not the whole sweep's. HDF5 1.10 crashes (at exit, or at MPI_Finalize)
 * when a file's close fails, as it does on a full disk; so before HDF5 writes anything, the bytes it
 * will need are reserved with posix_fallocate, and a full disk or file-size limit fails there, as a
 * checked error, with the file still closable. */
struct husai_results_h5 {
    char path[4200]; /* the final name */
    char tmp[4300];  /* written as path + ".partial", renamed when complete */
    int fd;          /* the same file, for reservations */
    hid_t file, conds;
    hid_t gcpl;       /* groups list their members in creation order: conditions come back in sweep order */
    int n_groups;     /* condition groups created so far: the next one's index */
    off_t reserved;   /* bytes reserved so far */
    husai_status err; /* the first failure: later writes are skipped, finish reports it */
};

/* Metadata allowance per reservation (object headers, group indexes, attributes, dimension-scale
 * references): measured ~24 KiB per condition (a k sweep with held-out rows); 256 KiB leaves room. */
#define RESERVE_SLACK ((off_t)256 << 10)

/* Makes sure the file has room for `bytes` more beyond what HDF5 has allocated so far. */
static husai_status reserve(husai_results_h5 *h, size_t bytes) {
    haddr_t eoa = 0;
    if (H5Fget_eoa(h->file, &eoa) < 0) return husai_error(HUSAI_ERR_IO, "cannot query '%s'", h->path);
    const off_t want = (off_t)eoa + (off_t)bytes + RESERVE_SLACK;
    if (want <= h->reserved) return HUSAI_OK;
    const int e = posix_fallocate(h->fd, h->reserved, want - h->reserved);
    if (e)
        return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full? %s; it needs %.1f MB)", h->path,
                           strerror(e), (double)want / 1e6);
    h->reserved = want;
    return HUSAI_OK;
}

static herr_t innermost_error(unsigned n, const H5E_error2_t *e, void *buf) {
    if (n == 0) snprintf(buf, 512, "%s", e->desc ? e->desc : "");
    return 0;
}

/* Why the HDF5 call that just failed failed, from the innermost entry of its error stack (the system's
 * reason when there is one, e.g. "unable to lock file, errno = 11, ..."). */
static const char *h5_reason(char buf[512]) {
    snprintf(buf, 512, "unknown reason");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, buf);
    return buf;
}

husai_status husai_results_h5_open(husai_results_h5 **out, const char *path, const husai_run_info *run) {
    *out = NULL;
    husai_results_h5 *h = calloc(1, sizeof *h);
    if (!h) return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    snprintf(h->path, sizeof h->path, "%s", path);
    snprintf(h->tmp, sizeof h->tmp, "%s.partial", path);
    h->fd = -1;
    h->conds = h->gcpl = H5I_INVALID_HID;
    /* No HDF5 file lock: the ranks write their parameters into this file through MPI-IO while rank 0 holds
     * it open (husai_results_h5_params), and on NFS HDF5's lock is a whole-file fcntl lock that MPI-IO's
     * range locks would wait on forever. The run's own lock (sweep/run.c) keeps other runs out. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
    h->file = H5Fcreate(h->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0) H5Pclose(fapl);
    if (h->file < 0) {
        free(h);
        char why[512];
        return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, h5_reason(why));
    }
    h->fd = open(h->tmp, O_WRONLY);
    char *cfg = husai_config_text(run->cfg);
    husai_status st = h->fd < 0 ? husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", path, strerror(errno))
                                : reserve(h, cfg ? strlen(cfg) : 0);
    herr_t rc = 0;
    if (!st) {
        rc |= husai_h5_attr_write_str(h->file, "run_id", run->id);
        rc |= husai_h5_attr_write_str(h->file, "version", run->version);
        rc |= husai_h5_attr_write_str(h->file, "git_commit", run->commit);
        rc |= husai_h5_attr_write_str(h->file, "config", cfg ? cfg : "");
        if (run->fingerprint) rc |= husai_h5_attr_write_str(h->file, "data_fingerprint", run->fingerprint);
        if (run->model_name && *run->model_name)
            rc |= husai_h5_attr_write_str(h->file, "data_model_name", run->model_name);
        if (run->hook_name && *run->hook_name)
            rc |= husai_h5_attr_write_str(h->file, "data_hook_name", run->hook_name);
        rc |= husai_h5_attr_write_str(h->file, "decoder_layout",
                                      "decoders[s] is [d_model, d_sae]; column j is feature j");
        h->gcpl = H5Pcreate(H5P_GROUP_CREATE);
        if (h->gcpl < 0 ||
            H5Pset_link_creation_order(h->gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0)
            rc = -1;
        h->conds = H5Gcreate2(h->file, "conditions", H5P_DEFAULT, h->gcpl, H5P_DEFAULT);
        if (rc < 0 || h->conds < 0) st = husai_error(HUSAI_ERR_IO, "writing '%s' failed", path);
    }
    free(cfg);
    h->err = st;
    *out = h;
    return st;
}

/* The bytes of a condition's dimension scales (seeds, d_model, d_sae, model). */
static size_t scale_bytes(const husai_condition_result *c) {
    return (size_t)c->S * sizeof(uint64_t) +
           ((size_t)c->d_model + (size_t)c->d_sae + (size_t)c->S + 1) * sizeof(int);
}

/* The bytes of a condition's datasets. */
static size_t condition_bytes(const husai_condition_result *c) {
    const size_t S = (size_t)c->S, dd = (size_t)c->d_model * c->d_sae;
    const husai_features *f = c->features;
    const size_t feat = f && f->best_cos ? (2 * S * S + 4 * S) * (size_t)c->d_sae * sizeof(float) +
                                               (size_t)f->n_consensus * (c->d_model + S + 3) * sizeof(float)
                                         : 0;
    const size_t params = c->params_written ? 0 : 2 * dd + 2 * (size_t)c->d_sae + (size_t)c->d_model;
    return S * (params + (size_t)c->d_sae) * sizeof(float) + (S + 1) * (S + 1) * 5 * sizeof(double) +
           S * 24 * sizeof(double) + scale_bytes(c) + feat;
}

/* Writes dataset features/<leaf> into the features group fg, described with the condition group cond's
 * axis scales. */
static herr_t write_feature_ds(hid_t cond, hid_t fg, const char *leaf, hid_t type, int rank,
                               const hsize_t *dims, const void *data) {
    char doc[64];
    snprintf(doc, sizeof doc, "features/%s", leaf);
    return write_ds_in(fg, cond, leaf, doc, type, type, rank, dims, data);
}

/* /conditions/<name>/features: the per-feature stability arrays and the consensus features. */
static herr_t write_features(hid_t cond, const husai_condition_result *c) {
    const husai_features *f = c->features;
    hid_t g = H5Gcreate2(cond, "features", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    const hsize_t S = (hsize_t)c->S, ds = (hsize_t)c->d_sae, n = (hsize_t)f->n_consensus;
    const hsize_t d_b[3] = {S, S, ds}, d_s[2] = {S, ds}, d_c[2] = {n, (hsize_t)c->d_model}, d_m[2] = {n, S},
                  d_n[1] = {n};
    herr_t rc = write_feature_ds(cond, g, "best_cos", H5T_NATIVE_FLOAT, 3, d_b, f->best_cos);
    rc |= write_feature_ds(cond, g, "best_index", H5T_NATIVE_INT32, 3, d_b, f->best_index);
    rc |= write_feature_ds(cond, g, "stability", H5T_NATIVE_FLOAT, 2, d_s, f->stability);
    rc |= write_feature_ds(cond, g, "mean_best_cos", H5T_NATIVE_FLOAT, 2, d_s, f->mean_best);
    rc |= write_feature_ds(cond, g, "cluster", H5T_NATIVE_INT32, 2, d_s, f->cluster);
    rc |= write_feature_ds(cond, g, "consensus", H5T_NATIVE_FLOAT, 2, d_c, f->consensus);
    rc |= write_feature_ds(cond, g, "consensus_members", H5T_NATIVE_INT32, 2, d_m, f->members);
    rc |= write_feature_ds(cond, g, "coherence", H5T_NATIVE_FLOAT, 1, d_n, f->coherence);
    rc |= write_feature_ds(cond, g, "density", H5T_NATIVE_FLOAT, 1, d_n, f->density);
    rc |= husai_h5_attr_write(g, "tau", H5T_NATIVE_DOUBLE, &f->tau);
    rc |= husai_h5_attr_write(g, "min_seeds", H5T_NATIVE_INT, &f->min_seeds);
    rc |= husai_h5_attr_write(g, "n_mutual", H5T_NATIVE_INT, &f->n_mutual);
    if (c->has_gt) {
        rc |= husai_h5_attr_write(g, "gt_recovered_by_consensus", H5T_NATIVE_DOUBLE,
                                  &c->gt_consensus_recovered);
        rc |= husai_h5_attr_write(g, "gt_consensus_precision", H5T_NATIVE_DOUBLE, &c->gt_consensus_precision);
    }
    rc |= husai_h5_attr_write_str(g, "description",
                                  "per-feature stability and consensus features (README: Which features are "
                                  "reproducible): clusters of mutual best matches with |cos| >= tau, one "
                                  "feature per seed, found in at least min_seeds seeds");
    H5Gclose(g);
    return rc;
}

/* Creates group name under h's /conditions, and its missing parents (protocol names nest:
 * conditions/search/k=4), all listing their members in creation order. */
static hid_t create_ordered_group(const husai_results_h5 *h, const char *name) {
    char path[sizeof((husai_condition_result *)NULL)->name];
    snprintf(path, sizeof path, "%s", name);
    for (char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (H5Lexists(h->conds, path, H5P_DEFAULT) <= 0) {
            hid_t g = H5Gcreate2(h->conds, path, H5P_DEFAULT, h->gcpl, H5P_DEFAULT);
            if (g < 0) return H5I_INVALID_HID;
            H5Gclose(g);
        }
        *p = '/';
    }
    return H5Gcreate2(h->conds, name, H5P_DEFAULT, h->gcpl, H5P_DEFAULT);
}

/* Condition c's group: opened when its parameters went ahead, else created with its position in the sweep
 * and the scales of its axes (seed, d_model, d_sae), which every dataset written into it then attaches. */
static hid_t condition_group(husai_results_h5 *h, const husai_condition_result *c) {
    if (c->params_written) return H5Gopen2(h->conds, c->name, H5P_DEFAULT);
    hid_t g = create_ordered_group(h, c->name);
    if (g < 0) return g;
    const hsize_t d_s[1] = {(hsize_t)c->S};
    herr_t rc = husai_h5_attr_write(g, "index", H5T_NATIVE_INT, &h->n_groups);
    rc |= write_ds(g, "seeds", H5T_NATIVE_UINT64, 1, d_s, c->seeds);
    rc |= write_index_scale(g, "d_model", c->d_model);
    rc |= write_index_scale(g, "d_sae", c->d_sae);
    h->n_groups++;
    if (rc < 0) {
        H5Gclose(g);
        return H5I_INVALID_HID;
    }
    return g;
}

/* Which conditions have an optional metric (results.h5's per-seed columns, conditions.csv's columns). */
typedef enum { ALWAYS, IF_REF, IF_HOLDOUT, IF_GT, IF_MATCH } metric_when;

static int has_metric(const husai_condition_result *c, metric_when when) {
    const int has[] = {[ALWAYS] = 1,
                       [IF_REF] = c->has_ref,
                       [IF_HOLDOUT] = c->has_holdout,
                       [IF_GT] = c->has_gt,
                       [IF_MATCH] = c->has_match};
    return has[when];
}

/* The per-seed columns of a condition group, from husai_seed_metrics (all doubles there, for one MPI
 * type); the counts among them are stored as integers. */
static const struct {
    const char *name;
    size_t offset;
    int int_bits; /* 32 or 64: a count, stored as that signed integer; 0: a double */
    metric_when when;
} SEED_COLS[] = {
    {"explained_variance", offsetof(husai_seed_metrics, ev), 0, ALWAYS},
    {"mse", offsetof(husai_seed_metrics, mse), 0, ALWAYS},
    {"l0", offsetof(husai_seed_metrics, l0), 0, ALWAYS},
    {"dead_fraction", offsetof(husai_seed_metrics, dead_fraction), 0, ALWAYS},
    {"steps", offsetof(husai_seed_metrics, steps), 64, ALWAYS},
    {"seconds", offsetof(husai_seed_metrics, seconds), 0, ALWAYS},
    {"rank", offsetof(husai_seed_metrics, rank), 32, ALWAYS},
    {"last_epoch_loss", offsetof(husai_seed_metrics, last_epoch_loss), 0, ALWAYS},
    {"alignment_to_reference", offsetof(husai_seed_metrics, alignment), 0, IF_REF},
    {"heldout_explained_variance", offsetof(husai_seed_metrics, ho_ev), 0, IF_HOLDOUT},
    {"heldout_mse", offsetof(husai_seed_metrics, ho_mse), 0, IF_HOLDOUT},
    {"heldout_l0", offsetof(husai_seed_metrics, ho_l0), 0, IF_HOLDOUT},
    {"heldout_dead_fraction", offsetof(husai_seed_metrics, ho_dead), 0, IF_HOLDOUT},
    {"gt_mean_max_cos", offsetof(husai_seed_metrics, gt_mean_max_cos), 0, IF_GT},
    {"gt_recovered", offsetof(husai_seed_metrics, gt_recovered), 0, IF_GT},
};

static herr_t write_seed_columns(hid_t g, const husai_condition_result *c) {
    double *col = malloc((size_t)c->S * sizeof(double));
    if (!col) return -1;
    const hsize_t d_s[1] = {(hsize_t)c->S};
    herr_t rc = 0;
    for (size_t m = 0; m < sizeof SEED_COLS / sizeof *SEED_COLS; m++) {
        if (!has_metric(c, SEED_COLS[m].when)) continue;
        for (int s = 0; s < c->S; s++)
            memcpy(&col[s], (const char *)&c->per_seed[s] + SEED_COLS[m].offset, sizeof(double));
        const int bits = SEED_COLS[m].int_bits;
        const hid_t ftype = bits == 64 ? H5T_STD_I64LE : bits == 32 ? H5T_STD_I32LE : H5T_NATIVE_DOUBLE;
        rc |= write_ds_as(g, SEED_COLS[m].name, ftype, H5T_NATIVE_DOUBLE, 1, d_s, col);
    }
    free(col);
    return rc;
}

static herr_t write_condition(husai_results_h5 *h, const husai_condition_result *c) {
    hid_t g = condition_group(h, c);
    if (g < 0) return -1;
    herr_t rc = 0;
    const hsize_t S = (hsize_t)c->S, dm = (hsize_t)c->d_model, ds = (hsize_t)c->d_sae;
    const hsize_t d_dec[3] = {S, dm, ds}, d_enc[3] = {S, ds, dm}, d_b[2] = {S, ds}, d_m[2] = {S, S};
    if (!c->params_written) {
        const hsize_t d_bd[2] = {S, dm};
        rc |= write_ds(g, "encoders", H5T_NATIVE_FLOAT, 3, d_enc, c->encoders);
        rc |= write_ds(g, "decoders", H5T_NATIVE_FLOAT, 3, d_dec, c->decoders);
        rc |= write_ds(g, "b_enc", H5T_NATIVE_FLOAT, 2, d_b, c->b_enc);
        if (c->b_dec) rc |= write_ds(g, "b_dec", H5T_NATIVE_FLOAT, 2, d_bd, c->b_dec);
        if (c->thresholds) rc |= write_ds(g, "thresholds", H5T_NATIVE_FLOAT, 2, d_b, c->thresholds);
    }
    rc |= write_ds(g, "pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->pwmcc);
    rc |= write_ds(g, "random_pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->random_pwmcc);
    rc |= write_seed_columns(g, c);
    rc |= husai_h5_attr_write_str(g, "param", c->param);
    rc |= husai_h5_attr_write(g, "value", H5T_NATIVE_DOUBLE, &c->value);
    rc |= husai_h5_attr_write_str(g, "phase", c->phase ? c->phase : "");
    rc |= husai_h5_attr_write(g, "k", H5T_NATIVE_INT, &c->k);
    rc |= husai_h5_attr_write_str(g, "arch", husai_arch_name(c->arch));
    rc |= husai_h5_attr_write(g, "d_sae", H5T_NATIVE_INT, &c->d_sae);
    rc |= husai_h5_attr_write(g, "d_model", H5T_NATIVE_INT, &c->d_model);
    rc |= husai_h5_attr_write(g, "epochs", H5T_NATIVE_INT, &c->epochs);
    rc |= husai_h5_attr_write(g, "batch_size", H5T_NATIVE_INT, &c->batch_size);
    rc |= husai_h5_attr_write(g, "lr", H5T_NATIVE_DOUBLE, &c->lr);
    if (c->has_match) {
        rc |= write_ds(g, "matched_cosine", H5T_NATIVE_DOUBLE, 2, d_m, c->match_cos);
        rc |= write_ds(g, "matched_fraction", H5T_NATIVE_DOUBLE, 2, d_m, c->match_frac);
    }
    if (c->density) rc |= write_ds(g, "density", H5T_NATIVE_FLOAT, 2, d_b, c->density);
    if (c->features && c->features->best_cos) rc |= write_features(g, c);
    if (c->has_ref) {
        const hsize_t d_r[2] = {S + 1, S + 1};
        rc |= write_index_scale(g, "model", c->S + 1);
        rc |= write_ds(g, "pwmcc_with_reference", H5T_NATIVE_DOUBLE, 2, d_r, c->pwmcc_with_ref);
        rc |= husai_h5_attr_write(g, "lambda", H5T_NATIVE_DOUBLE, &c->lambda);
    }
    H5Gclose(g);
    return rc;
}

/* Creates parameter dataset name of g (file layout float32, contiguous, its space allocated now and never
 * filled, as the owners' writes fill it), described like every other, and its offset in the file. */
static herr_t create_param(hid_t g, const char *name, int rank, const hsize_t *dims, uint64_t *offset) {
    hid_t space = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t rc = space < 0 || dcpl < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
                        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0
                    ? -1
                    : 0;
    hid_t ds = rc < 0 ? H5I_INVALID_HID
                      : H5Dcreate2(g, name, H5T_NATIVE_FLOAT, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    const haddr_t at = ds < 0 ? HADDR_UNDEF : H5Dget_offset(ds);
    if (at == HADDR_UNDEF) rc = -1;
    *offset = (uint64_t)at;
    if (rc >= 0) rc = describe(g, ds, name, rank);
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return rc;
}

husai_status husai_results_h5_params(husai_results_h5 *h, husai_condition_result *c,
                                     uint64_t offset[HUSAI_N_PARAMS]) {
    if (h->err) return h->err;
    /* The owners write the bytes of a float as this machine holds it; HDF5 stores little-endian IEEE. */
    if (H5Tequal(H5T_NATIVE_FLOAT, H5T_IEEE_F32LE) <= 0)
        return h->err = husai_error(HUSAI_ERR_IO, "results.h5's parameters need little-endian IEEE floats");
    const hsize_t S = (hsize_t)c->S, dm = (hsize_t)c->d_model, ds = (hsize_t)c->d_sae;
    const size_t bytes = (size_t)S * (2 * (size_t)dm * ds + 2 * ds + dm) * sizeof(float);
    husai_status st = reserve(h, bytes + scale_bytes(c));
    hid_t g = st ? H5I_INVALID_HID : condition_group(h, c);
    if (!st) {
        const hsize_t d_enc[3] = {S, ds, dm}, d_dec[3] = {S, dm, ds}, d_b[2] = {S, ds}, d_bd[2] = {S, dm};
        /* The order the group has always listed them in: encoders went ahead of the rest. */
        herr_t rc = g < 0 ? -1 : create_param(g, "encoders", 3, d_enc, &offset[HUSAI_PARAM_ENCODERS]);
        if (rc >= 0) rc = create_param(g, "decoders", 3, d_dec, &offset[HUSAI_PARAM_DECODERS]);
        if (rc >= 0) rc = create_param(g, "b_enc", 2, d_b, &offset[HUSAI_PARAM_B_ENC]);
        if (rc >= 0) rc = create_param(g, "b_dec", 2, d_bd, &offset[HUSAI_PARAM_B_DEC]);
        if (rc >= 0) rc = create_param(g, "thresholds", 2, d_b, &offset[HUSAI_PARAM_THRESHOLDS]);
        if (rc < 0 || H5Fflush(h->file, H5F_SCOPE_LOCAL) < 0)
            st = husai_error(HUSAI_ERR_IO, "writing condition '%s' to '%s' failed", c->name, h->path);
    }
    if (g >= 0) H5Gclose(g);
    h->err = st;
    if (!st) c->params_written = 1;
    return st;
}

const char *husai_results_h5_partial_path(const husai_results_h5 *h) {
    return h->tmp;
}

husai_status husai_results_h5_condition(husai_results_h5 *h, husai_condition_result *c) {
    if (h->err) return h->err;
    husai_status st = reserve(h, condition_bytes(c));
    if (!st && (write_condition(h, c) < 0 || H5Fflush(h->file, H5F_SCOPE_LOCAL) < 0))
        st = husai_error(HUSAI_ERR_IO, "writing condition '%s' to '%s' failed", c->name, h->path);
    h->err = st;
    if (!st) {
        /* The parameters are on disk: release them (the reports need only the metrics). */
        husai_condition_release_params(c);
        if (c->features) husai_features_release(c->features);
        c->written = 1;
    }
    return st;
}

/* Closes everything; on success trims the reservation's unused tail (HDF5 needs only its EOA) and
 * gives the file its final name. */
static husai_status close_h5(husai_results_h5 *h) {
    husai_status st = h->err;
    haddr_t eoa = 0;
    if (h->gcpl >= 0) H5Pclose(h->gcpl);
    if (h->conds >= 0 && H5Gclose(h->conds) < 0 && !st)
        st = husai_error(HUSAI_ERR_IO, "closing '%s'", h->path);
    if (!st && H5Fflush(h->file, H5F_SCOPE_LOCAL) < 0)
        st = husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", h->path);
    if (H5Fget_eoa(h->file, &eoa) < 0) eoa = 0;
    if (H5Fclose(h->file) < 0 && !st) st = husai_error(HUSAI_ERR_IO, "closing '%s' failed", h->path);
    if (!st && eoa > 0 && h->reserved > (off_t)eoa && ftruncate(h->fd, (off_t)eoa) != 0)
        st = husai_error(HUSAI_ERR_IO, "trimming '%s': %s", h->path, strerror(errno));
    if (h->fd >= 0 && close(h->fd) != 0 && !st)
        st = husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", h->path);
    if (!st && rename(h->tmp, h->path) != 0)
        st = husai_error(HUSAI_ERR_IO, "cannot rename '%s': %s", h->tmp, strerror(errno));
    if (st) unlink(h->tmp);
    free(h);
    return st;
}

void husai_results_h5_abort(husai_results_h5 *h) {
    if (!h) return;
    if (!h->err) h->err = HUSAI_ERR_IO; /* close_h5 then deletes rather than renames */
    close_h5(h);
}

/* Writes what is left (conditions not yet written, the reference, the held-out rows, the protocol's
 * choice) and closes the file. */
static husai_status finish_h5(husai_results_h5 *h, const husai_run_info *run, husai_condition_result *cs,
                              int n, const husai_protocol_result *proto) {
    for (int i = 0; i < n && !h->err; i++)
        if (!cs[i].written) husai_results_h5_condition(h, &cs[i]);
    size_t extra = run->n_holdout * sizeof(uint32_t);
    if (proto && proto->reference_decoder && n > 0)
        extra += (size_t)cs[0].d_model * cs[0].d_sae * sizeof(float) + scale_bytes(&cs[0]);
    if (!h->err) h->err = reserve(h, extra);
    herr_t rc = 0;
    if (!h->err && proto && proto->reference_decoder && n > 0) {
        hid_t g = H5Gcreate2(h->file, "reference", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        const hsize_t dd[2] = {(hsize_t)cs[0].d_model, (hsize_t)cs[0].d_sae};
        if (g < 0 || write_index_scale(g, "d_model", cs[0].d_model) < 0 ||
            write_index_scale(g, "d_sae", cs[0].d_sae) < 0)
            rc = -1;
        else
            rc |= write_ds(g, "decoder", H5T_NATIVE_FLOAT, 2, dd, proto->reference_decoder);
        if (g >= 0) {
            rc |= husai_h5_attr_write(g, "seed", H5T_NATIVE_UINT64, &proto->reference_seed);
            H5Gclose(g);
        }
    }
    if (!h->err && run->holdout_rows && run->n_holdout > 0) {
        const hsize_t dh[1] = {(hsize_t)run->n_holdout};
        rc |= write_ds(h->file, "holdout_rows", H5T_NATIVE_UINT32, 1, dh, run->holdout_rows);
    }
    if (!h->err && n > 0) { /* the sweep order, explicit (the groups also list in it) */
        const char **names = malloc((size_t)n * sizeof *names);
        for (int i = 0; i < n && names; i++)
            names[i] = cs[i].name;
        rc |= names ? write_str_list_attr(h->conds, "order", names, (size_t)n) : -1;
        free(names);
    }
    if (!h->err && proto) {
        rc |= husai_h5_attr_write_str(h->file, "protocol", husai_mode_name(proto->mode));
        if (proto->selected >= 0)
            rc |= husai_h5_attr_write_str(h->file, "selected", cs[proto->selected].name);
    }
    if (!h->err && rc < 0) h->err = husai_error(HUSAI_ERR_IO, "writing '%s' failed", h->path);
    return close_h5(h);
}

/* ---------- results.json ---------- */

/* Writes v with the fewest significant digits (15, 16 or 17) that read back as exactly v; 17 always do. */
static void exact_text(char *buf, size_t n, double v) {
    if (v == 0.0 && signbit(v)) { /* "-0" reads back as the integer 0 in many JSON readers */
        snprintf(buf, n, "-0.0");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, v);
        const double back = strtod(buf, NULL);
        if (memcmp(&back, &v, sizeof v) == 0) return;
    }
}

/* cJSON prints a number with 15 significant digits whenever those read back within a relative
 * DBL_EPSILON of it, so some values came back 1 ulp off. Replaces every number under node by raw text
 * that reads back bit for bit (exact_text), and a non-finite one (a withheld interval) by null.
 * Returns 0 when out of memory. */
static int exact_numbers(cJSON *node) {
    for (cJSON *it = node->child, *next; it; it = next) {
        next = it->next;
        if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
            if (!exact_numbers(it)) return 0;
            continue;
        }
        if (!cJSON_IsNumber(it)) continue;
        char text[40];
        if (isfinite(it->valuedouble)) exact_text(text, sizeof text, it->valuedouble);
        cJSON *rep = isfinite(it->valuedouble) ? cJSON_CreateRaw(text) : cJSON_CreateNull();
        if (!rep) return 0;
        /* the key moves to the replacement, so the old item is deleted without it */
        rep->string = it->string;
        rep->type |= it->type & cJSON_StringIsConst;
        it->string = NULL;
        cJSON_ReplaceItemViaPointer(node, it, rep);
    }
    return 1;
}

/* A 64-bit integer (a seed) as exact JSON text: a double holds integers exactly only up to 2^53. */
static void add_u64(cJSON *o, const char *key, uint64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    cJSON_AddRawToObject(o, key, text);
}

static cJSON *ci_json(const husai_ci *ci) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean", ci->mean);
    cJSON_AddNumberToObject(o, "std", ci->std);
    cJSON_AddNumberToObject(o, "ci95_low", ci->lo);
    cJSON_AddNumberToObject(o, "ci95_high", ci->hi);
    cJSON_AddNumberToObject(o, "n", ci->n);
    return o;
}

/* The condition's latent densities pooled over seeds as a log10 histogram (recon.h's fixed bins). */
static cJSON *density_json(const husai_condition_result *c) {
    long counts[HUSAI_DENSITY_BINS + 1];
    husai_density_histogram(c->density, (size_t)c->S * c->d_sae, counts);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "definition",
                            "share of training rows on which a latent's code is non-zero, pooled over seeds; "
                            "bins over log10(density), [low, high) except the last, which includes 0; "
                            "densities below 10^first edge count in the first bin");
    cJSON *edges = cJSON_AddArrayToObject(o, "log10_bin_edges");
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++)
        cJSON_AddItemToArray(edges, cJSON_CreateNumber(HUSAI_DENSITY_LOG_MIN + b * HUSAI_DENSITY_STEP));
    cJSON_AddNumberToObject(o, "never_fires", (double)counts[0]);
    cJSON *cnt = cJSON_AddArrayToObject(o, "counts");
    for (int b = 0; b < HUSAI_DENSITY_BINS; b++)
        cJSON_AddItemToArray(cnt, cJSON_CreateNumber((double)counts[1 + b]));
    cJSON_AddNumberToObject(o, "total", (double)c->S * c->d_sae);
    return o;
}

static cJSON *feature_stats_json(const husai_feature_stats *st) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "consensus_count", ci_json(&st->count));
    cJSON_AddItemToObject(o, "consensus_share", ci_json(&st->share));
    cJSON_AddItemToObject(o, "stable_share", ci_json(&st->stable_share));
    return o;
}

/* Per-feature stability and consensus features: counts with seed-bootstrap CIs, the random baseline and
 * the mean stability per density bin (the bins of density_histogram, "never fires" first). */
static cJSON *features_json(const husai_condition_result *c) {
    const husai_features *f = c->features;
    cJSON *o = feature_stats_json(&f->stats);
    cJSON_AddStringToObject(o, "definition",
                            "a consensus feature is a cluster of mutual best matches with |cos| >= tau "
                            "(at most one feature per seed) found in at least min_seeds seeds; stable: "
                            "matched at tau in at least half of the other seeds; intervals resample seeds");
    cJSON_AddNumberToObject(o, "tau", f->tau);
    cJSON_AddNumberToObject(o, "min_seeds", f->min_seeds);
    cJSON_AddNumberToObject(o, "n_consensus", f->n_consensus);
    cJSON_AddNumberToObject(o, "n_mutual", f->n_mutual);
    cJSON_AddItemToObject(o, "random", feature_stats_json(&c->features_random));
    if (c->has_gt) {
        cJSON_AddNumberToObject(o, "gt_recovered_by_consensus", c->gt_consensus_recovered);
        cJSON_AddNumberToObject(o, "gt_consensus_precision", c->gt_consensus_precision);
    }
    cJSON *sb = cJSON_AddArrayToObject(o, "stability_by_density");
    cJSON *nb = cJSON_AddArrayToObject(o, "latents_by_density");
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++) {
        cJSON_AddItemToArray(sb, cJSON_CreateNumber(f->stability_by_density[b]));
        cJSON_AddItemToArray(nb, cJSON_CreateNumber((double)f->n_by_density[b]));
    }
    return o;
}

static husai_status write_text(const char *path, const char *text) {
    return write_bytes(path, text, strlen(text));
}

static cJSON *diff_json(const husai_diff_ci *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "diff", d->diff);
    cJSON_AddNumberToObject(o, "ci95_low", d->lo);
    cJSON_AddNumberToObject(o, "ci95_high", d->hi);
    return o;
}

static cJSON *protocol_json(const husai_protocol_result *p, const husai_condition_result *cs,
                            const husai_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mode", husai_mode_name(p->mode));
    cJSON_AddNumberToObject(o, "ev_floor", p->floor);
    if (p->selected >= 0)
        cJSON_AddStringToObject(o, "selected", cs[p->selected].name);
    else
        cJSON_AddNullToObject(o, "selected");
    cJSON_AddStringToObject(
        o, "selection_rule",
        "largest conservative delta LCB among conditions with mean EV >= ev_floor; ties by delta, "
        "then EV");
    if (p->mode == HUSAI_MODE_CALIBRATE) {
        cJSON_AddNumberToObject(o, "selected_k", cs[p->n_first].k);
        cJSON_AddNumberToObject(o, "control_k", p->control_k);
        cJSON_AddStringToObject(o, "retrain", cs[p->n_first].name);
        cJSON_AddStringToObject(o, "control", cs[p->n_first + 1].name);
        cJSON *e = cJSON_AddObjectToObject(o, "direct_effect");
        cJSON_AddItemToObject(e, "paired_seeds", diff_json(&p->effect_paired));
        cJSON_AddItemToObject(e, "husai_unpaired_pairs", diff_json(&p->effect_unpaired));
    } else {
        add_u64(o, "reference_seed", p->reference_seed);
        cJSON_AddStringToObject(o, "baseline", cs[p->baseline].name);
        cJSON_AddNumberToObject(o, "max_ev_drop", cfg->max_ev_drop);
        cJSON *r = cJSON_AddObjectToObject(o, "reference");
        cJSON_AddNumberToObject(r, "explained_variance", p->reference_metrics.ev);
        cJSON_AddNumberToObject(r, "mse", p->reference_metrics.mse);
        cJSON_AddNumberToObject(r, "l0", p->reference_metrics.l0);
    }
    return o;
}

/* run.precision: what train.precision asked for, what ran, and the bf16 certificate's record. */
static void add_precision(cJSON *r, const husai_run_info *run) {
    cJSON *p = cJSON_AddObjectToObject(r, "precision");
    cJSON_AddStringToObject(p, "requested", husai_precision_name(run->cfg->precision));
    cJSON_AddStringToObject(p, "used", run->precision);
    cJSON_AddStringToObject(p, "onednn_isa", run->bf16_isa ? run->bf16_isa : "none");
    if (run->calib_fp32 > 0) {
        cJSON_AddNumberToObject(p, "calibration_fp32_seconds", run->calib_fp32);
        cJSON_AddNumberToObject(p, "calibration_bf16_seconds",
                                isfinite(run->calib_bf16) ? run->calib_bf16 : -1);
    }
    cJSON_AddNumberToObject(p, "bf16_rows", run->bf16_rows);
    cJSON_AddNumberToObject(p, "bf16_second_candidate_rows", run->bf16_second);
    cJSON_AddNumberToObject(p, "uncertified_rows", run->bf16_full);
    cJSON_AddNumberToObject(p, "uncertified_share",
                            run->bf16_rows > 0 ? run->bf16_full / run->bf16_rows : 0.0);
}

static husai_status write_json(const char *path, const husai_run_info *run, const husai_condition_result *cs,
                               int n, const husai_protocol_result *proto) {
    cJSON *root = cJSON_CreateObject();
    cJSON *r = cJSON_AddObjectToObject(root, "run");
    cJSON_AddStringToObject(r, "id", run->id);
    cJSON_AddStringToObject(r, "version", run->version);
    cJSON_AddStringToObject(r, "git_commit", run->commit);
    cJSON_AddStringToObject(r, "command", run->command);
    cJSON *hosts = cJSON_AddArrayToObject(r, "hosts");
    char hostbuf[8192];
    snprintf(hostbuf, sizeof hostbuf, "%s", run->hosts);
    for (char *h = strtok(hostbuf, ","); h; h = strtok(NULL, ","))
        cJSON_AddItemToArray(hosts, cJSON_CreateString(h));
    cJSON_AddNumberToObject(r, "ranks", run->ranks);
    if (run->threads > 0) cJSON_AddNumberToObject(r, "threads_per_rank", run->threads);
    cJSON *nodes = cJSON_AddArrayToObject(r, "nodes");
    for (int i = 0; i < run->n_nodes; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "host", run->nodes[i].host);
        cJSON_AddNumberToObject(o, "ranks", run->nodes[i].ranks);
        cJSON_AddNumberToObject(o, "bytes_read", run->nodes[i].bytes_read);
        cJSON_AddNumberToObject(o, "bytes_held", run->nodes[i].bytes_held);
        cJSON_AddItemToArray(nodes, o);
    }
    cJSON_AddNumberToObject(r, "seconds", run->seconds);
    if (run->peak_rss_mb > 0) cJSON_AddNumberToObject(r, "peak_rss_mb", run->peak_rss_mb);
    if (run->peak_rss_by_rank && run->ranks > 0)
        cJSON_AddItemToObject(r, "peak_rss_mb_by_rank",
                              cJSON_CreateDoubleArray(run->peak_rss_by_rank, run->ranks));
    const husai_config *cfg = run->cfg;
    if (run->precision) add_precision(r, run);
    cJSON *d = cJSON_AddObjectToObject(root, "data");
    cJSON_AddStringToObject(d, "path", cfg->data_path);
    cJSON_AddStringToObject(d, "dataset", cfg->dataset);
    cJSON_AddStringToObject(d, "dtype", run->dtype);
    if (run->fingerprint) cJSON_AddStringToObject(d, "fingerprint", run->fingerprint);
    if (run->model_name && *run->model_name) cJSON_AddStringToObject(d, "model_name", run->model_name);
    if (run->hook_name && *run->hook_name) cJSON_AddStringToObject(d, "hook_name", run->hook_name);
    cJSON_AddNumberToObject(d, "rows", (double)run->n_rows);
    cJSON_AddNumberToObject(d, "d_model", run->d_model);
    if (*cfg->dictionary) cJSON_AddStringToObject(d, "dictionary", cfg->dictionary);
    if (run->chunk_rows > 0) {
        cJSON *st = cJSON_AddObjectToObject(d, "streamed");
        cJSON_AddNumberToObject(st, "chunk_rows", (double)run->chunk_rows);
        cJSON_AddNumberToObject(st, "chunks", (double)run->n_chunks);
        cJSON_AddNumberToObject(st, "bytes_read", run->bytes_read);
        cJSON_AddNumberToObject(st, "read_seconds", run->read_seconds);
        cJSON_AddNumberToObject(st, "read_gb_per_s",
                                run->read_seconds > 0 ? run->bytes_read / run->read_seconds / 1e9 : 0);
    }
    cJSON *b = cJSON_AddObjectToObject(root, "bootstrap");
    cJSON_AddStringToObject(b, "unit", husai_boot_unit_name(cfg->bootstrap_unit));
    cJSON_AddNumberToObject(b, "resamples", cfg->resamples);
    add_u64(b, "seed", cfg->bootstrap_seed);
    cJSON_AddNumberToObject(b, "min_seeds_for_interval", HUSAI_CI_MIN_SEEDS);
    cJSON_AddStringToObject(b, "rng", husai_boot_rng_name(cfg->bootstrap_rng));
    char *cfgtext = husai_config_text(cfg);
    cJSON_AddStringToObject(root, "config", cfgtext ? cfgtext : "");
    free(cfgtext);
    if (proto) cJSON_AddItemToObject(root, "protocol", protocol_json(proto, cs, cfg));
    cJSON *arr = cJSON_AddArrayToObject(root, "conditions");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "phase", c->phase ? c->phase : "");
        cJSON_AddStringToObject(o, "param", c->param);
        cJSON_AddNumberToObject(o, "value", c->value);
        cJSON_AddStringToObject(o, "arch", husai_arch_name(c->arch));
        cJSON_AddNumberToObject(o, "n_seeds", c->S);
        cJSON_AddNumberToObject(o, "d_sae", c->d_sae);
        cJSON_AddNumberToObject(o, "k", c->k);
        cJSON_AddNumberToObject(o, "epochs", c->epochs);
        cJSON_AddNumberToObject(o, "batch_size", c->batch_size);
        cJSON_AddNumberToObject(o, "lr", c->lr);
        cJSON_AddItemToObject(o, "trained_pwmcc", ci_json(&c->trained));
        cJSON_AddItemToObject(o, "random_pwmcc", ci_json(&c->random));
        cJSON_AddItemToObject(o, "explained_variance", ci_json(&c->ev));
        cJSON_AddItemToObject(o, "mse", ci_json(&c->mse));
        cJSON_AddItemToObject(o, "l0", ci_json(&c->l0));
        cJSON_AddNumberToObject(o, "delta_pwmcc", c->delta);
        cJSON_AddNumberToObject(o, "delta_pwmcc_ci_low_conservative", c->delta_lcb);
        cJSON_AddNumberToObject(o, "ratio_pwmcc", c->ratio);
        cJSON_AddItemToObject(o, "dead_fraction", ci_json(&c->dead));
        if (c->has_match) {
            cJSON_AddItemToObject(o, "matched_cosine", ci_json(&c->matched_cos));
            cJSON_AddItemToObject(o, "matched_fraction_0_7", ci_json(&c->matched_frac));
        }
        if (c->has_holdout) {
            cJSON *h = cJSON_AddObjectToObject(o, "heldout");
            cJSON_AddItemToObject(h, "explained_variance", ci_json(&c->ho_ev));
            cJSON_AddItemToObject(h, "mse", ci_json(&c->ho_mse));
            cJSON_AddItemToObject(h, "l0", ci_json(&c->ho_l0));
            cJSON_AddItemToObject(h, "dead_fraction", ci_json(&c->ho_dead));
        }
        if (c->has_gt) {
            cJSON_AddItemToObject(o, "gt_mean_max_cos", ci_json(&c->gt_mean_max_cos));
            cJSON_AddItemToObject(o, "gt_recovered", ci_json(&c->gt_recovered));
        }
        if (c->density) cJSON_AddItemToObject(o, "density_histogram", density_json(c));
        if (c->features) cJSON_AddItemToObject(o, "features", features_json(c));
        if (c->has_ref) {
            cJSON_AddNumberToObject(o, "lambda", c->lambda);
            cJSON_AddItemToObject(o, "trained_pwmcc_with_reference", ci_json(&c->trained_with_ref));
            cJSON_AddItemToObject(o, "alignment_to_reference", ci_json(&c->alignment));
        }
        cJSON *ps = cJSON_AddArrayToObject(o, "per_seed");
        for (int s = 0; s < c->S; s++) {
            const husai_seed_metrics *m = &c->per_seed[s];
            cJSON *e = cJSON_CreateObject();
            add_u64(e, "seed", c->seeds[s]);
            cJSON_AddNumberToObject(e, "explained_variance", m->ev);
            cJSON_AddNumberToObject(e, "mse", m->mse);
            cJSON_AddNumberToObject(e, "l0", m->l0);
            cJSON_AddNumberToObject(e, "dead_fraction", m->dead_fraction);
            cJSON_AddNumberToObject(e, "last_epoch_loss", m->last_epoch_loss);
            cJSON_AddNumberToObject(e, "steps", m->steps);
            cJSON_AddNumberToObject(e, "seconds", m->seconds);
            cJSON_AddNumberToObject(e, "rank", m->rank);
            if (c->has_ref) cJSON_AddNumberToObject(e, "alignment_to_reference", m->alignment);
            if (c->has_holdout) {
                cJSON_AddNumberToObject(e, "heldout_explained_variance", m->ho_ev);
                cJSON_AddNumberToObject(e, "heldout_mse", m->ho_mse);
                cJSON_AddNumberToObject(e, "heldout_l0", m->ho_l0);
                cJSON_AddNumberToObject(e, "heldout_dead_fraction", m->ho_dead);
            }
            if (c->has_gt) {
                cJSON_AddNumberToObject(e, "gt_mean_max_cos", m->gt_mean_max_cos);
                cJSON_AddNumberToObject(e, "gt_recovered", m->gt_recovered);
            }
            cJSON_AddItemToArray(ps, e);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = exact_numbers(root) ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return husai_error(HUSAI_ERR_NOMEM, "cannot format results.json");
    size_t len = strlen(text);
    char *withnl = malloc(len + 2);
    husai_status st;
    if (!withnl) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot format results.json");
    } else {
        memcpy(withnl, text, len);
        withnl[len] = '\n';
        withnl[len + 1] = '\0';
        st = write_text(path, withnl);
        free(withnl);
    }
    free(text);
    return st;
}

/* ---------- summary.md and conditions.csv ---------- */

#define STR_(x) #x
#define STR(x) STR_(x)
/* What a table or conditions.csv shows for a withheld interval or LCB (bootstrap.h). */
#define NA_FEW_SEEDS "n/a (needs >= " STR(HUSAI_CI_MIN_SEEDS) " seeds)"

/* "[lo, hi]" with prec decimals (signed when sign), or "[n/a (needs >= 3 seeds)]" when withheld. */
static const char *ci_text(char *buf, size_t n, double lo, double hi, int prec, int sign) {
    if (!isfinite(lo) || !isfinite(hi))
        snprintf(buf, n, "[" NA_FEW_SEEDS "]");
    else if (sign)
        snprintf(buf, n, "[%+.*f, %+.*f]", prec, lo, prec, hi);
    else
        snprintf(buf, n, "[%.*f, %.*f]", prec, lo, prec, hi);
    return buf;
}

/* "mean [lo, hi]" of a CI with prec decimals. */
static const char *ci_cell(char *buf, size_t n, const husai_ci *ci, int prec) {
    char iv[64];
    snprintf(buf, n, "%.*f %s", prec, ci->mean, ci_text(iv, sizeof iv, ci->lo, ci->hi, prec, 0));
    return buf;
}

/* A signed value with 5 decimals (the LCB), or the withheld marker. */
static const char *lcb_cell(char *buf, size_t n, double v) {
    if (isfinite(v))
        snprintf(buf, n, "%+.5f", v);
    else
        snprintf(buf, n, NA_FEW_SEEDS);
    return buf;
}

static void table_header(FILE *f, const char *param, int with_ref) {
    if (with_ref) {
        fprintf(
            f,
            "| %s | trained PWMCC [95%% CI] | with reference | alignment to reference | random PWMCC | delta "
            "| "
            "conservative delta LCB | EV [95%% CI] | MSE | L0 |\n|---|---|---|---|---|---|---|---|---|---|\n",
            param);
        return;
    }
    fprintf(f,
            "| %s | trained PWMCC [95%% CI] | random PWMCC [95%% CI] | delta | conservative delta LCB | "
            "ratio | EV "
            "[95%% CI] | MSE | L0 | dead |\n|---|---|---|---|---|---|---|---|---|---|\n",
            param);
}

static void table_row(FILE *f, const husai_condition_result *c, const char *label) {
    char value[80];
    if (label)
        snprintf(value, sizeof value, "%s", label);
    else if (!strcmp(c->param, "arch"))
        snprintf(value, sizeof value, "%s", husai_arch_name(c->arch));
    else
        snprintf(value, sizeof value, "%.6g", c->value);
    char tr[96], rn[96], wr[96], al[96], ev[96], lcb[48];
    ci_cell(tr, sizeof tr, &c->trained, 5);
    ci_cell(ev, sizeof ev, &c->ev, 4);
    lcb_cell(lcb, sizeof lcb, c->delta_lcb);
    if (c->has_ref) {
        fprintf(f, "| %s | %s | %s | %s | %.5f | %+.5f | %s | %s | %.4g | %.2f |\n", value, tr,
                ci_cell(wr, sizeof wr, &c->trained_with_ref, 5), ci_cell(al, sizeof al, &c->alignment, 5),
                c->random.mean, c->delta, lcb, ev, c->mse.mean, c->l0.mean);
        return;
    }
    fprintf(f, "| %s | %s | %s | %+.5f | %s | %.3f | %s | %.4g | %.2f | %.3f |\n", value, tr,
            ci_cell(rn, sizeof rn, &c->random, 5), c->delta, lcb, c->ratio, ev, c->mse.mean, c->l0.mean,
            c->dead.mean);
}

/* One-to-one matched agreement, next to PWMCC's many-to-one maxima. */
static void match_table(FILE *f, const husai_condition_result *cs, int n) {
    if (n < 1 || !cs[0].has_match) return;
    fprintf(f,
            "\nMatched agreement (one-to-one Hungarian matching of features on |cos|):\n\n| condition | mean "
            "matched cos [95%% CI] | share of features matched >= 0.7 [95%% CI] |\n|---|---|---|\n");
    char a[96], b[96];
    for (int i = 0; i < n; i++)
        fprintf(f, "| %s | %s | %s |\n", cs[i].name, ci_cell(a, sizeof a, &cs[i].matched_cos, 4),
                ci_cell(b, sizeof b, &cs[i].matched_frac, 3));
}

/* Consensus features (features.tau, features.min_seeds) against what random decoders give. */
static void features_table(FILE *f, const husai_condition_result *cs, int n) {
    if (n < 1 || !cs[0].features) return;
    /* Seeds, and so the default min_seeds, differ between a protocol's phases: each row says its own. */
    fprintf(
        f,
        "\nConsensus features (clusters of mutual best matches with |cos| >= %.2g, one feature per seed, "
        "found in at least the listed number of seeds):\n\n| condition | in >= seeds of S | consensus "
        "features [95%% CI] | share of d_sae | share stable (matched in >= half the other seeds) [95%% CI] "
        "| random: consensus, stable |\n|---|---|---|---|---|---|\n",
        cs[0].features->tau);
    char a[96], b[96];
    for (int i = 0; i < n; i++) {
        const husai_features *ft = cs[i].features;
        if (!ft) continue;
        fprintf(f, "| %s | %d of %d | %s | %.3f | %s | %.0f, %.3f |\n", cs[i].name, ft->min_seeds, cs[i].S,
                ci_cell(a, sizeof a, &ft->stats.count, 0), ft->stats.share.mean,
                ci_cell(b, sizeof b, &ft->stats.stable_share, 3), cs[i].features_random.count.mean,
                cs[i].features_random.stable_share.mean);
    }
}

/* The consensus features against the true dictionary, beside what single seeds recover. */
static void features_gt_table(FILE *f, const husai_condition_result *cs, int n) {
    if (n < 1 || !cs[0].features || !cs[0].has_gt) return;
    fprintf(f,
            "\nConsensus features against the true dictionary (an atom is recovered at |cos| >= %.2g):\n\n"
            "| condition | consensus features | atoms recovered by consensus | by one seed (mean, min-max) | "
            "consensus precision (share that are true atoms) |\n|---|---|---|---|---|\n",
            HUSAI_GT_RECOVERED);
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        if (!c->features) continue;
        double lo = 1.0, hi = 0.0;
        for (int s = 0; s < c->S; s++) {
            lo = fmin(lo, c->per_seed[s].gt_recovered);
            hi = fmax(hi, c->per_seed[s].gt_recovered);
        }
        fprintf(f, "| %s | %d | %.3f | %.3f (%.3f-%.3f) | %.3f |\n", c->name, c->features->n_consensus,
                c->gt_consensus_recovered, c->gt_recovered.mean, lo, hi, c->gt_consensus_precision);
    }
}

/* Quality on rows never trained on, when a held-out split is configured. */
static void holdout_table(FILE *f, const husai_condition_result *cs, int n) {
    if (n < 1 || !cs[0].has_holdout) return;
    fprintf(f, "\nOn held-out rows (never trained on):\n\n| condition | EV [95%% CI] | MSE | L0 | dead |\n"
               "|---|---|---|---|---|\n");
    char a[96];
    for (int i = 0; i < n; i++)
        fprintf(f, "| %s | %s | %.4g | %.2f | %.3f |\n", cs[i].name, ci_cell(a, sizeof a, &cs[i].ho_ev, 4),
                cs[i].ho_mse.mean, cs[i].ho_l0.mean, cs[i].ho_dead.mean);
}

/* Recovery of the known dictionary (data.dictionary), when one was given. */
static void gt_table(FILE *f, const husai_condition_result *cs, int n) {
    if (n < 1 || !cs[0].has_gt) return;
    fprintf(f,
            "\nGround-truth recovery (per true atom, the best |cos| with any decoder feature):\n\n"
            "| condition | mean best abs(cos) [95%% CI] | share of atoms recovered (>= %.2g) [95%% CI] |\n"
            "|---|---|---|\n",
            HUSAI_GT_RECOVERED);
    char a[96], b[96];
    for (int i = 0; i < n; i++)
        if (cs[i].has_gt)
            fprintf(f, "| %s | %s | %s |\n", cs[i].name, ci_cell(a, sizeof a, &cs[i].gt_mean_max_cos, 4),
                    ci_cell(b, sizeof b, &cs[i].gt_recovered, 3));
}

/* A plain-language reading of a grid: which setting is most reproducible and whether it is resolved. */
static void reading(FILE *f, const husai_condition_result *cs, int n) {
    int best = -1, resolved = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(cs[i].delta_lcb)) continue; /* withheld: too few seeds */
        if (best < 0 || cs[i].delta_lcb > cs[best].delta_lcb) best = i;
        resolved += cs[i].delta_lcb > 0;
    }
    if (best < 0 && n > 0) {
        fprintf(
            f,
            "\n**Reading.** With %d seeds there is one pair per setting, so no interval and no conservative "
            "bound exist and nothing is claimed about agreement beyond random decoders; the PWMCC values "
            "are single-pair observations (%s: trained %.4f, random %.4f).\n",
            cs[0].S, cs[0].name, cs[0].trained.mean, cs[0].random.mean);
        return;
    }
    if (best < 0) return;
    const husai_condition_result *b = &cs[best];
    fprintf(f,
            "\n**Reading.** Across seeds, decoders trained at %s agree most reliably beyond chance: trained "
            "PWMCC "
            "%.4f against %.4f for random decoders of the same shape (delta %+.4f, conservative lower bound "
            "%+.4f, EV "
            "%.3f). ",
            b->name, b->trained.mean, b->random.mean, b->delta, b->delta_lcb, b->ev.mean);
    if (resolved == 0)
        fprintf(
            f,
            "No setting's conservative bound is above zero, so with these seeds no setting is shown to learn "
            "features more reproducible than random directions; treat single-seed feature claims with "
            "care.\n");
    else
        fprintf(
            f,
            "%d of %d settings have a conservative bound above zero, i.e. their seeds share features beyond "
            "what random decoders would, even under the pessimistic comparison of interval ends. Features "
            "read "
            "off one seed are still only partly shared (PWMCC well below 1).\n",
            resolved, n);
}

/* One sentence when the intervals rest on fewer than HUSAI_CI_FEW_SEEDS seeds (bootstrap.h says why), one
 * more when some conditions have too few for any interval (a calibrate retrain on 2 seeds). */
static void few_seeds_note(FILE *f, const husai_condition_result *cs, int n, husai_boot_unit unit) {
    int least = 0, least_ci = 0, withheld = 0; /* fewest seeds overall, and among conditions with intervals */
    for (int i = 0; i < n; i++) {
        if (least == 0 || cs[i].S < least) least = cs[i].S;
        if (cs[i].S >= HUSAI_CI_MIN_SEEDS && (least_ci == 0 || cs[i].S < least_ci)) least_ci = cs[i].S;
        withheld += cs[i].S < HUSAI_CI_MIN_SEEDS;
    }
    if (withheld)
        fprintf(
            f,
            "Few seeds: %s %d seeds (one pair) no interval, conservative LCB or claim beyond random decoders "
            "is reported (" NA_FEW_SEEDS ").\n\n",
            withheld == n ? "with" : "for the conditions with", least);
    if (least_ci > 0 && least_ci < HUSAI_CI_FEW_SEEDS)
        fprintf(
            f,
            "Few seeds: %s intervals rest on only %d seeds (%d or more advised)%s, so read them as rough "
            "bounds.\n\n",
            withheld ? "the other" : "these", least_ci, HUSAI_CI_FEW_SEEDS,
            unit == HUSAI_BOOT_SEEDS
                ? "; with 3 or 4 seeds a PWMCC interval is just the range of the pair values (with 3, an EV "
                  "interval the range of the 3 values)"
                : "");
}

/* Writes summary.md and hands its text to *md (the caller frees it) for report.html. */
static husai_status write_summary(const char *path, const husai_run_info *run,
                                  const husai_condition_result *cs, int n, const husai_protocol_result *proto,
                                  char **md) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return husai_error(HUSAI_ERR_NOMEM, "cannot format summary.md");
    const husai_config *cfg = run->cfg;
    fprintf(f, "# husai %s %s\n\n", husai_mode_name(cfg->mode), run->id);
    fprintf(f, "Data: `%s:%s` (%zu x %d, %s). d_sae %d, batch %d, lr %g. %d ranks on %d host(s), %.1f s.\n\n",
            cfg->data_path, cfg->dataset, run->n_rows, run->d_model, run->dtype, cfg->d_sae, cfg->batch_size,
            cfg->lr, run->ranks, run->n_hosts, run->seconds);
    fprintf(
        f,
        "Bootstrap: %d resamples, unit `%s`%s, %s generator, seed %llu; intervals are 95%% percentile CIs. "
        "Conservative delta LCB = trained CI low - random CI high.\n\n",
        cfg->resamples, husai_boot_unit_name(cfg->bootstrap_unit),
        cfg->bootstrap_unit == HUSAI_BOOT_SEEDS ? " (cluster over seeds)" : " (HUSAI's; anti-conservative)",
        husai_boot_rng_name(cfg->bootstrap_rng), (unsigned long long)cfg->bootstrap_seed);
    few_seeds_note(f, cs, n, cfg->bootstrap_unit);
    if (!proto) {
        fprintf(f, "Seeds (%d):", cfg->n_seeds);
        for (int s = 0; s < cfg->n_seeds; s++)
            fprintf(f, " %llu", (unsigned long long)cfg->seeds[s]);
        fprintf(f, "; %d epochs unless swept.\n\n", cfg->epochs);
        table_header(f, cfg->param, 0);
        for (int i = 0; i < n; i++)
            table_row(f, &cs[i], NULL);
        match_table(f, cs, n);
        holdout_table(f, cs, n);
        reading(f, cs, n);
    } else if (proto->mode == HUSAI_MODE_CALIBRATE) {
        const int ns = proto->n_first;
        fprintf(f, "## Search (HUSAI table 5.1): %d seeds x %d epochs\n\n", cfg->n_seeds, cfg->epochs);
        table_header(f, "k", 0);
        for (int i = 0; i < ns; i++)
            table_row(f, &cs[i], NULL);
        fprintf(f, "\nSelected: **%s** (largest conservative delta LCB among k with mean EV >= %.2f).\n\n",
                cs[proto->selected].name, proto->floor);
        const husai_condition_result *a = &cs[ns], *b = &cs[ns + 1];
        fprintf(f, "## Retrain and matched control (HUSAI table 5.2): %d seeds x %d epochs\n\n", a->S,
                a->epochs);
        table_header(f, "condition", 0);
        table_row(f, a, a->name);
        table_row(f, b, b->name);
        const husai_diff_ci *pe = &proto->effect_paired, *ue = &proto->effect_unpaired;
        fprintf(f, "\n## Direct effect: trained PWMCC of k=%d minus control k=%d\n\n", a->k, b->k);
        char pci[64], uci[64];
        fprintf(f,
                "| estimate | paired seed bootstrap 95%% CI (ours) | unpaired pair bootstrap 95%% CI "
                "(HUSAI's) |\n"
                "|---|---|---|\n| %+.5f | %s | %s |\n",
                pe->diff, ci_text(pci, sizeof pci, pe->lo, pe->hi, 5, 1),
                ci_text(uci, sizeof uci, ue->lo, ue->hi, 5, 1));
        fprintf(
            f,
            "\n**Reading.** Retrained on %d seeds, k=%d gives trained PWMCC %.4f against %.4f for the k=%d "
            "control (EV %.3f vs %.3f). ",
            a->S, a->k, a->trained.mean, b->trained.mean, b->k, a->ev.mean, b->ev.mean);
        if (isfinite(pe->lo) && isfinite(pe->hi))
            fprintf(f,
                    "The difference %+.4f has a seed-level paired CI [%+.4f, %+.4f], which %s zero; HUSAI's "
                    "pair-level CI %s resamples the %d pairs as if independent although they share seeds, so "
                    "it is shown for comparison only. ",
                    pe->diff, pe->lo, pe->hi, (pe->lo > 0 || pe->hi < 0) ? "excludes" : "includes",
                    ci_text(uci, sizeof uci, ue->lo, ue->hi, 4, 1), a->S * (a->S - 1) / 2);
        else
            fprintf(f,
                    "The difference %+.4f is one pair of seeds' value: no interval exists, so whether k=%d "
                    "changes consistency is not resolved (" NA_FEW_SEEDS "). ",
                    pe->diff, a->k);
        fprintf(f, "%s\n",
                a->ev.mean < b->ev.mean
                    ? "The gain in consistency is paid for in reconstruction quality (lower EV)."
                    : "");
    } else {
        fprintf(f, "## Consistency regularization (HUSAI table 5.3): reference seed %llu, %d other seeds\n\n",
                (unsigned long long)proto->reference_seed, cfg->n_seeds);
        fprintf(f,
                "Penalty: `MSE + lambda * (1 - mean_i max_j |cos(D_i, R_j)|)` with R the reference decoder "
                "(EV %.4f). "
                "\"trained PWMCC\" is over the non-reference seeds; \"with reference\" adds the reference as "
                "one more "
                "model.\n\n",
                proto->reference_metrics.ev);
        table_header(f, "lambda", 1);
        for (int i = 0; i < n; i++)
            table_row(f, &cs[i], NULL);
        if (proto->selected >= 0)
            fprintf(
                f,
                "\nSelected: **%s** (largest conservative delta LCB with EV >= %.4f, i.e. at most %.3f below "
                "%s).\n",
                cs[proto->selected].name, proto->floor, cfg->max_ev_drop, cs[proto->baseline].name);
        else
            fprintf(f, "\nNo lambda keeps EV within %.3f of %s.\n", cfg->max_ev_drop,
                    cs[proto->baseline].name);
        const husai_condition_result *base = &cs[proto->baseline];
        if (proto->selected == proto->baseline) {
            fprintf(f,
                    "\n**Reading.** No lambda above %s keeps EV within %.3f of it, so the baseline is kept: "
                    "with this grid the penalty buys consistency only at a larger reconstruction cost than "
                    "allowed.\n",
                    base->name, cfg->max_ev_drop);
        } else if (proto->selected >= 0) {
            const husai_condition_result *sel = &cs[proto->selected];
            fprintf(f,
                    "\n**Reading.** Against %s, %s changes trained PWMCC by %+.4f (%.4f vs %.4f) and "
                    "alignment to "
                    "the reference by %+.4f, at an EV cost of %.4f. %s\n",
                    base->name, sel->name, sel->trained.mean - base->trained.mean, sel->trained.mean,
                    base->trained.mean, sel->alignment.mean - base->alignment.mean,
                    base->ev.mean - sel->ev.mean,
                    (sel->trained.lo > base->trained.hi)
                        ? "The intervals do not overlap: the penalty resolves a consistency gain."
                        : "The intervals overlap, so the gain is not resolved with these seeds (as in HUSAI, "
                          "whose "
                          "lambda grid was too small to move the loss).");
        }
    }
    gt_table(f, cs, n);
    features_table(f, cs, n);
    features_gt_table(f, cs, n);
    fclose(f);
    husai_status st = write_text(path, text);
    *md = text;
    return st;
}

/* conditions.csv's metrics with intervals, in column order: the mean, then `<ci>_ci95_low` and
 * `<ci>_ci95_high` (the names of results.json, but the first three's, kept from earlier versions). */
static const struct {
    const char *mean, *ci;
    size_t offset; /* of the husai_ci in husai_condition_result */
    metric_when when;
} CSV_CIS[] = {
    {"trained_pwmcc", "trained", offsetof(husai_condition_result, trained), ALWAYS},
    {"random_pwmcc", "random", offsetof(husai_condition_result, random), ALWAYS},
    {"explained_variance", "ev", offsetof(husai_condition_result, ev), ALWAYS},
    {"mse", "mse", offsetof(husai_condition_result, mse), ALWAYS},
    {"l0", "l0", offsetof(husai_condition_result, l0), ALWAYS},
    {"dead_fraction", "dead_fraction", offsetof(husai_condition_result, dead), ALWAYS},
    {"matched_cosine", "matched_cosine", offsetof(husai_condition_result, matched_cos), IF_MATCH},
    {"matched_fraction_0_7", "matched_fraction_0_7", offsetof(husai_condition_result, matched_frac),
     IF_MATCH},
    {"heldout_explained_variance", "heldout_explained_variance", offsetof(husai_condition_result, ho_ev),
     IF_HOLDOUT},
    {"heldout_mse", "heldout_mse", offsetof(husai_condition_result, ho_mse), IF_HOLDOUT},
    {"heldout_l0", "heldout_l0", offsetof(husai_condition_result, ho_l0), IF_HOLDOUT},
    {"heldout_dead_fraction", "heldout_dead_fraction", offsetof(husai_condition_result, ho_dead), IF_HOLDOUT},
    {"gt_mean_max_cos", "gt_mean_max_cos", offsetof(husai_condition_result, gt_mean_max_cos), IF_GT},
    {"gt_recovered", "gt_recovered", offsetof(husai_condition_result, gt_recovered), IF_GT},
    {"trained_pwmcc_with_reference", "trained_pwmcc_with_reference",
     offsetof(husai_condition_result, trained_with_ref), IF_REF},
    {"alignment_to_reference", "alignment_to_reference", offsetof(husai_condition_result, alignment), IF_REF},
};

/* A number cell: empty when not finite (results.json's null), or the withheld marker when it is an
 * interval end (or the LCB) that needs more seeds. */
static void csv_number(FILE *f, double v, int interval) {
    if (isfinite(v))
        fprintf(f, ",%.17g", v);
    else
        fprintf(f, ",%s", interval ? NA_FEW_SEEDS : "");
}

/* A text cell, quoted (RFC 4180) when it holds a comma, a quote or a line break. */
static void csv_text(FILE *f, const char *s, int first) {
    if (!first) fputc(',', f);
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++)
        fprintf(f, *s == '"' ? "\"\"" : "%c", *s);
    fputc('"', f);
}

/* CSV_CIS[from, to): their header cells, or condition c's cells (empty for a metric it lacks). */
static void csv_cis(FILE *f, const husai_condition_result *c, size_t from, size_t to) {
    for (size_t j = from; j < to; j++) {
        if (!c) {
            fprintf(f, ",%s,%s_ci95_low,%s_ci95_high", CSV_CIS[j].mean, CSV_CIS[j].ci, CSV_CIS[j].ci);
            continue;
        }
        if (!has_metric(c, CSV_CIS[j].when)) {
            fprintf(f, ",,,");
            continue;
        }
        const husai_ci *ci = (const husai_ci *)((const char *)c + CSV_CIS[j].offset);
        csv_number(f, ci->mean, 0);
        csv_number(f, ci->lo, 1);
        csv_number(f, ci->hi, 1);
    }
}

/* The per-feature stability columns (results.json's "features"): their header cells, or condition c's
 * cells (empty without per-feature stability). */
static void csv_features(FILE *f, const husai_condition_result *c) {
    static const char *const cis[] = {"consensus_count", "consensus_share", "stable_share"};
    static const char *const scalars[] = {
        "features_tau",         "features_min_seeds",        "features_n_mutual",
        "features_n_consensus", "gt_recovered_by_consensus", "gt_consensus_precision"};
    const husai_features *ft = c ? c->features : NULL;
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 3; j++) {
            if (!c) {
                fprintf(f, ",%s%s,%s%s_ci95_low,%s%s_ci95_high", r ? "random_" : "", cis[j],
                        r ? "random_" : "", cis[j], r ? "random_" : "", cis[j]);
                continue;
            }
            if (!ft) {
                fprintf(f, ",,,");
                continue;
            }
            const husai_feature_stats *st = r ? &c->features_random : &ft->stats;
            const husai_ci *ci = j == 0 ? &st->count : j == 1 ? &st->share : &st->stable_share;
            csv_number(f, ci->mean, 0);
            csv_number(f, ci->lo, 1);
            csv_number(f, ci->hi, 1);
        }
    for (int j = 0; j < 6; j++) {
        if (!c) {
            fprintf(f, ",%s", scalars[j]);
            continue;
        }
        if (!ft || (j >= 4 && !c->has_gt)) {
            fprintf(f, ",");
            continue;
        }
        const double v[6] = {ft->tau,
                             ft->min_seeds,
                             ft->n_mutual,
                             ft->n_consensus,
                             c->gt_consensus_recovered,
                             c->gt_consensus_precision};
        csv_number(f, v[j], 0);
    }
}

/* One row per condition with every per-condition metric of results.json (the means and interval ends;
 * per-seed values are in results.h5), in sweep order. */
static husai_status write_csv(const char *path, const husai_condition_result *cs, int n) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return husai_error(HUSAI_ERR_NOMEM, "cannot format conditions.csv");
    fprintf(f, "name,param,value,n_seeds");
    csv_cis(f, NULL, 0, 2);
    fprintf(f, ",delta_pwmcc,delta_pwmcc_ci_low_conservative,ratio_pwmcc");
    csv_cis(f, NULL, 2, 6);
    fprintf(f, ",arch,phase,d_sae,k,epochs,batch_size,lr,lambda");
    csv_cis(f, NULL, 6, sizeof CSV_CIS / sizeof *CSV_CIS);
    csv_features(f, NULL);
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        csv_text(f, c->name, 1);
        csv_text(f, c->param, 0);
        if (!strcmp(c->param, "arch")) /* the architecture's name, not its enum value */
            csv_text(f, husai_arch_name(c->arch), 0);
        else
            csv_number(f, c->value, 0);
        fprintf(f, ",%d", c->S);
        csv_cis(f, c, 0, 2);
        csv_number(f, c->delta, 0);
        csv_number(f, c->delta_lcb, 1);
        csv_number(f, c->ratio, 0);
        csv_cis(f, c, 2, 6);
        csv_text(f, husai_arch_name(c->arch), 0);
        csv_text(f, c->phase ? c->phase : "", 0);
        fprintf(f, ",%d,%d,%d,%d", c->d_sae, c->k, c->epochs, c->batch_size);
        csv_number(f, c->lr, 0);
        if (c->has_ref)
            csv_number(f, c->lambda, 0);
        else
            fprintf(f, ",");
        csv_cis(f, c, 6, sizeof CSV_CIS / sizeof *CSV_CIS);
        csv_features(f, c);
        fprintf(f, "\n");
    }
    fclose(f);
    husai_status st = write_text(path, text);
    free(text);
    return st;
}

husai_status husai_results_reports(const char *dir, const husai_run_info *run,
                                   const husai_condition_result *c, int n,
                                   const husai_protocol_result *proto) {
    char path[4200];
    husai_status st;
    snprintf(path, sizeof path, "%s/conditions.csv", dir);
    if ((st = write_csv(path, c, n))) return st;
    char *md = NULL;
    snprintf(path, sizeof path, "%s/summary.md", dir);
    if ((st = write_summary(path, run, c, n, proto, &md))) {
        free(md);
        return st;
    }
    /* Plots of the grid the user chose (the search phase in calibrate), each a file and part of report.html.
     */
    const int n_grid = proto ? proto->n_first : n;
    char title[128];
    snprintf(title, sizeof title, "Feature consistency vs %s (%s)", n > 0 ? c[0].param : "", run->id);
    const husai_html_plot plots[4] = {
        {"pwmcc_vs_param.svg", husai_svg_pwmcc_vs_param(c, n_grid, title),
         "Trained PWMCC (filled circles) against random decoders of the same shape (open squares) for each "
         "setting, with 95% CI bars where the seeds allow one."},
        {"pwmcc_vs_ev.svg", husai_svg_pwmcc_vs_ev(c, n, "Consistency vs reconstruction quality"),
         "The trade-off: trained PWMCC against explained variance per condition; the dashed line is the "
         "random-decoder baseline."},
        {"density.svg",
         n > 0 && c[0].density
             ? husai_svg_density(c, n, "Feature density (share of training rows a latent fires on)")
             : NULL,
         "Per condition, the share of latents (pooled over seeds) in each log10 firing-density bin; latents "
         "that never fire are the markers at the left."},
        {"stability_vs_density.svg",
         n > 0 && c[0].density && c[0].features
             ? husai_svg_stability_vs_density(c, n, "Per-feature stability vs firing density (mean per bin)")
             : NULL,
         "Per condition, the mean per-feature stability (share of the other seeds with a match at |cos| >= "
         "features.tau) of the latents in each log10 firing-density bin."}};
    const int n_plots = n > 0 && c[0].density ? (c[0].features ? 4 : 3) : 2;
    for (int i = 0; i < n_plots && !st; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, plots[i].file);
        st = plots[i].svg ? write_text(path, plots[i].svg)
                          : husai_error(HUSAI_ERR_NOMEM, "out of memory drawing %s", plots[i].file);
    }
    if (!st) {
        char *html = husai_html_report(run, c, n, md, plots, n_plots);
        snprintf(path, sizeof path, "%s/report.html", dir);
        st = html ? write_text(path, html)
                  : husai_error(HUSAI_ERR_NOMEM, "out of memory formatting report.html");
        free(html);
    }
    for (int i = 0; i < 4; i++)
        free(plots[i].svg);
    free(md);
    return st;
}

husai_status husai_results_write(const husai_rundir *rd, const husai_run_info *run, husai_results_h5 *h5,
                                 husai_condition_result *c, int n, const husai_protocol_result *proto) {
    char path[4200];
    husai_status st;
    husai_rundir_path(rd, "results.h5", path, sizeof path);
    if (!h5 && (st = husai_results_h5_open(&h5, path, run))) {
        husai_results_h5_abort(h5);
        return st;
    }
    if ((st = finish_h5(h5, run, c, n, proto))) return st;
    /* The peak resident set includes writing results.h5 (rank 0's largest step before results.h5
     * went to disk condition by condition); taken before the reports, so report.html shows the value
     * results.json records and `husai report` reproduces it. */
    husai_run_info final = *run;
    struct rusage ru;
    const double mine = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0.0; /* KiB */
    if (final.peak_rss_mb > 0 && mine > final.peak_rss_mb) final.peak_rss_mb = mine;
    double *by_rank = NULL;
    if (run->peak_rss_by_rank && run->ranks > 0 &&
        (by_rank = malloc((size_t)run->ranks * sizeof(double)))) { /* rank 0's entry: this process */
        memcpy(by_rank, run->peak_rss_by_rank, (size_t)run->ranks * sizeof(double));
        if (mine > by_rank[0]) by_rank[0] = mine;
    }
    final.peak_rss_by_rank = by_rank;
    if (!(st = husai_results_reports(rd->staging_path, &final, c, n, proto))) {
        /* results.json last: its presence marks a complete set even inside staging. */
        husai_rundir_path(rd, "results.json", path, sizeof path);
        st = write_json(path, &final, c, n, proto);
    }
    free(by_rank);
    return st;
}
