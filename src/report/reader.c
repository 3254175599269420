#define _POSIX_C_SOURCE 200809L
#include "report/reader.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report/h5attr.h"
#include "sae/model.h"

/* The whole file as a string (free it), or NULL. */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = '\0';
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

/* Where a lookup failed, for the one error line: the file and the key path. */
typedef struct {
    const char *file;
    char where[160];
    int missing; /* set by the first failed lookup */
    char key[96];
} jctx;

static const cJSON *item(jctx *j, const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it && !j->missing) {
        j->missing = 1;
        snprintf(j->key, sizeof j->key, "%s", key);
    }
    return it;
}

/* A number; null (a withheld interval) reads as NaN; absent or not a number sets j->missing. */
static double num(jctx *j, const cJSON *o, const char *key) {
    const cJSON *it = item(j, o, key);
    if (cJSON_IsNumber(it)) return it->valuedouble;
    if (!cJSON_IsNull(it) && it && !j->missing) {
        j->missing = 1;
        snprintf(j->key, sizeof j->key, "%s", key);
    }
    return NAN;
}

/* An optional number: NaN when absent. */
static double num_opt(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

static void str(jctx *j, const cJSON *o, const char *key, char *out, size_t n) {
    const char *s = cJSON_GetStringValue(item(j, o, key));
    snprintf(out, n, "%s", s ? s : "");
    if (!s && !j->missing) {
        j->missing = 1;
        snprintf(j->key, sizeof j->key, "%s", key);
    }
}

static husai_ci ci(jctx *j, const cJSON *o, const char *key) {
    const cJSON *c = item(j, o, key);
    return (husai_ci){.mean = num(j, c, "mean"),
                      .std = num(j, c, "std"),
                      .lo = num(j, c, "ci95_low"),
                      .hi = num(j, c, "ci95_high"),
                      .n = (int)num(j, c, "n")};
}

static husai_diff_ci diff_ci(jctx *j, const cJSON *o, const char *key) {
    const cJSON *c = item(j, o, key);
    return (husai_diff_ci){
        .diff = num(j, c, "diff"), .lo = num(j, c, "ci95_low"), .hi = num(j, c, "ci95_high")};
}

/* Reads dataset name of g (count elements of memory type type) into a new buffer; NULL when absent or of
 * another size. */
static void *h5_read_all(hid_t g, const char *name, hid_t type, size_t elem, size_t count) {
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return NULL;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t sp = H5Dget_space(d);
    void *buf = NULL;
    if (sp >= 0 && H5Sget_simple_extent_npoints(sp) == (hssize_t)count && (buf = malloc(count * elem)) &&
        H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

static int index_of(const husai_run_read *r, const char *name) {
    for (int i = 0; name && i < r->n; i++)
        if (!strcmp(r->c[i].name, name)) return i;
    return -1;
}

static husai_feature_stats feature_stats(jctx *j, const cJSON *o) {
    return (husai_feature_stats){.count = ci(j, o, "consensus_count"),
                                 .share = ci(j, o, "consensus_share"),
                                 .stable_share = ci(j, o, "stable_share")};
}

/* A condition's "features" (per-feature stability): the counts, intervals and the stability per density
 * bin the reports show; the per-feature arrays stay in results.h5. */
static void read_features(jctx *j, const cJSON *o, husai_condition_result *c) {
    husai_features *f = c->features = calloc(1, sizeof *f);
    if (!f) return;
    f->S = c->S;
    f->d_model = c->d_model;
    f->d_sae = c->d_sae;
    f->tau = num(j, o, "tau");
    f->min_seeds = (int)num(j, o, "min_seeds");
    f->n_mutual = (int)num(j, o, "n_mutual");
    f->n_consensus = (int)num(j, o, "n_consensus");
    f->stats = feature_stats(j, o);
    c->features_random = feature_stats(j, item(j, o, "random"));
    c->gt_consensus_recovered = num_opt(o, "gt_recovered_by_consensus");
    c->gt_consensus_precision = num_opt(o, "gt_consensus_precision");
    const cJSON *sb = item(j, o, "stability_by_density"), *nb = item(j, o, "latents_by_density");
    if (cJSON_GetArraySize(sb) != HUSAI_DENSITY_BINS + 1 ||
        cJSON_GetArraySize(nb) != HUSAI_DENSITY_BINS + 1) {
        if (!j->missing) {
            j->missing = 1;
            snprintf(j->key, sizeof j->key, "features.stability_by_density (%d bins)",
                     HUSAI_DENSITY_BINS + 1);
        }
        return;
    }
    for (int b = 0; b <= HUSAI_DENSITY_BINS; b++) {
        const cJSON *v = cJSON_GetArrayItem(sb, b);
        f->stability_by_density[b] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        f->n_by_density[b] = (long)cJSON_GetNumberValue(cJSON_GetArrayItem(nb, b));
    }
}

/* One condition of results.json's "conditions" array. */
static void read_condition(jctx *j, const cJSON *o, husai_condition_result *c, int d_model) {
    char arch[32];
    str(j, o, "name", c->name, sizeof c->name);
    str(j, o, "param", c->param, sizeof c->param);
    str(j, o, "arch", arch, sizeof arch);
    c->arch = husai_arch_parse(arch);
    c->value = num(j, o, "value");
    c->S = (int)num(j, o, "n_seeds");
    c->d_model = d_model;
    c->d_sae = (int)num(j, o, "d_sae");
    c->k = (int)num(j, o, "k");
    c->epochs = (int)num(j, o, "epochs");
    c->batch_size = (int)num(j, o, "batch_size");
    c->lr = num(j, o, "lr");
    c->trained = ci(j, o, "trained_pwmcc");
    c->random = ci(j, o, "random_pwmcc");
    c->ev = ci(j, o, "explained_variance");
    c->mse = ci(j, o, "mse");
    c->l0 = ci(j, o, "l0");
    c->dead = ci(j, o, "dead_fraction");
    c->delta = num(j, o, "delta_pwmcc");
    c->delta_lcb = num(j, o, "delta_pwmcc_ci_low_conservative");
    c->ratio = num(j, o, "ratio_pwmcc");
    if ((c->has_match = cJSON_HasObjectItem(o, "matched_cosine"))) {
        c->matched_cos = ci(j, o, "matched_cosine");
        c->matched_frac = ci(j, o, "matched_fraction_0_7");
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "heldout");
    if ((c->has_holdout = h != NULL)) {
        c->ho_ev = ci(j, h, "explained_variance");
        c->ho_mse = ci(j, h, "mse");
        c->ho_l0 = ci(j, h, "l0");
        c->ho_dead = ci(j, h, "dead_fraction");
    }
    if ((c->has_gt = cJSON_HasObjectItem(o, "gt_mean_max_cos"))) {
        c->gt_mean_max_cos = ci(j, o, "gt_mean_max_cos");
        c->gt_recovered = ci(j, o, "gt_recovered");
    }
    const cJSON *fe = cJSON_GetObjectItemCaseSensitive(o, "features");
    if (fe) read_features(j, fe, c);
    if ((c->has_ref = cJSON_HasObjectItem(o, "lambda"))) {
        c->lambda = num(j, o, "lambda");
        c->trained_with_ref = ci(j, o, "trained_pwmcc_with_reference");
        c->alignment = ci(j, o, "alignment_to_reference");
    }
    const cJSON *ps = item(j, o, "per_seed");
    if (j->missing || c->S < 1 || cJSON_GetArraySize(ps) != c->S) {
        if (!j->missing) {
            j->missing = 1;
            snprintf(j->key, sizeof j->key, "per_seed (%d seeds expected)", c->S);
        }
        return;
    }
    c->per_seed = calloc((size_t)c->S, sizeof *c->per_seed);
    if (!c->per_seed) return;
    for (int s = 0; s < c->S; s++) {
        const cJSON *e = cJSON_GetArrayItem(ps, s);
        husai_seed_metrics *m = &c->per_seed[s];
        *m = (husai_seed_metrics){.ev = num(j, e, "explained_variance"),
                                  .mse = num(j, e, "mse"),
                                  .l0 = num(j, e, "l0"),
                                  .dead_fraction = num(j, e, "dead_fraction"),
                                  .last_epoch_loss = num(j, e, "last_epoch_loss"),
                                  .steps = num(j, e, "steps"),
                                  .seconds = num(j, e, "seconds"),
                                  .rank = num(j, e, "rank"),
                                  .alignment = num_opt(e, "alignment_to_reference"),
                                  .ho_ev = num_opt(e, "heldout_explained_variance"),
                                  .ho_mse = num_opt(e, "heldout_mse"),
                                  .ho_l0 = num_opt(e, "heldout_l0"),
                                  .ho_dead = num_opt(e, "heldout_dead_fraction"),
                                  .gt_mean_max_cos = num_opt(e, "gt_mean_max_cos"),
                                  .gt_recovered = num_opt(e, "gt_recovered")};
    }
}

/* The protocol's decisions (results.json "protocol"), indices resolved by condition name. */
static void read_protocol(jctx *j, const cJSON *p, husai_run_read *r) {
    husai_protocol_result *pr = &r->proto;
    char mode[32], name[96];
    str(j, p, "mode", mode, sizeof mode);
    pr->mode = husai_mode_parse(mode);
    pr->floor = num(j, p, "ev_floor");
    pr->selected = index_of(r, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "selected")));
    pr->baseline = -1;
    /* the first phase's conditions come first: the search grid (calibrate) or the lambda grid */
    const char *first = r->n > 0 ? r->c[0].phase : "";
    while (pr->n_first < r->n && !strcmp(r->c[pr->n_first].phase, first))
        pr->n_first++;
    if (pr->mode == HUSAI_MODE_CALIBRATE) {
        pr->control_k = (int)num(j, p, "control_k");
        const cJSON *e = item(j, p, "direct_effect");
        pr->effect_paired = diff_ci(j, e, "paired_seeds");
        pr->effect_unpaired = diff_ci(j, e, "husai_unpaired_pairs");
        if (!j->missing && (pr->selected < 0 || pr->n_first + 2 != r->n)) {
            j->missing = 1;
            snprintf(j->key, sizeof j->key, "protocol.selected (a search condition and 2 retrained ones)");
        }
    } else if (pr->mode == HUSAI_MODE_CONSISTENCY) {
        str(j, p, "baseline", name, sizeof name);
        pr->baseline = index_of(r, name);
        pr->reference_seed = (uint64_t)num(j, p, "reference_seed"); /* exact from results.h5 below */
        pr->reference_metrics.ev = num(j, item(j, p, "reference"), "explained_variance");
        pr->reference_metrics.mse = num(j, item(j, p, "reference"), "mse");
        pr->reference_metrics.l0 = num(j, item(j, p, "reference"), "l0");
        if (!j->missing && pr->baseline < 0) {
            j->missing = 1;
            snprintf(j->key, sizeof j->key, "protocol.baseline (names no condition)");
        }
    } else if (!j->missing) {
        j->missing = 1;
        snprintf(j->key, sizeof j->key, "protocol.mode ('%s' is no protocol)", mode);
    }
}

static husai_status read_json(husai_run_read *r, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/results.json", dir);
    char *text = slurp(path);
    if (!text)
        return husai_error(HUSAI_ERR_IO, "cannot read '%s': %s (not a complete run directory?)", path,
                           strerror(errno));
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return husai_error(HUSAI_ERR_DATA, "'%s' is not valid JSON", path);
    jctx j = {.file = path};
    const cJSON *run = item(&j, root, "run"), *data = item(&j, root, "data");
    str(&j, run, "id", r->id, sizeof r->id);
    str(&j, run, "version", r->version, sizeof r->version);
    str(&j, run, "git_commit", r->commit, sizeof r->commit);
    str(&j, run, "command", r->command, sizeof r->command);
    const cJSON *h;
    int n_hosts = 0;
    cJSON_ArrayForEach(h, item(&j, run, "hosts")) {
        const size_t used = strlen(r->hosts);
        snprintf(r->hosts + used, sizeof r->hosts - used, "%s%s", used ? "," : "",
                 cJSON_IsString(h) ? h->valuestring : "?");
        n_hosts++;
    }
    str(&j, data, "dtype", r->dtype, sizeof r->dtype);
    const char *fp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(data, "fingerprint"));
    snprintf(r->fingerprint, sizeof r->fingerprint, "%s", fp ? fp : "");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(data, "streamed");
    r->run = (husai_run_info){
        .id = r->id,
        .version = r->version,
        .commit = r->commit,
        .command = r->command,
        .hosts = r->hosts,
        .n_hosts = n_hosts,
        .ranks = (int)num(&j, run, "ranks"),
        .threads = cJSON_HasObjectItem(run, "threads_per_rank") ? (int)num(&j, run, "threads_per_rank") : 0,
        .seconds = num(&j, run, "seconds"),
        .cfg = &r->cfg,
        .dtype = r->dtype,
        .fingerprint = fp ? r->fingerprint : NULL,
        .n_rows = (size_t)num(&j, data, "rows"),
        .d_model = (int)num(&j, data, "d_model"),
        .peak_rss_mb = cJSON_HasObjectItem(run, "peak_rss_mb") ? num(&j, run, "peak_rss_mb") : 0.0,
        .chunk_rows = stream ? (size_t)num(&j, stream, "chunk_rows") : 0,
        .n_chunks = stream ? (size_t)num(&j, stream, "chunks") : 0,
        .bytes_read = stream ? num(&j, stream, "bytes_read") : 0.0,
        .read_seconds = stream ? num(&j, stream, "read_seconds") : 0.0};
    husai_status st = HUSAI_OK;
    const char *cfgtext = cJSON_GetStringValue(item(&j, root, "config"));
    husai_config_defaults(&r->cfg);
    if (cfgtext && (st = husai_config_load_string(&r->cfg, cfgtext, path))) {
        cJSON_Delete(root);
        return st;
    }
    const cJSON *conds = item(&j, root, "conditions");
    const int n = cJSON_GetArraySize(conds);
    if (!j.missing && n > 0 && !(r->c = calloc((size_t)n, sizeof *r->c))) {
        cJSON_Delete(root);
        return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n && !j.missing; i++) {
        const cJSON *o = cJSON_GetArrayItem(conds, i);
        char phase[32];
        str(&j, o, "phase", phase, sizeof phase);
        /* the phase names are the engine's literals; keep one of those, not a copy */
        static const char *phases[] = {"", "search", "retrain", "lambda"};
        r->c[i].phase = "";
        for (size_t p = 0; p < sizeof phases / sizeof *phases; p++)
            if (!strcmp(phase, phases[p])) r->c[i].phase = phases[p];
        read_condition(&j, o, &r->c[i], r->run.d_model);
        r->n = i + 1;
        if (!j.missing && !r->c[i].per_seed) {
            cJSON_Delete(root);
            return husai_error(HUSAI_ERR_NOMEM, "out of memory");
        }
    }
    if (!j.missing && n == 0) {
        j.missing = 1;
        snprintf(j.key, sizeof j.key, "conditions (empty)");
    }
    const cJSON *proto = cJSON_GetObjectItemCaseSensitive(root, "protocol");
    if (!j.missing && proto) {
        r->has_proto = 1;
        read_protocol(&j, proto, r);
    }
    cJSON_Delete(root);
    if (j.missing) return husai_error(HUSAI_ERR_DATA, "'%s': key '%s' missing or malformed", path, j.key);
    return HUSAI_OK;
}

