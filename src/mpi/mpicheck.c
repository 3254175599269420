#include "mpi/mpicheck.h"

#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void husai_mpi_check(int rc, const char *what, const char *file, int line) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    husai_mpi_die("%s failed at %s:%d: %s", what, file, line, msg);
}

static void (*g_on_die)(void *);
static void *g_on_die_arg;

void husai_mpi_on_die(void (*fn)(void *), void *arg) {
    g_on_die = fn;
    g_on_die_arg = arg;
}

void husai_mpi_die(const char *fmt, ...) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "husai: error (rank %d): %s\n", rank, msg);
    fflush(stderr);
    fflush(stdout);
    if (g_on_die) g_on_die(g_on_die_arg);
    /* Not MPI_Abort: under mpirun a rank that exits non-zero without finalizing ends the job just the
     * same (mpirun signals the others), but with mpirun's one-paragraph notice instead of the MPI_ABORT
     * banner; srun does the same with --kill-on-bad-exit (the Slurm scripts pass it). _exit, not exit:
     * no atexit handler may enter MPI or HDF5 in a half-failed state. */
    _exit(1);
}

husai_status husai_mpi_agree(husai_status local, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = local != HUSAI_OK ? rank : size, first;
    HUSAI_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
    if (first == size) return HUSAI_OK;
    struct {
        int status;
        char message[1024];
    } payload;
    if (rank == first) {
        payload.status = (int)local;
        snprintf(payload.message, sizeof payload.message, "%s", husai_error_message());
    }
    HUSAI_MPI_CHECK(MPI_Bcast(&payload, (int)sizeof payload, MPI_BYTE, first, comm));
    return husai_error((husai_status)payload.status, "%s", payload.message);
}
