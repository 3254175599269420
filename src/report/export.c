/* export.c: one trained SAE, or a condition's consensus dictionary, of a run directory in SAELens'
 * format (export.h). One process, no MPI: HDF5 is opened with the default (serial) driver. */
#define _POSIX_C_SOURCE 200809L /* fileno, fsync, mkdir, symlink, getpid */
#include "report/export.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "report/h5attr.h"
#include "common/status.h"
#include "sae/model.h"

/* "husai VERSION (COMMIT)" of the exporting program, for cfg.json's provenance. */
static char g_exported_by[256];

/* ---------- reading results.h5 ---------- */

/* An integer attribute; 0 if absent or unreadable. */
static int attr_int(hid_t loc, const char *name, long long *out) {
    return husai_h5_attr_read(loc, name, H5T_NATIVE_LLONG, out);
}

typedef struct {
    char *text;
    size_t len, cap;
    int count;
} name_list;

/* Collects every condition (a group under /conditions holding a `decoders` dataset) as "a, b, c". */
static herr_t collect_condition(hid_t loc, const char *name, const H5L_info_t *info, void *op) {
    name_list *l = op;
    const char *suffix = "/decoders";
    const size_t n = strlen(name), sn = strlen(suffix);
    if (n <= sn || strcmp(name + n - sn, suffix) != 0) return 0;
    const size_t add = n - sn + 2;
    if (l->len + add + 1 > l->cap) {
        const size_t cap = 2 * (l->cap + add + 1);
        char *t = realloc(l->text, cap);
        if (!t) return -1;
        l->text = t;
        l->cap = cap;
    }
    l->len += (size_t)snprintf(l->text + l->len, l->cap - l->len, "%s%.*s", l->count ? ", " : "",
                               (int)(n - sn), name);
    l->count++;
    return 0;
}

/* The dims of dataset `name` in g (rank must be `rank`); 0 if absent or of another rank. */
static int dataset_dims(hid_t g, const char *name, int rank, hsize_t *dims) {
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return 0;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t sp = H5Dget_space(d);
    const int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == rank &&
                   H5Sget_simple_extent_dims(sp, dims, NULL) == rank;
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return ok;
}

/* Reads slice s (the leading index) of dataset `name` [S, d1(, d2)] as float into out. */
static husai_status read_slice(hid_t g, const char *cond, const char *name, int rank, int s, float *out) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return husai_error(HUSAI_ERR_DATA, "condition '%s' has no dataset '%s'", cond, name);
    hid_t fs = H5Dget_space(d);
    hsize_t dims[3] = {0, 0, 0}, start[3] = {(hsize_t)s, 0, 0}, count[3];
    H5Sget_simple_extent_dims(fs, dims, NULL);
    count[0] = 1;
    for (int i = 1; i < rank; i++)
        count[i] = dims[i];
    hid_t ms = H5Screate_simple(rank, count, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (rc >= 0) rc = H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    if (rc < 0)
        return husai_error(HUSAI_ERR_IO, "cannot read '%s' of condition '%s' (seed slice %d)", name, cond, s);
    return HUSAI_OK;
}

/* Everything export needs from results.h5, for one condition and seed. */
typedef struct {
    int d_model, d_sae, k, S;
    uint64_t seed;
    char *run_id, *run_commit, *run_version, *config, *param, *arch;
    double value;
    int has_value;
    float *enc;   /* [d_sae, d_model] */
    float *dec;   /* [d_model, d_sae] */
    float *b_enc; /* [d_sae] */
    float *b_dec; /* [d_model], zeros unless the run stored a decoder bias */
    int b_dec_stored;
    husai_arch arch_id; /* runs from before architectures existed are topk */
    float *threshold;   /* [d_sae] jumprelu theta_j, or batchtopk's one threshold repeated; else NULL */
    int relu;           /* the run's sae.relu: 1, 0, or -1 when its stored config does not parse */
    char *model_name, *hook_name; /* the data's (results.h5 data_model_name / data_hook_name), or NULL */
    int signed_topk;              /* a topk-family SAE that is not known to apply ReLU, exported anyway */
    float *stability;             /* [d_sae] the seed's per-feature stability (features/stability), or NULL */
} export_sae;

static void export_sae_free(export_sae *e) {
    free(e->run_id);
    free(e->run_commit);
    free(e->run_version);
    free(e->config);
    free(e->param);
    free(e->arch);
    free(e->enc);
    free(e->dec);
    free(e->b_enc);
    free(e->b_dec);
    free(e->threshold);
    free(e->model_name);
    free(e->hook_name);
    free(e->stability);
    memset(e, 0, sizeof *e);
}

/* sae.relu of the run's stored config text: 1 or 0, or -1 if there is none or it does not parse (a
 * config without the key predates it and means false, as the default does). */
static int config_relu(const char *text) {
    if (!text || !*text) return -1;
    husai_config *c = malloc(sizeof *c);
    if (!c) return -1;
    husai_config_defaults(c);
    const int relu = husai_config_load_string(c, text, "results.h5 config") == HUSAI_OK ? c->relu != 0 : -1;
    free(c);
    return relu;
}

/* The SAELens architecture whose inference is husai architecture a's. */
static const char *saelens_arch(husai_arch a) {
    switch (a) {
    case HUSAI_ARCH_JUMPRELU:
    case HUSAI_ARCH_BATCHTOPK:
        return "jumprelu";
    case HUSAI_ARCH_RELU_L1:
        return "standard";
    default:
        return "topk";
    }
}

