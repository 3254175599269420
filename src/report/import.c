#define _XOPEN_SOURCE 700 /* fseeko, realpath, lstat */
#define _FILE_OFFSET_BITS 64
#include "report/import.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <fcntl.h>
#include <unistd.h>

#include "report/h5attr.h"

/* Storage chunks of about 1 MiB (as husai synth writes them) and a conversion buffer of whole chunks of
 * about 16 MiB: memory stays bounded whatever the inputs' sizes. */
#define CHUNK_BYTES ((size_t)1 << 20)
#define BUFFER_BYTES ((size_t)16 << 20)
/* safetensors caps its JSON header at 100 MB; a larger length is a corrupt or foreign file */
#define ST_HEADER_MAX ((uint64_t)100 << 20)
#define NPY_MAGIC "\x93NUMPY"
/* room kept for HDF5's metadata (object headers, chunk index, attributes) beyond the rows written */
#define RESERVE_SLACK ((size_t)1 << 20)

typedef enum { SRC_F32, SRC_F16, SRC_BF16 } src_type;

typedef struct {
    const char *path;
    off_t offset; /* first byte of the rows */
    size_t rows;
    int width;
    src_type type;
    size_t elem;
} source;

static uint64_t le_u64(const unsigned char *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* Control characters from a file's header become '?', so that a message quoting it stays one line. */
static void scrub(char *text) {
    for (unsigned char *p = (unsigned char *)text; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
}

/* Size of a regular file; anything else is refused before it is opened (a FIFO would block). */
static husai_status input_size(const char *path, off_t *size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return husai_error(HUSAI_ERR_IO, "'%s': %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return husai_error(HUSAI_ERR_IO, "'%s' is not a regular file", path);
    *size = sb.st_size;
    return HUSAI_OK;
}

/* rows = product of all axes but the last, width = the last; refuses rank < 2 and overflow. */
static husai_status shape_rows(const char *path, const long long *dims, int rank, source *s) {
    if (rank < 2)
        return husai_error(HUSAI_ERR_DATA,
                           "'%s': the array is %d-D; expected [rows, d_model] (or more axes, "
                           "the leading ones taken as rows)",
                           path, rank);
    size_t rows = 1;
    for (int i = 0; i < rank - 1; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && rows > SIZE_MAX / (size_t)dims[i]))
            return husai_error(HUSAI_ERR_DATA, "'%s': shape out of range", path);
        rows *= (size_t)dims[i];
    }
    const long long w = dims[rank - 1];
    if (w < 1 || w > INT_MAX) return husai_error(HUSAI_ERR_DATA, "'%s': width %lld is out of range", path, w);
    if (rows > SIZE_MAX / (size_t)w / 4) return husai_error(HUSAI_ERR_DATA, "'%s': shape out of range", path);
    s->rows = rows;
    s->width = (int)w;
    return HUSAI_OK;
}

/* The bytes the rows need must be there: fewer is a truncated file. */
static husai_status check_extent(const char *path, const source *s, off_t size) {
    const uint64_t need = (uint64_t)s->offset + (uint64_t)s->rows * (uint64_t)s->width * s->elem;
    if ((uint64_t)size < need)
        return husai_error(HUSAI_ERR_DATA,
                           "'%s' is truncated: its header describes %llu bytes but the file has %llu", path,
                           (unsigned long long)need, (unsigned long long)size);
    return HUSAI_OK;
}

/* ---------- .npy ---------- */

/* Points after "'key':" (or "\"key\":") in a .npy header dict, spaces skipped; NULL if absent. */
static const char *npy_field(const char *h, const char *key) {
    char pat[2][40];
    snprintf(pat[0], sizeof pat[0], "'%s'", key);
    snprintf(pat[1], sizeof pat[1], "\"%s\"", key);
    for (int i = 0; i < 2; i++) {
        const char *p = strstr(h, pat[i]);
        if (!p) continue;
        p += strlen(pat[i]);
        while (*p == ' ')
            p++;
        if (*p != ':') return NULL;
        p++;
        while (*p == ' ')
            p++;
        return p;
    }
    return NULL;
}

/* The header dict of a .npy file: {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }. */
static husai_status npy_parse_dict(const char *path, const char *h, source *s) {
    const char *d = npy_field(h, "descr"), *f = npy_field(h, "fortran_order"), *sh = npy_field(h, "shape");
    if (!d || !f || !sh || (*d != '\'' && *d != '"') || *sh != '(')
        return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (descr, fortran_order or shape missing)",
                           path);
    char descr[32];
    const char q = *d++;
    size_t n = 0;
    while (d[n] && d[n] != q && n < sizeof descr - 1) {
        descr[n] = d[n];
        n++;
    }
    descr[n] = '\0';
    if (d[n] != q) return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (descr)", path);
    scrub(descr);
    if (!strcmp(descr, "<f4")) {
        s->type = SRC_F32;
        s->elem = 4;
    } else if (!strcmp(descr, "<f2")) {
        s->type = SRC_F16;
        s->elem = 2;
    } else if (!strcmp(descr, "<f8")) {
        return husai_error(HUSAI_ERR_DATA,
                           "'%s': dtype float64 (<f8) is not imported; save it as float32 "
                           "(a.astype(np.float32)) or float16",
                           path);
    } else {
        return husai_error(HUSAI_ERR_DATA,
                           "'%s': unsupported dtype '%s'; expected little-endian float32 (<f4) "
                           "or float16 (<f2)",
                           path, descr);
    }
    if (!strncmp(f, "True", 4))
        return husai_error(HUSAI_ERR_DATA,
                           "'%s': Fortran-order array; save it in C order "
                           "(np.ascontiguousarray)",
                           path);
    if (strncmp(f, "False", 5))
        return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (fortran_order)", path);
    long long dims[32];
    int rank = 0;
    const char *p = sh + 1;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == ')') break;
        char *end;
        errno = 0;
        const long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || rank == 32)
            return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (shape)", path);
        dims[rank++] = v;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == ',')
            p++;
        else if (*p != ')')
            return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (shape)", path);
    }
    return shape_rows(path, dims, rank, s);
}

