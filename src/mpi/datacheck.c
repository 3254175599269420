#define _POSIX_C_SOURCE 200809L
#include "mpi/datacheck.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "mpi/mpicheck.h"

/* Virtual datasets may map other virtual datasets; deeper chains than this are refused. */
#define MAX_DEPTH 8
#define PATH_LEN 4096

static const char *file_kind(mode_t m) {
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISDIR(m)) return "a directory";
    return "of an unknown kind";
}

husai_status husai_datacheck_path(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || S_ISREG(sb.st_mode)) return HUSAI_OK;
    return husai_error(HUSAI_ERR_DATA, "data file '%s' is %s, not a regular file", path,
                       file_kind(sb.st_mode));
}

/* Whether HDF5's search for a source file ends at candidate p: an HDF5 file, or something that is not a
 * regular file (HDF5 would open it, and a FIFO would block it; the caller refuses it). stat() comes
 * first so that H5Fis_hdf5 never opens a FIFO. */
static int ends_search(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && (!S_ISREG(sb.st_mode) || H5Fis_hdf5(p) > 0);
}

/* vsnprintf into out; 1 if the whole path fitted (a cut path would name another file). */
static int format_path(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int format_path(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int len = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    return len >= 0 && (size_t)len < n;
}

/* Directory part of path ("." for a bare name). */
static void dir_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        format_path(out, n, ".");
    else if (slash == path)
        format_path(out, n, "/");
    else
        format_path(out, n, "%.*s", (int)(slash - path), path);
}

/* prefix/name into out, a leading ${ORIGIN} in prefix standing for origin (the HDF5 file's directory);
 * 1 if it fitted. */
static int prefixed(char *out, size_t n, const char *prefix, const char *origin, const char *name) {
    static const char token[] = "${ORIGIN}";
    if (strncmp(prefix, token, sizeof token - 1) == 0)
        return format_path(out, n, "%s%s/%s", origin, prefix + sizeof token - 1, name);
    return format_path(out, n, "%s/%s", prefix, name);
}

/* The path HDF5 1.10.8 opens for external raw file `name` of a dataset in h5path: HDF5_EXTFILE_PREFIX
 * if set, else the dataset access prefix; an empty or "." prefix (the default) leaves the name as is,
 * i.e. relative to the working directory (measured: h5dump finds a relative external file only from
 * the directory it was written in, whatever the documentation says about the HDF5 file's directory).
 * Returns 1 if the path fitted in out. */
static int external_path(const char *name, const char *prefix, const char *h5path, char *out, size_t n) {
    if (name[0] == '/' || !*prefix || strcmp(prefix, ".") == 0) return format_path(out, n, "%s", name);
    char origin[PATH_LEN];
    dir_of(h5path, origin, sizeof origin);
    return prefixed(out, n, prefix, origin, name);
}

/* The source file HDF5 opens for a virtual mapping's file name `name` (H5Pset_virtual's search order:
 * an absolute name as is, else its base name under each HDF5_VDS_PREFIX entry, the access prefix, the
 * virtual dataset's directory, then the working directory); "" if none exists. */
static void vds_source_path(const char *name, const char *vds_path, hid_t dapl, char *out, size_t n) {
    char origin[PATH_LEN];
    dir_of(vds_path, origin, sizeof origin);
    const char *base = name;
    if (name[0] == '/') {
        if (format_path(out, n, "%s", name) && ends_search(out)) return;
        base = strrchr(name, '/') + 1;
    }
    const char *env = getenv("HDF5_VDS_PREFIX");
    if (env && *env) {
        char *list = strdup(env), *save = NULL;
        for (char *p = list ? strtok_r(list, ":", &save) : NULL; p; p = strtok_r(NULL, ":", &save))
            if (prefixed(out, n, p, origin, base) && ends_search(out)) {
                free(list);
                return;
            }
        free(list);
    }
    char prefix[PATH_LEN];
    const ssize_t len = H5Pget_virtual_prefix(dapl, prefix, sizeof prefix);
    if (len > 0 && (size_t)len < sizeof prefix && prefixed(out, n, prefix, origin, base) && ends_search(out))
        return;
    if (format_path(out, n, "%s/%s", origin, base) && ends_search(out)) return;
    if (format_path(out, n, "%s", base) && ends_search(out)) return;
    out[0] = '\0';
}