static int is_topk_family(husai_arch a) {
    return a == HUSAI_ARCH_TOPK || a == HUSAI_ARCH_MATRYOSHKA;
}

/* Opens the condition group; on failure records an error naming the available conditions. */
static husai_status open_condition(hid_t file, const char *path, const char *cond, hid_t *out) {
    hid_t conds =
        H5Lexists(file, "conditions", H5P_DEFAULT) > 0 ? H5Gopen2(file, "conditions", H5P_DEFAULT) : -1;
    if (conds < 0) return husai_error(HUSAI_ERR_DATA, "'%s' has no /conditions group", path);
    hid_t g = -1;
    /* H5Gopen2 follows a relative path, so nested names (search/k=4) work; "." and "" are not conditions */
    if (cond[0] && cond[0] != '/' && strcmp(cond, ".") != 0) g = H5Gopen2(conds, cond, H5P_DEFAULT);
    if (g >= 0 && H5Lexists(g, "decoders", H5P_DEFAULT) <= 0) {
        H5Gclose(g);
        g = -1;
    }
    if (g >= 0) {
        H5Gclose(conds);
        *out = g;
        return HUSAI_OK;
    }
    name_list l = {0};
    H5Lvisit(conds, H5_INDEX_NAME, H5_ITER_INC, collect_condition, &l);
    H5Gclose(conds);
    husai_status st = husai_error(HUSAI_ERR_ARG, "no condition '%s' in %s (available: %s)", cond, path,
                                  l.count ? l.text : "none");
    free(l.text);
    return st;
}

/* Reads seed slice s_index of `thresholds` [S, d_sae] (jumprelu's theta_j; batchtopk's one inference
 * threshold, repeated). SAELens' JumpReLU, ReLU(pre) * (pre > t), is husai's pre * (pre > t) only for
 * t >= 0: batchtopk's threshold is used as husai's inference uses it (t > 0 ? t : 0), and a jumprelu
 * threshold that is negative or not finite is refused, as is a batchtopk slice that is not constant. */
static husai_status read_thresholds(hid_t g, const char *cond, int s_index, export_sae *e) {
    const char *a = husai_arch_name(e->arch_id);
    hsize_t dt[2];
    if (!dataset_dims(g, "thresholds", 2, dt) || dt[0] != (hsize_t)e->S || dt[1] != (hsize_t)e->d_sae)
        return husai_error(HUSAI_ERR_DATA, "condition '%s' (%s) lacks thresholds [S, d_sae]", cond, a);
    e->threshold = malloc((size_t)e->d_sae * sizeof(float));
    if (!e->threshold) return husai_error(HUSAI_ERR_NOMEM, "cannot hold %d thresholds", e->d_sae);
    husai_status st = read_slice(g, cond, "thresholds", 2, s_index, e->threshold);
    for (int j = 0; j < e->d_sae && !st; j++) {
        if (e->arch_id == HUSAI_ARCH_BATCHTOPK && !(e->threshold[j] > 0.0f)) e->threshold[j] = 0.0f;
        const float t = e->threshold[j];
        if (!isfinite(t) || t < 0.0f)
            st = husai_error(HUSAI_ERR_DATA,
                             "condition '%s' (%s): threshold of latent %d is %g; SAELens' JumpReLU matches "
                             "husai's rule only for finite thresholds >= 0",
                             cond, a, j, (double)t);
        else if (e->arch_id == HUSAI_ARCH_BATCHTOPK && t != e->threshold[0])
            st = husai_error(HUSAI_ERR_DATA,
                             "condition '%s' (batchtopk): thresholds differ across latents (%g at 0, %g "
                             "at %d); batchtopk stores one",
                             cond, (double)e->threshold[0], (double)t, j);
    }
    return st;
}