static husai_status npy_open(const char *path, FILE *f, off_t size, source *s) {
    unsigned char pre[12];
    if (size < 10 || fread(pre, 1, 10, f) != 10)
        return husai_error(HUSAI_ERR_DATA, "'%s' is truncated: shorter than a .npy preamble", path);
    const int major = pre[6];
    if (major < 1 || major > 3)
        return husai_error(HUSAI_ERR_DATA, "'%s': .npy format version %d.%d is not supported (1.0 to 3.0)",
                           path, major, pre[7]);
    size_t at = 10;
    uint64_t hlen = le_u64(pre + 8, 2);
    if (major >= 2) { /* a 4-byte header length */
        if (fread(pre + 10, 1, 2, f) != 2)
            return husai_error(HUSAI_ERR_DATA, "'%s' is truncated: shorter than a .npy preamble", path);
        hlen = le_u64(pre + 8, 4);
        at = 12;
    }
    if ((uint64_t)size < at + hlen)
        return husai_error(HUSAI_ERR_DATA, "'%s' is truncated: its .npy header runs past the end", path);
    if (hlen > ((uint64_t)1 << 24)) return husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header length", path);
    char *h = malloc((size_t)hlen + 1);
    if (!h) return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    husai_status st = HUSAI_OK;
    if (fread(h, 1, (size_t)hlen, f) != (size_t)hlen) {
        st = husai_error(HUSAI_ERR_IO, "'%s': read error in the .npy header", path);
    } else {
        h[hlen] = '\0';
        if (strlen(h) != (size_t)hlen || h[0] != '{')
            st = husai_error(HUSAI_ERR_DATA, "'%s': bad .npy header (not a dict)", path);
        else
            st = npy_parse_dict(path, h, s);
    }
    free(h);
    s->offset = (off_t)(at + hlen);
    return st ? st : check_extent(path, s, size);
}

/* ---------- safetensors ---------- */

static husai_status st_dtype(const char *path, const char *name, const char *dt, source *s) {
    if (!strcmp(dt, "F32")) {
        s->type = SRC_F32;
        s->elem = 4;
    } else if (!strcmp(dt, "F16")) {
        s->type = SRC_F16;
        s->elem = 2;
    } else if (!strcmp(dt, "BF16")) {
        s->type = SRC_BF16;
        s->elem = 2;
    } else {
        return husai_error(HUSAI_ERR_DATA, "'%s': tensor '%s' has dtype %s; expected F32, F16 or BF16", path,
                           name, dt);
    }
    return HUSAI_OK;
}

static int st_rank(const cJSON *t) {
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    return cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
}

