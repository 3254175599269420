#include "mpi/gather.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mpi/mpicheck.h"

/* Message tags TAG_BASE + g: clear of the progress messages' tag (101), and unique per task, so each
 * receive matches its task whatever order the messages arrive in. */
#define TAG_BASE 1000

void husai_gather_tasks(const void *const *local, size_t count, MPI_Datatype elem, size_t elem_size,
                        const int *owner, int n_group, void *out, int root, MPI_Comm comm) {
    int rank, flag, *tag_ub = NULL;
    MPI_Comm_rank(comm, &rank);
    if (count > INT_MAX)
        husai_mpi_die("a task payload of %zu elements is too large for one MPI message", count);
    HUSAI_MPI_CHECK(MPI_Comm_get_attr(comm, MPI_TAG_UB, &tag_ub, &flag));
    if (flag && TAG_BASE + (long)n_group > (long)*tag_ub)
        husai_mpi_die("%d tasks in one group exceed this MPI's largest message tag (%d)", n_group, *tag_ub);
    const size_t bytes = count * elem_size;
    if (rank == root) {
        MPI_Request *req = malloc((size_t)(n_group > 0 ? n_group : 1) * sizeof *req);
        if (!req) husai_mpi_die("out of memory in gather");
        int n_req = 0;
        for (int g = 0; g < n_group; g++) {
            char *dst = (char *)out + (size_t)g * bytes;
            if (owner[g] == root)
                memcpy(dst, local[g], bytes);
            else
                HUSAI_MPI_CHECK(
                    MPI_Irecv(dst, (int)count, elem, owner[g], TAG_BASE + g, comm, &req[n_req++]));
        }
        HUSAI_MPI_CHECK(MPI_Waitall(n_req, req, MPI_STATUSES_IGNORE));
        free(req);
    } else {
        for (int g = 0; g < n_group; g++)
            if (owner[g] == rank)
                HUSAI_MPI_CHECK(MPI_Send(local[g], (int)count, elem, root, TAG_BASE + g, comm));
    }
}