static husai_status load_sae(const char *run_dir, const char *cond, uint64_t seed, export_sae *e) {
    struct stat sb;
    if (stat(run_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return husai_error(HUSAI_ERR_IO, "run directory '%s' does not exist", run_dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/results.h5", run_dir);
    if (stat(path, &sb) != 0)
        return husai_error(HUSAI_ERR_IO, "'%s' has no results.h5 (not a complete run directory?)", run_dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return husai_error(HUSAI_ERR_IO, "cannot open '%s' as HDF5", path);
    e->run_id = husai_h5_attr_read_str(file, "run_id");
    e->run_commit = husai_h5_attr_read_str(file, "git_commit");
    e->run_version = husai_h5_attr_read_str(file, "version");
    e->config = husai_h5_attr_read_str(file, "config");
    e->model_name = husai_h5_attr_read_str(file, "data_model_name");
    e->hook_name = husai_h5_attr_read_str(file, "data_hook_name");

    hid_t g = -1;
    husai_status st = open_condition(file, path, cond, &g);
    if (st) {
        H5Fclose(file);
        return st;
    }
    e->arch = husai_h5_attr_read_str(g, "arch");
    const int arch = e->arch ? husai_arch_parse(e->arch) : HUSAI_ARCH_TOPK; /* older runs: topk */
    if (arch < 0)
        st = husai_error(HUSAI_ERR_ARG,
                         "condition '%s' uses architecture '%s', which export does not know (known: topk, "
                         "batchtopk, jumprelu, relu_l1, matryoshka)",
                         cond, e->arch);
    else
        e->arch_id = (husai_arch)arch;
    hsize_t ddec[3], denc[3], db[2], ds[1];
    long long k = 0, attr_dm = -1, attr_ds = -1;
    int has_k = 0;
    if (st) {
        /* the architecture error above */
    } else if (!dataset_dims(g, "decoders", 3, ddec) || !dataset_dims(g, "encoders", 3, denc) ||
               !dataset_dims(g, "b_enc", 2, db) || !dataset_dims(g, "seeds", 1, ds)) {
        st = husai_error(HUSAI_ERR_DATA,
                         "condition '%s' lacks decoders [S, d_model, d_sae], encoders, b_enc or seeds", cond);
    } else if (ddec[0] != ds[0] || denc[0] != ds[0] || db[0] != ds[0] || denc[1] != ddec[2] ||
               denc[2] != ddec[1] || db[1] != ddec[2] || ddec[1] < 1 || ddec[2] < 1 || ds[0] < 1 ||
               ddec[1] > 1u << 30 || ddec[2] > 1u << 30) {
        st = husai_error(
            HUSAI_ERR_DATA,
            "condition '%s' has inconsistent shapes: decoders [%llu, %llu, %llu], encoders [%llu, "
            "%llu, %llu], b_enc [%llu, %llu], seeds [%llu]",
            cond, (unsigned long long)ddec[0], (unsigned long long)ddec[1], (unsigned long long)ddec[2],
            (unsigned long long)denc[0], (unsigned long long)denc[1], (unsigned long long)denc[2],
            (unsigned long long)db[0], (unsigned long long)db[1], (unsigned long long)ds[0]);
    } else if (!(has_k = attr_int(g, "k", &k) && k >= 1 && (unsigned long long)k <= ddec[2]) &&
               is_topk_family(e->arch_id)) {
        /* k is the code's size for topk and matryoshka; the others only report it (batchtopk's target) */
        st = husai_error(HUSAI_ERR_DATA, "condition '%s' has no valid attribute k", cond);
    } else if ((attr_int(g, "d_model", &attr_dm) && attr_dm != (long long)ddec[1]) ||
               (attr_int(g, "d_sae", &attr_ds) && attr_ds != (long long)ddec[2])) {
        st = husai_error(HUSAI_ERR_DATA,
                         "condition '%s': attributes d_model=%lld d_sae=%lld disagree with "
                         "decoders [%llu, %llu, %llu]",
                         cond, attr_dm, attr_ds, (unsigned long long)ddec[0], (unsigned long long)ddec[1],
                         (unsigned long long)ddec[2]);
    }
    if (!st) {
        e->S = (int)ds[0];
        e->d_model = (int)ddec[1];
        e->d_sae = (int)ddec[2];
        e->k = has_k ? (int)k : 0;
        e->param = husai_h5_attr_read_str(g, "param");
        e->has_value = husai_h5_attr_read(g, "value", H5T_NATIVE_DOUBLE, &e->value);
    }
    int s_index = -1;
    if (!st) {
        uint64_t *seeds = malloc((size_t)e->S * sizeof *seeds);
        hid_t d = seeds ? H5Dopen2(g, "seeds", H5P_DEFAULT) : -1;
        if (d < 0 || H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, seeds) < 0) {
            st = husai_error(HUSAI_ERR_DATA, "cannot read the seeds of condition '%s'", cond);
        } else {
            for (int s = 0; s < e->S; s++)
                if (seeds[s] == seed) s_index = s;
            if (s_index < 0) {
                char list[1024] = "";
                size_t used = 0;
                for (int s = 0; s < e->S && used < sizeof list - 32; s++)
                    used += (size_t)snprintf(list + used, sizeof list - used, "%s%llu", s ? ", " : "",
                                             (unsigned long long)seeds[s]);
                st = husai_error(HUSAI_ERR_ARG, "condition '%s' has no seed %llu (seeds: %s)", cond,
                                 (unsigned long long)seed, list);
            }
        }
        if (d >= 0) H5Dclose(d);
        free(seeds);
    }
    if (!st) {
        const size_t dd = (size_t)e->d_model * e->d_sae;
        e->seed = seed;
        e->enc = malloc(dd * sizeof(float));
        e->dec = malloc(dd * sizeof(float));
        e->b_enc = malloc((size_t)e->d_sae * sizeof(float));
        e->b_dec = calloc((size_t)e->d_model, sizeof(float));
        if (!e->enc || !e->dec || !e->b_enc || !e->b_dec)
            st = husai_error(HUSAI_ERR_NOMEM, "cannot hold one SAE of %d x %d", e->d_model, e->d_sae);
    }
    if (!st) st = read_slice(g, cond, "decoders", 3, s_index, e->dec);
    if (!st) st = read_slice(g, cond, "encoders", 3, s_index, e->enc);
    if (!st) st = read_slice(g, cond, "b_enc", 2, s_index, e->b_enc);
    hsize_t dbd[2];
    if (!st && dataset_dims(g, "b_dec", 2, dbd)) { /* a run with a decoder bias stores it per seed */
        if (dbd[0] != (hsize_t)e->S || dbd[1] != (hsize_t)e->d_model)
            st = husai_error(HUSAI_ERR_DATA, "condition '%s': b_dec is not [S, d_model]", cond);
        else
            st = read_slice(g, cond, "b_dec", 2, s_index, e->b_dec);
        e->b_dec_stored = 1;
    }
    if (!st && (e->arch_id == HUSAI_ARCH_JUMPRELU || e->arch_id == HUSAI_ARCH_BATCHTOPK))
        st = read_thresholds(g, cond, s_index, e);
    if (!st) e->relu = config_relu(e->config);
    hsize_t dst[2];
    /* Runs from before per-feature stability have none: the tensor is then left out. */
    if (!st && dataset_dims(g, "features/stability", 2, dst)) {
        if (dst[0] != (hsize_t)e->S || dst[1] != (hsize_t)e->d_sae)
            st = husai_error(HUSAI_ERR_DATA, "condition '%s': features/stability is not [S, d_sae]", cond);
        else if (!(e->stability = malloc((size_t)e->d_sae * sizeof(float))))
            st = husai_error(HUSAI_ERR_NOMEM, "cannot hold %d stabilities", e->d_sae);
        else
            st = read_slice(g, cond, "features/stability", 2, s_index, e->stability);
    }
    H5Gclose(g);
    H5Fclose(file);
    return st;
}

/* ---------- writing ---------- */

/* Writes n floats as little-endian IEEE-754 binary32 (the byte order safetensors prescribes). */
static int write_f32_le(FILE *f, const float *x, size_t n) {
    unsigned char buf[4096];
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        buf[used++] = (unsigned char)(u & 0xff);
        buf[used++] = (unsigned char)((u >> 8) & 0xff);
        buf[used++] = (unsigned char)((u >> 16) & 0xff);
        buf[used++] = (unsigned char)(u >> 24);
        if (used == sizeof buf) {
            if (fwrite(buf, 1, used, f) != used) return 0;
            used = 0;
        }
    }
    return fwrite(buf, 1, used, f) == used;
}

/* Opens a temporary sibling of final_path for writing; its name goes into tmp. */
static FILE *open_temp(const char *final_path, char *tmp, size_t tmpsz) {
    snprintf(tmp, tmpsz, "%s.tmp-%ld", final_path, (long)getpid());
    return fopen(tmp, "wb");
}

/* Flushes, syncs and closes f, then renames tmp over final_path; removes tmp on any failure. */
static husai_status commit_temp(FILE *f, int bad, const char *tmp, const char *final_path) {
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        const int err = errno;
        remove(tmp);
        return husai_error(HUSAI_ERR_IO, "writing '%s' failed (%s)", final_path,
                           err ? strerror(err) : "disk full?");
    }
    if (rename(tmp, final_path) != 0) {
        const int err = errno;
        remove(tmp);
        return husai_error(HUSAI_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, final_path, strerror(err));
    }
    return HUSAI_OK;
}

static int add_raw_u64(cJSON *arr, unsigned long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", v);
    cJSON *item = cJSON_CreateRaw(buf);
    return item && cJSON_AddItemToArray(arr, item);
}

/* Adds name: {"dtype": dtype, "shape": [...], "data_offsets": [begin, end]} for 4-byte elements (F32,
 * I32) and advances *offset. */
static int add_tensor_typed(cJSON *hdr, const char *name, const char *dtype, int rank, const long long *shape,
                            size_t *offset) {
    cJSON *t = cJSON_AddObjectToObject(hdr, name);
    if (!t || !cJSON_AddStringToObject(t, "dtype", dtype)) return 0;
    cJSON *sh = cJSON_AddArrayToObject(t, "shape"), *off = cJSON_AddArrayToObject(t, "data_offsets");
    if (!sh || !off) return 0;
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (!add_raw_u64(sh, (unsigned long long)shape[i])) return 0;
        n *= (size_t)shape[i];
    }
    const size_t begin = *offset, end = begin + n * sizeof(float);
    *offset = end;
    return add_raw_u64(off, begin) && add_raw_u64(off, end);
}

