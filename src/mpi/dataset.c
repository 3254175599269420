#define _POSIX_C_SOURCE 200809L
#include "mpi/dataset.h"

#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpi/datacheck.h"
#include "mpi/mpicheck.h"

/* Checks everything a rank can check alone, before any collective HDF5 call. */
static husai_status precheck(const char *path) {
    husai_status st = husai_datacheck_path(path); /* before anything opens it: a FIFO would block */
    if (st) return st;
    if (access(path, R_OK) != 0)
        return husai_error(HUSAI_ERR_IO, "cannot read data file '%s': %s", path, strerror(errno));
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) return husai_error(HUSAI_ERR_DATA, "data file '%s' is not an HDF5 file", path);
    return HUSAI_OK;
}

/* Opens the dataset and validates its shape and type; fills rows/cols/dtype. */
static husai_status open_and_check(hid_t file, const char *path, const char *name, hid_t *dset,
                                   hsize_t dims[2], char *dtype, size_t *elem_size) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return husai_error(HUSAI_ERR_DATA, "dataset '%s' not found in '%s'", name, path);
    *dset = H5Dopen2(file, name, H5P_DEFAULT);
    if (*dset < 0) return husai_error(HUSAI_ERR_DATA, "'%s' in '%s' is not a readable dataset", name, path);
    hid_t type = H5Dget_type(*dset), space = H5Dget_space(*dset);
    husai_status st = HUSAI_OK;
    const H5T_class_t cls = H5Tget_class(type);
    const size_t size = H5Tget_size(type);
    const int ndims = H5Sget_simple_extent_ndims(space);
    if (cls != H5T_FLOAT || (size != 2 && size != 4 && size != 8)) {
        const char *what = cls == H5T_INTEGER ? "an integer" : cls == H5T_STRING ? "a string" : "a non-float";
        if (cls == H5T_FLOAT) what = "an unsupported float";
        st =
            husai_error(HUSAI_ERR_DATA,
                        "dataset '%s' in '%s' has %s dtype (%zu bytes); expected float16, float32 or float64",
                        name, path, what, size);
    } else if (ndims != 2) {
        st = husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' is %d-D; expected 2-D [rows, d_model]", name,
                         path, ndims);
    } else {
        H5Sget_simple_extent_dims(space, dims, NULL);
        snprintf(dtype, 16, "float%zu", size * 8);
        *elem_size = size;
        if (dims[0] == 0)
            st = husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' has zero rows", name, path);
        else if (dims[0] < 2)
            st = husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' has 1 row; at least 2 are needed for EV",
                             name, path);
        else if (dims[1] == 0 || dims[1] > INT_MAX)
            st = husai_error(HUSAI_ERR_DATA, "dataset '%s' in '%s' has %llu columns", name, path,
                             (unsigned long long)dims[1]);
        else if (dims[0] > (hsize_t)INT_MAX)
            st = husai_error(HUSAI_ERR_DATA, "dataset '%s' has %llu rows; at most %d supported", name,
                             (unsigned long long)dims[0], INT_MAX);
    }
    H5Tclose(type);
    H5Sclose(space);
    return st;
}

/* String attribute `attr` of the dataset, or failing that of the file's root group, into out (cap
 * bytes, truncated); "" when neither has it as a string. Every rank reads the same metadata. */
static void read_label(hid_t file, hid_t dset, const char *attr, char *out, size_t cap) {
    out[0] = '\0';
    const hid_t locs[2] = {dset, file};
    for (int i = 0; i < 2 && !out[0]; i++) {
        if (H5Aexists(locs[i], attr) <= 0) continue;
        hid_t a = H5Aopen(locs[i], attr, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
        if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_cset(mt, H5Tget_cset(t)); /* HDF5 converts no string between ASCII and UTF-8 */
            if (H5Tis_variable_str(t) > 0) { /* h5py's str attributes */
                char *v = NULL;
                H5Tset_size(mt, H5T_VARIABLE);
                if (H5Aread(a, mt, &v) >= 0 && v) snprintf(out, cap, "%s", v);
                if (v) H5free_memory(v);
            } else {
                char *v = calloc(H5Tget_size(t) + 1, 1);
                H5Tset_size(mt, H5Tget_size(t) + 1);
                if (v && H5Aread(a, mt, v) >= 0) snprintf(out, cap, "%s", v);
                free(v);
            }
            H5Tclose(mt);
        }
        if (t >= 0) H5Tclose(t);
        if (a >= 0) H5Aclose(a);
    }
}

