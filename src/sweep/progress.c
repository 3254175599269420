#define _POSIX_C_SOURCE 200809L
#include "sweep/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* Whether fd 1 of process pid is a terminal, from what /proc says it points to (Linux; elsewhere: no). */
static int parent_stdout_is_terminal(pid_t pid) {
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/%ld/fd/1", (long)pid);
    const ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = '\0';
    return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8);
}

static int detect_live(void) {
    const char *force = getenv("HUSAI_PROGRESS");
    if (force && !strcmp(force, "plain")) return 0;
    if (force && !strcmp(force, "live")) return 1;
    if (!isatty(STDOUT_FILENO)) return 0;
    const char *term = getenv("TERM");
    if (term && !strcmp(term, "dumb")) return 0;
    /* Open MPI (and MPICH's hydra) give every rank a pseudo-terminal for stdout even when mpirun writes
     * to a Slurm log: only the launcher's own stdout tells whether a person is watching. */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_RANK") || getenv("PMIX_RANK"))
        return parent_stdout_is_terminal(getppid());
    return 1;
}

void husai_progress_init(husai_progress *p, double every, int rank) {
    memset(p, 0, sizeof *p);
    p->every = every > 0.0 && isfinite(every) ? every : 0.0;
    p->live = p->every > 0.0 && detect_live();
    p->rank = rank;
    p->last_line = -INFINITY;
}

void husai_progress_plan(husai_progress *p, int n_tasks, double work_total) {
    p->n_tasks = n_tasks;
    p->task_no = 0;
    p->work_pending = work_total;
}

void husai_progress_task(husai_progress *p, const char *phase, const char *cond, uint64_t seed, int epochs,
                         int64_t steps_total, int64_t steps_done, double work_per_step, double now) {
    snprintf(p->cond, sizeof p->cond, "%s%s%s", phase, *phase ? "/" : "", cond);
    p->seed = seed;
    p->epochs = epochs;
    p->steps_total = steps_total;
    p->steps_begin = steps_done;
    p->work_per_step = work_per_step;
    p->t_begin = p->since = p->last_step = now;
    p->rows_since = 0;
    p->task_lines = 0;
    p->task_no++;
    p->work_pending -= (double)steps_total * work_per_step;
    if (p->work_pending < 0.0) p->work_pending = 0.0;
}

void husai_progress_clear(husai_progress *p) {
    if (!p || !p->shown) return;
    fputs("\r\033[K", stdout);
    fflush(stdout);
    p->shown = 0;
}

void husai_progress_evaluating(husai_progress *p, size_t rows, double now) {
    /* A task that trained for less than an interval evaluates quickly too: its done line follows soon. */
    if (p->every <= 0.0 || p->task_lines == 0 || now - p->t_begin < p->every) return;
    char utc[32];
    husai_progress_utc(utc, sizeof utc);
    if (p->live) {
        printf("\r[husai r%d] %s seed=%llu (%d/%d) evaluating on %zu rows\033[K", p->rank, p->cond,
               (unsigned long long)p->seed, p->task_no, p->n_tasks, rows);
        p->shown = 1;
    } else {
        printf("[husai] rank=%d time=%s evaluating cond=%s seed=%llu task=%d/%d rows=%zu\n", p->rank, utc,
               p->cond, (unsigned long long)p->seed, p->task_no, p->n_tasks, rows);
    }
    fflush(stdout);
}

void husai_progress_task_end(husai_progress *p) {
    husai_progress_clear(p);
}

int husai_progress_is_live(const husai_progress *p) {
    return p && p->live;
}

void husai_progress_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

void husai_progress_utc(char *buf, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char sec[24];
    strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%.19s.%03dZ", sec, (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Terminal width for the live line (which must not wrap, or \r would return to its last row only). */
static int columns(void) {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

void husai_progress_step(husai_progress *p, int64_t steps_done, double epoch, size_t rows, double loss,
                         int epoch_end, double now) {
    if (p->every <= 0.0) return;
    p->rows_since += (int64_t)rows;
    const double every = p->live && p->every > 1.0 ? 1.0 : p->every, since_line = now - p->last_line;
    /* A line now if the next step could end past the interval (a step can take twice as long as the one
     * before on a shared machine): lines then come at most `every` apart even when a step takes seconds
     * (768 x 16384, batch 2048: 1-3 s here). */
    const double step_time = p->last_step > 0.0 ? now - p->last_step : 0.0;
    p->last_step = now;
    if (!(since_line + 2.0 * step_time >= every || (epoch_end && since_line >= every / 10.0))) return;
    /* Speed over the time since the last line; ETAs at the task's average speed since it (re)started,
     * the rest of the rank's tasks weighted by their work (steps x batch x d_sae). */
    const double dt = now - p->since, run_t = now - p->t_begin;
    const double rate = dt > 0.0 ? (double)p->rows_since / dt : 0.0;
    const double work_done = (double)(steps_done - p->steps_begin) * p->work_per_step;
    const double left = (double)(p->steps_total - steps_done) * p->work_per_step;
    char eta_task[32] = "?", eta_run[32] = "?", utc[32];
    if (work_done > 0.0 && run_t > 0.0) {
        husai_progress_duration(left * run_t / work_done, eta_task, sizeof eta_task);
        husai_progress_duration((left + p->work_pending) * run_t / work_done, eta_run, sizeof eta_run);
    }
    husai_progress_utc(utc, sizeof utc);
    char line[512];
    if (p->live) {
        /* The most useful fields first: a narrow terminal cuts the line's end. */
        int n =
            snprintf(line, sizeof line,
                     "[husai r%d] %s seed=%llu (%d/%d) epoch %.2f/%d eta %s, rank %s | step %lld/%lld "
                     "%.0f rows/s loss %.4g",
                     p->rank, p->cond, (unsigned long long)p->seed, p->task_no, p->n_tasks, epoch, p->epochs,
                     eta_task, eta_run, (long long)steps_done, (long long)p->steps_total, rate, loss);
        const int width = columns() - 1;
        if (n > width) line[width] = '\0';
        printf("\r%s\033[K", line);
        p->shown = 1;
    } else {
        printf("[husai] rank=%d time=%s progress cond=%s seed=%llu task=%d/%d epoch=%.2f/%d step=%lld/%lld "
               "samples_per_s=%.0f loss=%.6g eta_task=%s eta_run=%s\n",
               p->rank, utc, p->cond, (unsigned long long)p->seed, p->task_no, p->n_tasks, epoch, p->epochs,
               (long long)steps_done, (long long)p->steps_total, rate, loss, eta_task, eta_run);
    }
    fflush(stdout);
    p->last_line = p->since = now;
    p->rows_since = 0;
    p->task_lines++;
}
