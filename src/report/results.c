#define _POSIX_C_SOURCE 200809L
#include "report/results.h"
#include "report/h5attr.h"
#include "report/svg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
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

static herr_t write_ds(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
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
    hid_t file, conds, lcpl;
    off_t reserved;   /* bytes reserved so far */
    husai_status err; /* the first failure: later writes are skipped, finish reports it */
};

/* Metadata allowance per reservation (object headers, group indexes, attributes): measured ~12 KiB
 * per condition (jobs/architectures.ini, every optional dataset); 256 KiB leaves room. */
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
    h->conds = h->lcpl = H5I_INVALID_HID;
    h->file = H5Fcreate(h->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
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
        rc |= husai_h5_attr_write_str(h->file, "decoder_layout",
                                      "decoders[s] is [d_model, d_sae]; column j is feature j");
        h->conds = H5Gcreate2(h->file, "conditions", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        h->lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_create_intermediate_group(h->lcpl, 1); /* protocol names nest: conditions/search/k=4 */
        if (rc < 0 || h->conds < 0 || h->lcpl < 0)
            st = husai_error(HUSAI_ERR_IO, "writing '%s' failed", path);
    }
    free(cfg);
    h->err = st;
    *out = h;
    return st;
}

/* The bytes of a condition's datasets. */
static size_t condition_bytes(const husai_condition_result *c) {
    const size_t S = (size_t)c->S, dd = (size_t)c->d_model * c->d_sae;
    return S * (2 * dd + 3 * (size_t)c->d_sae + (size_t)c->d_model) * sizeof(float) +
           (S + 1) * (S + 1) * 5 * sizeof(double) + S * 24 * sizeof(double);
}

/* Condition c's group: created, or opened when its encoders went ahead. */
static hid_t condition_group(const husai_results_h5 *h, const husai_condition_result *c) {
    return c->encoders_written ? H5Gopen2(h->conds, c->name, H5P_DEFAULT)
                               : H5Gcreate2(h->conds, c->name, h->lcpl, H5P_DEFAULT, H5P_DEFAULT);
}