/* What results.json does not carry exactly or at all: seeds, the PWMCC matrices, the densities. */
static husai_status read_h5(husai_run_read *r, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return husai_error(HUSAI_ERR_IO, "cannot open '%s' (not a complete run directory?)", path);
    husai_status st = HUSAI_OK;
    hid_t conds = H5Gopen2(file, "conditions", H5P_DEFAULT);
    if (conds < 0) st = husai_error(HUSAI_ERR_DATA, "'%s' has no /conditions", path);
    for (int i = 0; i < r->n && !st; i++) {
        husai_condition_result *c = &r->c[i];
        hid_t g = H5Lexists(conds, c->name, H5P_DEFAULT) > 0 ? H5Gopen2(conds, c->name, H5P_DEFAULT) : -1;
        if (g < 0) {
            st = husai_error(HUSAI_ERR_DATA, "'%s' has no condition '%s' (results.json lists it)", path,
                             c->name);
            break;
        }
        const size_t S = (size_t)c->S;
        uint64_t *seeds = h5_read_all(g, "seeds", H5T_NATIVE_UINT64, sizeof(uint64_t), S);
        c->seeds = seeds;
        c->pwmcc = h5_read_all(g, "pwmcc", H5T_NATIVE_DOUBLE, sizeof(double), S * S);
        c->random_pwmcc = h5_read_all(g, "random_pwmcc", H5T_NATIVE_DOUBLE, sizeof(double), S * S);
        if (!seeds || !c->pwmcc || !c->random_pwmcc)
            st = husai_error(HUSAI_ERR_DATA,
                             "'%s': condition '%s' lacks seeds/pwmcc/random_pwmcc of %zu seeds", path,
                             c->name, S);
        if (!st && H5Lexists(g, "density", H5P_DEFAULT) > 0 &&
            !(c->density = h5_read_all(g, "density", H5T_NATIVE_FLOAT, sizeof(float), S * (size_t)c->d_sae)))
            st = husai_error(HUSAI_ERR_DATA, "'%s': condition '%s' has a density dataset of the wrong shape",
                             path, c->name);
        if (!st && c->has_ref)
            c->pwmcc_with_ref =
                h5_read_all(g, "pwmcc_with_reference", H5T_NATIVE_DOUBLE, sizeof(double), (S + 1) * (S + 1));
        H5Gclose(g);
    }
    if (conds >= 0) H5Gclose(conds);
    if (!st && r->has_proto && r->proto.mode == HUSAI_MODE_CONSISTENCY &&
        H5Lexists(file, "reference", H5P_DEFAULT) > 0) {
        hid_t g = H5Gopen2(file, "reference", H5P_DEFAULT);
        if (g >= 0) {
            husai_h5_attr_read(g, "seed", H5T_NATIVE_UINT64, &r->proto.reference_seed);
            H5Gclose(g);
        }
    }
    H5Fclose(file);
    return st;
}