static husai_status check_storage(hid_t file, hid_t dset, const char *path, const char *name, int depth,
                                  int *is_virtual);

/* Every chunk of the dataset's extent must exist: an unwritten chunk reads as the fill value. Counting
 * chunks (H5Dget_num_chunks walks the chunk index) is exact where H5Dget_space_status is not: that
 * compares allocated bytes with the dataset's size, so it says "partly allocated" for fully written
 * gzip chunks or a partial edge chunk (measured on 400 x 8 in chunks of 64 rows). */
static husai_status check_chunks(hid_t dset, hid_t dcpl, int nd, const hsize_t *dims, const char *path,
                                 const char *name) {
    hsize_t cdims[H5S_MAX_RANK];
    if (H5Pget_chunk(dcpl, nd, cdims) != nd)
        return husai_error(HUSAI_ERR_DATA, "cannot read the chunk shape of dataset '%s' in '%s'", name, path);
    hsize_t expected = 1;
    for (int k = 0; k < nd; k++) {
        const hsize_t c = (dims[k] + cdims[k] - 1) / cdims[k];
        expected = c != 0 && expected > UINT64_MAX / c ? UINT64_MAX : expected * c;
    }
    hsize_t have = 0;
    hid_t space = H5Dget_space(dset); /* all selected; HDF5 1.10.8 refuses H5S_ALL here */
    const herr_t rc = H5Dget_num_chunks(dset, space, &have);
    H5Sclose(space);
    if (rc < 0)
        return husai_error(HUSAI_ERR_DATA, "cannot count the written chunks of dataset '%s' in '%s'", name,
                           path);
    if (have < expected)
        return husai_error(HUSAI_ERR_DATA,
                           "dataset '%s' in '%s' has unallocated storage: only %llu of its %llu chunks were "
                           "ever written, the rest would read as the fill value",
                           name, path, (unsigned long long)have, (unsigned long long)expected);
    return HUSAI_OK;
}

/* External raw files hold the values back to back, each from its offset; HDF5 reads past a file's end
 * as zeros, so each must be long enough for its share. */
static husai_status check_external(hid_t dset, hid_t dcpl, int n_files, hsize_t nelmts, const char *path,
                                   const char *name) {
    hid_t type = H5Dget_type(dset);
    hsize_t remaining = nelmts * H5Tget_size(type);
    H5Tclose(type);
    char prefix[PATH_LEN] = "";
    const char *env = getenv("HDF5_EXTFILE_PREFIX");
    if (env) {
        snprintf(prefix, sizeof prefix, "%s", env);
    } else {
        hid_t dapl = H5Dget_access_plist(dset);
        const ssize_t len = H5Pget_efile_prefix(dapl, prefix, sizeof prefix);
        if (len < 0 || (size_t)len >= sizeof prefix) prefix[0] = '\0';
        H5Pclose(dapl);
    }
    for (int i = 0; i < n_files && remaining > 0; i++) {
        char ename[PATH_LEN], full[PATH_LEN];
        off_t offset = 0;
        hsize_t size = 0;
        if (H5Pget_external(dcpl, (unsigned)i, sizeof ename, ename, &offset, &size) < 0)
            return husai_error(HUSAI_ERR_DATA, "cannot read the external file list of dataset '%s' in '%s'",
                               name, path);
        const hsize_t need = size < remaining ? size : remaining;
        remaining -= need;
        struct stat sb;
        if (!external_path(ename, prefix, path, full, sizeof full) || stat(full, &sb) != 0)
            return husai_error(HUSAI_ERR_DATA,
                               "external raw data file '%s' of dataset '%s' in '%s' is missing (looked for "
                               "'%s'%s)",
                               ename, name, path, full,
                               full[0] == '/' ? ""
                                              : "; HDF5 looks for relative names in the working directory "
                                                "unless HDF5_EXTFILE_PREFIX is set, e.g. to ${ORIGIN}");
        if (!S_ISREG(sb.st_mode))
            return husai_error(
                HUSAI_ERR_DATA,
                "external raw data file '%s' of dataset '%s' in '%s' is %s, not a regular file", full, name,
                path, file_kind(sb.st_mode));
        const hsize_t end = (hsize_t)offset + need;
        if ((hsize_t)sb.st_size < end)
            return husai_error(
                HUSAI_ERR_DATA,
                "external raw data file '%s' of dataset '%s' in '%s' is shorter than declared: "
                "%lld bytes, but the dataset needs %llu (offset %lld + %llu); the rest would "
                "read as zeros",
                full, name, path, (long long)sb.st_size, (unsigned long long)end, (long long)offset,
                (unsigned long long)need);
    }
    return HUSAI_OK;
}

