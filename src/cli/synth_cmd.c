/* synth_cmd.c: `husai synth`, synthetic activations from a known random dictionary.
 * Model: A unit-norm atoms in R^D (stream (seed, "synth-dict", atom)); row r is the sum of K
 * distinct atoms with coefficients uniform on [0.5, 2) plus N(0, noise^2) per element, all drawn
 * from stream (seed, "synth-row", r), so a row depends only on (seed, r) and the file is the same
 * whatever the number of ranks or --chunk-rows. Rows are summed in double and rounded once to the
 * requested dtype (float16 rows are the float32 rows rounded to nearest even). Each rank generates a disjoint
 * block of rows, --chunk-rows at a time, and writes it collectively with parallel HDF5 into OUT.partial,
 * which rank 0 renames to OUT when complete. Layout: /activations [rows, d_model] (chunked), /dictionary
 * [atoms, d_model] float32 (row a is atom a), generation parameters as attributes of the root group and of
 * /activations. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cli/suggest.h"
#include "cli/commands.h"
#include "report/h5attr.h"
#include "common/rng.h"
#include "common/parse.h"
#include "common/status.h"
#include "mpi/mpicheck.h"

#define SYNTH_DICT "synth-dict"
#define SYNTH_ROW "synth-row"
#define COEF_LO 0.5
#define COEF_HI 2.0
/* Rows generated and written per collective call unless --chunk-rows says otherwise (~32 MiB). */
#define DEFAULT_BLOCK_BYTES (32u << 20)
/* HDF5 storage chunk of /activations (~1 MiB of rows). */
#define STORAGE_CHUNK_BYTES (1u << 20)

typedef struct {
    uint64_t rows;
    int d_model, atoms, active;
    double noise;
    uint64_t seed;
    int elem;            /* bytes per activation: 2, 4 or 8 */
    uint64_t chunk_rows; /* 0: default */
    int force;
    const char *out;
} synth_args;

static void synth_usage(FILE *f) {
    fprintf(f,
            "usage: husai synth --rows N --d-model D --atoms A --active K [--noise S] [--seed SEED]\n"
            "                   [--dtype float32|float16|float64] [--chunk-rows C] [--force] OUT.h5\n"
            "Writes synthetic activations: row r = sum of K distinct atoms of a random unit-norm dictionary\n"
            "(A atoms in R^D) with coefficients uniform on [0.5, 2), plus Gaussian noise of std S.\n"
            "  /activations [N, D] (dtype as asked, chunked), /dictionary [A, D] float32 (row a = atom a),\n"
            "  attributes rows, d_model, atoms, active, noise, seed, generator.\n"
            "  --noise S        noise std per element (default 0.05)\n"
            "  --seed SEED      row r depends only on (SEED, r), never on the number of ranks (default 1)\n"
            "  --chunk-rows C   rows generated and written per step and rank (memory ~ C x D x 8 bytes)\n"
            "  --force          replace OUT.h5 if it exists\n"
            "  -h, --help       print this help\n"
            "Run under MPI to generate in parallel: mpirun -np P husai synth ... OUT.h5\n");
}

/* Largest --noise: far beyond any useful level, and small enough that rows stay finite in float32. */
#define NOISE_MAX 1e30

/* Prints one error line (rank 0 only) and returns the exit status 1. */
static int arg_error(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int arg_error(int rank, const char *fmt, ...) {
    if (rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "husai: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see husai synth --help)\n");
        va_end(ap);
    }
    return 1;
}

/* Parses an option's value by the shared number rule into *v (in [lo, hi]); 0 on success, else the
 * exit status 1 after rank 0 printed why. */
static int opt_int(int rank, const char *opt, const char *text, long long lo, long long hi, long long *v) {
    return husai_parse_int(opt, text, lo, hi, v) ? arg_error(rank, "%s", husai_error_message()) : 0;
}

