/* datacheck.h: makes sure what husai trains on is the user's data. HDF5 reads the fill value, silently,
 * wherever a dataset has no stored values (chunks never written, an external raw file shorter than
 * declared, a virtual dataset region with no source), and a FIFO as the data path blocks open() forever;
 * these checks refuse such input with one line before any collective open or allocation. They also
 * refuse a node-shared window the node cannot hold (a failed allocation on one rank would leave the
 * others waiting inside MPI_Win_allocate_shared) and data whose scale float32 training cannot handle.
 * defines: husai_datacheck_path, husai_datacheck_storage, husai_datacheck_window, husai_datacheck_node_room,
 *          husai_datacheck_values, husai_datacheck_scan, husai_datacheck_scan_init,
 * husai_datacheck_scan_rows, husai_datacheck_scan_finish, HUSAI_DATA_MAX_ABS, HUSAI_DATA_MIN_VAR */
#ifndef HUSAI_MPI_DATACHECK_H
#define HUSAI_MPI_DATACHECK_H

#include <mpi.h>
#include <stddef.h>

#include "common/status.h"

/* Largest |value| accepted: measured, data scaled to |x| ~ 1e20 diverges at step 0 (squares pass
 * float32's 3.4e38), while 1e19 still trains like unscaled data. */
#define HUSAI_DATA_MAX_ABS 1e18
/* Smallest variance (over the flattened data) accepted: below it values are float32 subnormals or
 * nearly so, their squares underflow, and EV comes out as nonsense like -3.4e12. */
#define HUSAI_DATA_MIN_VAR 1e-30

/* Refuses a data path that exists but is not a regular file (FIFO, device, socket, directory), using
 * stat() only: a FIFO is never opened. A path that does not exist passes (the caller reports it). */
husai_status husai_datacheck_path(const char *path);

/* This rank alone, before the collective open: opens `path` with HDF5's default (serial) driver and
 * refuses dataset `name` if any of its values would read as the fill value instead of stored data:
 * chunks never written, contiguous storage never allocated, external raw files missing or shorter than
 * declared, virtual datasets with a missing source file or dataset, a source smaller than its mapping,
 * or regions no mapping covers (sources are checked the same way). Sets *is_virtual for a virtual
 * dataset, which parallel HDF5 1.10 cannot read through MPI-IO. A file or dataset that cannot be opened
 * passes: the collective open names that problem. */
husai_status husai_datacheck_storage(const char *path, const char *name, int *is_virtual);

/* Refuses a node-shared window of rows x d float32 values for dataset `name` in `path` that the node
 * cannot hold: within 64 MB of the free space of Open MPI's shared-memory backing directory (osc_sm's,
 * /dev/shm unless OMPI_MCA_osc_sm_backing_directory says otherwise) or of MemAvailable. */
husai_status husai_datacheck_window(size_t rows, size_t d, const char *path, const char *name);

/* Bytes a node-shared window can take on this node now, by the same measure: the smaller of that
 * directory's free space and MemAvailable, less the same slack; -1 when neither is known. */
double husai_datacheck_node_room(void);

/* Collective over comm: X holds at least rows [r0, r1) of a (rows, d) float32 copy of dataset `name`
 * (open as dset, an hid_t) in `path`, and the ranks' ranges cover every row exactly once. Refuses,
 * with the same message on every rank: a NaN/Inf (the first row; a float64 value beyond float32's
 * range is named as such), a value above HUSAI_DATA_MAX_ABS, or a variance below HUSAI_DATA_MIN_VAR
 * or constant data. */
husai_status husai_datacheck_values(const float *X, size_t r0, size_t r1, size_t d, long long dset,
                                    const char *path, const char *name, MPI_Comm comm);

/* The same judgement for streamed data, which is never in memory at once: each rank scans its share of
 * every chunk as it passes (husai_datacheck_scan_rows), and husai_datacheck_scan_finish judges the whole.
 * Mean and spread are merged chunk by chunk with the pairwise update of Chan, Golub and LeVeque, so
 * no sum of squares of large values cancels. */
typedef struct {
    long long first_bad, first_big;  /* first global row with a NaN/Inf, with |x| > HUSAI_DATA_MAX_ABS */
    char bad_msg[640], big_msg[640]; /* this rank's message for each (set with the row) */
    double lo, hi;                   /* smallest and largest value seen */
    double n, mean, m2;              /* values seen, their mean and sum of squared deviations */
} husai_datacheck_scan;

/* Starts an empty scan. */
void husai_datacheck_scan_init(husai_datacheck_scan *s);

/* Adds rows [row0, row0 + rows) of dataset `name` (open as dset) in `path`, held as float32 in X; after
 * the first non-finite row it only looks for earlier ones. Not collective. */
void husai_datacheck_scan_rows(husai_datacheck_scan *s, const float *X, size_t rows, size_t d, size_t row0,
                               long long dset, const char *path, const char *name);

/* Collective over node (whose ranks together scanned every row once) and then all of comm: the verdict
 * of husai_datacheck_values over the scanned rows, and constant data refused too, the same on every
 * rank. */
husai_status husai_datacheck_scan_finish(const husai_datacheck_scan *s, const char *path, const char *name,
                                         MPI_Comm node, MPI_Comm comm);

#endif