/* ORs a mapping's virtual selection into uni; -1 for a selection husai cannot bound (unlimited). */
static int add_selection(hid_t uni, hid_t vs) {
    const H5S_sel_type t = H5Sget_select_type(vs);
    if (t == H5S_SEL_ALL) return H5Sselect_all(uni) < 0 ? -1 : 0;
    if (t == H5S_SEL_NONE) return 0;
    if (t != H5S_SEL_HYPERSLABS) return -1;
    const int nd = H5Sget_simple_extent_ndims(vs);
    if (nd < 1 || nd > H5S_MAX_RANK) return -1;
    hsize_t start[H5S_MAX_RANK], stride[H5S_MAX_RANK], count[H5S_MAX_RANK], block[H5S_MAX_RANK];
    if (H5Sis_regular_hyperslab(vs) > 0) {
        if (H5Sget_regular_hyperslab(vs, start, stride, count, block) < 0) return -1;
        for (int k = 0; k < nd; k++)
            if (count[k] == H5S_UNLIMITED || block[k] == H5S_UNLIMITED) return -1;
        return H5Sselect_hyperslab(uni, H5S_SELECT_OR, start, stride, count, block) < 0 ? -1 : 0;
    }
    const hssize_t nb = H5Sget_select_hyper_nblocks(vs);
    if (nb < 0) return -1;
    hsize_t *buf = malloc((size_t)nb * 2 * (size_t)nd * sizeof(hsize_t));
    int rc = buf && H5Sget_select_hyper_blocklist(vs, 0, (hsize_t)nb, buf) >= 0 ? 0 : -1;
    for (hssize_t b = 0; rc == 0 && b < nb; b++) {
        const hsize_t *lo = buf + (size_t)b * 2 * (size_t)nd, *hi = lo + nd;
        for (int k = 0; k < nd; k++) {
            count[k] = 1;
            block[k] = hi[k] - lo[k] + 1;
        }
        rc = H5Sselect_hyperslab(uni, H5S_SELECT_OR, lo, NULL, count, block) < 0 ? -1 : 0;
    }
    free(buf);
    return rc;
}

/* One mapping of a virtual dataset: its source file and dataset exist, the source is at least as large
 * as the mapping reads, and its own storage is real data. */
