#include "metrics/select.h"

#include <math.h>

#include "metrics/bootstrap.h"

husai_status husai_select_by_lcb(const double *lcb, const double *delta, const double *ev, int n,
                                 double ev_floor, int *selected) {
    int best = -1;
    *selected = -1;
    for (int i = 0; i < n; i++) {
        if (!(ev[i] >= ev_floor)) continue;
        if (!isfinite(lcb[i]))
            return husai_error(HUSAI_ERR_DATA,
                               "selection: condition %d has no conservative delta LCB (an interval needs at "
                               "least %d seeds), so the LCB rule cannot rank it",
                               i, HUSAI_CI_MIN_SEEDS);
        if (best < 0 || lcb[i] > lcb[best] || (lcb[i] == lcb[best] && delta[i] > delta[best]) ||
            (lcb[i] == lcb[best] && delta[i] == delta[best] && ev[i] > ev[best]))
            best = i;
    }
    *selected = best;
    return HUSAI_OK;
}