/* add_tensor_typed for float32. */
static int add_tensor(cJSON *hdr, const char *name, int rank, const long long *shape, size_t *offset) {
    return add_tensor_typed(hdr, name, "F32", rank, shape, offset);
}

static husai_status write_safetensors(const char *out_dir, const export_sae *e) {
    const int dm = e->d_model, ds = e->d_sae;
    const size_t dd = (size_t)dm * ds;
    float *W_enc = malloc(dd * sizeof(float)), *W_dec = malloc(dd * sizeof(float));
    if (!W_enc || !W_dec) {
        free(W_enc);
        free(W_dec);
        return husai_error(HUSAI_ERR_NOMEM, "cannot hold the transposed weights");
    }
    /* ours: enc [d_sae, d_model], dec [d_model, d_sae]; SAELens: W_enc [d_in, d_sae], W_dec [d_sae, d_in] */
    for (int j = 0; j < ds; j++)
        for (int i = 0; i < dm; i++) {
            W_enc[(size_t)i * ds + j] = e->enc[(size_t)j * dm + i];
            W_dec[(size_t)j * dm + i] = e->dec[(size_t)i * ds + j];
        }
    cJSON *hdr = cJSON_CreateObject();
    size_t offset = 0;
    const long long s_enc[2] = {dm, ds}, s_benc[1] = {ds}, s_dec[2] = {ds, dm}, s_bdec[1] = {dm};
    cJSON *meta = hdr ? cJSON_AddObjectToObject(hdr, "__metadata__") : NULL;
    int ok = meta && cJSON_AddStringToObject(meta, "format", "pt") &&
             add_tensor(hdr, "W_enc", 2, s_enc, &offset) && add_tensor(hdr, "b_enc", 1, s_benc, &offset) &&
             add_tensor(hdr, "W_dec", 2, s_dec, &offset) && add_tensor(hdr, "b_dec", 1, s_bdec, &offset) &&
             (!e->threshold || add_tensor(hdr, "threshold", 1, s_benc, &offset)) &&
             (!e->stability || add_tensor(hdr, "feature_stability", 1, s_benc, &offset));
    char *json = ok ? cJSON_PrintUnformatted(hdr) : NULL;
    cJSON_Delete(hdr);
    husai_status st = HUSAI_OK;
    if (!json) {
        st = husai_error(HUSAI_ERR_NOMEM, "cannot build the safetensors header");
    } else {
        /* the header is padded with spaces so the tensor data starts 8-byte aligned */
        const size_t len = strlen(json), padded = (len + 7) / 8 * 8;
        unsigned char n8[8];
        for (int b = 0; b < 8; b++)
            n8[b] = (unsigned char)(((uint64_t)padded >> (8 * b)) & 0xff);
        char final_path[4200], tmp[4300];
        snprintf(final_path, sizeof final_path, "%s/sae.safetensors", out_dir);
        FILE *f = open_temp(final_path, tmp, sizeof tmp);
        if (!f) {
            st = husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        } else {
            int bad = fwrite(n8, 1, 8, f) != 8 || fwrite(json, 1, len, f) != len;
            for (size_t p = len; p < padded && !bad; p++)
                bad = fputc(' ', f) == EOF;
            bad = bad || !write_f32_le(f, W_enc, dd) || !write_f32_le(f, e->b_enc, (size_t)ds) ||
                  !write_f32_le(f, W_dec, dd) || !write_f32_le(f, e->b_dec, (size_t)dm) ||
                  (e->threshold && !write_f32_le(f, e->threshold, (size_t)ds)) ||
                  (e->stability && !write_f32_le(f, e->stability, (size_t)ds));
            st = commit_temp(f, bad, tmp, final_path);
        }
        cJSON_free(json);
    }
    free(W_enc);
    free(W_dec);
    if (st) return st;
    /* SAELens' load_from_disk reads sae_weights.safetensors: a relative link, replaced atomically */
    char link_path[4200], tmp[4300];
    snprintf(link_path, sizeof link_path, "%s/sae_weights.safetensors", out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", link_path, (long)getpid());
    remove(tmp);
    if (symlink("sae.safetensors", tmp) != 0 || rename(tmp, link_path) != 0) {
        const int err = errno;
        remove(tmp);
        return husai_error(HUSAI_ERR_IO, "cannot link '%s' to sae.safetensors: %s", link_path, strerror(err));
    }
    return HUSAI_OK;
}

/* key: value, or key: null when the run does not know it. */
static void add_label(cJSON *o, const char *key, const char *value) {
    if (value && *value)
        cJSON_AddStringToObject(o, key, value);
    else
        cJSON_AddNullToObject(o, key);
}

static husai_status write_cfg(const char *out_dir, const char *cond, const export_sae *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *kw = cJSON_CreateObject(), *prov = cJSON_CreateObject();
    char seedbuf[32];
    snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)e->seed);
    cJSON *seed = cJSON_CreateRaw(seedbuf);
    int ok = root && kw && prov && seed;
    const int topk = is_topk_family(e->arch_id);
    if (ok) {
        cJSON_AddStringToObject(root, "architecture", saelens_arch(e->arch_id));
        cJSON_AddNumberToObject(root, "d_in", e->d_model);
        cJSON_AddNumberToObject(root, "d_sae", e->d_sae);
        if (topk) {
            cJSON_AddNumberToObject(root, "k", e->k);
            cJSON_AddStringToObject(root, "activation_fn_str", "topk");
            cJSON_AddNumberToObject(kw, "k", e->k);
        } else {
            /* standard is ReLU; SAELens' JumpReLU is ReLU(pre) masked by pre > threshold */
            cJSON_AddStringToObject(root, "activation_fn_str", "relu");
        }
        cJSON_AddItemToObject(root, "activation_fn_kwargs", kw);
        kw = NULL;
        cJSON_AddStringToObject(root, "dtype", "float32");
        cJSON_AddStringToObject(root, "device", "cpu");
        /* husai's encoder sees x - b_dec; runs without a decoder bias store zeros, and saying false
         * there keeps HUSAI-recipe exports what they were */
        int nonzero = 0;
        for (int i = 0; i < e->d_model; i++)
            nonzero |= e->b_dec[i] != 0.0f;
        cJSON_AddBoolToObject(root, "apply_b_dec_to_input", nonzero);
        cJSON_AddStringToObject(root, "normalize_activations", "none");
        cJSON_AddBoolToObject(root, "finetuning_scaling_factor", 0);
        cJSON_AddStringToObject(root, "reshape_activations", "none");
        add_label(root, "model_name", e->model_name);
        add_label(root, "hook_name", e->hook_name);
        int layer = -1;
        if (e->hook_name && sscanf(e->hook_name, "blocks.%d.", &layer) == 1 && layer >= 0)
            cJSON_AddNumberToObject(root, "hook_layer", layer);
        else
            cJSON_AddNullToObject(root, "hook_layer");
        cJSON_AddNullToObject(root, "hook_head_index"); /* rows are whole activation vectors */
        /* SAELens before 6.0 builds its config from these (no defaults); husai does not know them */
        cJSON_AddNullToObject(root, "context_size");
        cJSON_AddNullToObject(root, "dataset_path");
        /* the same activation under the name SAELens 6 reads */
        cJSON_AddStringToObject(root, "activation_fn", topk ? "topk" : "relu");

        cJSON_AddStringToObject(prov, "run_id", e->run_id ? e->run_id : "unknown");
        cJSON_AddStringToObject(prov, "condition", cond);
        cJSON_AddItemToObject(prov, "seed", seed);
        seed = NULL;
        if (e->param) cJSON_AddStringToObject(prov, "param", e->param);
        if (e->has_value) cJSON_AddNumberToObject(prov, "value", e->value);
        cJSON_AddStringToObject(prov, "git_commit", e->run_commit ? e->run_commit : "unknown");
        cJSON_AddStringToObject(prov, "version", e->run_version ? e->run_version : "unknown");
        cJSON_AddStringToObject(prov, "exported_by", g_exported_by);
        cJSON_AddStringToObject(prov, "arch", husai_arch_name(e->arch_id));
        char act[640];
        switch (e->arch_id) {
        case HUSAI_ARCH_JUMPRELU:
            snprintf(act, sizeof act,
                     "husai's JumpReLU code is pre where pre > theta_j; threshold holds theta_j (all >= 0), "
                     "so SAELens' JumpReLU, ReLU(pre) * (pre > threshold), computes the same code");
            break;
        case HUSAI_ARCH_BATCHTOPK:
            if (e->k > 0) cJSON_AddNumberToObject(prov, "k", e->k);
            cJSON_AddNumberToObject(prov, "inference_threshold", e->threshold[0]);
            snprintf(act, sizeof act,
                     "husai's BatchTopK keeps the n*k largest ReLU(pre) of a batch of n rows while training; "
                     "at inference its code is pre where pre > one threshold (%.9g, the trainer's estimate). "
                     "threshold holds that value for every latent, so SAELens' JumpReLU computes exactly "
                     "husai's inference code",
                     (double)e->threshold[0]);
            break;
        case HUSAI_ARCH_RELU_L1:
            snprintf(act, sizeof act,
                     "husai's relu_l1 code is ReLU(pre) (trained with an L1 penalty on it), the activation "
                     "of SAELens' standard SAE: the two agree exactly");
            break;
        default:
            if (e->relu >= 0) cJSON_AddBoolToObject(prov, "relu", e->relu);
            cJSON_AddBoolToObject(prov, "signed_topk", e->signed_topk);
            snprintf(act, sizeof act, "%s%s",
                     e->arch_id == HUSAI_ARCH_MATRYOSHKA
                         ? "matryoshka's inference is topk's (only its training loss differs). "
                         : "",
                     e->relu == 1 ? "husai's TopK keeps the k largest pre-activations and applies ReLU to "
                                    "them (sae.relu = true), as SAELens' TopK does: the two agree exactly"
                     : e->relu == 0
                         ? "husai's TopK keeps the k largest signed pre-activations (no ReLU); SAELens' "
                           "TopK applies ReLU to them, so the two differ only where a kept value is "
                           "negative"
                         : "husai's TopK keeps the k largest pre-activations, signed unless the run set "
                           "sae.relu = true (its stored config could not be read); SAELens' TopK applies "
                           "ReLU to them, so the two differ at most where a kept value is negative");
            break;
        }
        cJSON_AddStringToObject(prov, "activation", act);
        cJSON_AddStringToObject(prov, "b_dec",
                                e->b_dec_stored ? "as trained (zeros when sae.decoder_bias was off)"
                                                : "zeros (HUSAI's recipe has no decoder bias)");
        cJSON_AddStringToObject(prov, "decoder_layout",
                                "W_dec[j] is feature j (unit norm) = decoders[s][:, j] of results.h5");
        if (e->config) cJSON_AddStringToObject(prov, "config", e->config);
        cJSON_AddItemToObject(root, "husai", prov);
        prov = NULL;
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    cJSON_Delete(kw);
    cJSON_Delete(prov);
    cJSON_Delete(seed);
    if (!text) return husai_error(HUSAI_ERR_NOMEM, "cannot build cfg.json");
    char final_path[4200], tmp[4300];
    snprintf(final_path, sizeof final_path, "%s/cfg.json", out_dir);
    FILE *f = open_temp(final_path, tmp, sizeof tmp);
    husai_status st;
    if (!f) {
        st = husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    } else {
        const size_t len = strlen(text);
        const int bad = fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF;
        st = commit_temp(f, bad, tmp, final_path);
    }
    cJSON_free(text);
    return st;
}

