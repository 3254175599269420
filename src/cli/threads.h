/* threads.h: how many threads a husai process uses, from the environment. HUSAI_THREADS (or its
 * former name HUSAI_BLAS_THREADS) sets the OpenMP threads that split each SAE's step and the pair
 * metrics; OpenBLAS always runs one thread inside them. Unset means 1: ranks are the first way to use
 * cores, and a rank must not take cores it was not given.
 * defines: husai_threads_setup */
#ifndef HUSAI_CLI_THREADS_H
#define HUSAI_CLI_THREADS_H

#include <mpi.h>

#include "common/status.h"

/* Collective over comm. Reads HUSAI_THREADS, sets OpenMP and OpenBLAS accordingly and returns the count
 * in *threads (1 if unset). A value that is not a whole number from 1 to 4096 is HUSAI_ERR_ARG, naming
 * the variable, agreed over comm (every rank returns it). Rank 0 warns once (stderr) when a rank's CPU
 * affinity holds fewer cores than its threads. */
husai_status husai_threads_setup(MPI_Comm comm, int *threads);

#endif
