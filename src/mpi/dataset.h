/* dataset.h: the activation dataset, read once per job with parallel HDF5, held once per node.
 * The rows live in an MPI-3 shared-memory window per node (MPI_Comm_split_type SHARED), so a
 * node with 64 ranks holds one copy, not 64. Each node reads a contiguous slab of rows, split
 * among its ranks, with independent MPI-IO reads (float16/float64 converted to float32); node
 * leaders then exchange slabs (MPI_Allgatherv) so every node holds every row: the file is read
 * once per job. Shape, dtype and finiteness are validated and every rank returns the same verdict.
 * defines: husai_dataset, husai_dataset_read, husai_dataset_free */
#ifndef HUSAI_MPI_DATASET_H
#define HUSAI_MPI_DATASET_H

#include <mpi.h>
#include <stddef.h>

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
} husai_dataset;

/* Collective over comm: reads dataset `name` of the HDF5 file `path`. On error every rank gets the
 * same status and message (missing file, not HDF5, missing dataset, not 2-D, not float, fewer than
 * 2 rows, constant data, the first row holding NaN/Inf). */
husai_status husai_dataset_read(husai_dataset *ds, const char *path, const char *name, MPI_Comm comm);

/* Collective over the communicator the dataset was read on: releases the window and communicators;
 * safe on a zeroed or freed dataset. */
void husai_dataset_free(husai_dataset *ds);

#endif