static husai_status check_mapping(hid_t file, hid_t dcpl, hid_t dapl, size_t i, const char *path,
                                  const char *name, int depth) {
    char fname[PATH_LEN], dname[PATH_LEN], src[PATH_LEN];
    if (H5Pget_virtual_filename(dcpl, i, fname, sizeof fname) < 0 ||
        H5Pget_virtual_dsetname(dcpl, i, dname, sizeof dname) < 0)
        return husai_error(HUSAI_ERR_DATA, "cannot read mapping %zu of virtual dataset '%s' in '%s'", i, name,
                           path);
    if (strchr(fname, '%') || strchr(dname, '%'))
        return husai_error(HUSAI_ERR_DATA,
                           "virtual dataset '%s' in '%s' uses printf-style source names (mapping %zu: '%s'), "
                           "which husai cannot check; map fixed source files instead",
                           name, path, i, fname);
    hid_t sfile = file;
    if (strcmp(fname, ".") == 0) {
        snprintf(src, sizeof src, "%s", path);
    } else {
        vds_source_path(fname, path, dapl, src, sizeof src);
        struct stat sb;
        if (*src && stat(src, &sb) == 0 && !S_ISREG(sb.st_mode))
            return husai_error(HUSAI_ERR_DATA,
                               "virtual dataset '%s' in '%s': source file '%s' (mapping %zu) is %s, not a "
                               "regular file",
                               name, path, src, i, file_kind(sb.st_mode));
        if (!*src)
            return husai_error(HUSAI_ERR_DATA,
                               "virtual dataset '%s' in '%s' has a missing source: file '%s' (mapping %zu) "
                               "does not exist or is not HDF5",
                               name, path, fname, i);
        if ((sfile = H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
            return husai_error(HUSAI_ERR_DATA,
                               "virtual dataset '%s' in '%s': cannot open its source file '%s' (mapping %zu)",
                               name, path, src, i);
    }
    husai_status st = HUSAI_OK;
    hid_t sdset = H5Lexists(sfile, dname, H5P_DEFAULT) > 0 ? H5Dopen2(sfile, dname, H5P_DEFAULT) : -1;
    hid_t sspace = -1, sel = -1, vs = -1;
    if (sdset < 0) {
        st = husai_error(HUSAI_ERR_DATA,
                         "virtual dataset '%s' in '%s' has a missing source: dataset '%s' not found in '%s' "
                         "(mapping %zu)",
                         name, path, dname, src, i);
        goto out;
    }
    sspace = H5Dget_space(sdset);
    sel = H5Pget_virtual_srcspace(dcpl, i);
    vs = H5Pget_virtual_vspace(dcpl, i);
    hsize_t lo[H5S_MAX_RANK], hi[H5S_MAX_RANK], sdims[H5S_MAX_RANK];
    const int nd = H5Sget_simple_extent_ndims(sspace);
    if (nd < 0 || H5Sget_simple_extent_dims(sspace, sdims, NULL) < 0) {
        st = husai_error(HUSAI_ERR_DATA,
                         "virtual dataset '%s' in '%s': cannot read the shape of source '%s' in '%s'", name,
                         path, dname, src);
        goto out;
    }
    if (H5Sget_select_type(sel) == H5S_SEL_ALL) {
        /* The whole source, whatever its extent now (HDF5 stores no extent with an "all" selection):
         * a source smaller than the region it fills leaves the rest as the fill value. */
        const hssize_t have = H5Sget_simple_extent_npoints(sspace), want = H5Sget_select_npoints(vs);
        if (have < want)
            st =
                husai_error(HUSAI_ERR_DATA,
                            "virtual dataset '%s' in '%s': source dataset '%s' in '%s' holds %lld values but "
                            "mapping %zu reads %lld; the rest would read as the fill value",
                            name, path, dname, src, (long long)have, i, (long long)want);
    } else if (nd != H5Sget_simple_extent_ndims(sel) || H5Sget_select_bounds(sel, lo, hi) < 0) {
        st = husai_error(
            HUSAI_ERR_DATA,
            "virtual dataset '%s' in '%s': source dataset '%s' in '%s' does not match mapping %zu", name,
            path, dname, src, i);
    } else {
        for (int k = 0; k < nd && !st; k++)
            if (hi[k] >= sdims[k])
                st =
                    husai_error(HUSAI_ERR_DATA,
                                "virtual dataset '%s' in '%s': source dataset '%s' in '%s' has %llu entries "
                                "along dimension %d but mapping %zu reads up to %llu; the rest would read as "
                                "the fill value",
                                name, path, dname, src, (unsigned long long)sdims[k], k, i,
                                (unsigned long long)hi[k] + 1);
    }
    if (st) goto out;
    int nested = 0;
    st = check_storage(sfile, sdset, src, dname, depth + 1, &nested);
out:
    if (vs >= 0) H5Sclose(vs);
    if (sel >= 0) H5Sclose(sel);
    if (sspace >= 0) H5Sclose(sspace);
    if (sdset >= 0) H5Dclose(sdset);
    if (sfile != file) H5Fclose(sfile);
    return st;
}

/* Every value of a virtual dataset must come from a mapping whose source is real data. */
static husai_status check_virtual(hid_t file, hid_t dset, hid_t dcpl, int nd, const hsize_t *dims,
                                  hsize_t nelmts, const char *path, const char *name, int depth) {
    if (depth >= MAX_DEPTH)
        return husai_error(HUSAI_ERR_DATA, "virtual dataset '%s' in '%s' nests virtual datasets %d deep",
                           name, path, MAX_DEPTH);
    size_t count = 0;
    if (H5Pget_virtual_count(dcpl, &count) < 0)
        return husai_error(HUSAI_ERR_DATA, "cannot read the mappings of virtual dataset '%s' in '%s'", name,
                           path);
    hid_t uni = H5Screate_simple(nd, dims, NULL), dapl = H5Dget_access_plist(dset);
    H5Sselect_none(uni);
    husai_status st = HUSAI_OK;
    for (size_t i = 0; i < count && !st; i++) {
        hid_t vs = H5Pget_virtual_vspace(dcpl, i);
        if (vs < 0 || add_selection(uni, vs) < 0)
            st = husai_error(
                HUSAI_ERR_DATA,
                "virtual dataset '%s' in '%s' has an unlimited or unreadable mapping (%zu), which "
                "husai cannot check; map fixed extents instead",
                name, path, i);
        if (vs >= 0) H5Sclose(vs);
        if (!st) st = check_mapping(file, dcpl, dapl, i, path, name, depth);
    }
    const hssize_t covered = H5Sget_select_npoints(uni);
    if (!st && (covered < 0 || (hsize_t)covered < nelmts))
        st = husai_error(HUSAI_ERR_DATA,
                         "virtual dataset '%s' in '%s' maps only %lld of its %llu values to source data; the "
                         "rest would read as the fill value",
                         name, path, (long long)covered, (unsigned long long)nelmts);
    H5Pclose(dapl);
    H5Sclose(uni);
    return st;
}

/* Dispatches on the storage layout of an open dataset. */
static husai_status check_storage(hid_t file, hid_t dset, const char *path, const char *name, int depth,
                                  int *is_virtual) {
    hid_t dcpl = H5Dget_create_plist(dset), space = H5Dget_space(dset);
    hsize_t dims[H5S_MAX_RANK];
    const int nd = H5Sget_simple_extent_ndims(space);
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    husai_status st = HUSAI_OK;
    if (nd > 0 && n > 0 && H5Sget_simple_extent_dims(space, dims, NULL) >= 0) {
        const hsize_t nelmts = (hsize_t)n;
        switch (H5Pget_layout(dcpl)) {
        case H5D_CHUNKED:
            st = check_chunks(dset, dcpl, nd, dims, path, name);
            break;
        case H5D_CONTIGUOUS: {
            const int n_ext = H5Pget_external_count(dcpl);
            H5D_space_status_t alloc = H5D_SPACE_STATUS_ERROR;
            if (n_ext > 0)
                st = check_external(dset, dcpl, n_ext, nelmts, path, name);
            else if (H5Dget_space_status(dset, &alloc) >= 0 && alloc == H5D_SPACE_STATUS_NOT_ALLOCATED)
                st =
                    husai_error(HUSAI_ERR_DATA,
                                "dataset '%s' in '%s' has unallocated storage: its values were never written "
                                "and would read as the fill value",
                                name, path);
            break;
        }
        case H5D_VIRTUAL:
            *is_virtual = 1;
            st = check_virtual(file, dset, dcpl, nd, dims, nelmts, path, name, depth);
            break;
        default:
            break; /* compact: the values live in the object header */
        }
    }
    H5Sclose(space);
    H5Pclose(dcpl);
    return st;
}

husai_status husai_datacheck_storage(const char *path, const char *name, int *is_virtual) {
    *is_virtual = 0;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return HUSAI_OK;
    hid_t dset = H5Lexists(file, name, H5P_DEFAULT) > 0 ? H5Dopen2(file, name, H5P_DEFAULT) : -1;
    husai_status st = dset >= 0 ? check_storage(file, dset, path, name, 0, is_virtual) : HUSAI_OK;
    if (dset >= 0) H5Dclose(dset);
    H5Fclose(file);
    return st;
}

/* MemAvailable in bytes, or -1 if /proc/meminfo does not say. */
static double mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1.0;
    char line[256];
    double kb = -1.0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb < 0.0 ? -1.0 : kb * 1024.0;
}

/* Room left beside the window: Open MPI's segment adds its own header and per-rank state to the request,
 * and a window filling the last byte of memory leaves none for training. */
#define WINDOW_SLACK 64e6

/* Free bytes of the directory Open MPI's osc/sm maps its segments in (named in *dir), or -1. */
static double shm_free(const char **dir) {
    *dir = getenv("OMPI_MCA_osc_sm_backing_directory");
    if (!*dir || !**dir) *dir = "/dev/shm";
    struct statvfs vfs;
    return statvfs(*dir, &vfs) == 0 ? (double)vfs.f_bavail * (double)vfs.f_frsize : -1.0;
}

double husai_datacheck_node_room(void) {
    const char *dir;
    const double shm = shm_free(&dir), avail = mem_available();
    const double room = shm < 0.0 ? avail : avail < 0.0 || shm < avail ? shm : avail;
    if (room < 0.0) return -1.0;
    return room > WINDOW_SLACK ? room - WINDOW_SLACK : 0.0;
}

husai_status husai_datacheck_window(size_t rows, size_t d, const char *path, const char *name) {
    const double need = (double)rows * (double)d * (double)sizeof(float);
    /* Open MPI's osc/sm maps a file there; its shmem layer refuses a file the file system has no room
     * for, on the node leader only, and the other ranks then wait inside the allocation for ever. */
    const char *dir;
    const double free_bytes = shm_free(&dir);
    if (free_bytes >= 0.0 && need + WINDOW_SLACK > free_bytes)
        return husai_error(
            HUSAI_ERR_NOMEM,
            "dataset '%s' in '%s' needs %.2f GB of node shared memory (%zu x %zu float32) "
            "but %s has %.2f GB free; set data.memory_budget_mb below that to stream it in chunks",
            name, path, need / 1e9, rows, d, dir, free_bytes / 1e9);
    const double avail = mem_available();
    if (avail >= 0.0 && need + WINDOW_SLACK > avail)
        return husai_error(
            HUSAI_ERR_NOMEM,
            "dataset '%s' in '%s' needs %.2f GB of node shared memory (%zu x %zu float32) but "
            "the node has %.2f GB available (MemAvailable); set data.memory_budget_mb below that to stream "
            "it in chunks",
            name, path, need / 1e9, rows, d, avail / 1e9);
    return HUSAI_OK;
}

/* The message for the first non-finite value, in row `row` (xrow: its float32 copy): a value finite in
 * the file but not in float32 was a float64 beyond float32's range, and is named as such. */
static husai_status nonfinite_error(hid_t dset, const float *xrow, size_t row, size_t d, const char *path,
                                    const char *name) {
    double *v = malloc(d * sizeof(double));
    hid_t fspace = H5Dget_space(dset), type = H5Dget_type(dset);
    const hsize_t start[2] = {row, 0}, count[2] = {1, d};
    hid_t mspace = H5Screate_simple(2, count, NULL);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    const int wide = H5Tget_size(type) > sizeof(float);
    const herr_t rc = v && wide ? H5Dread(dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, v) : -1;
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Tclose(type);
    size_t c = 0;
    while (rc >= 0 && c < d && !(isfinite(v[c]) && !isfinite(xrow[c])))
        c++;
    husai_status st;
    if (rc >= 0 && c < d)
        st = husai_error(HUSAI_ERR_DATA,
                         "dataset '%s' in '%s' has a value out of float32 range in row %zu (0-based), column "
                         "%zu: %g (float32 holds |x| <= 3.4e38)",
                         name, path, row, c, v[c]);
    else
        st = husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' has a NaN or Inf value in row %zu (0-based)",
                         name, path, row);
    free(v);
    return st;
}