/* SAELens' TopK applies ReLU to the k values it keeps; husai's default TopK keeps them signed. Exported
 * as "topk", such an SAE would load and run with a different code (lower L0, another EV), silently. So a
 * topk-family SAE is exported only when its run set sae.relu = true, or when the user asks for it
 * (--allow-signed-topk), and then cfg.json marks it (husai.signed_topk). */
static husai_status check_signed_topk(const char *cond, export_sae *e, int allow) {
    if (!is_topk_family(e->arch_id) || e->relu == 1) return HUSAI_OK;
    if (allow) {
        e->signed_topk = 1;
        return HUSAI_OK;
    }
    return husai_error(
        HUSAI_ERR_ARG,
        "condition '%s' is husai's signed TopK (%s): SAELens' TopK applies ReLU to the k kept "
        "values, so under SAELens its L0 and EV would differ from husai's; train with "
        "sae.relu = true for a faithful export, or pass --allow-signed-topk to export it marked "
        "as signed in cfg.json",
        cond, e->relu == 0 ? "sae.relu = false" : "its stored config does not say sae.relu = true");
}

/* Replaces *label with value when value is given. */
static husai_status override_label(char **label, const char *value) {
    if (!value) return HUSAI_OK;
    char *copy = strdup(value);
    if (!copy) return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    free(*label);
    *label = copy;
    return HUSAI_OK;
}

