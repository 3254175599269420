/* plan.h: the deterministic task list of a sweep and its task -> rank map.
 * Tasks are (condition, seed) pairs in condition-major order; task t runs on rank
 * t mod n_ranks, in waves when there are more tasks than ranks; ranks beyond the task
 * count stay idle. Where a task runs never changes what it computes (the RNG streams
 * are keyed by seed), so the plan only decides who does the work. No MPI calls here.
 * defines: husai_task, husai_plan, husai_plan_build, husai_plan_free, husai_plan_local */
#ifndef HUSAI_MPI_PLAN_H
#define HUSAI_MPI_PLAN_H

#include <stdint.h>

#include "common/status.h"

typedef struct {
    int id;         /* position in the plan, 0..n_tasks-1 */
    int condition;  /* index into the sweep values */
    int seed_index; /* index into the seed list */
    uint64_t seed;
    int rank; /* who trains it */
} husai_task;

typedef struct {
    int n_conditions, n_seeds, n_tasks, n_ranks;
    husai_task *tasks; /* (n_tasks) */
} husai_plan;

/* Builds the plan for n_conditions x n_seeds tasks on n_ranks ranks. */
husai_status husai_plan_build(husai_plan *p, int n_conditions, const uint64_t *seeds, int n_seeds,
                              int n_ranks);

/* Releases the plan; safe on a zeroed or freed plan. */
void husai_plan_free(husai_plan *p);

/* Writes the ids of rank's tasks in execution order into ids (capacity n_tasks); reverse = 1 runs
 * them last-first (used to prove results do not depend on order). Returns the count. */
int husai_plan_local(const husai_plan *p, int rank, int reverse, int *ids);

#endif
