/* mpicheck.h: how ranks fail together.
 * Deterministic errors (config, data) are agreed collectively so every rank exits
 * cleanly with the same message; a failure only one rank can see and cannot carry to the
 * next agreement (an MPI call failed, out of memory mid-collective) prints one line and
 * exits that rank with status 1 without finalizing: mpirun (or srun --kill-on-bad-exit)
 * then ends the other ranks, so none is left waiting in a collective.
 * defines: HUSAI_MPI_CHECK, husai_mpi_check, husai_mpi_on_die, husai_mpi_die, husai_mpi_agree */
#ifndef HUSAI_MPI_MPICHECK_H
#define HUSAI_MPI_MPICHECK_H

#include <mpi.h>

#include "common/status.h"

/* Aborts the job with file, line and MPI's error string if an MPI call did not succeed. */
#define HUSAI_MPI_CHECK(call) husai_mpi_check((call), #call, __FILE__, __LINE__)

/* Implementation of HUSAI_MPI_CHECK. */
void husai_mpi_check(int rc, const char *what, const char *file, int line);

/* Registers a function husai_mpi_die runs on this rank before aborting (e.g. rank 0 removing its
 * staging directory); one at a time, NULL to clear. */
void husai_mpi_on_die(void (*fn)(void *), void *arg);

/* Prints "husai: error (rank R): <message>" on stderr, runs the on_die hook and exits this rank with status
 * 1 at once (no MPI_Abort banner); the launcher ends the other ranks. */
_Noreturn void husai_mpi_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Collective: returns the first failing status across ranks (lowest rank wins) and copies that
 * rank's husai_error_message to every rank; returns HUSAI_OK on every rank if none failed. */
husai_status husai_mpi_agree(husai_status local, MPI_Comm comm);

#endif
