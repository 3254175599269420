#define _POSIX_C_SOURCE 200809L
#include "mpi/stop.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t g_stop = 0;
static long g_after = 0, g_steps = 0;

/* The stop channel: a private communicator on which every rank keeps one receive posted. A rank that
 * stops on its own (signal, step hook, a failure) tells rank 0, and rank 0 tells everyone else, so at
 * most 2 (size - 1) messages fly however many ranks are signalled at once (Slurm signals them all). */
static MPI_Comm g_comm = MPI_COMM_NULL;
static int g_rank, g_size;
static MPI_Request g_recv = MPI_REQUEST_NULL, *g_sends;
static int g_n_sends, g_in, g_out = 1;
static int g_heard = 0; /* the stop came over the channel (from g_from) */
static int g_from = -1;
static int g_told = 0; /* this rank has passed its stop on */
static struct timespec g_last_test;

/* True at most every 2 ms: MPI_Test costs ~50 ns over shared memory but microseconds over TCP, more
 * than a small SAE's whole step; the coarse clock costs a few ns, and 2 ms is nothing next to 5 s. */
static int time_to_test(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    const long ns = (now.tv_sec - g_last_test.tv_sec) * 1000000000L + (now.tv_nsec - g_last_test.tv_nsec);
    if (ns >= 0 && ns < 2000000L) return 0;
    g_last_test = now;
    return 1;
}

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

void husai_stop_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    /* A file-size limit or quota must surface as a failed write with a message, not kill the rank. */
    signal(SIGXFSZ, SIG_IGN);
}

void husai_stop_connect(MPI_Comm comm) {
    if (MPI_Comm_dup(comm, &g_comm) != MPI_SUCCESS) {
        g_comm = MPI_COMM_NULL; /* no channel: stops are then agreed at the end of the phase only */
        return;
    }
    /* Best effort: a peer that died already must not turn a stop into an error of its own. */
    MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    g_sends = malloc((size_t)g_size * sizeof *g_sends);
    if (!g_sends || MPI_Irecv(&g_in, 1, MPI_INT, MPI_ANY_SOURCE, 0, g_comm, &g_recv) != MPI_SUCCESS) {
        free(g_sends);
        g_sends = NULL;
        MPI_Comm_free(&g_comm);
        g_comm = MPI_COMM_NULL;
    }
}

/* Passes this rank's stop on: to rank 0 if it started here, from rank 0 to every rank but the sender. */
static void pass_on(void) {
    g_told = 1;
    if (g_rank != 0) {
        if (!g_heard && MPI_Isend(&g_out, 1, MPI_INT, 0, 0, g_comm, &g_sends[g_n_sends]) == MPI_SUCCESS)
            g_n_sends++;
        return;
    }
    for (int r = 1; r < g_size; r++)
        if (r != g_from && MPI_Isend(&g_out, 1, MPI_INT, r, 0, g_comm, &g_sends[g_n_sends]) == MPI_SUCCESS)
            g_n_sends++;
}

int husai_stop_requested(void) {
    if (g_comm == MPI_COMM_NULL) return g_stop != 0;
    if (!g_stop && g_recv != MPI_REQUEST_NULL && time_to_test()) {
        int flag = 0;
        MPI_Status status;
        if (MPI_Test(&g_recv, &flag, &status) == MPI_SUCCESS && flag) {
            g_heard = 1;
            g_from = status.MPI_SOURCE;
            g_stop = 1;
        }
    }
    if (g_stop && !g_told) pass_on();
    return g_stop != 0;
}

void husai_stop_request(void) {
    g_stop = 1;
    husai_stop_requested();
}

void husai_stop_disconnect(void) {
    if (g_comm == MPI_COMM_NULL) return;
    if (g_recv != MPI_REQUEST_NULL) {
        MPI_Cancel(&g_recv);
        MPI_Wait(&g_recv, MPI_STATUS_IGNORE);
    }
    /* One int each: sent eagerly, so complete by now. */
    MPI_Waitall(g_n_sends, g_sends, MPI_STATUSES_IGNORE);
    free(g_sends);
    g_sends = NULL;
    g_n_sends = 0;
    MPI_Comm_free(&g_comm);
    g_comm = MPI_COMM_NULL;
}

void husai_stop_after_steps(long n) {
    g_after = n;
    g_steps = 0;
}

void husai_stop_count_step(void) {
    if (g_after > 0 && ++g_steps >= g_after) g_stop = 1;
}
