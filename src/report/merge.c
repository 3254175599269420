/* merge.c: joining the run directories of a sweep split into parts (merge.h). */
#define _POSIX_C_SOURCE 200809L
#include "report/merge.h"

#include <cjson/cJSON.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fingerprint.h"
#include "config/config.h"
#include "report/h5attr.h"
#include "report/results.h"
#include "report/rundir.h"

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Reads a whole dataset of `count` elements of memory type `type` into a new buffer; NULL on any mismatch. */
static void *read_all(hid_t g, const char *name, hid_t type, size_t elem, size_t count) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t sp = H5Dget_space(d);
    void *buf = NULL;
    if ((size_t)H5Sget_simple_extent_npoints(sp) == count) {
        buf = malloc(count * elem);
        if (buf && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            free(buf);
            buf = NULL;
        }
    }
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

typedef struct {
    husai_condition_result *res;
    int n, cap;
    husai_config cfg; /* first part's config; values are collected into it */
    uint64_t base_hash;
    int have_cfg;
    char hosts[8192];
    int ranks;
    double seconds;
    char dtype[16];
    char fingerprint[HUSAI_FP_LEN]; /* the first part's data fingerprint; every part must have it */
    const char *first_dir;
    char model_name[256], hook_name[256]; /* the data's names (husai import), "" when unknown */
    size_t n_rows;
    int d_model;
} merge_state;

/* The configuration's identity without its sweep values: what every part must share. */
static uint64_t hash_without_values(const husai_config *c) {
    static husai_config copy;
    copy = *c;
    copy.n_values = 0;
    return husai_config_hash(&copy);
}

static husai_status load_condition(merge_state *ms, hid_t conds, const char *name, const char *part) {
    hid_t g = H5Gopen2(conds, name, H5P_DEFAULT);
    if (g < 0) return husai_error(HUSAI_ERR_DATA, "%s: cannot open condition '%s'", part, name);
    husai_status st = HUSAI_OK;
    double value = NAN;
    hid_t a = H5Aopen(g, "value", H5P_DEFAULT);
    if (a >= 0) {
        H5Aread(a, H5T_NATIVE_DOUBLE, &value);
        H5Aclose(a);
    }
    for (int i = 0; i < ms->n; i++)
        if (!strcmp(ms->res[i].name, name)) {
            H5Gclose(g);
            return husai_error(HUSAI_ERR_ARG, "%s: condition '%s' is already in another part", part, name);
        }
    if (ms->n == ms->cap) {
        ms->cap = ms->cap ? 2 * ms->cap : 16;
        ms->res = realloc(ms->res, (size_t)ms->cap * sizeof *ms->res);
        if (!ms->res) {
            H5Gclose(g);
            return husai_error(HUSAI_ERR_NOMEM, "out of memory");
        }
    }
    const husai_config *cfg = &ms->cfg;
    const husai_condition cond = husai_config_make_condition(cfg, cfg->param, value);
    const int S = cfg->n_seeds, dm = ms->d_model, ds = cond.d_sae;
    const size_t dd = (size_t)dm * ds;
    husai_condition_result *r = &ms->res[ms->n];
    *r = (husai_condition_result){.phase = "",
                                  .value = value,
                                  .S = S,
                                  .d_model = dm,
                                  .d_sae = ds,
                                  .k = cond.k,
                                  .epochs = cond.epochs,
                                  .batch_size = cond.batch_size,
                                  .lr = cond.lr,
                                  .arch = cond.arch,
                                  .seeds = cfg->seeds};
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->param, sizeof r->param, "%s", cfg->param);
    r->decoders = read_all(g, "decoders", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * dd);
    r->encoders = read_all(g, "encoders", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * dd);
    r->b_enc = read_all(g, "b_enc", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * ds);
    r->b_dec = read_all(g, "b_dec", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * dm);
    r->thresholds = read_all(g, "thresholds", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * ds);
    r->pwmcc = malloc((size_t)S * S * sizeof(double));
    r->random_pwmcc = malloc((size_t)S * S * sizeof(double));
    r->per_seed = calloc((size_t)S, sizeof(husai_seed_metrics));
    const char *cols[] = {"explained_variance", "mse", "l0", "dead_fraction", "steps", "seconds", "rank",
                          "last_epoch_loss"};
    if (!r->decoders || !r->encoders || !r->b_enc || !r->b_dec || !r->thresholds || !r->pwmcc ||
        !r->random_pwmcc || !r->per_seed) {
        st =
            husai_error(HUSAI_ERR_DATA,
                        "%s: condition '%s' lacks decoders/encoders/b_enc/b_dec/thresholds of the configured "
                        "shape",
                        part, name);
    } else {
        for (int m = 0; m < 8 && !st; m++) {
            double *v = read_all(g, cols[m], H5T_NATIVE_DOUBLE, sizeof(double), (size_t)S);
            if (!v) {
                st = husai_error(HUSAI_ERR_DATA, "%s: condition '%s' lacks per-seed '%s'", part, name,
                                 cols[m]);
                break;
            }
            for (int s = 0; s < S; s++) {
                husai_seed_metrics *p = &r->per_seed[s];
                double *fields[] = {&p->ev,    &p->mse,     &p->l0,   &p->dead_fraction,
                                    &p->steps, &p->seconds, &p->rank, &p->last_epoch_loss};
                *fields[m] = v[s];
                p->alignment = NAN;
            }
            free(v);
        }
        /* Optional per-seed columns: NaN when the part has none (no holdout, no dictionary). */
        const char *opt_cols[] = {"heldout_explained_variance", "heldout_mse",     "heldout_l0",
                                  "heldout_dead_fraction",      "gt_mean_max_cos", "gt_recovered"};
        for (int m = 0; m < 6 && !st; m++) {
            double *v = H5Lexists(g, opt_cols[m], H5P_DEFAULT) > 0
                            ? read_all(g, opt_cols[m], H5T_NATIVE_DOUBLE, sizeof(double), (size_t)S)
                            : NULL;
            for (int s = 0; s < S; s++) {
                husai_seed_metrics *p = &r->per_seed[s];
                double *fields[] = {&p->ho_ev,   &p->ho_mse,          &p->ho_l0,
                                    &p->ho_dead, &p->gt_mean_max_cos, &p->gt_recovered};
                *fields[m] = v ? v[s] : NAN;
            }
            free(v);
        }
        /* Firing densities, when the part has them (runs of older versions do not). */
        if (!st && H5Lexists(g, "density", H5P_DEFAULT) > 0 &&
            !(r->density = read_all(g, "density", H5T_NATIVE_FLOAT, sizeof(float), (size_t)S * ds)))
            st = husai_error(HUSAI_ERR_DATA, "%s: condition '%s' has a density dataset of the wrong shape",
                             part, name);
    }
    H5Gclose(g);
    if (st) {
        husai_condition_result_free(r);
        return st;
    }
    ms->n++;
    return HUSAI_OK;
}