/* ---------- the consensus dictionary (--consensus) ---------- */

/* A condition's consensus features as results.h5 stores them under features/. */
typedef struct {
    int n, d_model, S, min_seeds;
    double tau;
    char *run_id;
    float *W_dec;     /* [n, d_model] unit directions */
    int32_t *members; /* [n, S] feature index per seed, -1 for none */
    float *stability; /* [n] share of the S seeds holding the feature */
    float *coherence; /* [n] */
    uint64_t *seeds;  /* [S] */
} export_consensus;

static void export_consensus_free(export_consensus *c) {
    free(c->run_id);
    free(c->W_dec);
    free(c->members);
    free(c->stability);
    free(c->coherence);
    free(c->seeds);
    memset(c, 0, sizeof *c);
}

/* Reads dataset `name` of g whole as mem_type into out; an error naming it when that fails. */
static husai_status read_whole(hid_t g, const char *cond, const char *name, hid_t mem_type, void *out) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    const herr_t rc = d < 0 ? -1 : H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    if (d >= 0) H5Dclose(d);
    return rc < 0 ? husai_error(HUSAI_ERR_DATA, "cannot read '%s' of condition '%s'", name, cond) : HUSAI_OK;
}

static husai_status load_consensus(const char *run_dir, const char *cond, export_consensus *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/results.h5", run_dir);
    struct stat sb;
    if (stat(run_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return husai_error(HUSAI_ERR_IO, "run directory '%s' does not exist", run_dir);
    if (stat(path, &sb) != 0)
        return husai_error(HUSAI_ERR_IO, "'%s' has no results.h5 (not a complete run directory?)", run_dir);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), g = -1;
    if (file < 0) return husai_error(HUSAI_ERR_IO, "cannot open '%s' as HDF5", path);
    c->run_id = husai_h5_attr_read_str(file, "run_id");
    husai_status st = open_condition(file, path, cond, &g);
    hsize_t dc[2], dm[2], ds[1];
    if (!st && (!dataset_dims(g, "features/consensus", 2, dc) ||
                !dataset_dims(g, "features/consensus_members", 2, dm) || !dataset_dims(g, "seeds", 1, ds)))
        st = husai_error(
            HUSAI_ERR_DATA,
            "condition '%s' has no consensus features (a run from before per-feature stability?)", cond);
    else if (!st && (dm[0] != dc[0] || dm[1] != ds[0] || dc[1] < 1 || dc[0] > INT32_MAX || ds[0] > INT32_MAX))
        st = husai_error(HUSAI_ERR_DATA,
                         "condition '%s': features/consensus [%llu, %llu] and consensus_members [%llu, %llu] "
                         "do not fit %llu seeds",
                         cond, (unsigned long long)dc[0], (unsigned long long)dc[1],
                         (unsigned long long)dm[0], (unsigned long long)dm[1], (unsigned long long)ds[0]);
    if (!st) {
        c->n = (int)dc[0];
        c->d_model = (int)dc[1];
        c->S = (int)ds[0];
        hid_t fg = H5Gopen2(g, "features", H5P_DEFAULT);
        if (fg < 0 || !husai_h5_attr_read(fg, "tau", H5T_NATIVE_DOUBLE, &c->tau) ||
            !husai_h5_attr_read(fg, "min_seeds", H5T_NATIVE_INT, &c->min_seeds))
            st = husai_error(HUSAI_ERR_DATA, "condition '%s': features lacks its tau / min_seeds attributes",
                             cond);
        if (fg >= 0) H5Gclose(fg);
        const size_t n = (size_t)c->n;
        c->W_dec = malloc((n * c->d_model + 1) * sizeof(float));
        c->members = malloc((n * c->S + 1) * sizeof(int32_t));
        c->stability = malloc((n + 1) * sizeof(float));
        c->coherence = malloc((n + 1) * sizeof(float));
        c->seeds = malloc((size_t)c->S * sizeof(uint64_t));
        if (!st && (!c->W_dec || !c->members || !c->stability || !c->coherence || !c->seeds))
            st = husai_error(HUSAI_ERR_NOMEM, "cannot hold %d consensus features", c->n);
        if (!st && n) st = read_whole(g, cond, "features/consensus", H5T_NATIVE_FLOAT, c->W_dec);
        if (!st && n) st = read_whole(g, cond, "features/consensus_members", H5T_NATIVE_INT32, c->members);
        if (!st && n) st = read_whole(g, cond, "features/coherence", H5T_NATIVE_FLOAT, c->coherence);
        if (!st) st = read_whole(g, cond, "seeds", H5T_NATIVE_UINT64, c->seeds);
        for (size_t i = 0; !st && i < n; i++) {
            int held = 0;
            for (int s = 0; s < c->S; s++)
                held += c->members[i * c->S + s] >= 0;
            c->stability[i] = (float)held / (float)c->S;
        }
    }
    if (g >= 0) H5Gclose(g);
    H5Fclose(file);
    return st;
}

/* OUT/consensus.safetensors: W_dec [n, d_in], stability [n], coherence [n] (F32) and members [n, S] (I32). */
static husai_status write_consensus_tensors(const char *out_dir, const export_consensus *c) {
    cJSON *hdr = cJSON_CreateObject();
    size_t offset = 0;
    const long long s_dec[2] = {c->n, c->d_model}, s_n[1] = {c->n}, s_mem[2] = {c->n, c->S};
    cJSON *meta = hdr ? cJSON_AddObjectToObject(hdr, "__metadata__") : NULL;
    const int ok = meta && cJSON_AddStringToObject(meta, "format", "pt") &&
                   add_tensor(hdr, "W_dec", 2, s_dec, &offset) &&
                   add_tensor(hdr, "stability", 1, s_n, &offset) &&
                   add_tensor(hdr, "coherence", 1, s_n, &offset) &&
                   add_tensor_typed(hdr, "members", "I32", 2, s_mem, &offset);
    char *json = ok ? cJSON_PrintUnformatted(hdr) : NULL;
    cJSON_Delete(hdr);
    if (!json) return husai_error(HUSAI_ERR_NOMEM, "cannot build the safetensors header");
    /* The header is padded with spaces to a multiple of 8 bytes, so the data starts aligned. */
    const size_t len = strlen(json), padded = (len + 7) / 8 * 8, n = (size_t)c->n;
    unsigned char size_le[8];
    for (int b = 0; b < 8; b++)
        size_le[b] = (unsigned char)(((uint64_t)padded >> (8 * b)) & 0xff);
    char final_path[4200], tmp[4300];
    snprintf(final_path, sizeof final_path, "%s/consensus.safetensors", out_dir);
    FILE *f = open_temp(final_path, tmp, sizeof tmp);
    if (!f) {
        cJSON_free(json);
        return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    }
    int bad = fwrite(size_le, 1, 8, f) != 8 || fwrite(json, 1, len, f) != len ||
              fprintf(f, "%*s", (int)(padded - len), "") != (int)(padded - len);
    cJSON_free(json);
    /* members are int32: write_f32_le copies each element's 4 bytes, whatever they mean */
    bad = bad || !write_f32_le(f, c->W_dec, n * c->d_model) || !write_f32_le(f, c->stability, n) ||
          !write_f32_le(f, c->coherence, n) ||
          !write_f32_le(f, (const float *)(const void *)c->members, n * c->S);
    return commit_temp(f, bad, tmp, final_path);
}

/* OUT/cfg.json: what the consensus dictionary is and where it comes from. */
static husai_status write_consensus_cfg(const char *out_dir, const char *cond, const export_consensus *c) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return husai_error(HUSAI_ERR_NOMEM, "cannot build cfg.json");
    cJSON_AddStringToObject(root, "what", "husai consensus dictionary");
    cJSON_AddStringToObject(
        root, "definition",
        "each row of W_dec is a feature learned in at least min_seeds of the run's seeds: a cluster of "
        "mutual best matches with |cos| >= tau (one feature per seed), its direction the unit mean of the "
        "members' sign-aligned unit decoder columns; stability is the share of the seeds holding it, "
        "coherence the mean pairwise |cos| of its members, members[i][s] the feature index in seed s (-1 "
        "for none)");
    cJSON_AddNumberToObject(root, "d_in", c->d_model);
    cJSON_AddNumberToObject(root, "n_features", c->n);
    cJSON_AddNumberToObject(root, "tau", c->tau);
    cJSON_AddNumberToObject(root, "min_seeds", c->min_seeds);
    cJSON *seeds = cJSON_AddArrayToObject(root, "seeds");
    for (int s = 0; seeds && s < c->S; s++)
        add_raw_u64(seeds, (unsigned long long)c->seeds[s]);
    cJSON_AddStringToObject(root, "run_id", c->run_id ? c->run_id : "unknown");
    cJSON_AddStringToObject(root, "condition", cond);
    cJSON_AddStringToObject(root, "exported_by", g_exported_by);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return husai_error(HUSAI_ERR_NOMEM, "cannot build cfg.json");
    char final_path[4200], tmp[4300];
    snprintf(final_path, sizeof final_path, "%s/cfg.json", out_dir);
    FILE *f = open_temp(final_path, tmp, sizeof tmp);
    husai_status st =
        f ? HUSAI_OK : husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    if (f) st = commit_temp(f, fprintf(f, "%s\n", text) < 0, tmp, final_path);
    cJSON_free(text);
    return st;
}