/* The tensor to import: `want` by name, else the only one of rank >= 2. */
static husai_status st_pick(const char *path, const cJSON *hdr, const char *want, const cJSON **out) {
    const cJSON *t, *found = NULL;
    char names[512] = "";
    size_t used = 0;
    int n = 0;
    cJSON_ArrayForEach(t, hdr) {
        if (!strcmp(t->string, "__metadata__")) continue;
        if (want ? !strcmp(t->string, want) : st_rank(t) >= 2) {
            found = t;
            n++;
            if (used < sizeof names - 64)
                used += (size_t)snprintf(names + used, sizeof names - used, "%s'%s'", n > 1 ? ", " : "",
                                         t->string);
        }
    }
    if (want && !found) return husai_error(HUSAI_ERR_DATA, "'%s' has no tensor '%s'", path, want);
    if (!found) return husai_error(HUSAI_ERR_DATA, "'%s' holds no tensor of rank >= 2", path);
    if (n > 1)
        return husai_error(HUSAI_ERR_ARG, "'%s' holds %d tensors of rank >= 2 (%s); name one with --tensor",
                           path, n, names);
    *out = found;
    return HUSAI_OK;
}

/* A JSON number that is a whole count (shapes and offsets). */
static int is_count(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15 &&
           v->valuedouble == floor(v->valuedouble);
}

static husai_status st_open(const char *path, FILE *f, off_t size, const char *want, source *s) {
    unsigned char n8[8];
    if (size < 8 || fread(n8, 1, 8, f) != 8)
        return husai_error(HUSAI_ERR_DATA, "'%s' is truncated: shorter than a safetensors header length",
                           path);
    const uint64_t hlen = le_u64(n8, 8);
    if (hlen < 2 || hlen > ST_HEADER_MAX)
        return husai_error(HUSAI_ERR_DATA,
                           "'%s' is neither a .npy nor a safetensors file (no .npy magic, and as safetensors "
                           "its header length would be %llu bytes)",
                           path, (unsigned long long)hlen);
    if ((uint64_t)size < 8 + hlen)
        return husai_error(HUSAI_ERR_DATA, "'%s' is truncated: its safetensors header runs past the end",
                           path);
    char *text = malloc((size_t)hlen);
    if (!text) return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    cJSON *hdr = NULL;
    husai_status st = HUSAI_OK;
    if (fread(text, 1, (size_t)hlen, f) != (size_t)hlen)
        st = husai_error(HUSAI_ERR_IO, "'%s': read error in the safetensors header", path);
    else if (text[0] != '{' || !(hdr = cJSON_ParseWithLength(text, (size_t)hlen)) || !cJSON_IsObject(hdr))
        st = husai_error(HUSAI_ERR_DATA, "'%s': bad safetensors header (not a JSON object)", path);
    free(text);
    for (cJSON *e = hdr ? hdr->child : NULL; e; e = e->next) { /* names and dtypes are quoted in messages */
        scrub(e->string);
        if (cJSON_IsObject(e)) scrub(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "dtype")));
    }
    const cJSON *t = NULL;
    if (!st) st = st_pick(path, hdr, want, &t);
    if (!st) {
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        long long dims[32], o[2] = {-1, -1};
        int rank = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : 0,
            ok = cJSON_IsString(dt) && rank <= 32 && cJSON_IsArray(off) && cJSON_GetArraySize(off) == 2;
        for (int i = 0; ok && i < rank; i++) {
            const cJSON *v = cJSON_GetArrayItem(sh, i);
            ok = is_count(v);
            dims[i] = ok ? (long long)v->valuedouble : 0;
        }
        for (int i = 0; ok && i < 2; i++) {
            const cJSON *v = cJSON_GetArrayItem(off, i);
            ok = is_count(v);
            o[i] = ok ? (long long)v->valuedouble : -1;
        }
        if (!ok)
            st = husai_error(HUSAI_ERR_DATA, "'%s': bad safetensors entry for tensor '%s'", path, t->string);
        if (!st) st = st_dtype(path, t->string, dt->valuestring, s);
        if (!st) st = shape_rows(path, dims, rank, s);
        if (!st && (uint64_t)(o[1] - o[0]) != (uint64_t)s->rows * (uint64_t)s->width * s->elem)
            st = husai_error(HUSAI_ERR_DATA, "'%s': tensor '%s' spans %lld bytes but its shape needs %llu",
                             path, t->string, o[1] - o[0],
                             (unsigned long long)((uint64_t)s->rows * (uint64_t)s->width * s->elem));
        s->offset = (off_t)(8 + hlen + (uint64_t)(o[0] > 0 ? o[0] : 0));
        if (!st) st = check_extent(path, s, size);
    }
    cJSON_Delete(hdr);
    return st;
}

