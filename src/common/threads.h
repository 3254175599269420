/* threads.h: the OpenMP queries husai's threaded loops use, with their one-thread answers when the build
 * has no OpenMP. Threads only ever split work whose result does not depend on the split.
 * defines: husai_max_threads, husai_thread_num, husai_threads_here */
#ifndef HUSAI_COMMON_THREADS_H
#define HUSAI_COMMON_THREADS_H

#ifdef _OPENMP
#include <omp.h>
#endif

/* Threads a parallel region started here would get (omp_get_max_threads(); 1 without OpenMP). */
static inline int husai_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* This thread's number within the enclosing parallel region (0 outside one). */
static inline int husai_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Threads in the enclosing parallel region (1 outside one). */
static inline int husai_threads_here(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#endif