/* Refuses a part trained on other data than the first part (or whose data is unknown): its conditions
 * would be compared as if they had seen the same rows. */
static husai_status check_fingerprint(merge_state *ms, const cJSON *data, const char *dir) {
    const char *fp = cJSON_GetStringValue(cJSON_GetObjectItem(data, "fingerprint"));
    const char *path = cJSON_GetStringValue(cJSON_GetObjectItem(data, "path"));
    if (!fp || strlen(fp) >= HUSAI_FP_LEN)
        return husai_error(
            HUSAI_ERR_DATA,
            "'%s' records no data fingerprint (made by an older husai?): cannot check that the "
            "parts were trained on the same data",
            dir);
    if (!ms->first_dir) {
        snprintf(ms->fingerprint, sizeof ms->fingerprint, "%s", fp);
        ms->first_dir = dir;
    } else if (strcmp(fp, ms->fingerprint)) {
        return husai_error(
            HUSAI_ERR_DATA,
            "the parts were trained on different data: '%s' has data fingerprint %s, '%s' has %s "
            "(data file '%s')",
            ms->first_dir, ms->fingerprint, dir, fp, path ? path : "?");
    }
    return HUSAI_OK;
}

static husai_status load_part(merge_state *ms, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/results.json", dir);
    char *json = read_text_file(path);
    if (!json)
        return husai_error(HUSAI_ERR_IO, "'%s' is not a complete run directory (no results.json)", dir);
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (!root) return husai_error(HUSAI_ERR_DATA, "'%s' is not valid JSON", path);
    const cJSON *run = cJSON_GetObjectItem(root, "run"), *data = cJSON_GetObjectItem(root, "data");
    husai_status st = HUSAI_OK;
    if (!run || !data || cJSON_GetObjectItem(root, "protocol")) {
        st = husai_error(HUSAI_ERR_DATA,
                         "'%s' is not a plain sweep's results (protocol runs cannot be merged)", path);
    } else {
        const cJSON *h;
        cJSON_ArrayForEach(h, cJSON_GetObjectItem(run, "hosts")) {
            if (!cJSON_IsString(h) || strstr(ms->hosts, h->valuestring)) continue;
            size_t used = strlen(ms->hosts);
            snprintf(ms->hosts + used, sizeof ms->hosts - used, "%s%s", used ? "," : "", h->valuestring);
        }
        ms->ranks += (int)cJSON_GetNumberValue(cJSON_GetObjectItem(run, "ranks"));
        ms->seconds += cJSON_GetNumberValue(cJSON_GetObjectItem(run, "seconds"));
        st = check_fingerprint(ms, data, dir);
        const char *dtype = cJSON_GetStringValue(cJSON_GetObjectItem(data, "dtype"));
        snprintf(ms->dtype, sizeof ms->dtype, "%s", dtype ? dtype : "?");
        /* the same data (fingerprint) carries the same names: the first part's are kept */
        const char *mn = cJSON_GetStringValue(cJSON_GetObjectItem(data, "model_name"));
        const char *hn = cJSON_GetStringValue(cJSON_GetObjectItem(data, "hook_name"));
        if (mn && !*ms->model_name) snprintf(ms->model_name, sizeof ms->model_name, "%s", mn);
        if (hn && !*ms->hook_name) snprintf(ms->hook_name, sizeof ms->hook_name, "%s", hn);
        ms->n_rows = (size_t)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "rows"));
        ms->d_model = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(data, "d_model"));
    }
    cJSON_Delete(root);
    if (st) return st;

    snprintf(path, sizeof path, "%s/results.h5", dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return husai_error(HUSAI_ERR_IO, "cannot open '%s'", path);
    char *cfgtext = husai_h5_attr_read_str(file, "config");
    husai_config cfg;
    husai_config_defaults(&cfg);
    st = cfgtext ? husai_config_load_string(&cfg, cfgtext, path)
                 : husai_error(HUSAI_ERR_DATA, "'%s' has no config attribute", path);
    free(cfgtext);
    if (!st) {
        const uint64_t h = hash_without_values(&cfg);
        if (!ms->have_cfg) {
            ms->cfg = cfg;
            ms->cfg.n_values = 0;
            ms->base_hash = h;
            ms->have_cfg = 1;
        } else if (h != ms->base_hash) {
            st = husai_error(HUSAI_ERR_ARG,
                             "'%s' was run with settings other than the first part's (only sweep.values "
                             "may differ between parts)",
                             dir);
        }
    }
    if (!st) {
        /* Conditions in the part's own config order, so a merge lists them as the single job would. */
        hid_t conds = H5Gopen2(file, "conditions", H5P_DEFAULT);
        if (conds < 0) st = husai_error(HUSAI_ERR_DATA, "'%s' has no /conditions", path);
        for (int i = 0; !st && i < cfg.n_values; i++)
            st = load_condition(ms, conds, husai_config_condition(&cfg, i).name, dir);
        if (conds >= 0) H5Gclose(conds);
    }
    H5Fclose(file);
    return st;
}