/* Reads one input's header: format (by its magic), dtype, shape, where its rows start. */
static husai_status source_open(const char *path, const char *tensor, source *s) {
    memset(s, 0, sizeof *s);
    s->path = path;
    off_t size = 0;
    husai_status st = input_size(path, &size);
    if (st) return st;
    FILE *f = fopen(path, "rb");
    if (!f) return husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    unsigned char magic[6] = {0};
    const size_t got = fread(magic, 1, sizeof magic, f);
    rewind(f);
    if (got == sizeof magic && !memcmp(magic, NPY_MAGIC, 6))
        st = npy_open(path, f, size, s);
    else
        st = st_open(path, f, size, tensor, s);
    fclose(f);
    return st;
}

/* ---------- conversion ---------- */

/* IEEE binary16 to binary32, exactly (every half is a float). */
static float half_to_float(uint32_t h) {
    const uint32_t sign = (h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 is exact in float */
        const float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    const uint32_t bits =
        exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* n values of type t (little-endian bytes in raw) as floats in out. */
static void convert(const unsigned char *raw, size_t n, src_type t, float *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        if (t == SRC_F32) {
            bits = (uint32_t)le_u64(raw + 4 * i, 4);
            memcpy(&out[i], &bits, 4);
        } else if (t == SRC_BF16) { /* bfloat16 is the upper half of a float */
            bits = (uint32_t)le_u64(raw + 2 * i, 2) << 16;
            memcpy(&out[i], &bits, 4);
        } else {
            out[i] = half_to_float((uint32_t)le_u64(raw + 2 * i, 2));
        }
    }
}

/* ---------- output ---------- */

/* The staging file: HDF5's handle, and a descriptor that reserves disk space ahead of HDF5's writes. */
typedef struct {
    const char *path;
    hid_t file;
    int fd;
    off_t reserved;
    double need; /* bytes the finished file takes, about: for the message */
} staging;

/* Reserves room for `bytes` more past HDF5's end of allocation, plus slack for metadata, before HDF5
 * writes them. HDF5 1.10 cannot cleanly close a file whose writes failed (its exit handler then crashes
 * closing it again), so a full disk or a file-size limit must surface here, as one error, while every
 * write so far has landed (as results.h5 and husai synth do it). */
static husai_status reserve(staging *sg, size_t bytes) {
    haddr_t eoa = 0;
    if (H5Fget_eoa(sg->file, &eoa) < 0) return husai_error(HUSAI_ERR_IO, "cannot query '%s'", sg->path);
    const off_t want = (off_t)eoa + (off_t)bytes + (off_t)RESERVE_SLACK;
    if (want <= sg->reserved) return HUSAI_OK;
    const int e = posix_fallocate(sg->fd, sg->reserved, want - sg->reserved);
    if (e)
        return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full? %s; the file needs about %.1f MB)",
                           sg->path, strerror(e), sg->need / 1e6);
    sg->reserved = want;
    return HUSAI_OK;
}

static husai_status check_output(const char *out, const char *partial, int force) {
    struct stat sb;
    if (lstat(partial, &sb) == 0 && !S_ISREG(sb.st_mode))
        return husai_error(HUSAI_ERR_IO,
                           "'%s' exists and is not a regular file; import stages its output there", partial);
    if (stat(out, &sb) == 0) {
        if (!force) return husai_error(HUSAI_ERR_IO, "'%s' exists; pass --force to replace it", out);
        if (!S_ISREG(sb.st_mode))
            return husai_error(HUSAI_ERR_IO,
                               "'%s' is not a regular file; --force replaces only a regular file", out);
    } else if (errno != ENOENT) {
        return husai_error(HUSAI_ERR_IO, "cannot check '%s': %s", out, strerror(errno));
    }
    return HUSAI_OK;
}

