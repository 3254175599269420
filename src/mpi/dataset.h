/* dataset.h: the activation dataset, read once per job with parallel HDF5 and shared.
 * Each rank reads a disjoint block of rows collectively through MPI-IO, converting
 * float16/float64 to float32, then the blocks are exchanged (MPI_Allgatherv) so every
 * rank holds all rows: the file is read once per job, not once per rank. Shape, dtype and
 * finiteness are validated and every rank returns the same verdict.
 * defines: husai_dataset, husai_dataset_read, husai_dataset_free */
#ifndef HUSAI_MPI_DATASET_H
#define HUSAI_MPI_DATASET_H

#include <mpi.h>
#include <stddef.h>

#include "common/status.h"

typedef struct {
    float *X; /* (n_rows, d_model), owned */
    size_t n_rows;
    int d_model;
    char dtype[16];    /* dtype in the file: float16, float32 or float64 */
    double bytes_read; /* bytes this job read from the file, summed over ranks */
    double read_seconds;
} husai_dataset;

/* Collective over comm: reads dataset `name` of the HDF5 file `path`. On error every rank gets the
 * same status and message (missing file, not HDF5, missing dataset, not 2-D, not float, zero rows,
 * first row holding NaN/Inf). */
husai_status husai_dataset_read(husai_dataset *ds, const char *path, const char *name, MPI_Comm comm);

/* Releases the rows; safe on a zeroed or freed dataset. */
void husai_dataset_free(husai_dataset *ds);

#endif
