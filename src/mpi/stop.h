/* stop.h: graceful stop on SIGTERM/SIGUSR1 (Slurm's warning before preemption or a time limit).
 * The handler only sets a flag; training loops look at it between optimizer steps, checkpoint
 * and leave, and the ranks agree on the stop at the end of the phase. A test hook stops a rank
 * after a given number of its steps, so interrupt-and-resume is testable without timing races.
 * defines: husai_stop_install, husai_stop_requested, husai_stop_after_steps, husai_stop_count_step,
 *          HUSAI_EXIT_STOPPED */
#ifndef HUSAI_MPI_STOP_H
#define HUSAI_MPI_STOP_H

/* Exit status of a run that checkpointed and stopped on request (EX_TEMPFAIL): resume it. */
#define HUSAI_EXIT_STOPPED 75

/* Installs the SIGTERM and SIGUSR1 handlers, and ignores SIGXFSZ so an exceeded file-size limit is a write
 * error. */
void husai_stop_install(void);

/* True once a stop was requested on this rank (signal or step hook). */
int husai_stop_requested(void);

/* Test hook: request a stop after this rank has taken n optimizer steps (n <= 0: never). */
void husai_stop_after_steps(long n);

/* Counts one optimizer step for the hook. */
void husai_stop_count_step(void);

#endif