static husai_status ensure_dir(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return husai_error(HUSAI_ERR_IO, "'%s' exists and is not a directory", dir);
        return HUSAI_OK;
    }
    if (mkdir(dir, 0777) != 0)
        return husai_error(HUSAI_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
    return HUSAI_OK;
}

husai_status husai_export_sae(const husai_export_opts *o, const char *out_dir, husai_export_info *info) {
    snprintf(g_exported_by, sizeof g_exported_by, "%s", o->exported_by);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    export_sae e;
    memset(&e, 0, sizeof e);
    husai_status st = load_sae(o->run_dir, o->condition, o->seed, &e);
    if (!st) st = check_signed_topk(o->condition, &e, o->allow_signed_topk);
    if (!st) st = override_label(&e.model_name, o->model_name);
    if (!st) st = override_label(&e.hook_name, o->hook_name);
    if (!st) st = ensure_dir(out_dir);
    if (!st) st = write_safetensors(out_dir, &e);
    if (!st) st = write_cfg(out_dir, o->condition, &e);
    if (!st && info)
        *info = (husai_export_info){.arch = husai_arch_name(e.arch_id),
                                    .saelens_arch = saelens_arch(e.arch_id),
                                    .d_model = e.d_model,
                                    .d_sae = e.d_sae};
    export_sae_free(&e);
    return st;
}

husai_status husai_export_consensus(const husai_export_opts *o, const char *out_dir,
                                    husai_export_info *info) {
    snprintf(g_exported_by, sizeof g_exported_by, "%s", o->exported_by);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    export_consensus c = {0};
    husai_status st = load_consensus(o->run_dir, o->condition, &c);
    if (!st) st = ensure_dir(out_dir);
    if (!st) st = write_consensus_tensors(out_dir, &c);
    if (!st) st = write_consensus_cfg(out_dir, o->condition, &c);
    if (!st && info) *info = (husai_export_info){.d_model = c.d_model, .n_consensus = c.n, .n_seeds = c.S};
    export_consensus_free(&c);
    return st;
}