/* The refusal of data whose every value is v: EV divides by var(X). */
static husai_status constant_error(double v, const char *path, const char *name) {
    return husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' is constant (every value is %g): zero variance",
                       name, path, v);
}

/* The refusal of a value above HUSAI_DATA_MAX_ABS (big) in row `row`. */
static husai_status big_value_error(double big, size_t row, const char *path, const char *name) {
    return husai_error(HUSAI_ERR_DATA,
                       "dataset '%s' in '%s' has a value of %g in row %zu (0-based): values above %g are too "
                       "large for float32 training (squared errors overflow); rescale the data",
                       name, path, big, row, HUSAI_DATA_MAX_ABS);
}

/* The refusal of data whose variance is below HUSAI_DATA_MIN_VAR (largest: the largest |value|). */
static husai_status low_variance_error(double var, double largest, const char *path, const char *name) {
    return husai_error(
        HUSAI_ERR_DATA,
        "dataset '%s' in '%s' has near-zero variance %.3g (below %g; largest |value| %.3g): "
        "float32 arithmetic underflows at this scale and EV would be meaningless; rescale the data",
        name, path, var, HUSAI_DATA_MIN_VAR, largest);
}

husai_status husai_datacheck_values(const float *X, size_t r0, size_t r1, size_t d, long long dset,
                                    const char *path, const char *name, MPI_Comm comm) {
    /* first[0]: first row holding a NaN/Inf; first[1]: first row holding |x| > HUSAI_DATA_MAX_ABS. */
    long long first[2] = {LLONG_MAX, LLONG_MAX}, gfirst[2];
    double ext[2] = {-INFINITY, -INFINITY}, gext[2]; /* -min, max */
    double sums[2] = {0.0, (double)(r1 - r0) * (double)d}, gsums[2];
    for (size_t r = r0; r < r1 && first[0] == LLONG_MAX; r++)
        for (size_t c = 0; c < d; c++) {
            const double x = X[r * d + c];
            if (!isfinite(x)) {
                first[0] = (long long)r;
                break;
            }
            if (fabs(x) > HUSAI_DATA_MAX_ABS && first[1] == LLONG_MAX) first[1] = (long long)r;
            ext[0] = fmax(ext[0], -x);
            ext[1] = fmax(ext[1], x);
            sums[0] += x;
        }
    HUSAI_MPI_CHECK(MPI_Allreduce(first, gfirst, 2, MPI_LONG_LONG, MPI_MIN, comm));
    HUSAI_MPI_CHECK(MPI_Allreduce(ext, gext, 2, MPI_DOUBLE, MPI_MAX, comm));
    HUSAI_MPI_CHECK(MPI_Allreduce(sums, gsums, 2, MPI_DOUBLE, MPI_SUM, comm));
    /* Only the rank holding the row can describe it; husai_mpi_agree hands its message to the others. */
    const long long lo = (long long)r0, hi = (long long)r1;
    if (gfirst[0] != LLONG_MAX) {
        const size_t row = (size_t)gfirst[0];
        return husai_mpi_agree(gfirst[0] >= lo && gfirst[0] < hi
                                   ? nonfinite_error((hid_t)dset, X + row * d, row, d, path, name)
                                   : HUSAI_OK,
                               comm);
    }
    if (gfirst[1] != LLONG_MAX) {
        husai_status st = HUSAI_OK;
        if (gfirst[1] >= lo && gfirst[1] < hi) {
            const float *x = X + (size_t)gfirst[1] * d;
            double big = 0.0;
            for (size_t c = 0; c < d; c++)
                big = fmax(big, fabs(x[c]));
            st = big_value_error(big, (size_t)gfirst[1], path, name);
        }
        return husai_mpi_agree(st, comm);
    }
    /* Every rank saw the same extremes, so this verdict needs no agreement. */
    if (-gext[0] == gext[1]) return constant_error(gext[1], path, name);
    const double mean = gsums[0] / gsums[1];
    double m2 = 0.0, gm2;
    for (size_t i = r0 * d; i < r1 * d; i++)
        m2 += ((double)X[i] - mean) * ((double)X[i] - mean);
    HUSAI_MPI_CHECK(MPI_Allreduce(&m2, &gm2, 1, MPI_DOUBLE, MPI_SUM, comm));
    const double var = gm2 / (gsums[1] - 1.0);
    /* Sums may differ in the last bits between ranks; the agreement keeps the verdict one. */
    return husai_mpi_agree(
        var < HUSAI_DATA_MIN_VAR ? low_variance_error(var, fmax(gext[0], gext[1]), path, name) : HUSAI_OK,
        comm);
}

