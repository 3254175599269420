/* select.h: choosing a condition by its conservative consistency gain under a quality floor.
 * The rule of the adaptive-L0 and consistency protocols: among conditions whose mean EV
 * reaches the floor, take the largest conservative delta LCB; ties go to the larger
 * delta, then the larger EV, then the earlier condition. No MPI here.
 * defines: husai_select_by_lcb */
#ifndef HUSAI_METRICS_SELECT_H
#define HUSAI_METRICS_SELECT_H

#include "common/status.h"

/* Sets *selected to the index of the selected condition among n, or to -1 when no condition has
 * ev[i] >= ev_floor (the caller must then fail loudly rather than fall back to all conditions, as HUSAI
 * did). A condition that reaches the floor without a finite LCB (its interval was withheld: too few
 * seeds) is an error naming it, since the rule cannot rank it; *selected is then -1. */
husai_status husai_select_by_lcb(const double *lcb, const double *delta, const double *ev, int n,
                                 double ev_floor, int *selected);

#endif
