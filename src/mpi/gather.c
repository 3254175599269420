#include "mpi/gather.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/mpicheck.h"

void husai_gather_tasks(const void *local, size_t per_task, MPI_Datatype elem, size_t elem_size,
                        const int *owner, int n_group, void *out, int root, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (per_task > INT_MAX)
        husai_mpi_die("a task payload of %zu elements is too large for one MPI type", per_task);
    /* One payload is one element of a derived type, so counts are task counts. */
    MPI_Datatype payload;
    HUSAI_MPI_CHECK(MPI_Type_contiguous((int)per_task, elem, &payload));
    HUSAI_MPI_CHECK(MPI_Type_commit(&payload));
    int *counts = calloc((size_t)size, sizeof(int)), *displs = calloc((size_t)size, sizeof(int));
    if (!counts || !displs) husai_mpi_die("out of memory in gather");
    for (int g = 0; g < n_group; g++)
        counts[owner[g]]++;
    for (int q = 1; q < size; q++)
        displs[q] = displs[q - 1] + counts[q - 1];
    const size_t bytes = per_task * elem_size;
    char *staging = NULL;
    if (rank == root) {
        staging = malloc(bytes * (size_t)(n_group > 0 ? n_group : 1));
        if (!staging) husai_mpi_die("out of memory gathering %d task payloads of %zu bytes", n_group, bytes);
    }
    HUSAI_MPI_CHECK(MPI_Gatherv(local, counts[rank], payload, staging, counts, displs, payload, root, comm));
    if (rank == root) {
        /* Staging is rank-major; within a rank, tasks arrive in increasing g. */
        int *next = calloc((size_t)size, sizeof(int));
        if (!next) husai_mpi_die("out of memory in gather");
        for (int g = 0; g < n_group; g++) {
            const int q = owner[g];
            memcpy((char *)out + (size_t)g * bytes, staging + (size_t)(displs[q] + next[q]) * bytes, bytes);
            next[q]++;
        }
        free(next);
    }
    free(staging);
    free(counts);
    free(displs);
    MPI_Type_free(&payload);
}
