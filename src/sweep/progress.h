/* progress.h: the lines a rank prints while its tasks train ([progress] seconds). Every rank prints its own
 * tasks' lines, each with the rank, the UTC time (ISO 8601), the task, how far it is, its speed, the running
 * loss and ETAs, as key=value fields:
 *   [husai] rank=1 time=2026-12-03T10:45:12.345Z progress cond=k=32 seed=43 task=2/4 epoch=2.48/25
 *           step=1200/12500 samples_per_s=41234 loss=0.0123 eta_task=3m10s eta_run=12m05s
 * (one line). Lines come at most `seconds` apart while a task trains (one is printed early when the next
 * step, if it took up to twice the last one, would end past the interval) and at each epoch end, unless this
 * rank printed one less than seconds/10 ago (short epochs do not flood a log); seconds = 0: none. On a
 * terminal the lines overwrite one live status line instead (plain lines when stdout is a file or pipe).
 * No MPI here: the engine (phase.c) says what is trained and when a step is done.
 * defines: husai_progress, husai_progress_init, husai_progress_plan, husai_progress_task,
 *          husai_progress_step, husai_progress_task_end, husai_progress_clear, husai_progress_is_live,
 *          husai_progress_evaluating, husai_progress_utc, husai_progress_duration */
#ifndef HUSAI_SWEEP_PROGRESS_H
#define HUSAI_SWEEP_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double every; /* seconds between lines; 0: no lines */
    int live;     /* stdout is the user's terminal: one status line rewritten in place */
    int shown;    /* a live line is on screen (needs clearing before any other output) */
    int rank;
    double last_line; /* when this rank last printed a line (any task) */
    /* this rank's tasks of the phase */
    int n_tasks, task_no;
    double work_pending; /* work of the tasks not begun yet (steps x batch x d_sae) */
    /* the task in progress */
    char cond[160];
    uint64_t seed;
    int epochs;
    int64_t steps_total, steps_begin;
    double work_per_step, t_begin;
    int64_t rows_since; /* rows trained since the last line */
    double since;       /* and the time of that line (or the task's start) */
    double last_step;   /* when the previous step ended (or the task began) */
    int task_lines;     /* lines printed for this task */
} husai_progress;

/* Starts with no tasks; every = [progress] seconds. Live mode when stdout is a terminal the user sees:
 * under mpirun each rank's stdout is a pseudo-terminal whatever mpirun's own stdout is, so there the
 * launcher's (the parent's) stdout must be a terminal too. HUSAI_PROGRESS=plain or live overrides. */
void husai_progress_init(husai_progress *p, double every, int rank);

/* This rank will train n_tasks tasks of the phase, work_total their summed work (steps x batch x d_sae). */
void husai_progress_plan(husai_progress *p, int n_tasks, double work_total);

/* A task begins (or resumes at steps_done of steps_total): its name, seed and size. */
void husai_progress_task(husai_progress *p, const char *phase, const char *cond, uint64_t seed, int epochs,
                         int64_t steps_total, int64_t steps_done, double work_per_step, double now);

/* After one optimiser step of `rows` rows: steps_done steps in all, epoch = epochs completed (fractional),
 * loss = the running loss; prints a line when one is due (epoch_end: the step finished an epoch). */
void husai_progress_step(husai_progress *p, int64_t steps_done, double epoch, size_t rows, double loss,
                         int epoch_end, double now);

/* The task's training is done and its evaluation on `rows` rows begins (a pass over the data that prints
 * nothing until the task-done line): one line saying so, if the task trained for an interval or longer
 * and printed progress lines. */
void husai_progress_evaluating(husai_progress *p, size_t rows, double now);

/* The task ended (finished or not): clears a live line and counts the task's work as done. */
void husai_progress_task_end(husai_progress *p);

/* Clears a live line from the screen, so that the caller's next line starts on a clean line. */
void husai_progress_clear(husai_progress *p);

/* Whether p writes a live line (a terminal) rather than plain lines. */
int husai_progress_is_live(const husai_progress *p);

/* The current UTC time as ISO 8601 with milliseconds (2026-12-03T10:45:12.345Z) into buf (>= 25 bytes). */
void husai_progress_utc(char *buf, size_t n);

/* A duration as 1h02m, 3m10s or 42s (negative or not finite: 0s). */
void husai_progress_duration(double seconds, char *buf, size_t n);

#endif
