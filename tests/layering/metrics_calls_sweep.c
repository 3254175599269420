/* Must NOT link: a call from metrics up to the sweep engine, its prototype written by hand because the
 * header cannot be included. husai_metrics does not link husai_sweep, so the symbol is undefined; the
 * same holds for every unit test, which links only the layers it includes (tests/CMakeLists.txt). */
#include "metrics/pwmcc.h"

int husai_phase_run(const void *ctx, const void *ph, void *res);

int main(void) {
    return husai_phase_run(0, 0, 0);
}
