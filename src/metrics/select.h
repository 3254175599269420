/* select.h: choosing a condition by its conservative consistency gain under a quality floor.
 * The rule of the adaptive-L0 and consistency protocols: among conditions whose mean EV
 * reaches the floor, take the largest conservative delta LCB; ties go to the larger
 * delta, then the larger EV, then the earlier condition. No MPI here.
 * defines: husai_select_by_lcb */
#ifndef HUSAI_METRICS_SELECT_H
#define HUSAI_METRICS_SELECT_H

/* Returns the index of the selected condition among n, or -1 when no condition has ev[i] >= ev_floor
 * (the caller must then fail loudly rather than fall back to all conditions, as HUSAI did). */
int husai_select_by_lcb(const double *lcb, const double *delta, const double *ev, int n, double ev_floor);

#endif
