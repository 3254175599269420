/* dataset.h: the activation dataset, read once per job with parallel HDF5, held once per node.
 * The rows live in an MPI-3 shared-memory window per node (MPI_Comm_split_type SHARED), so a
 * node with 64 ranks holds one copy, not 64. Each node reads a contiguous slab of rows, split
 * among its ranks, with independent MPI-IO reads (float16/float64 converted to float32); node
 * leaders then exchange slabs (MPI_Allgatherv) so every node holds every row: the file is read
 * once per job. Shape, dtype and finiteness are validated, and (datacheck.h) that the path is a regular
 * file, the storage holds real data, the node can hold the window and the scale suits float32; every
 * rank returns the same verdict. A virtual dataset is opened by each rank with HDF5's default driver.
 * The rows read are fingerprinted (common/fingerprint.h) as they arrive.
 * defines: husai_dataset, husai_dataset_open, husai_dataset_read, husai_dataset_load_chunk,
 *          husai_dataset_stream_totals, husai_dataset_free */
#ifndef HUSAI_MPI_DATASET_H
#define HUSAI_MPI_DATASET_H

#include <mpi.h>
#include <stddef.h>

#include "common/chunks.h"
#include "common/fingerprint.h"
#include "common/nodeinfo.h"
#include "common/status.h"

typedef struct {
    const float *X; /* (n_rows, d_model), in the node's shared window: read-only */
    size_t n_rows;
    int d_model;
    char dtype[16];    /* dtype in the file: float16, float32 or float64 */
    double bytes_read; /* bytes this job read from the file, summed over nodes */
    double read_seconds;
    int n_nodes, node;      /* node count and this rank's node index */
    husai_node_info *nodes; /* (n_nodes) on every rank */
    int has_win;
    MPI_Win win; /* the node-shared window holding X */
    MPI_Comm node_comm, leader_comm;
    /* Streaming (husai_dataset_open_stream): X holds one chunk, rows [chunk_start, chunk_start + chunk_n)
     * of the file, and the file stays open. */
    int streaming;
    husai_chunks chunks;
    long loaded; /* chunk in X; -1 for none */
    size_t chunk_start, chunk_n;
    long long file_id, dset_id; /* HDF5 handles (hid_t) */
    size_t elem;                /* bytes per value in the file */
    double stream_bytes;        /* bytes this node has read while streaming */
    double stream_seconds;      /* time this rank spent reading its share of chunks */
    char path[4096], name[256];
    /* the dataset's model_name / hook_name attributes (husai import writes them; else the root group's),
     * "" when absent: provenance passed on to results.json and exported cfg.json */
    char model_name[256], hook_name[256];
    /* The data's identity (common/fingerprint.h), the same on every rank, rank count and read mode. A
     * streamed dataset gets it from one hashing pass over its chunks at open; each rank keeps the hash of
     * its share of each chunk (chunk_fp) and checks it on every later load, so a file that changes under a
     * running job is an error, not new data. fp_seconds: the longest any rank spent hashing (streamed: the
     * whole pass, reads included). */
    char fingerprint[HUSAI_FP_LEN];
    uint64_t *chunk_fp;
    int chunk_fp_known;
    double fp_seconds;
} husai_dataset;

/* Collective over comm: reads dataset `name` of the HDF5 file `path`. On error every rank gets the
 * same status and message (missing file, not a regular file, not HDF5, missing dataset, storage that
 * would read as the fill value, not 2-D, not float, fewer than 2 rows, more than the node's free shared
 * memory, constant data, the first row holding NaN/Inf, values out of float32 training's range). */
husai_status husai_dataset_read(husai_dataset *ds, const char *path, const char *name, MPI_Comm comm);

/* Collective over comm: husai_dataset_read when the dataset fits budget_bytes of float32 (0: no limit)
 * and chunk_rows is 0; otherwise opens it for streaming in chunks of chunk_rows (0: as many as the
 * budget holds; husai_chunks, order keyed by data_seed): each node then holds one chunk at a time in
 * a shared window and the file stays open. A streamed dataset is validated like a read one, except
 * that constant data is not refused; its fingerprint takes one pass over the chunks, which also finds
 * non-finite values before training. */
husai_status husai_dataset_open(husai_dataset *ds, const char *path, const char *name, double budget_bytes,
                                size_t chunk_rows, uint64_t data_seed, MPI_Comm comm);

/* Collective over the node (every rank of ds->node_comm): makes chunk i the content of X, reading it
 * once per node, each rank its share with independent MPI-IO reads. A no-op if chunk i is loaded. A
 * failed read, a NaN/Inf value or rows whose hash changed since the fingerprint pass end the job with
 * one line naming the rows. */
void husai_dataset_load_chunk(husai_dataset *ds, size_t i);

/* Collective over comm, after streaming: fills every node's bytes_read, the job's bytes_read and
 * read_seconds (the longest any rank spent reading its shares of chunks). */
void husai_dataset_stream_totals(husai_dataset *ds, MPI_Comm comm);

/* Collective over the communicator the dataset was read on: releases the window and communicators;
 * safe on a zeroed or freed dataset. */
void husai_dataset_free(husai_dataset *ds);

#endif
