/* fuzz_dataset.c: structure-aware libFuzzer target for the dataset validation path.
 *
 * Raw fuzzed bytes as an HDF5 file mostly exercise HDF5's own (not fuzz-hardened) parser. Instead
 * the input bytes are a recipe: a generator builds a well-formed HDF5 file from them with the HDF5
 * C API, as h5py would, varying what husai must judge:
 *   - where "/activations" is: a dataset, a group, a dangling soft link, a soft link to a dataset,
 *     an external link, missing (another name), or not there at all;
 *   - dataspace: scalar, null, or simple with 1..3 dims, each 0..70000;
 *   - file dtype: float16, bfloat16, float32/64 either byte order, long double, integers, fixed and
 *     variable-length strings, compound, array, enum, opaque, bitfield;
 *   - layout (contiguous, chunked, chunked + deflate, compact), fill value (0, NaN, Inf, 1.5), file
 *     format bounds (earliest or latest);
 *   - values: random, constant, with planted NaN, +-Inf, values that overflow float32 or float16,
 *     subnormals, -0; all of them scaled (1, tiny: 1e-40..1e-14, huge: 1e17..1e30);
 *   - which values are written: all of them when small, else none (contiguous) or only a corner
 *     (chunked), so the rest has no storage and would read as the fill value;
 *   - where they are stored: in the file, in an external raw file (complete, cut to half, deleted),
 *     or behind a virtual dataset (VDS) mapping a source dataset in another file (all of it, only
 *     the first half of the rows, or with the source file deleted);
 *   - optionally the finished file truncated at a fuzzed length.
 * Then two independent readers judge the file:
 *   - the harness's own checks, written here (H5Fis_hdf5, H5Fopen with the default driver,
 *     H5Lexists, H5Dopen2, storage: every chunk looked up by its coordinates or the contiguous
 *     address, then type class and size, rank, row/column counts, a bounded read of at most 64 rows
 *     into floats and a NaN/Inf scan; when the data is small a full read, the float64 value behind
 *     a non-finite float, |x| > HUSAI_DATA_MAX_ABS, the constant check and the variance in long
 *     double against HUSAI_DATA_MIN_VAR);
 *   - husai's own husai_dataset_read (src/mpi/dataset.c) over MPI_COMM_SELF, exactly as a 1-rank
 *     job calls it, whenever it would not need more than FULL_CAP floats of memory (BIG_CAP where
 *     it must refuse unwritten storage before reading anything).
 * Properties (an abort() if violated, so libFuzzer reports the input):
 *   - the two verdicts agree: ok, or a bad-data error; unwritten storage, a too large value, a
 *     near-zero variance and a constant dataset are refused as such; a NaN/Inf or too-large verdict
 *     names the same first row, and a float64 beyond float32's range is named so, with its column.
 *     Where the harness cannot establish a verdict (only a peek at big data, a storage or variance
 *     question it cannot settle) it compares nothing but the no-crash properties;
 *   - on success husai's rows, d_model, dtype label and every float equal the harness's read;
 *   - husai leaves no HDF5 object open (files, datasets, types, spaces, property lists) and, under
 *     ASan/LSan, no memory leaked.
 * Sizes are capped so a fuzzed header never makes either reader allocate more than a few MiB.
 *
 * Built with clang -fsanitize=fuzzer (make fuzz) or with tests/fuzz/driver.c (replay.sh, ctest). */
#define _GNU_SOURCE
#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/status.h"
#include "mpi/datacheck.h" /* HUSAI_DATA_MAX_ABS, HUSAI_DATA_MIN_VAR only */
#include "mpi/dataset.h"

#define MAX_DIM 70000
#define WRITE_CAP (1u << 16) /* elements written to the file in full */
#define FULL_CAP (1u << 18)  /* elements read in full by both readers (1 MiB of floats) */
#define PEEK_ROWS 64         /* bounded read when the data is larger than FULL_CAP */
#define PEEK_COLS 1024
#define BIG_CAP (1u << 26)        /* unwritten storage: husai must refuse before reading; called up to this */
#define CHUNK_SCAN_CAP (1u << 16) /* chunks looked up one by one; beyond, only the first and last */
#define VAR_BAND 1e-3             /* relative: a variance this close to the limit is left unjudged */

static char g_path[256], g_other[256], g_ext[256], g_src[256];
static int g_verbose;

/* Removes the files one input makes, so that none outlives it into the next. */
static void remove_files(void) {
    unlink(g_path);
    unlink(g_ext);
    unlink(g_src);
}

/* ---------------------------------------------------------------- recipe ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned u8(reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}
static unsigned u16(reader *r) {
    const unsigned a = u8(r);
    return a | u8(r) << 8;
}

enum { SP_SIMPLE, SP_SCALAR, SP_NULL };
enum { LK_DATASET, LK_GROUP, LK_DANGLING, LK_SOFT, LK_EXTERNAL, LK_OTHER_NAME, LK_NESTED, LK_COUNT };
enum { LY_CONTIG, LY_CHUNK, LY_DEFLATE, LY_COMPACT, LY_COUNT };
enum {
    DT_F32LE,
    DT_F32BE,
    DT_F64LE,
    DT_F64BE,
    DT_F16,
    DT_BF16,
    DT_LDOUBLE,
    DT_I8,
    DT_I32,
    DT_U64BE,
    DT_I16,
    DT_STR,
    DT_VLSTR,
    DT_COMPOUND,
    DT_ARRAY,
    DT_ENUM,
    DT_OPAQUE,
    DT_BITFIELD,
    DT_COUNT
};
enum { ST_PLAIN, ST_EXT, ST_EXT_SHORT, ST_EXT_MISSING, ST_VDS, ST_VDS_HALF, ST_VDS_MISSING, ST_COUNT };
enum { PL_NAN, PL_PINF, PL_NINF, PL_HUGE, PL_TINY, PL_NEGZERO, PL_HALF_OVERFLOW, PL_DBL_OVER_FLT, PL_COUNT };

typedef struct {
    int space, rank;
    hsize_t dims[3];
    int dtype, link, layout, fill, latest;
    uint32_t seed;
    int constant;
    double constval;
    int nplant;
    struct {
        unsigned row, col;
        int kind;
    } plant[8];
    int truncate;
    unsigned trunc_frac; /* keep trunc_frac/256 of the file */
    double scale;        /* multiplies the random or constant values (not the planted ones) */
    int storage;         /* ST_*: where the values live */
} recipe;