husai_status husai_run_read_dir(husai_run_read *r, const char *dir) {
    memset(r, 0, sizeof *r);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    husai_status st = read_json(r, dir);
    if (!st) st = read_h5(r, dir);
    return st;
}

void husai_run_read_free(husai_run_read *r) {
    for (int i = 0; i < r->n; i++) {
        free((void *)r->c[i].seeds);
        r->c[i].seeds = NULL;
        husai_condition_result_free(&r->c[i]);
    }
    free(r->c);
    r->c = NULL;
    r->n = 0;
}

/* Removes the staging directory's files and the directory (it holds no subdirectories). */
static void remove_staging(const char *staging) {
    DIR *d = opendir(staging);
    if (!d) return;
    char path[4608];
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", staging, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(staging);
}

/* Renames every file of staging into out_dir, replacing files of the same name. */
static husai_status publish(const char *staging, const char *out_dir) {
    DIR *d = opendir(staging);
    if (!d) return husai_error(HUSAI_ERR_IO, "cannot read '%s': %s", staging, strerror(errno));
    husai_status st = HUSAI_OK;
    char from[4608], to[4608];
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(from, sizeof from, "%s/%s", staging, e->d_name);
        snprintf(to, sizeof to, "%s/%s", out_dir, e->d_name);
        if (rename(from, to) != 0)
            st = husai_error(HUSAI_ERR_IO, "cannot rename '%s': %s", from, strerror(errno));
    }
    closedir(d);
    return st;
}

husai_status husai_report_regenerate(const char *run_dir, const char *out_dir) {
    if (!out_dir) out_dir = run_dir;
    husai_run_read r;
    husai_status st = husai_run_read_dir(&r, run_dir);
    char staging[4300];
    snprintf(staging, sizeof staging, "%s/.report.partial", out_dir);
    if (!st) {
        struct stat sb;
        if (stat(out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = husai_error(HUSAI_ERR_IO, "output directory '%s' does not exist", out_dir);
    }
    if (!st) {
        remove_staging(staging); /* left by a killed earlier report */
        if (mkdir(staging, 0777) != 0)
            st = husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", staging, strerror(errno));
    }
    if (!st) {
        st = husai_results_reports(staging, &r.run, r.c, r.n, r.has_proto ? &r.proto : NULL);
        if (!st) st = publish(staging, out_dir);
        remove_staging(staging);
    }
    husai_run_read_free(&r);
    return st;
}
