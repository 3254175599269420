/* bench_stop.c: the cost of looking for a stop at every optimizer step (husai_stop_requested: the
 * signal flag plus one MPI_Test of the stop channel's posted receive), and the time a stop started on
 * the last rank takes to reach rank 0. Run under mpirun with 2 or more ranks:
 *   mpirun -np 2 bench_stop [CALLS] */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpi/stop.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const long calls = argc > 1 ? atol(argv[1]) : 2000000;
    husai_stop_connect(MPI_COMM_WORLD);
    /* No stop pending: the price every step pays. */
    long seen = 0;
    const double t0 = MPI_Wtime();
    for (long i = 0; i < calls; i++)
        seen += husai_stop_requested();
    const double per_call = (MPI_Wtime() - t0) / (double)calls;
    double worst = per_call;
    MPI_Reduce(&per_call, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    /* A stop from the last rank: rank 0 polls as a training loop would until it hears it. */
    MPI_Barrier(MPI_COMM_WORLD);
    const double t1 = MPI_Wtime();
    if (rank == size - 1 && size > 1) husai_stop_request();
    long polls = 0;
    if (rank == 0 && size > 1)
        while (!husai_stop_requested())
            polls++;
    const double reach = MPI_Wtime() - t1;
    if (rank == 0)
        printf("stop check: %.0f ns per call (worst rank, %ld calls, %ld stops seen); a stop from rank %d "
               "reached "
               "rank 0 after %.1f us (%ld polls)\n",
               worst * 1e9, calls, seen, size - 1, reach * 1e6, polls);
    husai_stop_disconnect();
    MPI_Finalize();
    return seen != 0;
}