husai_status husai_merge(const char *const *parts, int n_parts, const husai_merge_opts *o, int *n_conditions,
                         char *final_path, size_t path_size) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are one line, from the status */
    merge_state ms;
    memset(&ms, 0, sizeof ms);
    husai_status st = HUSAI_OK;
    for (int i = 0; i < n_parts && !st; i++)
        st = load_part(&ms, parts[i]);
    if (!st && ms.n == 0) st = husai_error(HUSAI_ERR_DATA, "the parts hold no conditions");
    if (!st && ms.n > HUSAI_MAX_VALUES)
        st = husai_error(HUSAI_ERR_ARG, "more than %d conditions", HUSAI_MAX_VALUES);
    husai_rundir rd = {0};
    if (!st) {
        ms.cfg.n_values = ms.n;
        for (int i = 0; i < ms.n; i++)
            ms.cfg.values[i] = ms.res[i].value;
        const husai_condition_opts co = husai_config_condition_opts(&ms.cfg);
        for (int i = 0; i < ms.n && !st; i++) {
            /* seeds must point at the merged config that outlives the parts */
            ms.res[i].seeds = ms.cfg.seeds;
            st = husai_condition_metrics(&co, &ms.res[i], NULL, ms.res, i);
        }
    }
    if (!st) {
        snprintf(ms.cfg.out_dir, sizeof ms.cfg.out_dir, "%s", o->out);
        char run_id[256];
        if (o->run_id) {
            snprintf(run_id, sizeof run_id, "%s", o->run_id);
        } else {
            husai_rundir_default_id(husai_config_hash(&ms.cfg), run_id, sizeof run_id);
        }
        int n_hosts = *ms.hosts ? 1 : 0;
        for (const char *p = ms.hosts; *p; p++)
            n_hosts += *p == ',';
        husai_run_info info = {.id = run_id,
                               .version = o->version,
                               .commit = o->commit,
                               .command = o->command,
                               .hosts = ms.hosts,
                               .n_hosts = n_hosts,
                               .ranks = ms.ranks,
                               .seconds = ms.seconds,
                               .cfg = &ms.cfg,
                               .dtype = ms.dtype,
                               .fingerprint = ms.fingerprint,
                               .model_name = ms.model_name,
                               .hook_name = ms.hook_name,
                               .n_rows = ms.n_rows,
                               .d_model = ms.d_model};
        st = husai_rundir_begin(&rd, o->out, run_id, o->force, 0);
        if (!st) st = husai_results_write(&rd, &info, NULL, ms.res, ms.n, NULL);
        if (!st) husai_rundir_remove(&rd, "checkpoints");
        if (!st) st = husai_rundir_commit(&rd, o->force);
        if (!st) {
            *n_conditions = ms.n;
            snprintf(final_path, path_size, "%s", rd.final_path);
        }
    }
    for (int i = 0; i < ms.n; i++)
        husai_condition_result_free(&ms.res[i]);
    free(ms.res);
    if (st) husai_rundir_abort(&rd);
    return st;
}