static hsize_t dim_from(unsigned v) {
    /* Mostly small dims (where the interesting edges are: 0, 1, 2), sometimes up to MAX_DIM. */
    if (v & 0x8000) return (hsize_t)((v & 0x7fff) * (unsigned long)MAX_DIM / 0x7fff);
    return v % 19;
}

static void parse_recipe(const uint8_t *data, size_t size, recipe *rc) {
    reader r = {data, size};
    memset(rc, 0, sizeof *rc);
    const unsigned shape = u8(&r);
    rc->space = shape >= 0xf0 ? SP_NULL : shape >= 0xe0 ? SP_SCALAR : SP_SIMPLE;
    /* rank 2 is the common case; 1 and 3 are the wrong shapes the issue names */
    static const int ranks[8] = {2, 2, 2, 2, 2, 1, 3, 3};
    rc->rank = rc->space == SP_SIMPLE ? ranks[shape % 8] : 0;
    for (int i = 0; i < 3; i++)
        rc->dims[i] = dim_from(u16(&r));
    const unsigned dt = u8(&r);
    rc->dtype = dt < 128 ? (int)(dt % 5) : (int)((dt - 128) % DT_COUNT); /* floats most of the time */
    const unsigned lk = u8(&r);
    rc->link = lk < 160 ? LK_DATASET : (int)((lk - 160) % LK_COUNT);
    rc->layout = (int)(u8(&r) % LY_COUNT);
    const unsigned fl = u8(&r);
    rc->fill = (int)(fl % 4);
    rc->latest = (fl >> 2) & 1;
    rc->seed = (uint32_t)u16(&r) << 16 | u16(&r);
    const unsigned cst = u8(&r);
    rc->constant = cst >= 0xe0;
    rc->constval = ((int)(cst & 0x1f) - 16) / 4.0;
    const unsigned np = u8(&r);
    rc->nplant = np < 96 ? 0 : (int)((np - 96) % 9);
    for (int i = 0; i < rc->nplant; i++) {
        rc->plant[i].row = u16(&r);
        rc->plant[i].col = u16(&r);
        rc->plant[i].kind = (int)(u8(&r) % PL_COUNT);
    }
    const unsigned tr = u8(&r);
    rc->truncate = tr >= 0xf0;
    rc->trunc_frac = u8(&r);
    /* Last, so that older inputs (which end before it) keep their meaning with scale 1. Tiny scales
     * give near-zero variance (1e-14: var ~1e-28 passes; 1e-20, 1e-40: refused), huge ones values
     * above HUSAI_DATA_MAX_ABS (2.5e17: the largest is exactly 1e18, which passes). */
    static const double scales[8] = {1e-20, 1e-14, 1e-40, 1e17, 2.5e17, 1e19, 1e30, 1e-7};
    const unsigned sc = u8(&r);
    rc->scale = sc < 0x80 ? 1.0 : scales[(sc - 0x80) % 8];
    const unsigned sb = u8(&r);
    rc->storage = sb < 0xc0 ? ST_PLAIN : 1 + (int)((sb - 0xc0) % (ST_COUNT - 1));
}

static void describe(const recipe *rc, FILE *f) {
    fprintf(f,
            "recipe: space=%d rank=%d dims=%llu,%llu,%llu dtype=%d link=%d layout=%d fill=%d latest=%d "
            "constant=%d(%g) plants=%d truncate=%d(%u/256) scale=%g storage=%d\n",
            rc->space, rc->rank, (unsigned long long)rc->dims[0], (unsigned long long)rc->dims[1],
            (unsigned long long)rc->dims[2], rc->dtype, rc->link, rc->layout, rc->fill, rc->latest,
            rc->constant, rc->constval, rc->nplant, rc->truncate, rc->trunc_frac, rc->scale, rc->storage);
}

/* ------------------------------------------------------------- generator ---- */

static hid_t make_type(int dtype) {
    hid_t t = -1;
    switch (dtype) {
    case DT_F32LE:
        return H5Tcopy(H5T_IEEE_F32LE);
    case DT_F32BE:
        return H5Tcopy(H5T_IEEE_F32BE);
    case DT_F64LE:
        return H5Tcopy(H5T_IEEE_F64LE);
    case DT_F64BE:
        return H5Tcopy(H5T_IEEE_F64BE);
    case DT_F16: /* IEEE half, as h5py/numpy float16 */
        t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        return t;
    case DT_BF16:
        t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 7, 8, 0, 7);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 127);
        return t;
    case DT_LDOUBLE:
        return H5Tcopy(H5T_NATIVE_LDOUBLE);
    case DT_I8:
        return H5Tcopy(H5T_STD_I8LE);
    case DT_I32:
        return H5Tcopy(H5T_STD_I32LE);
    case DT_U64BE:
        return H5Tcopy(H5T_STD_U64BE);
    case DT_I16:
        return H5Tcopy(H5T_STD_I16BE);
    case DT_STR:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 4);
        return t;
    case DT_VLSTR:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        return t;
    case DT_COMPOUND:
        t = H5Tcreate(H5T_COMPOUND, 4);
        H5Tinsert(t, "x", 0, H5T_IEEE_F32LE);
        return t;
    case DT_ARRAY: {
        const hsize_t two = 2;
        return H5Tarray_create2(H5T_IEEE_F32LE, 1, &two);
    }
    case DT_ENUM: {
        t = H5Tenum_create(H5T_NATIVE_INT);
        int v = 0;
        H5Tenum_insert(t, "zero", &v);
        v = 1;
        H5Tenum_insert(t, "one", &v);
        return t;
    }
    case DT_OPAQUE:
        t = H5Tcreate(H5T_OPAQUE, 4);
        H5Tset_tag(t, "fuzz");
        return t;
    case DT_BITFIELD:
        return H5Tcopy(H5T_STD_B32LE);
    }
    return H5Tcopy(H5T_IEEE_F32LE);
}