/* A 1-D attribute of n values of type `type` on loc. */
static herr_t attr_array(hid_t loc, const char *name, hid_t type, size_t n, const void *values) {
    const hsize_t dim = n;
    hid_t space = H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    const herr_t rc = a < 0 ? -1 : H5Awrite(a, type, values);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

/* model_name, hook_name, source_files (absolute paths, UTF-8) and source_rows on the dataset. */
static husai_status write_attrs(hid_t dset, const source *src, int n, const husai_import_opts *o,
                                staging *sg) {
    char **paths = calloc((size_t)n, sizeof *paths);
    uint64_t *rows = calloc((size_t)n, sizeof *rows);
    husai_status st = paths && rows ? HUSAI_OK : husai_error(HUSAI_ERR_NOMEM, "out of memory");
    size_t bytes = 4096; /* the attributes' headers and the strings' heap */
    for (int i = 0; i < n && !st; i++) {
        paths[i] = realpath(src[i].path, NULL);
        if (!paths[i]) paths[i] = strdup(src[i].path);
        if (!paths[i]) st = husai_error(HUSAI_ERR_NOMEM, "out of memory");
        rows[i] = src[i].rows;
        bytes += paths[i] ? strlen(paths[i]) + 64 : 0;
    }
    if (!st) st = reserve(sg, bytes);
    herr_t rc = 0;
    if (!st && o->model_name) rc = husai_h5_attr_write_str(dset, "model_name", o->model_name);
    if (!st && rc >= 0 && o->hook_name) rc = husai_h5_attr_write_str(dset, "hook_name", o->hook_name);
    if (!st && rc >= 0) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        rc = attr_array(dset, "source_files", t, (size_t)n, paths);
        H5Tclose(t);
    }
    if (!st && rc >= 0) rc = attr_array(dset, "source_rows", H5T_NATIVE_UINT64, (size_t)n, rows);
    if (!st && rc < 0) st = husai_error(HUSAI_ERR_IO, "writing the attributes of '%s' failed", sg->path);
    for (int i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
    free(rows);
    return st;
}

/* Streams every source's rows through buf (buf_rows rows) into dset, in order, refusing NaN/Inf. */
static husai_status copy_rows(hid_t dset, const source *src, int n, size_t buf_rows, size_t chunk, float *buf,
                              unsigned char *raw, staging *sg) {
    const size_t d = (size_t)src[0].width;
    size_t filled = 0, out_row = 0;
    husai_status st = HUSAI_OK;
    for (int i = 0; i <= n && !st; i++) {
        FILE *f = NULL;
        if (i < n) {
            f = fopen(src[i].path, "rb");
            if (!f) return husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", src[i].path, strerror(errno));
            if (fseeko(f, src[i].offset, SEEK_SET) != 0)
                st = husai_error(HUSAI_ERR_IO, "'%s': cannot seek to its data", src[i].path);
        }
        for (size_t r = 0; !st && (i < n ? r < src[i].rows : filled > 0);) {
            const size_t take =
                i < n ? (src[i].rows - r < buf_rows - filled ? src[i].rows - r : buf_rows - filled) : 0;
            if (take) {
                const size_t bytes = take * d * src[i].elem;
                if (fread(raw, 1, bytes, f) != bytes) {
                    st = husai_error(HUSAI_ERR_DATA,
                                     "'%s' is truncated or changed while being read (rows %zu..%zu)",
                                     src[i].path, r, r + take);
                    break;
                }
                float *dst = buf + filled * d;
                convert(raw, take * d, src[i].type, dst);
                for (size_t j = 0; j < take * d; j++)
                    if (!isfinite(dst[j])) {
                        st = husai_error(HUSAI_ERR_DATA, "'%s': row %zu (0-based) column %zu is %s",
                                         src[i].path, r + j / d, j % d, isnan(dst[j]) ? "NaN" : "Inf");
                        break;
                    }
                filled += take;
                r += take;
            }
            if (!st && filled > 0 && (filled == buf_rows || i == n)) {
                /* the rows plus one index entry per chunk they touch */
                st = reserve(sg, filled * d * sizeof(float) + (filled / chunk + 2) * 64);
                if (st) break;
                const hsize_t start[2] = {out_row, 0}, count[2] = {filled, d};
                hid_t fs = H5Dget_space(dset), ms = H5Screate_simple(2, count, NULL);
                herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
                if (rc >= 0) rc = H5Dwrite(dset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
                H5Sclose(ms);
                H5Sclose(fs);
                if (rc < 0) st = husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full?)", sg->path);
                out_row += filled;
                filled = 0;
            }
        }
        if (f) fclose(f);
    }
    return st;
}

husai_status husai_import(const char *out, const char *const *inputs, int n, const husai_import_opts *o,
                          husai_import_summary *summary) {
    if (n < 1) return husai_error(HUSAI_ERR_ARG, "no input files");
    const size_t plen = strlen(out) + sizeof ".partial";
    char *partial = malloc(plen);
    source *src = calloc((size_t)n, sizeof *src);
    if (!partial || !src) {
        free(partial);
        free(src);
        return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    }
    snprintf(partial, plen, "%s.partial", out);
    husai_status st = check_output(out, partial, o->force);
    size_t total = 0;
    for (int i = 0; i < n && !st; i++) {
        st = source_open(inputs[i], o->tensor, &src[i]);
        if (!st && src[i].width != src[0].width)
            st = husai_error(HUSAI_ERR_DATA,
                             "'%s' has width %d, but '%s' has %d; every input must have the same "
                             "d_model",
                             inputs[i], src[i].width, inputs[0], src[0].width);
        if (!st) total += src[i].rows;
    }
    if (!st && total == 0) st = husai_error(HUSAI_ERR_DATA, "the inputs hold no rows");
    const size_t d = st ? 1 : (size_t)src[0].width;
    size_t chunk = o->chunk_rows ? o->chunk_rows : CHUNK_BYTES / (4 * d);
    if (chunk < 1) chunk = 1;
    if (chunk > total && total > 0) chunk = total;
    if (!st && chunk * d * 4 >= ((size_t)1 << 32))
        st = husai_error(HUSAI_ERR_ARG, "--chunk-rows %zu makes chunks of %zu bytes; HDF5 allows under 4 GiB",
                         chunk, chunk * d * 4);
    const size_t buf_rows = chunk * (BUFFER_BYTES / (chunk * d * 4) > 1 ? BUFFER_BYTES / (chunk * d * 4) : 1);
    float *buf = st ? NULL : malloc(buf_rows * d * sizeof(float));
    unsigned char *raw = st ? NULL : malloc(buf_rows * d * 4);
    if (!st && (!buf || !raw))
        st = husai_error(HUSAI_ERR_NOMEM, "cannot allocate a buffer of %zu rows", buf_rows);

    hid_t file = -1, dset = -1;
    staging sg = {
        .path = partial, .file = -1, .fd = -1, .need = (double)total * (double)d * 4 + RESERVE_SLACK};
    if (!st) {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5Pset_fapl_sec2(fapl); /* one process: never the MPI-IO driver */
        file = H5Fcreate(partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        H5Pclose(fapl);
        if (file < 0)
            st = husai_error(HUSAI_ERR_IO,
                             "cannot create '%s' (does the directory exist and is it writable?)", partial);
        sg.file = file;
        sg.fd = file < 0 ? -1 : open(partial, O_WRONLY);
        if (!st && sg.fd < 0)
            st = husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", partial, strerror(errno));
        if (!st) st = reserve(&sg, 0); /* the dataset's header */
    }
    if (!st) {
        const hsize_t dims[2] = {total, d}, cdims[2] = {chunk, d};
        hid_t space = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE),
              lcpl = H5Pcreate(H5P_LINK_CREATE);
        H5Pset_chunk(dcpl, 2, cdims);
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); /* every element is written once */
        H5Pset_create_intermediate_group(lcpl, 1);
        dset = H5Dcreate2(file, o->dataset, H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT);
        H5Sclose(space);
        H5Pclose(dcpl);
        H5Pclose(lcpl);
        if (dset < 0)
            st = husai_error(HUSAI_ERR_IO, "cannot create dataset '%s' in '%s'", o->dataset, partial);
    }
    if (!st) st = copy_rows(dset, src, n, buf_rows, chunk, buf, raw, &sg);
    if (!st) st = write_attrs(dset, src, n, o, &sg);
    if (dset >= 0) H5Dclose(dset);
    haddr_t eoa = 0;
    if (file >= 0 && H5Fget_eoa(file, &eoa) < 0) eoa = 0;
    if (file >= 0 && H5Fclose(file) < 0 && !st)
        st = husai_error(HUSAI_ERR_IO, "closing '%s' failed (disk full?)", partial);
    /* the reservation's unused tail goes: HDF5 needs only its end of allocation */
    if (!st && eoa > 0 && (off_t)eoa < sg.reserved && ftruncate(sg.fd, (off_t)eoa) != 0)
        st = husai_error(HUSAI_ERR_IO, "trimming '%s': %s", partial, strerror(errno));
    if (sg.fd >= 0) close(sg.fd);
    if (!st && rename(partial, out) != 0)
        st = husai_error(HUSAI_ERR_IO, "cannot rename '%s' to '%s': %s", partial, out, strerror(errno));
    if (st && file >= 0) remove(partial);
    if (!st && summary) {
        summary->rows = total;
        summary->d_model = (int)d;
        summary->chunk_rows = chunk;
    }
    free(buf);
    free(raw);
    free(src);
    free(partial);
    return st;
}