/* Node layout: a shared-memory communicator per node, one leader per node, node index and count,
 * and every node's host name and rank count on every rank. */
static void node_layout(husai_dataset *ds, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    HUSAI_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &ds->node_comm));
    int node_rank, node_size;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    MPI_Comm_size(ds->node_comm, &node_size);
    HUSAI_MPI_CHECK(MPI_Comm_split(comm, node_rank == 0 ? 0 : MPI_UNDEFINED, rank, &ds->leader_comm));
    int info[2] = {0, 0};
    if (node_rank == 0) {
        MPI_Comm_rank(ds->leader_comm, &info[0]);
        MPI_Comm_size(ds->leader_comm, &info[1]);
    }
    HUSAI_MPI_CHECK(MPI_Bcast(info, 2, MPI_INT, 0, ds->node_comm));
    ds->node = info[0];
    ds->n_nodes = info[1];
    ds->nodes = calloc((size_t)ds->n_nodes, sizeof(husai_node_info));
    if (!ds->nodes) husai_mpi_die("out of memory for %d node records", ds->n_nodes);
    if (node_rank == 0) {
        husai_node_info mine = {.ranks = node_size};
        char host[MPI_MAX_PROCESSOR_NAME];
        int len;
        MPI_Get_processor_name(host, &len);
        snprintf(mine.host, sizeof mine.host, "%.63s", host);
        HUSAI_MPI_CHECK(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, ds->nodes, (int)sizeof mine,
                                      MPI_BYTE, ds->leader_comm));
    }
    HUSAI_MPI_CHECK(MPI_Bcast(ds->nodes, (int)(sizeof(husai_node_info) * (size_t)ds->n_nodes), MPI_BYTE, 0,
                              ds->node_comm));
}

/* Row range [*a, *b) of node `node` of n_nodes, then of local rank lr of ls within it. */
static void slab(size_t n, int node, int n_nodes, size_t *a, size_t *b) {
    *a = n * (size_t)node / (size_t)n_nodes;
    *b = n * (size_t)(node + 1) / (size_t)n_nodes;
}

/* Collective: checks and opens the file with parallel HDF5, opens and validates the dataset, fills
 * n_rows, d_model and dtype and lays out the nodes. Every rank returns the same status; on error the
 * handles it opened are closed. */
static husai_status open_common(husai_dataset *ds, const char *path, const char *name, MPI_Comm comm,
                                hid_t *file_out, hid_t *dset_out, size_t *elem) {
    *file_out = *dset_out = -1;
    husai_status st = husai_mpi_agree(precheck(path), comm);
    if (st) return st;
    /* Storage checks walk chunk indexes and source files: once, on rank 0, before anything collective. */
    int rank, is_virtual = 0;
    MPI_Comm_rank(comm, &rank);
    st = husai_mpi_agree(rank == 0 ? husai_datacheck_storage(path, name, &is_virtual) : HUSAI_OK, comm);
    if (st) return st;
    HUSAI_MPI_CHECK(MPI_Bcast(&is_virtual, 1, MPI_INT, 0, comm));
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    /* Parallel HDF5 1.10 cannot read a virtual dataset through MPI-IO: every rank opens such a file on
     * its own with the default driver (reads are independent anyway). */
    if (!is_virtual) H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    st = file < 0 ? husai_error(HUSAI_ERR_DATA,
                                "cannot open '%s' with parallel HDF5 (truncated or corrupt file?)", path)
                  : HUSAI_OK;
    st = husai_mpi_agree(st, comm);
    if (st) {
        if (file >= 0) H5Fclose(file);
        return st;
    }
    hid_t dset = -1;
    hsize_t dims[2] = {0, 0};
    st = husai_mpi_agree(open_and_check(file, path, name, &dset, dims, ds->dtype, elem), comm);
    if (st) {
        if (dset >= 0) H5Dclose(dset);
        H5Fclose(file);
        return st;
    }
    ds->n_rows = (size_t)dims[0];
    ds->d_model = (int)dims[1];
    read_label(file, dset, "model_name", ds->model_name, sizeof ds->model_name);
    read_label(file, dset, "hook_name", ds->hook_name, sizeof ds->hook_name);
    node_layout(ds, comm);
    *file_out = file;
    *dset_out = dset;
    return HUSAI_OK;
}

