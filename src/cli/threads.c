#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "cli/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/parse.h"
#include "mpi/mpicheck.h"

/* The count HUSAI_THREADS (else HUSAI_BLAS_THREADS) asks for, left at *threads if neither is set. */
static husai_status requested(int *threads) {
    const char *name = getenv("HUSAI_THREADS") ? "HUSAI_THREADS" : "HUSAI_BLAS_THREADS";
    const char *v = getenv(name);
    if (!v) return HUSAI_OK;
    long long t;
    if (husai_parse_int(name, v, 1, 4096, &t))
        return husai_error(HUSAI_ERR_ARG, "%s='%s' must be a whole number of threads per rank, 1 to 4096",
                           name, v);
    *threads = (int)t;
    return HUSAI_OK;
}

husai_status husai_threads_setup(MPI_Comm comm, int *threads) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    *threads = 1;
    /* agreed, so a rank with a different environment cannot leave the others in the reduction below */
    husai_status st = husai_mpi_agree(requested(threads), comm);
    if (st) return st;
    openblas_set_num_threads(1);
    omp_set_num_threads(*threads);
    /* mpirun binds each rank to one core by default, and threads sharing one core are slower than one
     * thread: say so, once, with the launcher options that give a rank its cores. */
    cpu_set_t set;
    int fewest = *threads;
    if (sched_getaffinity(0, sizeof set, &set) == 0) fewest = CPU_COUNT(&set);
    MPI_Allreduce(MPI_IN_PLACE, &fewest, 1, MPI_INT, MPI_MIN, comm);
    if (rank == 0 && fewest < *threads)
        fprintf(stderr,
                "husai: warning: HUSAI_THREADS=%d but a rank may run on only %d core(s); start ranks with "
                "`mpirun --bind-to none` or `--map-by slot:PE=%d` (srun: --cpus-per-task=%d)\n",
                *threads, fewest, *threads, *threads);
    return HUSAI_OK;
}