void husai_datacheck_scan_init(husai_datacheck_scan *s) {
    memset(s, 0, sizeof *s);
    s->first_bad = s->first_big = LLONG_MAX;
    s->lo = INFINITY;
    s->hi = -INFINITY;
}

/* Merges a block of nb values with mean mb and squared deviations m2b into (n, mean, m2). */
static void merge_moments(double *n, double *mean, double *m2, double nb, double mb, double m2b) {
    if (nb == 0.0) return;
    const double total = *n + nb, delta = mb - *mean;
    *mean += delta * nb / total;
    *m2 += m2b + delta * delta * *n * nb / total;
    *n = total;
}

void husai_datacheck_scan_rows(husai_datacheck_scan *s, const float *X, size_t rows, size_t d, size_t row0,
                               long long dset, const char *path, const char *name) {
    if (s->first_bad != LLONG_MAX) return; /* rows arrive in order: an earlier bad row was found */
    double sum = 0.0;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < d; c++) {
            const double x = X[r * d + c];
            if (!isfinite(x)) {
                s->first_bad = (long long)(row0 + r);
                nonfinite_error((hid_t)dset, X + r * d, row0 + r, d, path, name);
                snprintf(s->bad_msg, sizeof s->bad_msg, "%s", husai_error_message());
                return;
            }
            if (fabs(x) > HUSAI_DATA_MAX_ABS && s->first_big == LLONG_MAX) {
                s->first_big = (long long)(row0 + r);
                big_value_error(fabs(x), row0 + r, path, name);
                snprintf(s->big_msg, sizeof s->big_msg, "%s", husai_error_message());
            }
            s->lo = fmin(s->lo, x);
            s->hi = fmax(s->hi, x);
            sum += x;
        }
    const double nb = (double)rows * (double)d, mb = nb > 0.0 ? sum / nb : 0.0;
    double m2b = 0.0;
    for (size_t i = 0; i < rows * d; i++)
        m2b += ((double)X[i] - mb) * ((double)X[i] - mb);
    merge_moments(&s->n, &s->mean, &s->m2, nb, mb, m2b);
}

