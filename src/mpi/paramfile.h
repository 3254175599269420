/* paramfile.h: the ranks' own writes and reads of trained parameters in results.h5.
 * Rank 0 creates a condition's parameter datasets (report/results.h: contiguous, allocated, their byte
 * offsets known); every rank then opens the same file through MPI-IO and writes the rows of the seeds it
 * trained at those offsets, independently, as each task finishes, so no rank ever holds another rank's
 * parameters and rank 0's memory does not grow with the number of seeds. After a sync (MPI-IO's
 * sync-barrier-sync, which makes every rank's writes visible to every other, on any node) ranks read
 * decoders back from the file for the PWMCC window and the consensus features.
 * defines: husai_param_file, husai_param_file_open, husai_param_file_write, husai_param_file_read,
 *          husai_param_file_sync, husai_param_file_close */
#ifndef HUSAI_MPI_PARAMFILE_H
#define HUSAI_MPI_PARAMFILE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    MPI_File fh;
    MPI_Comm comm;
    int open;
    char path[4300]; /* for messages */
} husai_param_file;

/* Collective over comm: opens path (an existing file, on a file system every rank sees) for independent
 * reads and writes. Returns the agreed status, naming the file and MPI's reason, on every rank. */
husai_status husai_param_file_open(husai_param_file *pf, MPI_Comm comm, const char *path);

/* This rank only: writes n floats at byte offset `offset` (in pieces of at most 1 GiB, as MPI counts are
 * ints). Returns an I/O error naming the file and MPI's reason, or a short write. */
husai_status husai_param_file_write(husai_param_file *pf, uint64_t offset, const float *data, size_t n);

/* This rank only: reads n floats at byte offset `offset`; an I/O error names the file (a short read too). */
husai_status husai_param_file_read(husai_param_file *pf, uint64_t offset, float *out, size_t n);

/* Collective: every rank's writes so far are on the file and visible to every rank's reads after it. */
void husai_param_file_sync(husai_param_file *pf);

/* Collective: closes the file (no-op if not open); returns the agreed status. */
husai_status husai_param_file_close(husai_param_file *pf);

#endif