/* Returns 0 to go on, -1 after --help, or the exit status 1. Every rank parses the same argv. */
static int parse_args(int argc, char **argv, synth_args *a, int rank) {
    static const struct option longopts[] = {{"rows", required_argument, NULL, 'n'},
                                             {"d-model", required_argument, NULL, 'd'},
                                             {"atoms", required_argument, NULL, 'a'},
                                             {"active", required_argument, NULL, 'k'},
                                             {"noise", required_argument, NULL, 's'},
                                             {"seed", required_argument, NULL, 'S'},
                                             {"dtype", required_argument, NULL, 't'},
                                             {"chunk-rows", required_argument, NULL, 'c'},
                                             {"force", no_argument, NULL, 'f'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    a->noise = 0.05;
    a->seed = 1;
    a->elem = 4;
    int have_rows = 0, have_d = 0, have_atoms = 0, have_active = 0;
    long long x;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (opt_int(rank, "--rows", optarg, 1, LLONG_MAX, &x)) return 1;
            a->rows = (uint64_t)x;
            have_rows = 1;
            break;
        case 'd':
            if (opt_int(rank, "--d-model", optarg, 1, 1 << 24, &x)) return 1;
            a->d_model = (int)x;
            have_d = 1;
            break;
        case 'a':
            if (opt_int(rank, "--atoms", optarg, 1, INT_MAX, &x)) return 1;
            a->atoms = (int)x;
            have_atoms = 1;
            break;
        case 'k':
            if (opt_int(rank, "--active", optarg, 1, INT_MAX, &x)) return 1;
            a->active = (int)x;
            have_active = 1;
            break;
        case 's':
            if (husai_parse_real("--noise", optarg, 0.0, NOISE_MAX, DBL_MIN, &a->noise))
                return arg_error(rank, "%s", husai_error_message());
            break;
        case 'S':
            if (husai_parse_u64("--seed", optarg, UINT64_MAX, &a->seed))
                return arg_error(rank, "%s", husai_error_message());
            break;
        case 't':
            if (!strcmp(optarg, "float32"))
                a->elem = 4;
            else if (!strcmp(optarg, "float16"))
                a->elem = 2;
            else if (!strcmp(optarg, "float64"))
                a->elem = 8;
            else
                return arg_error(rank, "--dtype must be float32, float16 or float64, got '%s'", optarg);
            break;
        case 'c':
            if (opt_int(rank, "--chunk-rows", optarg, 1, LLONG_MAX, &x)) return 1;
            a->chunk_rows = (uint64_t)x;
            break;
        case 'f':
            a->force = 1;
            break;
        case 'h':
            if (rank == 0) synth_usage(stdout);
            return -1;
        default:
            if (rank == 0) husai_cli_option_error("synth", argv, "h", longopts);
            return 1;
        }
    }
    if (!have_rows) return arg_error(rank, "missing --rows");
    if (!have_d) return arg_error(rank, "missing --d-model");
    if (!have_atoms) return arg_error(rank, "missing --atoms");
    if (!have_active) return arg_error(rank, "missing --active");
    if (a->active > a->atoms) {
        return arg_error(rank, "--active %d exceeds --atoms %d (the atoms of a row are distinct)", a->active,
                         a->atoms);
    }
    if (a->rows > UINT64_MAX / 8 / (uint64_t)a->d_model) {
        return arg_error(rank, "--rows %llu x --d-model %d is too large", (unsigned long long)a->rows,
                         a->d_model);
    }
    if (optind != argc - 1) return arg_error(rank, "expected exactly one output file after the options");
    a->out = argv[optind];
    if (!*a->out) return arg_error(rank, "the output file name is empty");
    return 0;
}

