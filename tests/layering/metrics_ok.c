/* Must build: the control for the cases above. A metrics-level file that includes and calls its own
 * layer and the layers below it (sae, common) builds against husai_metrics, so the failures above come
 * from the layering and not from a broken setup. */
#include "common/status.h"
#include "metrics/pwmcc.h"
#include "sae/model.h"

int main(void) {
    double out = 0.0;
    const float a[2] = {1.0f, 0.0f};
    return (husai_pwmcc_pair(a, 1, a, 1, 2, &out) == HUSAI_OK && out > 0.99 && husai_arch_parse("topk") >= 0)
               ? 0
               : 1;
}
