/* stop.h: graceful stop on SIGTERM/SIGUSR1 (Slurm's warning before preemption or a time limit).
 * The handler only sets a flag; training loops look at it between optimizer steps, checkpoint
 * and leave, and the ranks agree on the stop at the end of the phase. A stop that starts on one
 * rank reaches every rank within a step or so: looking at the flag also looks at a stop channel
 * (a private communicator with one receive kept posted), and a rank whose stop started locally
 * passes it on over that channel. A test hook stops a rank after a given number of its steps, so
 * interrupt-and-resume is testable without timing races.
 * defines: husai_stop_install, husai_stop_connect, husai_stop_disconnect, husai_stop_requested,
 *          husai_stop_request, husai_stop_after_steps, husai_stop_count_step, HUSAI_EXIT_STOPPED */
#ifndef HUSAI_MPI_STOP_H
#define HUSAI_MPI_STOP_H

#include <mpi.h>

/* Exit status of a run that checkpointed and stopped on request (EX_TEMPFAIL): resume it. */
#define HUSAI_EXIT_STOPPED 75

/* Installs the SIGTERM and SIGUSR1 handlers, and ignores SIGXFSZ so an exceeded file-size limit is a write
 * error. */
void husai_stop_install(void);

/* Collective over comm: opens the stop channel, so a stop on any rank reaches all of comm's ranks.
 * Without it (or if it cannot be opened) stops stay local until the ranks next agree. */
void husai_stop_connect(MPI_Comm comm);

/* Collective: closes the stop channel (before MPI_Finalize); harmless if it was never opened. */
void husai_stop_disconnect(void);

/* True once a stop was requested on this rank or, over the channel, on any rank (signal, step hook or
 * husai_stop_request); the first time, passes a local stop on to the other ranks. Main thread only;
 * costs one MPI_Test. */
int husai_stop_requested(void);

/* Requests a stop of every rank from this one (e.g. after a failure the ranks must then agree on). */
void husai_stop_request(void);

/* Test hook: request a stop after this rank has taken n optimizer steps (n <= 0: never). */
void husai_stop_after_steps(long n);

/* Counts one optimizer step for the hook. */
void husai_stop_count_step(void);

#endif