/* Collective: a node-shared window of rows x d_model floats (local rank 0 owns the memory, the others
 * map it); X points at it on every rank. */
static husai_status alloc_window(husai_dataset *ds, size_t rows, MPI_Comm comm) {
    int node_rank;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    const size_t d = (size_t)ds->d_model;
    /* A node leader whose allocation fails leaves its node's other ranks inside the collective call:
     * check that the node can hold the window, and agree on it, first. */
    husai_status st = husai_mpi_agree(
        node_rank == 0 ? husai_datacheck_window(rows, d, ds->path, ds->name) : HUSAI_OK, comm);
    if (st) return st;
    const MPI_Aint bytes = node_rank == 0 ? (MPI_Aint)(rows * d * sizeof(float)) : 0;
    float *base = NULL, *X = NULL;
    MPI_Comm_set_errhandler(ds->node_comm, MPI_ERRORS_RETURN);
    int rc = MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, ds->node_comm, &base, &ds->win);
    st = husai_mpi_agree(
        rc == MPI_SUCCESS
            ? HUSAI_OK
            : husai_error(HUSAI_ERR_NOMEM, "cannot hold %zu x %zu floats in shared memory", rows, d),
        comm);
    if (st) return st;
    ds->has_win = 1;
    MPI_Aint qsize;
    int disp;
    HUSAI_MPI_CHECK(MPI_Win_shared_query(ds->win, 0, &qsize, &disp, &X));
    ds->X = X;
    return HUSAI_OK;
}

/* Independent read of rows [r0, r1) into dst (converted to float32); an empty range still takes part
 * in nothing collective, so any subset of ranks may call it. */
static herr_t read_rows(hid_t dset, size_t r0, size_t r1, size_t d, float *dst) {
    hsize_t start[2] = {r0, 0}, count[2] = {r1 - r0, d};
    hsize_t mdims[2] = {count[0] > 0 ? count[0] : 1, d};
    hid_t fspace = H5Dget_space(dset), mspace = H5Screate_simple(2, mdims, NULL);
    if (count[0] > 0) {
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    } else {
        /* Not H5S_NULL: HDF5 1.10.8 would then write/read element (0,0); select none on both sides. */
        H5Sselect_none(fspace);
        H5Sselect_none(mspace);
    }
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT);
    float dummy[1];
    herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, count[0] > 0 ? dst : dummy);
    H5Pclose(dxpl);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

static husai_status setup_stream(husai_dataset *ds, const char *path, const char *name, hid_t file,
                                 hid_t dset, size_t elem, size_t chunk_rows, uint64_t data_seed,
                                 MPI_Comm comm);

/* Collective over comm, on which every row was hashed by exactly one rank: sums the ranks' shares
 * (mine) into ds->fingerprint; ds->fp_seconds becomes the longest any rank took (seconds). */
static void fingerprint_finish(husai_dataset *ds, uint64_t mine, double seconds, MPI_Comm comm) {
    uint64_t sum;
    HUSAI_MPI_CHECK(MPI_Allreduce(&mine, &sum, 1, MPI_UINT64_T, MPI_SUM, comm));
    HUSAI_MPI_CHECK(MPI_Allreduce(&seconds, &ds->fp_seconds, 1, MPI_DOUBLE, MPI_MAX, comm));
    husai_fp_format(sum, ds->n_rows, (uint64_t)ds->d_model, ds->dtype, ds->fingerprint);
}

husai_status husai_dataset_read(husai_dataset *ds, const char *path, const char *name, MPI_Comm comm) {
    return husai_dataset_open(ds, path, name, 0.0, 0, 0, comm);
}