/* Agrees on the message of the rank holding the smallest `row` (LLONG_MAX: none). */
static husai_status agree_first(long long row, const char *msg, MPI_Comm comm) {
    long long first;
    HUSAI_MPI_CHECK(MPI_Allreduce(&row, &first, 1, MPI_LONG_LONG, MPI_MIN, comm));
    if (first == LLONG_MAX) return HUSAI_OK;
    return husai_mpi_agree(row == first ? husai_error(HUSAI_ERR_DATA, "%s", msg) : HUSAI_OK, comm);
}

husai_status husai_datacheck_scan_finish(const husai_datacheck_scan *s, const char *path, const char *name,
                                         MPI_Comm node, MPI_Comm comm) {
    husai_status st = agree_first(s->first_bad, s->bad_msg, comm);
    if (!st) st = agree_first(s->first_big, s->big_msg, comm);
    if (st) return st;
    /* The node's ranks hold disjoint shares of every row: merge them in rank order. */
    int size;
    MPI_Comm_size(node, &size);
    double mine[5] = {s->n, s->mean, s->m2, s->lo, s->hi};
    double *all = malloc((size_t)size * sizeof mine);
    st = husai_mpi_agree(all ? HUSAI_OK : husai_error(HUSAI_ERR_NOMEM, "out of memory checking the data"),
                         comm);
    if (st) return st;
    HUSAI_MPI_CHECK(MPI_Allgather(mine, 5, MPI_DOUBLE, all, 5, MPI_DOUBLE, node));
    double n = 0.0, mean = 0.0, m2 = 0.0, lo = INFINITY, hi = -INFINITY;
    for (int q = 0; q < size; q++) {
        merge_moments(&n, &mean, &m2, all[5 * q], all[5 * q + 1], all[5 * q + 2]);
        lo = fmin(lo, all[5 * q + 3]);
        hi = fmax(hi, all[5 * q + 4]);
    }
    free(all);
    const double var = n > 1.0 ? m2 / (n - 1.0) : 0.0;
    if (lo == hi)
        st = constant_error(lo, path, name);
    else if (var < HUSAI_DATA_MIN_VAR)
        st = low_variance_error(var, fmax(-lo, hi), path, name);
    /* Nodes merge in their own order, so a verdict at the threshold could differ: agree on one. */
    return husai_mpi_agree(st, comm);
}