/* IEEE binary16 bits of x, rounded to nearest even (overflow to infinity, subnormals kept). */
static uint16_t half_bits(double xd) {
    float x = (float)xd;
    uint32_t f;
    memcpy(&f, &x, sizeof f);
    const uint32_t sign = (f >> 16) & 0x8000u;
    const uint32_t absf = f & 0x7fffffffu;
    if (absf >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (absf > 0x7f800000u ? 0x200u : 0u));
    if (absf >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to infinity */
    if (absf < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (absf < 0x33000000u) return (uint16_t)sign;          /* below 2^-25 rounds to zero */
        const uint32_t e = absf >> 23, m = (absf & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* value = m * 2^(e-150); half subnormal unit 2^-24 */
        uint32_t h = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((absf - 0x38000000u) >> 13); /* rebias exponent 127 -> 15 */
    const uint32_t rem = absf & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

/* Fills z[0..n) with standard normals, two per accepted pair (Marsaglia's polar method: no trigonometry). */
static void normals(husai_rng *g, double *z, size_t n) {
    for (size_t i = 0; i < n; i += 2) {
        double u, v, s;
        do {
            u = 2.0 * husai_rng_uniform(g) - 1.0;
            v = 2.0 * husai_rng_uniform(g) - 1.0;
            s = u * u + v * v;
        } while (s >= 1.0 || s == 0.0);
        const double m = sqrt(-2.0 * log(s) / s);
        z[i] = u * m;
        if (i + 1 < n) z[i + 1] = v * m;
    }
}

/* Atom a of the dictionary: D normals from (seed, "synth-dict", a), normalised in double. */
static void make_atom(uint64_t seed, int a, int d, float *out, double *tmp) {
    husai_rng r;
    husai_rng_init(&r, seed, SYNTH_DICT, (uint64_t)a);
    normals(&r, tmp, (size_t)d);
    double ss = 0.0;
    for (int i = 0; i < d; i++)
        ss += tmp[i] * tmp[i];
    if (!(ss > 0.0)) { /* D = 1 and a zero draw: any unit vector will do, deterministically */
        tmp[0] = 1.0;
        ss = 1.0;
    }
    const double inv = 1.0 / sqrt(ss);
    for (int i = 0; i < d; i++)
        out[i] = (float)(tmp[i] * inv);
}

/* Row r into acc (double), noise drawn into z; mark is a per-atom stamp array (stamps are r + 1, so no reset
 * is needed). */
static void make_row(const synth_args *a, const float *dict, uint64_t r, uint64_t *mark, double *acc,
                     double *z) {
    const int d = a->d_model, n_atoms = a->atoms, k = a->active;
    husai_rng g;
    husai_rng_init(&g, a->seed, SYNTH_ROW, r);
    memset(acc, 0, (size_t)d * sizeof(double));
    const uint64_t stamp = r + 1;
    /* Floyd's algorithm: K distinct atoms in K draws, whatever K / A. */
    for (int j = n_atoms - k; j < n_atoms; j++) {
        int t = (int)husai_rng_below(&g, (uint64_t)j + 1);
        if (mark[t] == stamp) t = j;
        mark[t] = stamp;
        const double coef = COEF_LO + (COEF_HI - COEF_LO) * husai_rng_uniform(&g);
        const float *atom = dict + (size_t)t * (size_t)d;
        for (int i = 0; i < d; i++)
            acc[i] += coef * (double)atom[i];
    }
    if (a->noise > 0.0) {
        normals(&g, z, (size_t)d);
        for (int i = 0; i < d; i++)
            acc[i] += a->noise * z[i];
    }
}

static hid_t make_half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

/* The same attributes on every rank (attribute writes are collective). */
static herr_t write_attrs(hid_t loc, const synth_args *a) {
    const int64_t d = a->d_model, n_atoms = a->atoms, k = a->active;
    const char *dtype = a->elem == 2 ? "float16" : a->elem == 8 ? "float64" : "float32";
    char coef[64];
    snprintf(coef, sizeof coef, "uniform[%g,%g)", COEF_LO, COEF_HI);
    herr_t rc = 0;
    rc |= husai_h5_attr_write(loc, "rows", H5T_NATIVE_UINT64, &a->rows);
    rc |= husai_h5_attr_write(loc, "d_model", H5T_NATIVE_INT64, &d);
    rc |= husai_h5_attr_write(loc, "atoms", H5T_NATIVE_INT64, &n_atoms);
    rc |= husai_h5_attr_write(loc, "active", H5T_NATIVE_INT64, &k);
    rc |= husai_h5_attr_write(loc, "noise", H5T_NATIVE_DOUBLE, &a->noise);
    rc |= husai_h5_attr_write(loc, "seed", H5T_NATIVE_UINT64, &a->seed);
    rc |= husai_h5_attr_write_str(loc, "generator", "husai synth");
    rc |= husai_h5_attr_write_str(loc, "dtype", dtype);
    rc |= husai_h5_attr_write_str(loc, "coefficients", coef);
    return rc < 0 ? -1 : 0;
}

static char *g_partial_path; /* rank 0 removes it if the job dies */

static void remove_partial(void *arg) {
    (void)arg;
    if (g_partial_path) remove(g_partial_path);
}

static double now(void) {
    return MPI_Wtime();
}

/* Collective write of `count` rows starting at file row `start` (count 0: join with an empty selection). */
static herr_t write_rows(hid_t dset, hid_t memtype, uint64_t start, uint64_t count, uint64_t cap, hsize_t d,
                         const void *buf) {
    hsize_t mdims[2] = {cap, d}, fstart[2] = {start, 0}, cnt[2] = {count, d}, zero[2] = {0, 0};
    hid_t fspace = H5Dget_space(dset), mspace = H5Screate_simple(2, mdims, NULL);
    if (count > 0) {
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, fstart, NULL, cnt, NULL);
        H5Sselect_hyperslab(mspace, H5S_SELECT_SET, zero, NULL, cnt, NULL);
    } else {
        /* Not H5S_NULL: HDF5 1.10.8 would write buf[0] into element (0,0); select none on both sides. */
        H5Sselect_none(fspace);
        H5Sselect_none(mspace);
    }
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    herr_t rc = H5Dwrite(dset, memtype, mspace, fspace, dxpl, buf);
    H5Pclose(dxpl);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

/* Block decomposition: part `rank` of n items over `size` parts (sizes differ by at most one). */
static void block_range(uint64_t n, int rank, int size, uint64_t *lo, uint64_t *count) {
    const uint64_t q = n / (uint64_t)size, r = n % (uint64_t)size, k = (uint64_t)rank;
    *lo = q * k + (k < r ? k : r);
    *count = q + (k < r ? 1 : 0);
}

/* Every rank needs the whole dictionary (any row may use any atom): each makes its block of atoms,
 * then an allgather completes it (every rank makes all of them if a block exceeds MPI's int count). */
static void make_dictionary(const synth_args *a, float *dict, double *tmp, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const uint64_t d = (uint64_t)a->d_model;
    uint64_t a0, an;
    block_range((uint64_t)a->atoms, 0, size, &a0, &an); /* part 0 is the largest */
    if (size == 1 || an * d > (uint64_t)INT_MAX || (uint64_t)a->atoms * d > (uint64_t)INT_MAX) {
        for (int i = 0; i < a->atoms; i++)
            make_atom(a->seed, i, a->d_model, dict + (size_t)i * d, tmp);
        return;
    }
    int *counts = malloc((size_t)size * sizeof(int)), *displs = malloc((size_t)size * sizeof(int));
    if (!counts || !displs) husai_mpi_die("out of memory");
    for (int p = 0; p < size; p++) {
        block_range((uint64_t)a->atoms, p, size, &a0, &an);
        counts[p] = (int)(an * d);
        displs[p] = (int)(a0 * d);
    }
    block_range((uint64_t)a->atoms, rank, size, &a0, &an);
    for (uint64_t i = a0; i < a0 + an; i++)
        make_atom(a->seed, (int)i, a->d_model, dict + i * d, tmp);
    HUSAI_MPI_CHECK(
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, dict, counts, displs, MPI_FLOAT, comm));
    free(counts);
    free(displs);
}

/* Closes whichever of the datasets and the half type are open (HDF5 keeps a file open while they are). */
static void close_objects(hid_t *act, hid_t *dic, hid_t *half) {
    if (*act >= 0) H5Dclose(*act);
    if (*dic >= 0) H5Dclose(*dic);
    if (*half >= 0) H5Tclose(*half);
    *act = *dic = *half = -1;
}

/* "3.2 TB": a size in decimal units for messages. */
static void format_bytes(double b, char *out, size_t n) {
    static const char *const unit[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
    int u = 0;
    while (b >= 1000.0 && u < 6) {
        b /= 1000.0;
        u++;
    }
    snprintf(out, n, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

static const char *file_kind(mode_t m) {
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
           : S_ISLNK(m)  ? "a symbolic link"
                         : "not a regular file";
}

/* Rows per HDF5 storage chunk of /activations (~1 MiB). */
static uint64_t storage_chunk_rows(const synth_args *a) {
    uint64_t chunk = STORAGE_CHUNK_BYTES / ((uint64_t)a->d_model * (uint64_t)a->elem);
    if (chunk < 1) chunk = 1;
    return chunk < a->rows ? chunk : a->rows;
}

/* Slack for HDF5's metadata: object headers, attributes and a fixed allowance, plus the chunk index
 * per chunk (a version-1 B-tree spends ~40 bytes per chunk). */
#define METADATA_BYTES ((uint64_t)1 << 20)
#define INDEX_BYTES_PER_CHUNK 64u

/* Bytes the finished file takes at most: every storage chunk (the last one whole), the dictionary and
 * the metadata slack. parse_args bounds rows x d_model x 8, so this cannot overflow. */
static uint64_t file_bytes(const synth_args *a) {
    const uint64_t chunk = storage_chunk_rows(a), n_chunks = (a->rows + chunk - 1) / chunk;
    const uint64_t row = (uint64_t)a->d_model * (uint64_t)a->elem;
    return n_chunks * chunk * row + (uint64_t)a->atoms * (uint64_t)a->d_model * 4u + METADATA_BYTES +
           n_chunks * INDEX_BYTES_PER_CHUNK;
}

/* Rank 0: reserves the whole file's bytes on disk before HDF5 writes anything, as results.h5 does. HDF5
 * 1.10 cannot close a parallel file whose writes failed on some ranks (the ranks part ways inside
 * H5Fclose and wait for each other forever), so a full disk or file-size limit must fail here, while the
 * file is still a closable skeleton. */
static husai_status reserve(const char *partial, int *fd, off_t *reserved, const synth_args *a) {
    *fd = open(partial, O_WRONLY);
    if (*fd < 0) return husai_error(HUSAI_ERR_IO, "cannot open '%s': %s", partial, strerror(errno));
    const uint64_t need = file_bytes(a);
    const int e = posix_fallocate(*fd, 0, (off_t)need);
    if (e) {
        char n[32];
        format_bytes((double)need, n, sizeof n);
        return husai_error(HUSAI_ERR_IO, "writing '%s' failed (disk full? %s; it needs %s); nothing written",
                           a->out, strerror(e), n);
    }
    *reserved = (off_t)need;
    return HUSAI_OK;
}

/* Rank 0's checks before anything is written: an existing OUT is replaced only with --force and only if
 * it is a regular file (renaming over a device node or a directory is never what was meant), and the
 * output's file system has room for the whole file (staged next to OUT, so an old OUT is not counted). */
static husai_status check_output(const synth_args *a, const char *partial) {
    struct stat sb;
    /* the staging name is truncated and renamed: a FIFO there would block the create, a device be written */
    if (lstat(partial, &sb) == 0 && !S_ISREG(sb.st_mode))
        return husai_error(HUSAI_ERR_IO, "'%s' is %s; husai synth stages its output under that name", partial,
                           file_kind(sb.st_mode));
    if (stat(a->out, &sb) == 0) {
        if (!a->force) return husai_error(HUSAI_ERR_IO, "'%s' exists; pass --force to replace it", a->out);
        if (!S_ISREG(sb.st_mode))
            return husai_error(HUSAI_ERR_IO, "'%s' is %s; --force replaces only a regular file", a->out,
                               file_kind(sb.st_mode));
    } else if (errno != ENOENT) {
        return husai_error(HUSAI_ERR_IO, "cannot check '%s': %s", a->out, strerror(errno));
    }
    char *copy = strdup(a->out);
    if (!copy) return husai_error(HUSAI_ERR_NOMEM, "out of memory");
    const char *dir = dirname(copy);
    struct statvfs vfs;
    husai_status st = HUSAI_OK;
    /* a missing directory is reported when the file is created */
    if (statvfs(dir, &vfs) == 0) {
        const double need = (double)file_bytes(a);
        const double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
        if (need > avail) {
            char n[32], f[32];
            format_bytes(need, n, sizeof n);
            format_bytes(avail, f, sizeof f);
            st = husai_error(HUSAI_ERR_IO, "'%s' needs about %s but only %s is free in '%s'; nothing written",
                             a->out, n, f, dir);
        }
    }
    free(copy);
    return st;
}

int husai_cmd_synth(int argc, char **argv) {
    int rank, size;
    MPI_Comm comm = MPI_COMM_WORLD;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    synth_args a;
    const int prc = parse_args(argc, argv, &a, rank);
    if (prc) return prc < 0 ? 0 : prc;
    const double t0 = now();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported in one line below */

    const size_t d = (size_t)a.d_model;
    const size_t plen = strlen(a.out) + sizeof ".partial";
    char *partial = malloc(plen);
    float *dict = NULL;
    uint64_t *mark = NULL;
    double *acc = NULL, *z = NULL;
    void *buf = NULL;
    hid_t file = -1, act = -1, dic = -1, half = -1;
    int rc = 1, fd = -1; /* rank 0's descriptor of the staging file, for the space reservation */
    off_t reserved = 0;
    /* A file-size limit or quota must surface as a failed write with a message, not kill the rank. */
    signal(SIGXFSZ, SIG_IGN);
    if (!partial) husai_mpi_die("out of memory");
    snprintf(partial, plen, "%s.partial", a.out);

    /* Rank 0 checks the target; every rank learns the verdict. */
    husai_status st = rank == 0 ? check_output(&a, partial) : HUSAI_OK;
    if ((st = husai_mpi_agree(st, comm))) goto done;

    const size_t n_dict = (size_t)a.atoms * d;
    const uint64_t block =
        a.chunk_rows ? a.chunk_rows : (DEFAULT_BLOCK_BYTES / (d * 8) > 0 ? DEFAULT_BLOCK_BYTES / (d * 8) : 1);
    uint64_t r0, n_mine;
    block_range(a.rows, rank, size, &r0, &n_mine);
    const uint64_t max_per_rank = (a.rows + (uint64_t)size - 1) / (uint64_t)size;
    const uint64_t cap = block < max_per_rank ? block : max_per_rank; /* rows held at once */
    dict = n_dict / d == (size_t)a.atoms ? malloc(n_dict * sizeof(float)) : NULL;
    mark = calloc((size_t)a.atoms, sizeof(uint64_t));
    acc = malloc(d * sizeof(double));
    z = malloc(d * sizeof(double));
    buf = cap <= SIZE_MAX / d / (size_t)a.elem ? malloc((size_t)cap * d * (size_t)a.elem) : NULL;
    st = (!dict || !mark || !acc || !z || !buf)
             ? husai_error(HUSAI_ERR_NOMEM,
                           "cannot allocate the dictionary (%d x %d floats) and a block of %llu rows; "
                           "lower --chunk-rows or --atoms",
                           a.atoms, a.d_model, (unsigned long long)cap)
             : HUSAI_OK;
    if ((st = husai_mpi_agree(st, comm))) goto done;
    make_dictionary(&a, dict, acc, comm);

    /* Create the staging file and both datasets (collective, identical arguments on every rank). */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    file = H5Fcreate(partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    st = file < 0 ? husai_error(HUSAI_ERR_IO,
                                "cannot create '%s' (does the directory exist and is it writable?)", partial)
                  : HUSAI_OK;
    if ((st = husai_mpi_agree(st, comm))) goto done;
    if (rank == 0) {
        g_partial_path = partial;
        husai_mpi_on_die(remove_partial, NULL);
        st = reserve(partial, &fd, &reserved, &a);
    }
    if ((st = husai_mpi_agree(st, comm))) goto done;

    half = a.elem == 2 ? make_half_type() : -1;
    const hid_t ftype = a.elem == 2 ? half : a.elem == 8 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
    const hid_t mtype = a.elem == 2 ? half : a.elem == 8 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_FLOAT;
    hsize_t dims[2] = {a.rows, d};
    hsize_t cdims[2] = {storage_chunk_rows(&a), d};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, cdims);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); /* every element is written once */
    hid_t space = H5Screate_simple(2, dims, NULL);
    act = H5Dcreate2(file, "/activations", ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(space);
    H5Pclose(dcpl);
    hsize_t ddims[2] = {(hsize_t)a.atoms, d};
    space = H5Screate_simple(2, ddims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    dic = H5Dcreate2(file, "/dictionary", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(space);
    H5Pclose(dcpl);
    /* Write failures are agreed after each collective call, so a full disk on any rank ends every rank
     * with one line (and rank 0 removes the staging file) instead of an abort. */
    st = act < 0 || dic < 0 || write_attrs(file, &a) < 0 || write_attrs(act, &a) < 0
             ? husai_error(HUSAI_ERR_IO, "cannot create the datasets and attributes of '%s' (disk full?)",
                           partial)
             : HUSAI_OK;
    if ((st = husai_mpi_agree(st, comm))) goto done;

    /* The dictionary: each rank writes its block of atoms. */
    {
        uint64_t a0, an;
        block_range((uint64_t)a.atoms, rank, size, &a0, &an);
        st = write_rows(dic, H5T_NATIVE_FLOAT, a0, an, an > 0 ? an : 1, d, dict + a0 * d) < 0
                 ? husai_error(HUSAI_ERR_IO, "writing the dictionary to '%s' failed (disk full?)", partial)
                 : HUSAI_OK;
        if ((st = husai_mpi_agree(st, comm))) goto done;
    }

    /* The rows: every rank makes the same number of collective calls; the last ones may be empty. */
    const uint64_t n_iter = (max_per_rank + cap - 1) / cap;
    for (uint64_t it = 0; it < n_iter; it++) {
        const uint64_t lo = it * cap;
        const uint64_t cnt = lo < n_mine ? (n_mine - lo < cap ? n_mine - lo : cap) : 0;
        for (uint64_t i = 0; i < cnt; i++) {
            make_row(&a, dict, r0 + lo + i, mark, acc, z);
            if (a.elem == 4) {
                float *o = (float *)buf + i * d;
                for (size_t j = 0; j < d; j++)
                    o[j] = (float)acc[j];
            } else if (a.elem == 8) {
                memcpy((double *)buf + i * d, acc, d * sizeof(double));
            } else {
                uint16_t *o = (uint16_t *)buf + i * d;
                for (size_t j = 0; j < d; j++)
                    o[j] = half_bits(acc[j]);
            }
        }
        st = write_rows(act, mtype, r0 + lo, cnt, cap, d, buf) < 0
                 ? husai_error(HUSAI_ERR_IO, "writing rows %llu..%llu to '%s' failed (disk full?)",
                               (unsigned long long)(r0 + lo), (unsigned long long)(r0 + lo + cnt), partial)
                 : HUSAI_OK;
        if ((st = husai_mpi_agree(st, comm))) goto done;
    }
    close_objects(&act, &dic, &half);
    haddr_t eoa = 0;
    if (H5Fget_eoa(file, &eoa) < 0) eoa = 0;
    herr_t closed = H5Fclose(file);
    file = -1;
    st = closed < 0 ? husai_error(HUSAI_ERR_IO, "closing '%s' failed (disk full?)", partial) : HUSAI_OK;
    /* the reservation's unused tail goes: HDF5 needs only its end of allocation */
    if (!st && rank == 0 && eoa > 0 && (off_t)eoa < reserved && ftruncate(fd, (off_t)eoa) != 0)
        st = husai_error(HUSAI_ERR_IO, "trimming '%s': %s", partial, strerror(errno));
    if ((st = husai_mpi_agree(st, comm))) goto done;

    if (rank == 0) {
        husai_mpi_on_die(NULL, NULL);
        g_partial_path = NULL;
        st = rename(partial, a.out) ? husai_error(HUSAI_ERR_IO, "cannot rename '%s' to '%s': %s", partial,
                                                  a.out, strerror(errno))
                                    : HUSAI_OK;
        if (st) remove(partial);
    }
    if ((st = husai_mpi_agree(st, comm))) goto done;
    rc = 0;
    if (rank == 0) {
        const double dt = now() - t0;
        const double bytes = (double)a.rows * (double)d * a.elem;
        printf(
            "husai synth: wrote %s: %llu x %d %s (%d atoms, %d active, noise %g, seed %llu) on %d rank(s) in "
            "%.2f s (%.1f MB/s)\n",
            a.out, (unsigned long long)a.rows, a.d_model,
            a.elem == 2   ? "float16"
            : a.elem == 8 ? "float64"
                          : "float32",
            a.atoms, a.active, a.noise, (unsigned long long)a.seed, size, dt,
            bytes / (dt > 0 ? dt : 1e-9) / 1e6);
    }
done:
    if (st && rank == 0) fprintf(stderr, "husai: error: %s\n", husai_error_message());
    close_objects(&act, &dic, &half);
    if (file >= 0) H5Fclose(file); /* collective: every rank is here after an agreed error */
    if (fd >= 0) close(fd);
    if (rc && rank == 0 && g_partial_path) {
        husai_mpi_on_die(NULL, NULL);
        remove(partial);
        g_partial_path = NULL;
    }
    free(dict);
    free(mark);
    free(acc);
    free(z);
    free(buf);
    free(partial);
    return rc;
}