husai_status husai_dataset_open(husai_dataset *ds, const char *path, const char *name, double budget_bytes,
                                size_t chunk_rows, uint64_t data_seed, MPI_Comm comm) {
    memset(ds, 0, sizeof *ds);
    ds->node_comm = ds->leader_comm = MPI_COMM_NULL;
    ds->file_id = ds->dset_id = -1;
    ds->loaded = -1;
    snprintf(ds->path, sizeof ds->path, "%s", path);
    snprintf(ds->name, sizeof ds->name, "%s", name);
    const double t0 = MPI_Wtime();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* we report errors ourselves, in one line */

    hid_t file = -1, dset = -1;
    size_t elem = 0;
    husai_status st = open_common(ds, path, name, comm, &file, &dset, &elem);
    if (st) goto done;
    const size_t n = ds->n_rows, d = (size_t)ds->d_model;
    const double row_bytes = (double)d * sizeof(float);
    if (chunk_rows > 0 || (budget_bytes > 0.0 && (double)n * row_bytes > budget_bytes)) {
        /* Every rank computes the same verdict from the same numbers: no agreement needed. */
        if (chunk_rows == 0) chunk_rows = (size_t)(budget_bytes / row_bytes);
        if (chunk_rows < 1) {
            st = husai_error(HUSAI_ERR_ARG, "data.memory_budget_mb = %g cannot hold one row of %zu floats",
                             budget_bytes / 1e6, d);
            goto done;
        }
        if (budget_bytes > 0.0 && (double)chunk_rows * row_bytes > budget_bytes) {
            st = husai_error(HUSAI_ERR_ARG,
                             "data.chunk_rows = %zu needs %.1f MB, over data.memory_budget_mb = %g",
                             chunk_rows, (double)chunk_rows * row_bytes / 1e6, budget_bytes / 1e6);
            goto done;
        }
        st = setup_stream(ds, path, name, file, dset, elem, chunk_rows, data_seed, comm);
        if (st) goto done;
        return HUSAI_OK; /* the dataset keeps the file open */
    }
    int node_rank, node_size;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    MPI_Comm_size(ds->node_comm, &node_size);
    if ((st = alloc_window(ds, n, comm))) goto done;
    float *X = (float *)ds->X;

    /* This node's slab, split among its ranks. Each rank reads its contiguous block with an
     * independent MPI-IO read: a collective read lets Open MPI's I/O layer pick one aggregator for
     * the whole file (measured: one rank on one node read everything and shipped it across the
     * network), while independent reads make each node read exactly its slab, once. They also read
     * chunked datasets with unwritten chunks, on which HDF5 1.10's collective path fails. */
    size_t s0, s1;
    slab(n, ds->node, ds->n_nodes, &s0, &s1);
    const size_t r0 = s0 + (s1 - s0) * (size_t)node_rank / (size_t)node_size;
    const size_t r1 = s0 + (s1 - s0) * (size_t)(node_rank + 1) / (size_t)node_size;
    HUSAI_MPI_CHECK(MPI_Win_fence(0, ds->win));
    const herr_t rc = read_rows(dset, r0, r1, d, X + r0 * d);
    HUSAI_MPI_CHECK(MPI_Win_fence(0, ds->win));
    st = husai_mpi_agree(
        rc < 0 ? husai_error(HUSAI_ERR_DATA,
                             "reading rows %zu..%zu of '%s' in '%s' failed (truncated or corrupt file?)", r0,
                             r1, name, path)
               : HUSAI_OK,
        comm);
    if (st) goto done;
    const double t_fp = MPI_Wtime();
    const uint64_t fp_mine = husai_fp_rows(X + r0 * d, d * sizeof(float), r0, r1 - r0);
    fingerprint_finish(ds, fp_mine, MPI_Wtime() - t_fp, comm);

    /* NaN/Inf (the first row anywhere), values too large or too close to zero for float32 training. */
    if ((st = husai_datacheck_values(X, r0, r1, d, dset, path, name, comm))) goto done;

    /* Node leaders exchange slabs; counts are in rows (a derived type) so they stay small integers
     * however large d_model is. */
    if (node_rank == 0) {
        MPI_Datatype row;
        HUSAI_MPI_CHECK(MPI_Type_contiguous((int)d, MPI_FLOAT, &row));
        HUSAI_MPI_CHECK(MPI_Type_commit(&row));
        int *counts = malloc((size_t)ds->n_nodes * sizeof(int)),
            *displs = malloc((size_t)ds->n_nodes * sizeof(int));
        if (!counts || !displs) husai_mpi_die("out of memory for %d gather counts", ds->n_nodes);
        for (int q = 0; q < ds->n_nodes; q++) {
            size_t a, b;
            slab(n, q, ds->n_nodes, &a, &b);
            counts[q] = (int)(b - a);
            displs[q] = (int)a;
        }
        HUSAI_MPI_CHECK(
            MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, X, counts, displs, row, ds->leader_comm));
        MPI_Type_free(&row);
        free(counts);
        free(displs);
    }
    HUSAI_MPI_CHECK(MPI_Win_fence(0, ds->win));
    for (int q = 0; q < ds->n_nodes; q++) {
        size_t a, b;
        slab(n, q, ds->n_nodes, &a, &b);
        ds->nodes[q].bytes_read = (double)(b - a) * (double)d * (double)elem;
        ds->nodes[q].bytes_held = (double)n * (double)d * sizeof(float);
    }

    ds->bytes_read = (double)n * (double)d * (double)elem;
    ds->read_seconds = MPI_Wtime() - t0;
