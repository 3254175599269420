#define _POSIX_C_SOURCE 200809L
#include "mpi/stop.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t g_stop = 0;
static long g_after = 0, g_steps = 0;

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

int husai_stop_requested(void) {
    return g_stop != 0;
}

void husai_stop_after_steps(long n) {
    g_after = n;
    g_steps = 0;
}

void husai_stop_count_step(void) {
    if (g_after > 0 && ++g_steps >= g_after) g_stop = 1;
}