static herr_t write_condition(const husai_results_h5 *h, const husai_condition_result *c) {
    hid_t g = condition_group(h, c);
    if (g < 0) return -1;
    herr_t rc = 0;
    const hsize_t S = (hsize_t)c->S, dm = (hsize_t)c->d_model, ds = (hsize_t)c->d_sae;
    const hsize_t d_dec[3] = {S, dm, ds}, d_enc[3] = {S, ds, dm}, d_b[2] = {S, ds}, d_s[1] = {S},
                  d_m[2] = {S, S};
    rc |= write_ds(g, "decoders", H5T_NATIVE_FLOAT, 3, d_dec, c->decoders);
    if (!c->encoders_written) rc |= write_ds(g, "encoders", H5T_NATIVE_FLOAT, 3, d_enc, c->encoders);
    rc |= write_ds(g, "b_enc", H5T_NATIVE_FLOAT, 2, d_b, c->b_enc);
    const hsize_t d_bd[2] = {S, dm};
    if (c->b_dec) rc |= write_ds(g, "b_dec", H5T_NATIVE_FLOAT, 2, d_bd, c->b_dec);
    if (c->thresholds) rc |= write_ds(g, "thresholds", H5T_NATIVE_FLOAT, 2, d_b, c->thresholds);
    rc |= write_ds(g, "seeds", H5T_NATIVE_UINT64, 1, d_s, c->seeds);
    rc |= write_ds(g, "pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->pwmcc);
    rc |= write_ds(g, "random_pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->random_pwmcc);
    double *col = malloc((size_t)c->S * sizeof(double));
    if (!col) {
        rc = -1;
    } else {
        const char *names[] = {"explained_variance",
                               "mse",
                               "l0",
                               "dead_fraction",
                               "steps",
                               "seconds",
                               "rank",
                               "last_epoch_loss",
                               "alignment_to_reference",
                               "heldout_explained_variance",
                               "heldout_mse",
                               "heldout_l0",
                               "heldout_dead_fraction"};
        for (int m = 0; m < 13; m++) {
            if (m == 8 && !c->has_ref) continue;
            if (m >= 9 && !c->has_holdout) break;
            for (int s = 0; s < c->S; s++) {
                const husai_seed_metrics *p = &c->per_seed[s];
                const double v[13] = {p->ev,        p->mse,     p->l0,     p->dead_fraction,
                                      p->steps,     p->seconds, p->rank,   p->last_epoch_loss,
                                      p->alignment, p->ho_ev,   p->ho_mse, p->ho_l0,
                                      p->ho_dead};
                col[s] = v[m];
            }
            rc |= write_ds(g, names[m], H5T_NATIVE_DOUBLE, 1, d_s, col);
        }
        free(col);
    }
    rc |= husai_h5_attr_write_str(g, "param", c->param);
    rc |= husai_h5_attr_write(g, "value", H5T_NATIVE_DOUBLE, &c->value);
    rc |= husai_h5_attr_write(g, "k", H5T_NATIVE_INT, &c->k);
    rc |= husai_h5_attr_write_str(g, "arch", husai_arch_name(c->arch));
    rc |= husai_h5_attr_write(g, "d_sae", H5T_NATIVE_INT, &c->d_sae);
    rc |= husai_h5_attr_write(g, "d_model", H5T_NATIVE_INT, &c->d_model);
    if (c->has_match) {
        rc |= write_ds(g, "matched_cosine", H5T_NATIVE_DOUBLE, 2, d_m, c->match_cos);
        rc |= write_ds(g, "matched_fraction", H5T_NATIVE_DOUBLE, 2, d_m, c->match_frac);
    }
    if (c->has_gt) {
        double *col2 = malloc((size_t)c->S * sizeof(double));
        for (int m = 0; m < 2 && col2; m++) {
            for (int s = 0; s < c->S; s++)
                col2[s] = m == 0 ? c->per_seed[s].gt_mean_max_cos : c->per_seed[s].gt_recovered;
            rc |= write_ds(g, m == 0 ? "gt_mean_max_cos" : "gt_recovered", H5T_NATIVE_DOUBLE, 1, d_s, col2);
        }
        if (!col2) rc = -1;
        free(col2);
    }
    if (c->density) rc |= write_ds(g, "density", H5T_NATIVE_FLOAT, 2, d_b, c->density);
    if (c->has_ref) {
        const hsize_t d_r[2] = {S + 1, S + 1};
        rc |= write_ds(g, "pwmcc_with_reference", H5T_NATIVE_DOUBLE, 2, d_r, c->pwmcc_with_ref);
        rc |= husai_h5_attr_write(g, "lambda", H5T_NATIVE_DOUBLE, &c->lambda);
    }
    H5Gclose(g);
    return rc;
}

/* Frees a condition's parameter arrays (decoders, encoders, b_enc, b_dec, thresholds); safe twice. */
static void release_params(husai_condition_result *c) {
    free(c->decoders);
    free(c->encoders);
    free(c->b_enc);
    free(c->b_dec);
    free(c->thresholds);
    c->decoders = c->encoders = c->b_enc = c->b_dec = c->thresholds = NULL;
}

husai_status husai_results_h5_encoders(husai_results_h5 *h, husai_condition_result *c) {
    if (h->err) return h->err;
    const hsize_t d_enc[3] = {(hsize_t)c->S, (hsize_t)c->d_sae, (hsize_t)c->d_model};
    husai_status st = reserve(h, (size_t)c->S * c->d_sae * c->d_model * sizeof(float));
    hid_t g = st ? H5I_INVALID_HID : condition_group(h, c);
    if (!st && (g < 0 || write_ds(g, "encoders", H5T_NATIVE_FLOAT, 3, d_enc, c->encoders) < 0 ||
                H5Fflush(h->file, H5F_SCOPE_LOCAL) < 0))
        st = husai_error(HUSAI_ERR_IO, "writing condition '%s' to '%s' failed", c->name, h->path);
    if (g >= 0) H5Gclose(g);
    h->err = st;
    if (!st) {
        free(c->encoders);
        c->encoders = NULL;
        c->encoders_written = 1;
    }
    return st;
}

husai_status husai_results_h5_condition(husai_results_h5 *h, husai_condition_result *c) {
    if (h->err) return h->err;
    husai_status st = reserve(h, condition_bytes(c));
    if (!st && (write_condition(h, c) < 0 || H5Fflush(h->file, H5F_SCOPE_LOCAL) < 0))
        st = husai_error(HUSAI_ERR_IO, "writing condition '%s' to '%s' failed", c->name, h->path);
    h->err = st;
    if (!st) {
        /* The parameters are on disk: release them (the reports need only the metrics). */
        release_params(c);
        c->written = 1;
    }
    return st;
}

/* Closes everything; on success trims the reservation's unused tail (HDF5 needs only its EOA) and
 * gives the file its final name. */
static husai_status close_h5(husai_results_h5 *h) {
    husai_status st = h->err;
    haddr_t eoa = 0;
    if (h->lcpl >= 0) H5Pclose(h->lcpl);
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
        extra += (size_t)cs[0].d_model * cs[0].d_sae * sizeof(float);
    if (!h->err) h->err = reserve(h, extra);
    herr_t rc = 0;
    if (!h->err && proto && proto->reference_decoder && n > 0) {
        hid_t g = H5Gcreate2(h->file, "reference", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        const hsize_t dd[2] = {(hsize_t)cs[0].d_model, (hsize_t)cs[0].d_sae};
        rc |= g < 0 ? -1 : write_ds(g, "decoder", H5T_NATIVE_FLOAT, 2, dd, proto->reference_decoder);
        if (g >= 0) {
            rc |= husai_h5_attr_write(g, "seed", H5T_NATIVE_UINT64, &proto->reference_seed);
            H5Gclose(g);
        }
    }
    if (!h->err && run->holdout_rows && run->n_holdout > 0) {
        const hsize_t dh[1] = {(hsize_t)run->n_holdout};
        rc |= write_ds(h->file, "holdout_rows", H5T_NATIVE_UINT32, 1, dh, run->holdout_rows);
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
    const husai_config *cfg = run->cfg;
    if (run->precision) add_precision(r, run);
    cJSON *d = cJSON_AddObjectToObject(root, "data");
    cJSON_AddStringToObject(d, "path", cfg->data_path);
    cJSON_AddStringToObject(d, "dataset", cfg->dataset);
    cJSON_AddStringToObject(d, "dtype", run->dtype);
    if (run->fingerprint) cJSON_AddStringToObject(d, "fingerprint", run->fingerprint);
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

static husai_status write_summary(const char *path, const husai_run_info *run,
                                  const husai_condition_result *cs, int n,
                                  const husai_protocol_result *proto) {
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
    fclose(f);
    husai_status st = write_text(path, text);
    free(text);
    return st;
}

static husai_status write_csv(const char *path, const husai_condition_result *cs, int n) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return husai_error(HUSAI_ERR_NOMEM, "cannot format conditions.csv");
    fprintf(f, "name,param,value,n_seeds,trained_pwmcc,trained_ci95_low,trained_ci95_high,random_pwmcc,"
               "random_ci95_low,random_ci95_high,delta_pwmcc,delta_pwmcc_ci_low_conservative,ratio_pwmcc,"
               "explained_variance,ev_ci95_low,ev_ci95_high,mse,l0,dead_fraction,arch,gt_mean_max_cos,"
               "gt_recovered\n");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        fprintf(f, "%s,%s,%.17g,%d,", c->name, c->param, c->value, c->S);
        const double cols[] = {c->trained.mean, c->trained.lo, c->trained.hi, c->random.mean, c->random.lo,
                               c->random.hi,    c->delta,      c->delta_lcb,  c->ratio,       c->ev.mean,
                               c->ev.lo,        c->ev.hi,      c->mse.mean,   c->l0.mean,     c->dead.mean};
        /* the interval ends and the LCB (columns 1, 2, 4, 5, 7, 10, 11 above) are NaN when withheld */
        const unsigned interval_cols = 1u << 1 | 1u << 2 | 1u << 4 | 1u << 5 | 1u << 7 | 1u << 10 | 1u << 11;
        for (size_t j = 0; j < sizeof cols / sizeof *cols; j++)
            if (!isfinite(cols[j]) && (interval_cols >> j & 1u))
                fprintf(f, NA_FEW_SEEDS ",");
            else
                fprintf(f, "%.17g,", cols[j]);
        fprintf(f, "%s,", husai_arch_name(c->arch));
        /* the ground-truth columns come last and stay empty without a dictionary */
        if (c->has_gt)
            fprintf(f, "%.17g,%.17g\n", c->gt_mean_max_cos.mean, c->gt_recovered.mean);
        else
            fprintf(f, ",\n");
    }
    fclose(f);
    husai_status st = write_text(path, text);
    free(text);
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
    husai_rundir_path(rd, "conditions.csv", path, sizeof path);
    if ((st = write_csv(path, c, n))) return st;
    husai_rundir_path(rd, "summary.md", path, sizeof path);
    if ((st = write_summary(path, run, c, n, proto))) return st;
    /* Plots of the grid the user chose (the search phase in calibrate). */
    const int n_grid = proto ? proto->n_first : n;
    char title[128];
    snprintf(title, sizeof title, "Feature consistency vs %s (%s)", n > 0 ? c[0].param : "", run->id);
    husai_rundir_path(rd, "pwmcc_vs_param.svg", path, sizeof path);
    if ((st = husai_svg_pwmcc_vs_param(path, c, n_grid, title))) return st;
    husai_rundir_path(rd, "pwmcc_vs_ev.svg", path, sizeof path);
    if ((st = husai_svg_pwmcc_vs_ev(path, c, n, "Consistency vs reconstruction quality"))) return st;
    if (n > 0 && c[0].density) {
        husai_rundir_path(rd, "density.svg", path, sizeof path);
        if ((st =
                 husai_svg_density(path, c, n, "Feature density (share of training rows a latent fires on)")))
            return st;
    }
    /* The peak resident set includes writing the results (rank 0's largest step before results.h5
     * went to disk condition by condition). */
    husai_run_info final = *run;
    struct rusage ru;
    if (final.peak_rss_mb > 0 && getrusage(RUSAGE_SELF, &ru) == 0 &&
        (double)ru.ru_maxrss / 1024.0 > final.peak_rss_mb)
        final.peak_rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
    /* results.json last: its presence marks a complete set even inside staging. */
    husai_rundir_path(rd, "results.json", path, sizeof path);
    return write_json(path, &final, c, n, proto);
}

void husai_condition_result_free(husai_condition_result *r) {
    if (!r) return;
    release_params(r);
    free(r->pwmcc);
    free(r->random_pwmcc);
    free(r->per_seed);
    free(r->pwmcc_with_ref);
    free(r->match_cos);
    free(r->match_frac);
    free(r->density);
    r->density = NULL;
    r->match_cos = r->match_frac = NULL;
    r->pwmcc = r->random_pwmcc = r->pwmcc_with_ref = NULL;
    r->per_seed = NULL;
}
