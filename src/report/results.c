#define _POSIX_C_SOURCE 200809L
#include "report/results.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- results.h5 ---------- */

static herr_t write_ds(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc;
}

static herr_t attr_str(hid_t loc, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return rc;
}

static herr_t attr_num(hid_t loc, const char *name, hid_t type, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

static char *config_text(const husai_config *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    husai_config_print(cfg, f);
    fclose(f);
    return text;
}

static husai_status write_h5(const char *path, const husai_run_info *run, const husai_condition_result *cs, int n) {
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return husai_error(HUSAI_ERR_IO, "cannot create '%s'", path);
    herr_t rc = 0;
    char *cfg = config_text(run->cfg);
    rc |= attr_str(file, "run_id", run->id);
    rc |= attr_str(file, "version", run->version);
    rc |= attr_str(file, "git_commit", run->commit);
    rc |= attr_str(file, "config", cfg ? cfg : "");
    rc |= attr_str(file, "decoder_layout", "decoders[s] is [d_model, d_sae]; column j is feature j");
    free(cfg);
    hid_t conds = H5Gcreate2(file, "conditions", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < n && conds >= 0; i++) {
        const husai_condition_result *c = &cs[i];
        hid_t g = H5Gcreate2(conds, c->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            rc = -1;
            break;
        }
        const hsize_t S = (hsize_t)c->S, dm = (hsize_t)c->d_model, ds = (hsize_t)c->d_sae;
        const hsize_t d_dec[3] = {S, dm, ds}, d_enc[3] = {S, ds, dm}, d_b[2] = {S, ds}, d_s[1] = {S}, d_m[2] = {S, S};
        rc |= write_ds(g, "decoders", H5T_NATIVE_FLOAT, 3, d_dec, c->decoders);
        rc |= write_ds(g, "encoders", H5T_NATIVE_FLOAT, 3, d_enc, c->encoders);
        rc |= write_ds(g, "b_enc", H5T_NATIVE_FLOAT, 2, d_b, c->b_enc);
        rc |= write_ds(g, "seeds", H5T_NATIVE_UINT64, 1, d_s, c->seeds);
        rc |= write_ds(g, "pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->pwmcc);
        rc |= write_ds(g, "random_pwmcc", H5T_NATIVE_DOUBLE, 2, d_m, c->random_pwmcc);
        double *col = malloc((size_t)c->S * sizeof(double));
        if (!col) {
            rc = -1;
        } else {
            const char *names[] = {"explained_variance", "mse", "l0", "dead_fraction"};
            for (int m = 0; m < 4; m++) {
                for (int s = 0; s < c->S; s++) {
                    const husai_seed_metrics *p = &c->per_seed[s];
                    col[s] = m == 0 ? p->ev : m == 1 ? p->mse : m == 2 ? p->l0 : p->dead_fraction;
                }
                rc |= write_ds(g, names[m], H5T_NATIVE_DOUBLE, 1, d_s, col);
            }
            free(col);
        }
        rc |= attr_str(g, "param", c->param);
        rc |= attr_num(g, "value", H5T_NATIVE_DOUBLE, &c->value);
        rc |= attr_num(g, "k", H5T_NATIVE_INT, &c->k);
        rc |= attr_num(g, "d_sae", H5T_NATIVE_INT, &c->d_sae);
        rc |= attr_num(g, "d_model", H5T_NATIVE_INT, &c->d_model);
        H5Gclose(g);
    }
    if (conds < 0) rc = -1;
    else H5Gclose(conds);
    if (H5Fclose(file) < 0) rc = -1;
    if (rc < 0) return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full or not writable?)", path);
    return HUSAI_OK;
}

/* ---------- results.json ---------- */

static cJSON *ci_json(const husai_ci *ci) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean", ci->mean);
    cJSON_AddNumberToObject(o, "std", ci->std);
    cJSON_AddNumberToObject(o, "ci95_low", ci->lo);
    cJSON_AddNumberToObject(o, "ci95_high", ci->hi);
    cJSON_AddNumberToObject(o, "n", ci->n);
    return o;
}

static husai_status write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, f) != len;
    bad |= fflush(f) != 0;
    bad |= fclose(f) != 0;
    if (bad) return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", path);
    return HUSAI_OK;
}

static const char *unit_name(husai_boot_unit u) {
    return u == HUSAI_BOOT_PAIRS ? "pairs" : "seeds";
}