static int is_float_type(int dtype) {
    return dtype <= DT_LDOUBLE;
}

static uint32_t xorshift(uint32_t *s) {
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static double plant_value(int kind) {
    switch (kind) {
    case PL_NAN:
        return NAN;
    case PL_PINF:
        return INFINITY;
    case PL_NINF:
        return -INFINITY;
    case PL_HUGE:
        return 1e300;
    case PL_TINY:
        return 1e-300;
    case PL_NEGZERO:
        return -0.0;
    case PL_HALF_OVERFLOW:
        return 70000.0;
    case PL_DBL_OVER_FLT:
        return -3.5e38;
    }
    return 0;
}

/* Fills buf (rows x cols of the data, row-major) with the recipe's values. */
static void fill_values(const recipe *rc, double *buf, size_t rows, size_t cols) {
    uint32_t s = rc->seed;
    for (size_t i = 0; i < rows * cols; i++)
        buf[i] = rc->scale * (rc->constant ? rc->constval : ((int)(xorshift(&s) % 513) - 256) / 64.0);
    for (int p = 0; p < rc->nplant && rows && cols; p++)
        buf[(rc->plant[p].row % rows) * cols + rc->plant[p].col % cols] = plant_value(rc->plant[p].kind);
}

/* Writes every element of dset (total of them) as zero bytes in its own type, or as "" if it holds
 * variable-length strings. */
static void write_zeros(hid_t dset, hsize_t total) {
    hid_t type = H5Dget_type(dset);
    const size_t size = H5Tis_variable_str(type) > 0 ? sizeof(char *) : H5Tget_size(type);
    void *buf = calloc((size_t)total, size);
    if (buf && H5Tis_variable_str(type) > 0)
        for (hsize_t i = 0; i < total; i++)
            ((const char **)buf)[i] = "";
    if (buf) H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    free(buf);
    H5Tclose(type);
}

/* Writes the dataset's values: all of them when small, else the first rows of a chunked dataset. */
static void write_values(const recipe *rc, hid_t dset, hid_t space, hsize_t total) {
    if (rc->space == SP_NULL || total == 0) return;
    if (!is_float_type(rc->dtype) && rc->dtype != DT_I8 && rc->dtype != DT_I32 && rc->dtype != DT_U64BE &&
        rc->dtype != DT_I16) {
        /* Other classes: zero bytes (empty strings) when small, so that their storage exists and husai
         * must judge their type, not their missing values. */
        if (total <= WRITE_CAP) write_zeros(dset, total);
        return;
    }
    const int rank = rc->space == SP_SIMPLE ? rc->rank : 0;
    hsize_t start[3] = {0, 0, 0}, count[3] = {1, 1, 1};
    size_t rows, cols;
    if (total <= WRITE_CAP) {
        for (int i = 0; i < rank; i++)
            count[i] = rc->dims[i];
    } else if (rc->layout == LY_CHUNK || rc->layout == LY_DEFLATE) {
        /* a corner of the data; the rest reads as the fill value */
        const hsize_t corner = rank == 3 ? 16 : 64;
        for (int i = 0; i < rank; i++)
            count[i] = rc->dims[i] < corner ? rc->dims[i] : corner;
    } else {
        return;
    }
    rows = rank >= 1 ? (size_t)count[0] : 1;
    cols = 1;
    for (int i = 1; i < rank; i++)
        cols *= (size_t)count[i];
    double *buf = malloc(rows * cols * sizeof *buf);
    if (!buf) return;
    fill_values(rc, buf, rows, cols);
    hid_t mspace = rank ? H5Screate_simple(rank, count, NULL) : H5Screate(H5S_SCALAR);
    hid_t fspace = H5Scopy(space);
    if (rank) H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    if (is_float_type(rc->dtype)) {
        H5Dwrite(dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, buf);
    } else {
        int *ib = malloc(rows * cols * sizeof *ib);
        if (ib) {
            for (size_t i = 0; i < rows * cols; i++)
                ib[i] = isfinite(buf[i]) && fabs(buf[i]) < 1e6 ? (int)buf[i] : 7;
            H5Dwrite(dset, H5T_NATIVE_INT, mspace, fspace, H5P_DEFAULT, ib);
            free(ib);
        }
    }
    H5Sclose(mspace);
    H5Sclose(fspace);
    free(buf);
}

/* A virtual dataset `name` in file mapping dataset /src of g_src, which is built here with the
 * recipe's type, dataspace, layout and values: all of it, or (ST_VDS_HALF) only its first half of rows
 * when it has at least 2. Returns the virtual dataset, or -1. */
static hid_t make_virtual(const recipe *rc, hid_t file, const char *name, hid_t type, hid_t space,
                          hid_t src_dcpl, hsize_t total) {
    hid_t sfile = H5Fcreate(g_src, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (sfile < 0) return -1;
    hid_t sdset = H5Dcreate2(sfile, "/src", type, space, H5P_DEFAULT, src_dcpl, H5P_DEFAULT);
    if (sdset >= 0) {
        write_values(rc, sdset, space, total);
        H5Dclose(sdset);
    }
    H5Fclose(sfile);
    if (sdset < 0) return -1;
    hid_t vspace = H5Screate_simple(rc->rank, rc->dims, NULL), sel = H5Scopy(vspace);
    if (rc->storage == ST_VDS_HALF && rc->dims[0] >= 2) {
        hsize_t start[3] = {0, 0, 0}, count[3];
        for (int i = 0; i < rc->rank; i++)
            count[i] = rc->dims[i];
        count[0] = rc->dims[0] / 2;
        H5Sselect_hyperslab(sel, H5S_SELECT_SET, start, NULL, count, NULL);
    }
    hid_t vdcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_virtual(vdcpl, sel, g_src, "/src", sel);
    hid_t dset = H5Dcreate2(file, name, type, vspace, H5P_DEFAULT, vdcpl, H5P_DEFAULT);
    H5Pclose(vdcpl);
    H5Sclose(sel);
    H5Sclose(vspace);
    return dset;
}

/* Builds the recipe's file at g_path; returns 0 on success (-1: HDF5 refused the recipe itself). */
static int generate(const recipe *rc_in) {
    /* External raw storage is contiguous, a virtual dataset needs a simple dataspace. */
    recipe eff = *rc_in;
    const recipe *rc = &eff;
    if (rc->space != SP_SIMPLE) eff.storage = ST_PLAIN;
    const int external = rc->storage >= ST_EXT && rc->storage <= ST_EXT_MISSING;
    const int virtual = rc->storage >= ST_VDS;
    if (external) eff.layout = LY_CONTIG;
    remove_files();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (rc->latest) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t file = H5Fcreate(g_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) return -1;
    const char *name = "/activations";
    switch (rc->link) {
    case LK_GROUP: {
        hid_t g = H5Gcreate2(file, "/activations", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(g);
        name = "/activations/inner"; /* a dataset inside it, so the group is not empty */
        break;
    }
    case LK_DANGLING:
        H5Lcreate_soft("/nowhere", file, "/activations", H5P_DEFAULT, H5P_DEFAULT);
        name = "/elsewhere";
        break;
    case LK_SOFT:
        H5Lcreate_soft("/real", file, "/activations", H5P_DEFAULT, H5P_DEFAULT);
        name = "/real";
        break;
    case LK_EXTERNAL:
        H5Lcreate_external(g_other, "/activations", file, "/activations", H5P_DEFAULT, H5P_DEFAULT);
        name = "/elsewhere";
        break;
    case LK_OTHER_NAME:
        name = "/Activations";
        break;
    case LK_NESTED: {
        hid_t g = H5Gcreate2(file, "/g", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(g);
        name = "/g/activations";
        break;
    }
    }

    hid_t space;
    hsize_t total = 1;
    if (rc->space == SP_NULL) {
        space = H5Screate(H5S_NULL);
        total = 0;
    } else if (rc->space == SP_SCALAR) {
        space = H5Screate(H5S_SCALAR);
    } else {
        hsize_t maxdims[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
        const int chunked = rc->layout == LY_CHUNK || rc->layout == LY_DEFLATE;
        space = H5Screate_simple(rc->rank, rc->dims, chunked ? maxdims : NULL);
        for (int i = 0; i < rc->rank; i++)
            total *= rc->dims[i];
    }
    hid_t type = make_type(rc->dtype);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (rc->space == SP_SIMPLE && (rc->layout == LY_CHUNK || rc->layout == LY_DEFLATE)) {
        hsize_t chunk[3];
        for (int i = 0; i < rc->rank; i++)
            chunk[i] = rc->dims[i] == 0 ? 1 : rc->dims[i] < 32 ? rc->dims[i] : 32;
        H5Pset_chunk(dcpl, rc->rank, chunk);
        if (rc->layout == LY_DEFLATE) H5Pset_deflate(dcpl, 1);
    } else if (rc->layout == LY_COMPACT && total * H5Tget_size(type) < 30000) {
        H5Pset_layout(dcpl, H5D_COMPACT);
    }
    if (rc->fill && is_float_type(rc->dtype)) {
        const double fills[4] = {0, NAN, INFINITY, 1.5};
        H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &fills[rc->fill]);
    }
    if (external && total > 0) H5Pset_external(dcpl, g_ext, 0, total * H5Tget_size(type));
    hid_t dset;
    if (virtual) {
        dset = make_virtual(rc, file, name, type, space, dcpl, total);
    } else {
        dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (dset >= 0) write_values(rc, dset, space, total);
    }
    if (dset >= 0) H5Dclose(dset);
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Sclose(space);
    H5Fclose(file);
    if (dset < 0) return -1;
    if (rc->storage == ST_EXT_MISSING) unlink(g_ext);
    if (rc->storage == ST_VDS_MISSING) unlink(g_src);
    if (rc->storage == ST_EXT_SHORT) {
        struct stat sb;
        if (stat(g_ext, &sb) == 0 && truncate(g_ext, sb.st_size / 2) != 0) return -1;
    }

    if (rc->truncate) {
        FILE *f = fopen(g_path, "r+b");
        if (f) {
            fseek(f, 0, SEEK_END);
            const long len = ftell(f);
            fclose(f);
            if (truncate(g_path, len * (long)rc->trunc_frac / 256) != 0) return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------ the harness's own checks ---- */

typedef enum {
    V_OK,
    V_NOT_HDF5,
    V_OPEN,
    V_MISSING,
    V_NOT_DATASET,
    V_UNWRITTEN,
    V_TYPE,
    V_RANK,
    V_ROWS,
    V_COLS,
    V_READ,
    V_NONFINITE,
    V_TOO_LARGE,
    V_CONSTANT,
    V_TINY_VAR,
} verdict_kind;

static const char *verdict_name[] = {
    "ok",         "not HDF5",  "cannot open", "missing",      "not a dataset",
    "unwritten",  "bad dtype", "bad rank",    "too few rows", "bad columns",
    "read error", "NaN/Inf",   "too large",   "constant",     "tiny variance"};

typedef struct {
    verdict_kind kind;
    int sure; /* the kind is established (else: only that it is a refusal, if not V_OK) */
    hsize_t rows, cols;
    hsize_t npoints; /* elements of the dataspace (0 if not simple) */
    size_t elem;
    long long bad_row; /* V_NONFINITE, V_TOO_LARGE: the first such row */
    long long f32_col; /* V_NONFINITE: column of a float64 beyond float32's range; -1 none; -2 unknown */
    long double var;   /* sample variance (n - 1) of the full read */
    const char *why;   /* V_UNWRITTEN: what husai's message must say */
    int full;          /* the data was read in full (X valid) */
    float *X;
} verdict;

static int unwritten_storage(hid_t dset, hid_t space, const char **why);

/* External raw files (absolute names only, as the generator writes them): 1 if one is missing or
 * shorter than its share of the dataset's bytes, 0 if all are long enough, -1 cannot tell. */
static int unwritten_external(hid_t dset, hid_t dcpl, hsize_t npoints, const char **why) {
    hid_t type = H5Dget_type(dset);
    hsize_t need = npoints * H5Tget_size(type);
    H5Tclose(type);
    const int n = H5Pget_external_count(dcpl);
    for (int i = 0; i < n && need > 0; i++) {
        char ename[512];
        off_t off = 0;
        hsize_t size = 0;
        if (H5Pget_external(dcpl, (unsigned)i, sizeof ename, ename, &off, &size) < 0 || ename[0] != '/')
            return -1;
        const hsize_t share = size < need ? size : need;
        need -= share;
        struct stat sb;
        if (stat(ename, &sb) != 0) {
            *why = "is missing";
            return 1;
        }
        if ((hsize_t)sb.st_size < (hsize_t)off + share) {
            *why = "shorter than declared";
            return 1;
        }
    }
    return 0;
}

/* One mapping's source (absolute file name fname, dataset dname, source selection ss): 1 if it is
 * missing, smaller than what the mapping reads, or itself has unwritten storage; 0 no; -1 cannot tell. */
static int unwritten_source(const char *fname, const char *dname, hid_t ss, hid_t vs, const char **why) {
    struct stat sb;
    if (stat(fname, &sb) != 0 || H5Fis_hdf5(fname) <= 0) {
        *why = "missing source";
        return 1;
    }
    hid_t f = H5Fopen(fname, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Lexists(f, dname, H5P_DEFAULT) > 0 ? H5Dopen2(f, dname, H5P_DEFAULT) : -1;
    int unwritten = 1;
    *why = "missing source";
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        hsize_t sdims[H5S_MAX_RANK], lo[H5S_MAX_RANK], hi[H5S_MAX_RANK];
        const int nd = H5Sget_simple_extent_dims(sp, sdims, NULL);
        if (H5Sget_select_type(ss) == H5S_SEL_ALL) {
            unwritten = H5Sget_simple_extent_npoints(sp) < H5Sget_select_npoints(vs);
        } else if (nd == H5Sget_simple_extent_ndims(ss) && H5Sget_select_bounds(ss, lo, hi) >= 0) {
            unwritten = 0;
            for (int k = 0; k < nd; k++)
                unwritten |= hi[k] >= sdims[k];
        } else {
            unwritten = -1;
        }
        *why = "the rest would read as the fill value";
        if (unwritten == 0) unwritten = unwritten_storage(d, sp, why);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    return unwritten;
}

/* A virtual dataset of npoints values: 1 if a source is missing or unwritten or the mappings (which
 * the generator never overlaps) cover fewer values, 0 no, -1 cannot tell. */
static int unwritten_virtual(hid_t dcpl, hsize_t npoints, const char **why) {
    size_t n = 0;
    if (H5Pget_virtual_count(dcpl, &n) < 0) return -1;
    hsize_t covered = 0;
    int unwritten = 0;
    for (size_t i = 0; i < n && unwritten == 0; i++) {
        char fname[512], dname[512];
        hid_t vs = H5Pget_virtual_vspace(dcpl, i), ss = H5Pget_virtual_srcspace(dcpl, i);
        const hssize_t m = H5Sget_select_npoints(vs);
        covered += m > 0 ? (hsize_t)m : 0;
        if (H5Pget_virtual_filename(dcpl, i, fname, sizeof fname) < 0 ||
            H5Pget_virtual_dsetname(dcpl, i, dname, sizeof dname) < 0 || fname[0] != '/')
            unwritten = -1;
        else
            unwritten = unwritten_source(fname, dname, ss, vs, why);
        H5Sclose(ss);
        H5Sclose(vs);
    }
    if (unwritten == 0 && covered < npoints) {
        *why = "maps only";
        unwritten = 1;
    }
    return unwritten;
}

/* Whether some of the dataset's values have no storage and would read as the fill value: 1 yes (*why:
 * what husai's message must say), 0 no, -1 cannot tell. Asked otherwise than husai (which counts chunks
 * and asks for the space status): each chunk is looked up by its coordinates, a contiguous dataset by
 * its address, external files and virtual sources by stat() and opening them. */
static int unwritten_storage(hid_t dset, hid_t space, const char **why) {
    const int nd = H5Sget_simple_extent_ndims(space);
    const hssize_t npoints = H5Sget_simple_extent_npoints(space);
    if (nd <= 0 || npoints <= 0) return 0; /* nothing to store */
    *why = "unallocated storage";
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(space, dims, NULL);
    hid_t dcpl = H5Dget_create_plist(dset);
    int unwritten = -1;
    switch (H5Pget_layout(dcpl)) {
    case H5D_COMPACT:
        unwritten = 0; /* in the object header, allocated with it */
        break;
    case H5D_CONTIGUOUS:
        if (H5Pget_external_count(dcpl) > 0)
            unwritten = unwritten_external(dset, dcpl, (hsize_t)npoints, why);
        else
            unwritten = H5Dget_offset(dset) == HADDR_UNDEF;
        break;
    case H5D_VIRTUAL:
        unwritten = unwritten_virtual(dcpl, (hsize_t)npoints, why);
        break;
    case H5D_CHUNKED: {
        hsize_t cdims[H5S_MAX_RANK], grid[H5S_MAX_RANK], idx[H5S_MAX_RANK] = {0}, off[H5S_MAX_RANK];
        if (H5Pget_chunk(dcpl, nd, cdims) != nd) break;
        double n_chunks = 1;
        for (int k = 0; k < nd; k++) {
            grid[k] = (dims[k] + cdims[k] - 1) / cdims[k];
            n_chunks *= (double)grid[k];
        }
        if (n_chunks > CHUNK_SCAN_CAP) {
            /* Too many to look up: a missing first or last chunk settles it, present ones do not. */
            for (int corner = 0; corner < 2 && unwritten < 0; corner++) {
                for (int k = 0; k < nd; k++)
                    off[k] = corner ? (grid[k] - 1) * cdims[k] : 0;
                haddr_t addr = HADDR_UNDEF;
                hsize_t bytes = 0;
                unsigned mask = 0;
                if (H5Dget_chunk_info_by_coord(dset, off, &mask, &addr, &bytes) >= 0 && addr == HADDR_UNDEF)
                    unwritten = 1;
            }
            break;
        }
        unwritten = 0;
        for (;;) {
            for (int k = 0; k < nd; k++)
                off[k] = idx[k] * cdims[k];
            haddr_t addr = HADDR_UNDEF;
            hsize_t bytes = 0;
            unsigned mask = 0;
            if (H5Dget_chunk_info_by_coord(dset, off, &mask, &addr, &bytes) < 0) {
                unwritten = -1;
                break;
            }
            if (addr == HADDR_UNDEF) {
                unwritten = 1;
                break;
            }
            int k = nd - 1; /* next chunk, last dimension fastest */
            while (k >= 0 && ++idx[k] == grid[k])
                idx[k--] = 0;
            if (k < 0) break;
        }
        break;
    }
    default:
        break;
    }
    H5Pclose(dcpl);
    return unwritten;
}

/* The column of the first value in row `row` that is finite in the float64 file but not in its
 * float32 read (X_row), or -1. */
static long long f32_overflow_col(hid_t dset, hid_t space, hsize_t row, hsize_t cols, const float *X_row) {
    double *d = malloc((size_t)cols * sizeof *d);
    if (!d) abort();
    hsize_t start[2] = {row, 0}, count[2] = {1, cols};
    hid_t mspace = H5Screate_simple(2, count, NULL), fspace = H5Scopy(space);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    const herr_t rc = H5Dread(dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, d);
    H5Sclose(mspace);
    H5Sclose(fspace);
    long long col = rc < 0 ? -2 : -1;
    for (hsize_t c = 0; rc >= 0 && c < cols && col < 0; c++)
        if (isfinite(d[c]) && !isfinite(X_row[c])) col = (long long)c;
    free(d);
    return col;
}

/* Judges the values of a full read X (rows x cols, all finite-checked by the caller): too large, constant,
 * near-zero variance (two passes in long double), in husai's documented order. */
static void judge_values(verdict *v, const float *X) {
    const size_t n = (size_t)(v->rows * v->cols), cols = (size_t)v->cols;
    for (size_t i = 0; i < n; i++)
        if (fabsl((long double)X[i]) > (long double)HUSAI_DATA_MAX_ABS) {
            v->kind = V_TOO_LARGE;
            v->bad_row = (long long)(i / cols);
            return;
        }
    int varies = 0;
    for (size_t i = 1; i < n && !varies; i++)
        varies = X[i] != X[0];
    if (!varies) {
        v->kind = V_CONSTANT;
        return;
    }
    long double mean = 0, m2 = 0;
    for (size_t i = 0; i < n; i++)
        mean += X[i];
    mean /= (long double)n;
    for (size_t i = 0; i < n; i++)
        m2 += ((long double)X[i] - mean) * ((long double)X[i] - mean);
    v->var = m2 / (long double)(n - 1);
    const long double lim = HUSAI_DATA_MIN_VAR;
    if (fabsl(v->var - lim) <= VAR_BAND * lim) v->sure = 0; /* rounding may tip either reader */
    v->kind = v->var < lim ? V_TINY_VAR : V_OK;
}

static void judge(const char *path, const char *name, verdict *v) {
    memset(v, 0, sizeof *v);
    v->sure = 1;
    v->bad_row = -1;
    v->f32_col = -1;
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        v->kind = V_NOT_HDF5;
        return;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        v->kind = V_OPEN;
        return;
    }
    hid_t dset = -1, type = -1, space = -1;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        v->kind = V_MISSING;
        goto done;
    }
    dset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dset < 0) {
        v->kind = V_NOT_DATASET;
        goto done;
    }
    type = H5Dget_type(dset);
    space = H5Dget_space(dset);
    if (H5Sget_simple_extent_type(space) == H5S_SIMPLE)
        v->npoints = (hsize_t)H5Sget_simple_extent_npoints(space);
    /* Storage first: husai refuses values that were never written whatever their type or shape. */
    const int unwritten = unwritten_storage(dset, space, &v->why);
    if (unwritten == 1) {
        v->kind = V_UNWRITTEN;
        goto done;
    }
    if (unwritten < 0) v->sure = 0; /* any later refusal stands, but not its kind */
    const size_t size = H5Tget_size(type);
    if (H5Tget_class(type) != H5T_FLOAT || (size != 2 && size != 4 && size != 8)) {
        v->kind = V_TYPE;
        goto done;
    }
    v->elem = size;
    if (H5Sget_simple_extent_type(space) != H5S_SIMPLE || H5Sget_simple_extent_ndims(space) != 2) {
        v->kind = V_RANK;
        goto done;
    }
    hsize_t dims[2];
    H5Sget_simple_extent_dims(space, dims, NULL);
    v->rows = dims[0];
    v->cols = dims[1];
    if (dims[0] < 2) {
        v->kind = V_ROWS;
        goto done;
    }
    if (dims[1] == 0) {
        v->kind = V_COLS;
        goto done;
    }
    /* Read everything when small, else at most PEEK_ROWS x PEEK_COLS. */
    const int full = dims[0] * dims[1] <= FULL_CAP;
    hsize_t count[2] = {full ? dims[0] : (dims[0] < PEEK_ROWS ? dims[0] : PEEK_ROWS),
                        full ? dims[1] : (dims[1] < PEEK_COLS ? dims[1] : PEEK_COLS)};
    hsize_t start[2] = {0, 0};
    float *X = malloc((size_t)(count[0] * count[1]) * sizeof *X);
    if (!X) abort();
    hid_t mspace = H5Screate_simple(2, count, NULL), fspace = H5Scopy(space);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    const herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, X);
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (rc < 0) {
        free(X);
        v->kind = V_READ;
        goto done;
    }
    int big = 0;
    for (size_t r = 0; r < count[0] && v->bad_row < 0; r++)
        for (size_t c = 0; c < count[1]; c++) {
            const float x = X[r * count[1] + c];
            if (!isfinite(x)) {
                v->bad_row = (long long)r;
                break;
            }
            big |= fabsl((long double)x) > (long double)HUSAI_DATA_MAX_ABS;
        }
    if (!full) {
        /* Only a peek. A bad row there is still the first bad row if all its columns were read; a
         * non-finite or too large value in part of a row means a refusal, but not which one (husai
         * names a NaN/Inf anywhere before a too large value); anything else settles nothing. */
        free(X);
        v->sure = v->sure && v->bad_row >= 0 && count[1] == dims[1];
        v->f32_col = -2;
        v->kind = v->bad_row >= 0 ? V_NONFINITE : big ? V_TOO_LARGE : V_OK;
        if (!v->sure) v->bad_row = -1;
        goto done;
    }
    v->full = 1;
    v->X = X;
    if (v->bad_row >= 0) {
        v->kind = V_NONFINITE;
        if (size == 8)
            v->f32_col = f32_overflow_col(dset, space, (hsize_t)v->bad_row, dims[1],
                                          X + v->bad_row * (long long)dims[1]);
        goto done;
    }
    judge_values(v, X);
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (dset >= 0) H5Dclose(dset);
    H5Fclose(file);
}

/* ------------------------------------------------------ HDF5 handle census ---- */

static const H5I_type_t census_types[] = {H5I_FILE,    H5I_GROUP, H5I_DATATYPE,   H5I_DATASPACE,
                                          H5I_DATASET, H5I_ATTR,  H5I_GENPROP_LST};
#define N_CENSUS ((int)(sizeof census_types / sizeof census_types[0]))

static void census(hsize_t out[N_CENSUS]) {
    for (int i = 0; i < N_CENSUS; i++) {
        out[i] = 0;
        H5Inmembers(census_types[i], &out[i]);
    }
}

/* ---------------------------------------------------------------- driver ---- */

static int g_mpi_started;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* Open MPI would otherwise replace the sanitizers' and libFuzzer's SIGSEGV/SIGABRT handlers
         * with its own, and a crash would leave no report and no reproducer. */
        setenv("OMPI_MCA_opal_signal", "7", 0); /* SIGBUS only; "" upsets LSan */
        MPI_Init(NULL, NULL);
        g_mpi_started = 1;
    }
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || tmp[0] != '/') tmp = "/tmp"; /* external and virtual sources are named absolutely */
    snprintf(g_path, sizeof g_path, "%s/husai_fuzz_ds_%ld.h5", tmp, (long)getpid());
    snprintf(g_other, sizeof g_other, "%s/husai_fuzz_ds_%ld_missing.h5", tmp, (long)getpid());
    snprintf(g_ext, sizeof g_ext, "%s/husai_fuzz_ds_%ld.raw", tmp, (long)getpid());
    snprintf(g_src, sizeof g_src, "%s/husai_fuzz_ds_%ld_src.h5", tmp, (long)getpid());
    g_verbose = getenv("HUSAI_FUZZ_VERBOSE") != NULL;
    return 0;
}

/* Called by tests/fuzz/driver.c after the last input (libFuzzer exits without it). */
void husai_fuzz_finish(void) {
    remove_files();
    if (g_mpi_started) MPI_Finalize();
}

static void fail(const recipe *rc, const verdict *v, husai_status st, const char *what) {
    fprintf(stderr, "fuzz_dataset: property violated: %s\n", what);
    describe(rc, stderr);
    fprintf(stderr,
            "harness verdict: %s%s (rows %llu, cols %llu, bad row %lld, float64 column %lld, variance "
            "%Lg, full %d)\n",
            verdict_name[v->kind], v->sure ? "" : " (kind not established)", (unsigned long long)v->rows,
            (unsigned long long)v->cols, v->bad_row, v->f32_col, v->var, v->full);
    fprintf(stderr, "husai: %s: %s\n", husai_status_name(st), st ? husai_error_message() : "");
    abort();
}

/* Fails unless husai's message contains `want` (printf-formatted). */
static void expect_in_message(const recipe *rc, const verdict *v, husai_status st, const char *what,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void expect_in_message(const recipe *rc, const verdict *v, husai_status st, const char *what,
                              const char *fmt, ...) {
    char want[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (!strstr(husai_error_message(), want)) fail(rc, v, st, what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0]) LLVMFuzzerInitialize(NULL, NULL);
    recipe rc;
    parse_recipe(data, size, &rc);
    if (g_verbose) describe(&rc, stderr);
    if (generate(&rc) != 0) {
        remove_files();
        return 0; /* a recipe HDF5 itself refuses to build */
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    verdict v;
    judge(g_path, "/activations", &v);

    /* husai reads in full whatever passes its header checks: call it only when that stays small. Values
     * never written it must refuse before reading: there a larger cap still bounds a wrong read. */
    const int header_ok = v.kind == V_OK || v.kind == V_NONFINITE || v.kind == V_TOO_LARGE ||
                          v.kind == V_CONSTANT || v.kind == V_TINY_VAR || v.kind == V_READ;
    const hsize_t cap = v.kind == V_UNWRITTEN ? BIG_CAP : header_ok ? FULL_CAP : (hsize_t)-1;
    if (v.npoints > cap) {
        free(v.X);
        remove_files();
        return 0;
    }

    hsize_t before[N_CENSUS], after[N_CENSUS];
    census(before);
    husai_dataset ds;
    husai_error_clear();
    const husai_status st = husai_dataset_read(&ds, g_path, "/activations", MPI_COMM_SELF);
    census(after);
    for (int i = 0; i < N_CENSUS; i++)
        if (after[i] != before[i]) {
            char what[128];
            snprintf(what, sizeof what,
                     "husai_dataset_read left HDF5 objects open (id type %d: %llu -> %llu)",
                     (int)census_types[i], (unsigned long long)before[i], (unsigned long long)after[i]);
            fail(&rc, &v, st, what);
        }
    const char *msg = husai_error_message();
    if (g_verbose)
        fprintf(stderr, "  harness: %s%s (bad row %lld); husai: %s%s%s\n", verdict_name[v.kind],
                v.sure ? "" : " (not established)", v.bad_row, husai_status_name(st), st ? ": " : "",
                st ? msg : "");
    if (st && (!msg[0] || strchr(msg, '\n'))) fail(&rc, &v, st, "error message empty or not one line");

    if (v.kind == V_OK && v.sure) {
        if (st) fail(&rc, &v, st, "husai refuses a dataset the harness reads fine");
        char label[16];
        snprintf(label, sizeof label, "float%zu", v.elem * 8);
        if (ds.n_rows != v.rows || (hsize_t)ds.d_model != v.cols || strcmp(ds.dtype, label))
            fail(&rc, &v, st, "husai's shape or dtype label differs from the file's");
        if (memcmp(ds.X, v.X, (size_t)(v.rows * v.cols) * sizeof(float)))
            fail(&rc, &v, st, "husai's floats differ from the harness's read");
    } else if (v.kind != V_OK) {
        if (st == HUSAI_OK) fail(&rc, &v, st, "husai accepts a dataset the harness refuses");
        if (st != HUSAI_ERR_DATA && st != HUSAI_ERR_IO) fail(&rc, &v, st, "unexpected status kind");
        if (ds.X) fail(&rc, &v, st, "husai keeps rows after an error");
    }
    if (v.sure && st) {
        switch (v.kind) {
        case V_UNWRITTEN:
            expect_in_message(&rc, &v, st, "husai does not name the unwritten storage", "%s", v.why);
            break;
        case V_NONFINITE:
            expect_in_message(&rc, &v, st, "husai names another first NaN/Inf row", "row %lld ", v.bad_row);
            if (v.f32_col >= 0)
                expect_in_message(&rc, &v, st, "husai does not name a float64 beyond float32's range",
                                  "out of float32 range in row %lld (0-based), column %lld:", v.bad_row,
                                  v.f32_col);
            else if (v.f32_col == -1)
                expect_in_message(&rc, &v, st, "husai does not call a NaN/Inf one", "NaN or Inf");
            break;
        case V_TOO_LARGE:
            expect_in_message(&rc, &v, st, "husai does not refuse a too large value as such", "too large");
            expect_in_message(&rc, &v, st, "husai names another first too large row", "row %lld ", v.bad_row);
            break;
        case V_CONSTANT:
            expect_in_message(&rc, &v, st, "husai does not refuse a constant dataset as constant",
                              "constant");
            break;
        case V_TINY_VAR:
            expect_in_message(&rc, &v, st, "husai does not refuse a near-zero variance as such",
                              "near-zero variance");
            break;
        default:
            break;
        }
    }

    /* What the recipe alone implies, whatever either reader says. */
    if (st == HUSAI_OK) {
        if (rc.space != SP_SIMPLE || rc.rank != 2 || !is_float_type(rc.dtype) || rc.dtype == DT_LDOUBLE)
            fail(&rc, &v, st, "husai accepts a non-2-D or non-float dataset");
        if (rc.link != LK_DATASET && rc.link != LK_SOFT) fail(&rc, &v, st, "husai accepts a missing dataset");
        if (rc.dims[0] * rc.dims[1] > WRITE_CAP)
            fail(&rc, &v, st, "husai accepts a dataset whose values were not all written");
        if (rc.storage != ST_PLAIN && rc.storage != ST_EXT && rc.storage != ST_VDS)
            fail(&rc, &v, st, "husai accepts a cut or missing external file or virtual source");
        husai_dataset_free(&ds);
    }

    free(v.X);
    remove_files();
    return 0;
}