done:
    if (!ds->streaming) {
        if (dset >= 0) H5Dclose(dset);
        if (file >= 0) H5Fclose(file);
    }
    if (st) husai_dataset_free(ds);
    return st;
}

void husai_dataset_free(husai_dataset *ds) {
    if (!ds) return;
    if (ds->streaming) {
        if (ds->dset_id >= 0) H5Dclose((hid_t)ds->dset_id);
        if (ds->file_id >= 0) H5Fclose((hid_t)ds->file_id);
    }
    if (ds->has_win) MPI_Win_free(&ds->win);
    if (ds->leader_comm != MPI_COMM_NULL && ds->leader_comm != 0) MPI_Comm_free(&ds->leader_comm);
    if (ds->node_comm != MPI_COMM_NULL && ds->node_comm != 0) MPI_Comm_free(&ds->node_comm);
    free(ds->nodes);
    free(ds->chunk_fp);
    memset(ds, 0, sizeof *ds);
    ds->node_comm = ds->leader_comm = MPI_COMM_NULL;
}

/* Streaming set-up after open_common: the dataset takes over the file handles, even on error (then
 * freed by the caller's cleanup through husai_dataset_free). */
static husai_status setup_stream(husai_dataset *ds, const char *path, const char *name, hid_t file,
                                 hid_t dset, size_t elem, size_t chunk_rows, uint64_t data_seed,
                                 MPI_Comm comm) {
    ds->streaming = 1;
    ds->file_id = file;
    ds->dset_id = dset;
    ds->elem = elem;
    snprintf(ds->path, sizeof ds->path, "%s", path);
    snprintf(ds->name, sizeof ds->name, "%s", name);
    husai_status st = husai_chunks_make(&ds->chunks, ds->n_rows, chunk_rows, data_seed);
    if (!st) st = alloc_window(ds, ds->chunks.chunk_rows, comm);
    if (st) return st;
    for (int q = 0; q < ds->n_nodes; q++) {
        ds->nodes[q].bytes_held = (double)ds->chunks.chunk_rows * ds->d_model * sizeof(float);
        ds->nodes[q].bytes_read = 0.0; /* counted as chunks load */
    }
    ds->chunk_fp = calloc(ds->chunks.n_chunks, sizeof *ds->chunk_fp);
    st = husai_mpi_agree(ds->chunk_fp ? HUSAI_OK
                                      : husai_error(HUSAI_ERR_NOMEM, "out of memory for %zu chunk hashes",
                                                    ds->chunks.n_chunks),
                         comm);
    if (st) return st;
    /* The fingerprint needs every row before training (--resume compares it first), so each node reads
     * each chunk once now; these reads count in stream_bytes like any other (they are real reads).
     * The same pass judges the values as the in-memory path does (NaN/Inf, scale, variance, constant),
     * so a streamed run refuses what an in-memory run refuses, before any training. */
    const double t0 = MPI_Wtime();
    uint64_t mine = 0;
    husai_datacheck_scan scan;
    husai_datacheck_scan_init(&scan);
    int node_rank, node_size;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    MPI_Comm_size(ds->node_comm, &node_size);
    for (size_t i = 0; i < ds->chunks.n_chunks; i++) {
        husai_dataset_load_chunk(ds, i);
        mine += ds->chunk_fp[i];
        size_t a, b;
        husai_chunks_range(&ds->chunks, i, &a, &b);
        const size_t n = b - a, r0 = n * (size_t)node_rank / (size_t)node_size,
                     r1 = n * (size_t)(node_rank + 1) / (size_t)node_size, d = (size_t)ds->d_model;
        husai_datacheck_scan_rows(&scan, (const float *)ds->X + r0 * d, r1 - r0, d, a + r0, ds->dset_id, path,
                                  name);
    }
    ds->chunk_fp_known = 1;
    fingerprint_finish(ds, mine, MPI_Wtime() - t0, ds->node_comm); /* each node hashed every row */
    return husai_datacheck_scan_finish(&scan, path, name, ds->node_comm, comm);
}

