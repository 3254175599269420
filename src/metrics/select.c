#include "metrics/select.h"

int husai_select_by_lcb(const double *lcb, const double *delta, const double *ev, int n, double ev_floor) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (!(ev[i] >= ev_floor)) continue;
        if (best < 0 || lcb[i] > lcb[best] || (lcb[i] == lcb[best] && delta[i] > delta[best]) ||
            (lcb[i] == lcb[best] && delta[i] == delta[best] && ev[i] > ev[best]))
            best = i;
    }
    return best;
}
