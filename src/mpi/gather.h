/* gather.h: collective assembly of per-task results on rank 0.
 * Every task of a group (e.g. one condition's seeds) contributes a payload of the same size; each
 * payload travels by itself from the rank that trained it straight into its place in root's array, in
 * group order, so the result does not depend on which rank trained which task, and neither side
 * copies it into a staging buffer (at 64 seeds x 768 x 16384, one such copy is 3.2 GB on root).
 * defines: husai_gather_tasks */
#ifndef HUSAI_MPI_GATHER_H
#define HUSAI_MPI_GATHER_H

#include <mpi.h>
#include <stddef.h>

/* Collective over comm. The group has n_group tasks; task g runs on rank owner[g], where local[g]
 * points at its payload of `count` elements of `elem` (elem_size bytes each); the other entries of
 * local are unused. On root, `out` receives payload g at element g * count; elsewhere out is unused.
 * Aborts the job on an MPI or allocation failure. */
void husai_gather_tasks(const void *const *local, size_t count, MPI_Datatype elem, size_t elem_size,
                        const int *owner, int n_group, void *out, int root, MPI_Comm comm);

#endif