void husai_dataset_load_chunk(husai_dataset *ds, size_t i) {
    if (ds->loaded == (long)i) return;
    int node_rank, node_size;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    MPI_Comm_size(ds->node_comm, &node_size);
    size_t a, b;
    husai_chunks_range(&ds->chunks, i, &a, &b);
    const size_t d = (size_t)ds->d_model, n = b - a;
    const size_t r0 = n * (size_t)node_rank / (size_t)node_size,
                 r1 = n * (size_t)(node_rank + 1) / (size_t)node_size;
    float *X = (float *)ds->X;
    HUSAI_MPI_CHECK(MPI_Win_fence(0, ds->win)); /* every rank of the node is done with the old chunk */
    const double t0 = MPI_Wtime();
    if (read_rows((hid_t)ds->dset_id, a + r0, a + r1, d, X + r0 * d) < 0)
        husai_mpi_die("reading rows %zu..%zu of '%s' in '%s' failed (truncated or corrupt file?)", a + r0,
                      a + r1, ds->name, ds->path);
    /* Only the read itself is timed: fence waits measure other ranks' training, not the file. */
    ds->stream_seconds += MPI_Wtime() - t0;
    /* The rows' hash against the fingerprint pass's; agreed on the node so that one rank reports it. */
    const uint64_t h = husai_fp_rows(X + r0 * d, d * sizeof(float), a + r0, r1 - r0);
    int changed = ds->chunk_fp_known && h != ds->chunk_fp[i], any_changed;
    if (!ds->chunk_fp_known) ds->chunk_fp[i] = h;
    HUSAI_MPI_CHECK(MPI_Allreduce(&changed, &any_changed, 1, MPI_INT, MPI_MAX, ds->node_comm));
    if (any_changed && node_rank == 0)
        husai_mpi_die("data file '%s' changed during the run: rows %zu..%zu of '%s' differ from what the run "
                      "read at its start (fingerprint %s)",
                      ds->path, a, b, ds->name, ds->fingerprint);
    if (any_changed) /* the node's rank 0 is ending the job */
        HUSAI_MPI_CHECK(MPI_Barrier(ds->node_comm));
    /* The start-up pass judges the values itself (one agreed line, float64 overflow named); later loads
     * of a file that changed were caught just above, so this check is a last line of defence. */
    long long bad = LLONG_MAX;
    for (size_t r = r0; r < r1 && bad == LLONG_MAX && ds->chunk_fp_known; r++)
        for (size_t c = 0; c < d; c++)
            if (!isfinite(X[r * d + c])) {
                bad = (long long)(a + r);
                break;
            }
    HUSAI_MPI_CHECK(MPI_Win_fence(0, ds->win));
    long long first_bad;
    HUSAI_MPI_CHECK(MPI_Allreduce(&bad, &first_bad, 1, MPI_LONG_LONG, MPI_MIN, ds->node_comm));
    if (first_bad != LLONG_MAX)
        husai_mpi_die("dataset '%s' in '%s' has a NaN or Inf value in row %lld (0-based)", ds->name, ds->path,
                      first_bad);
    ds->loaded = (long)i;
    ds->chunk_start = a;
    ds->chunk_n = n;
    ds->stream_bytes += (double)n * (double)d * (double)ds->elem;
}

void husai_dataset_stream_totals(husai_dataset *ds, MPI_Comm comm) {
    int node_rank;
    MPI_Comm_rank(ds->node_comm, &node_rank);
    double *per_node = malloc((size_t)ds->n_nodes * sizeof(double));
    if (!per_node) husai_mpi_die("out of memory for %d node totals", ds->n_nodes);
    if (node_rank == 0) /* each node's leader counted what its node read */
        HUSAI_MPI_CHECK(
            MPI_Allgather(&ds->stream_bytes, 1, MPI_DOUBLE, per_node, 1, MPI_DOUBLE, ds->leader_comm));
    HUSAI_MPI_CHECK(MPI_Bcast(per_node, ds->n_nodes, MPI_DOUBLE, 0, ds->node_comm));
    ds->bytes_read = 0.0;
    for (int q = 0; q < ds->n_nodes; q++) {
        ds->nodes[q].bytes_read = per_node[q];
        ds->bytes_read += per_node[q];
    }
    free(per_node);
    HUSAI_MPI_CHECK(MPI_Allreduce(&ds->stream_seconds, &ds->read_seconds, 1, MPI_DOUBLE, MPI_MAX, comm));
}