static husai_status write_json(const char *path, const husai_run_info *run, const husai_condition_result *cs, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *r = cJSON_AddObjectToObject(root, "run");
    cJSON_AddStringToObject(r, "id", run->id);
    cJSON_AddStringToObject(r, "version", run->version);
    cJSON_AddStringToObject(r, "git_commit", run->commit);
    cJSON_AddStringToObject(r, "command", run->command);
    cJSON *hosts = cJSON_AddArrayToObject(r, "hosts");
    char hostbuf[8192];
    snprintf(hostbuf, sizeof hostbuf, "%s", run->hosts);
    for (char *h = strtok(hostbuf, ","); h; h = strtok(NULL, ",")) cJSON_AddItemToArray(hosts, cJSON_CreateString(h));
    cJSON_AddNumberToObject(r, "ranks", run->ranks);
    cJSON_AddNumberToObject(r, "seconds", run->seconds);
    const husai_config *cfg = run->cfg;
    cJSON *d = cJSON_AddObjectToObject(root, "data");
    cJSON_AddStringToObject(d, "path", cfg->data_path);
    cJSON_AddStringToObject(d, "dataset", cfg->dataset);
    cJSON_AddStringToObject(d, "dtype", run->dtype);
    cJSON_AddNumberToObject(d, "rows", (double)run->n_rows);
    cJSON_AddNumberToObject(d, "d_model", run->d_model);
    cJSON *b = cJSON_AddObjectToObject(root, "bootstrap");
    cJSON_AddStringToObject(b, "unit", unit_name(cfg->bootstrap_unit));
    cJSON_AddNumberToObject(b, "resamples", cfg->resamples);
    cJSON_AddNumberToObject(b, "seed", (double)cfg->bootstrap_seed);
    cJSON_AddStringToObject(b, "rng", cfg->bootstrap_rng == HUSAI_BOOT_NUMPY ? "numpy" : "native");
    char *cfgtext = config_text(cfg);
    cJSON_AddStringToObject(root, "config", cfgtext ? cfgtext : "");
    free(cfgtext);
    cJSON *arr = cJSON_AddArrayToObject(root, "conditions");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "param", c->param);
        cJSON_AddNumberToObject(o, "value", c->value);
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
        cJSON *ps = cJSON_AddArrayToObject(o, "per_seed");
        for (int s = 0; s < c->S; s++) {
            const husai_seed_metrics *m = &c->per_seed[s];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "seed", (double)c->seeds[s]);
            cJSON_AddNumberToObject(e, "explained_variance", m->ev);
            cJSON_AddNumberToObject(e, "mse", m->mse);
            cJSON_AddNumberToObject(e, "l0", m->l0);
            cJSON_AddNumberToObject(e, "dead_fraction", m->dead_fraction);
            cJSON_AddNumberToObject(e, "last_epoch_loss", m->last_epoch_loss);
            cJSON_AddNumberToObject(e, "steps", m->steps);
            cJSON_AddNumberToObject(e, "seconds", m->seconds);
            cJSON_AddNumberToObject(e, "rank", m->rank);
            cJSON_AddItemToArray(ps, e);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
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

static husai_status write_summary(const char *path, const husai_run_info *run, const husai_condition_result *cs,
                                  int n) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return husai_error(HUSAI_ERR_NOMEM, "cannot format summary.md");
    const husai_config *cfg = run->cfg;
    fprintf(f, "# husai sweep %s\n\n", run->id);
    fprintf(f, "Data: `%s:%s` (%zu x %d, %s). Seeds:", cfg->data_path, cfg->dataset, run->n_rows, run->d_model,
            run->dtype);
    for (int s = 0; s < cfg->n_seeds; s++) fprintf(f, " %llu", (unsigned long long)cfg->seeds[s]);
    fprintf(f, ". %d ranks on %d host(s), %.1f s.\n\n", run->ranks, run->n_hosts, run->seconds);
    fprintf(f, "Bootstrap: %d resamples, unit `%s`%s, %s generator, seed %llu; intervals are 95%% percentile CIs.\n\n",
            cfg->resamples, unit_name(cfg->bootstrap_unit),
            cfg->bootstrap_unit == HUSAI_BOOT_SEEDS ? " (cluster over seeds)" : " (HUSAI's; anti-conservative)",
            cfg->bootstrap_rng == HUSAI_BOOT_NUMPY ? "numpy" : "native", (unsigned long long)cfg->bootstrap_seed);
    fprintf(f, "| %s | trained PWMCC [95%% CI] | random PWMCC [95%% CI] | delta | conservative delta LCB | ratio | EV "
               "[95%% CI] | MSE | L0 | dead |\n",
            cfg->param);
    fprintf(f, "|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        fprintf(f,
                "| %.6g | %.5f [%.5f, %.5f] | %.5f [%.5f, %.5f] | %+.5f | %+.5f | %.3f | %.4f [%.4f, %.4f] | %.4g | %.2f "
                "| %.3f |\n",
                c->value, c->trained.mean, c->trained.lo, c->trained.hi, c->random.mean, c->random.lo, c->random.hi,
                c->delta, c->delta_lcb, c->ratio, c->ev.mean, c->ev.lo, c->ev.hi, c->mse.mean, c->l0.mean,
                c->dead.mean);
    }
    int best = -1;
    for (int i = 0; i < n; i++)
        if (best < 0 || cs[i].delta_lcb > cs[best].delta_lcb) best = i;
    if (best >= 0)
        fprintf(f, "\nLargest conservative delta LCB: %s (%+.5f): trained features there are the most reproducible "
                   "above the random baseline.\n",
                cs[best].name, cs[best].delta_lcb);
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
               "explained_variance,ev_ci95_low,ev_ci95_high,mse,l0,dead_fraction\n");
    for (int i = 0; i < n; i++) {
        const husai_condition_result *c = &cs[i];
        fprintf(f, "%s,%s,%.17g,%d,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g\n",
                c->name, c->param, c->value, c->S, c->trained.mean, c->trained.lo, c->trained.hi, c->random.mean,
                c->random.lo, c->random.hi, c->delta, c->delta_lcb, c->ratio, c->ev.mean, c->ev.lo, c->ev.hi,
                c->mse.mean, c->l0.mean, c->dead.mean);
    }
    fclose(f);
    husai_status st = write_text(path, text);
    free(text);
    return st;
}

husai_status husai_results_write(const husai_rundir *rd, const husai_run_info *run, const husai_condition_result *c,
                                 int n) {
    char path[4200];
    husai_status st;
    husai_rundir_path(rd, "results.h5", path, sizeof path);
    if ((st = write_h5(path, run, c, n))) return st;
    husai_rundir_path(rd, "conditions.csv", path, sizeof path);
    if ((st = write_csv(path, c, n))) return st;
    husai_rundir_path(rd, "summary.md", path, sizeof path);
    if ((st = write_summary(path, run, c, n))) return st;
    /* results.json last: its presence marks a complete set even inside staging. */
    husai_rundir_path(rd, "results.json", path, sizeof path);
    return write_json(path, run, c, n);
}
