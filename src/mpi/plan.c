#include "mpi/plan.h"

#include <stdlib.h>
#include <string.h>

husai_status husai_plan_build(husai_plan *p, int n_conditions, const uint64_t *seeds, int n_seeds,
                              int n_ranks) {
    memset(p, 0, sizeof *p);
    if (n_conditions < 1 || n_seeds < 1 || n_ranks < 1)
        return husai_error(HUSAI_ERR_ARG, "a plan needs conditions, seeds and ranks (got %d, %d, %d)",
                           n_conditions, n_seeds, n_ranks);
    p->n_conditions = n_conditions;
    p->n_seeds = n_seeds;
    p->n_tasks = n_conditions * n_seeds;
    p->n_ranks = n_ranks;
    p->tasks = calloc((size_t)p->n_tasks, sizeof(husai_task));
    if (!p->tasks) return husai_error(HUSAI_ERR_NOMEM, "cannot allocate a plan of %d tasks", p->n_tasks);
    for (int t = 0; t < p->n_tasks; t++)
        p->tasks[t] = (husai_task){.id = t,
                                   .condition = t / n_seeds,
                                   .seed_index = t % n_seeds,
                                   .seed = seeds[t % n_seeds],
                                   .rank = t % n_ranks};
    return HUSAI_OK;
}

void husai_plan_free(husai_plan *p) {
    if (!p) return;
    free(p->tasks);
    memset(p, 0, sizeof *p);
}

int husai_plan_local(const husai_plan *p, int rank, int reverse, int *ids) {
    int n = 0;
    for (int t = 0; t < p->n_tasks; t++)
        if (p->tasks[t].rank == rank) ids[n++] = t;
    if (reverse)
        for (int i = 0; i < n / 2; i++) {
            int tmp = ids[i];
            ids[i] = ids[n - 1 - i];
            ids[n - 1 - i] = tmp;
        }
    return n;
}
