/* gather.h: collective assembly of per-task results on rank 0.
 * Every task of a group (e.g. one condition's seeds) contributes a payload of the same
 * size; each rank sends its own tasks' payloads in one MPI_Gatherv, and root reorders them
 * into group order, so the result does not depend on which rank trained which task.
 * defines: husai_gather_tasks */
#ifndef HUSAI_MPI_GATHER_H
#define HUSAI_MPI_GATHER_H

#include <mpi.h>
#include <stddef.h>

/* Collective over comm. The group has n_group tasks; task g runs on rank owner[g]. `local` holds
 * this rank's payloads (per_task elements of `elem`, elem_size bytes each), one per owned task in
 * increasing g. On root, `out` receives n_group payloads in group order; elsewhere out is unused.
 * Aborts the job on an MPI or allocation failure. */
void husai_gather_tasks(const void *local, size_t per_task, MPI_Datatype elem, size_t elem_size,
                        const int *owner, int n_group, void *out, int root, MPI_Comm comm);

#endif
